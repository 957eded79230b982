"""Puts a built application on a board so that it matches the manifest, changing no more
than needed.

1. The board's files are hashed on the board: the manifest's top-level files and the
   directories the application owns (`fl/`). Nothing else is looked at or touched: the
   board's configuration, credentials and outbox live beside them.
2. Files whose hash already matches are skipped; a `<path>.tmp` already holding the right
   bytes (left by an interrupted run) is reused; the rest are written to `<path>.tmp` and
   checked on the board.
3. One command renames every staged file into place (main.py last) and removes files in the
   owned directories that the manifest no longer has (a stale `fl/x.py` would shadow the new
   `fl/x.mpy`: MicroPython tries .py first).
4. Everything is hashed again and compared with the manifest.

Until step 3 the board keeps its old application intact, so a deploy cut short (cable,
Ctrl-C, the app's watchdog resetting the board) leaves the previous version runnable, and
running the deploy again finishes the job.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from firelink.board.build import AppBuild
from firelink.board.device import Device, DeviceInfo, RemoteFile
from firelink.errors import FireLinkError
from firelink.progress import Reporter

TMP_SUFFIX = ".tmp"
LAST = ("boot.py", "main.py")  # put in place last: the entry points follow their modules


class DeployError(FireLinkError):
    """The application could not be put on the board; the message says what to do."""


class AppIncompatible(DeployError):
    pass


class DeployVerifyFailed(DeployError):
    pass


@dataclass
class DeployReport:
    written: list[str] = field(default_factory=list)  # transferred and put in place
    resumed: list[str] = field(default_factory=list)  # staged by an earlier, interrupted run
    skipped: list[str] = field(default_factory=list)  # already identical on the board
    removed: list[str] = field(default_factory=list)  # stale files the app no longer has
    bytes_written: int = 0  # file bytes transferred
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.written or self.resumed or self.removed)


@dataclass
class Plan:
    write: list[str]
    resume: list[str]
    skip: list[str]
    remove: list[str]


def check_compatible(build: AppBuild, info: DeviceInfo) -> None:
    """The board must load the .mpy files this build made. MicroPython checks the .mpy
    version of every file, and the sub-version and architecture only of files holding machine
    code (so bytecode built for the ESP32 also loads on the unix port)."""
    have = "%d.%d" % info.mpy_version
    need = "%d.%d" % build.mpy_version
    reflash = ("flash a current MicroPython with `firelink flash --port … --firmware <.bin>` "
               "(without --app-only)")
    if info.mpy_version[0] != build.mpy_version[0]:
        raise AppIncompatible(
            f"the board runs MicroPython {info.version_text}, which loads .mpy v{have}; the app is "
            f"compiled to .mpy v{need} (MicroPython 1.23 or newer): {reflash}")
    native = build.native_files
    if native and (info.mpy_version != build.mpy_version or info.mpy_arch != build.arch):
        raise AppIncompatible(
            f"{native[0]} holds {build.arch} machine code for .mpy v{need}; the board is "
            f"{info.mpy_arch or 'of unknown architecture'} with .mpy v{have}: build with --arch "
            f"{info.mpy_arch or '…'} or {reflash}")


def scan_paths(build: AppBuild) -> list[str]:
    """What `deploy` looks at on the board: top-level app files, their .tmp, owned dirs."""
    top_files = sorted(p for p in build.files if "/" not in p)
    owned_dirs = sorted({p.split("/", 1)[0] for p in build.files if "/" in p})
    return [*top_files, *(p + TMP_SUFFIX for p in top_files), *owned_dirs]


def plan(build: AppBuild, remote: dict[str, RemoteFile]) -> Plan:
    p = Plan(write=[], resume=[], skip=[], remove=[])
    committed: set[str] = set()
    for path, entry in sorted(build.files.items()):
        have = remote.get(path)
        staged = remote.get(path + TMP_SUFFIX)
        if have is not None and have.sha256 == entry.sha256:
            p.skip.append(path)
        elif staged is not None and staged.sha256 == entry.sha256:
            p.resume.append(path)
            committed.add(path + TMP_SUFFIX)
        else:
            p.write.append(path)
            committed.add(path + TMP_SUFFIX)
    p.remove = sorted(r for r in remote if r not in build.files and r not in committed)
    return p


def _order(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda p: (p in LAST, LAST.index(p) if p in LAST else 0, p))


def deploy(device: Device, build: AppBuild, reporter: Reporter | None = None) -> DeployReport:
    """Makes the board's application files equal to `build.files`; see the module docstring."""
    reporter = reporter or Reporter()
    started = time.monotonic()
    report = DeployReport()
    check_compatible(build, device.info())
    paths = scan_paths(build)

    reporter.start("compare with the board")
    remote = device.list_files(paths)
    todo = plan(build, remote)
    reporter.finish(f"{len(todo.skip)} unchanged, {len(todo.write) + len(todo.resume)} to write, "
                    f"{len(todo.remove)} to remove")

    for directory in sorted({p.rsplit("/", 1)[0] for p in todo.write if "/" in p}):
        device.mkdir_p(directory)
    for path in _order(todo.write):
        entry = build.files[path]
        reporter.start(f"write {path}", total=entry.size, unit="B")
        device.stage_file(path, entry.local.read_bytes(), on_chunk=reporter.advance)
        reporter.finish()
        report.bytes_written += entry.size

    if todo.write or todo.resume or todo.remove:
        reporter.start("put new files in place")
        device.commit(_order(todo.write + todo.resume), remove=todo.remove)
        reporter.finish()

    reporter.start("verify files on the board", total=len(build.files))
    after = device.list_files(paths)
    wrong = [p for p, e in build.files.items() if after.get(p) is None or after[p].sha256 != e.sha256]
    extra = sorted(set(after) - set(build.files))
    reporter.advance(len(build.files) - len(wrong))
    if wrong or extra:
        raise DeployVerifyFailed(
            "after deploying, the board's files do not match the build"
            + (f"; differing: {', '.join(wrong)}" if wrong else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
            + ": run the command again; if it repeats, erase the board with a full `firelink flash`")
    reporter.finish()

    report.written = _order(todo.write)
    report.resumed = todo.resume
    report.skipped = todo.skip
    report.removed = todo.remove
    report.seconds = time.monotonic() - started
    return report
