"""Virtual devices: the real firmware under the MicroPython unix port, behaving like a board on
a serial port, and the simulated world around it (contacts, links, signal, battery, clock).

A virtual device is a directory, which is its flash: `create()` writes what provisioning would
(config.json, secrets.json, DER certificates, board.json). `VirtualDevice(dir).start()` starts
its supervisor (see supervisor.py): the firmware runs with the directory as its working
directory on a pseudo-terminal whose path `<dir>/tty` points at, so that

    mpremote connect $(readlink run/devices/dev1/tty) resume exec "print(1)"

works as against a board (always `resume`: a soft reset would end the unix port). Everything
the firmware prints is kept in `<dir>/console.log`. The inputs and links are driven through
`<dir>/sim/control.json` (fl/hal/sim.py), which `set_input()`, `set_link()`, `set_rssi()`,
`set_battery_mv()` and `set_clock_synced()` update atomically.

What runs is **the application as it ships**: `firelink.board.build.build_app("xtensawin")`, the
bytecode-only .mpy files `firelink flash` deploys to an ESP32 (bytecode built for xtensawin
imports on the x86_64 unix port), with main.py and board.json beside them. A device whose board
takes a MicroPython image with ROMFS (the lean board) runs it as that board has it: fl/ in a
ROMFS image mapped outside the heap and mounted at /rom (firelink.board.romfs,
firelink.virtual.romrun). `source=True` runs
the firmware/ source tree instead: then the device compiles at import, which a board never
does and which needs heap a board does not have to spare. `$FL_FIRMWARE` names another
directory to run, source or build, and wins over both.

Used from the command line as `firelink virtual ...` (commands/virtual.py) and by the tests and the
HIL suite's `--dut virtual`.
"""
from __future__ import annotations

import ast
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from firelink.board import boards, build, romfs
from firelink.errors import FireLinkError
from firelink.virtual import supervisor as sv
from firelink.virtual import unixport
# The simulated world is part of this module's API (virtual.set_input(...)): re-exported.
from firelink.virtual.world import (CONTROL, STATES, InputSpec, UnknownInput, WorldError, board_info,  # noqa: F401
                                    board_json_path, create, find_input, input_specs, prepare, raw_for, read_json,
                                    read_control, set_battery_mv, set_clock_synced, set_input, set_link,
                                    set_rssi, state_of, update_json, wire_normal, write_control,
                                    write_json_atomic, SIM_PATHS)

_HERE = Path(__file__).resolve()
START_TIMEOUT_S = 15.0
# The ESP32's architecture: a build for it is the build that ships (bytecode only, so the
# unix port on x86_64 imports the very same files).
APP_ARCH = "xtensawin"


class VirtualError(FireLinkError, RuntimeError):
    """A virtual-device operation failed; the message says what to do."""


class NotRunning(VirtualError):
    pass


class AlreadyRunning(VirtualError):
    pass


class StartFailed(VirtualError):
    pass


class LogTimeout(VirtualError, TimeoutError):
    pass


# --- where things are ---

def firmware_dir() -> Path:
    """$FL_FIRMWARE, else firmware/ in the source tree these tools come from (the sources)."""
    override = os.environ.get("FL_FIRMWARE")
    path = Path(override) if override else _HERE.parents[3] / "firmware"
    if not (path / "main.py").exists() and not (path / "main.mpy").exists():
        raise VirtualError(f"no firmware in {path} (main.py missing); set $FL_FIRMWARE to a firmware directory")
    return path


def shipped_app(build_root: Path | None = None) -> Path:
    """Builds (incrementally) the application as `firelink flash` ships it and returns its
    directory: build/app-xtensawin/ by default, or under `build_root` (tests use their own,
    so that two runs never rebuild one directory under each other)."""
    try:
        return build.build_app(APP_ARCH, build_root=Path(build_root) if build_root else build.BUILD_ROOT).directory
    except build.BuildError as e:
        raise VirtualError(f"cannot build the application to run: {e}") from e


def shipped_rom_app(build_root: Path | None = None) -> Path:
    """The shipped build of a board whose MicroPython has ROMFS (the lean board): main.py,
    boot.py and board.json for littlefs plus the image of fl/ (firelink.board.romfs), which the
    virtual device maps and mounts at /rom as the board does (firelink.virtual.romrun)."""
    try:
        return romfs.romfs_split(build.build_app(APP_ARCH, build_root=Path(build_root) if build_root
                                                 else build.BUILD_ROOT)).littlefs.directory
    except build.BuildError as e:  # romfs.RomfsError is one
        raise VirtualError(f"cannot build the application to run: {e}") from e


def takes_romfs(directory: Path) -> bool:
    """Whether the board of the device in `directory` (its board.json's name, matched against
    hardware/boards/) takes a MicroPython image with ROMFS."""
    name = (read_json(Path(directory) / "board.json") or {}).get("name")
    for b in boards.names():
        definition = boards.load(b)
        if name and definition.get("name") == name:
            fw = boards.firmware(definition)
            return fw is not None and fw.romfs
    return False


def app_dir(source: bool = False, build_root: Path | None = None, rom: bool = False) -> Path:
    """What a virtual device runs: $FL_FIRMWARE if set; else the firmware/ sources when
    `source`; else the shipped build (see shipped_app), as a ROM build when `rom`."""
    if os.environ.get("FL_FIRMWARE") or source:
        return firmware_dir()
    return shipped_rom_app(build_root) if rom else shipped_app(build_root)


def micropython_binary() -> str:
    try:
        return unixport.micropython_binary()
    except unixport.UnixPortError as e:
        raise VirtualError(str(e)) from None


# --- running ---

class VirtualDevice:
    """A handle on the virtual device in `directory`, whether this process started it or not."""

    def __init__(self, directory: Path, firmware: Path | None = None, micropython: str | None = None,
                 source: bool = False) -> None:
        """`firmware`: the directory to run; by default app_dir(source) at each start(), so a
        changed source is rebuilt before the next power-on."""
        self.dir = Path(directory).resolve()
        self._firmware = firmware
        self._source = source
        self._micropython = micropython
        self._proc: subprocess.Popen[bytes] | None = None
        self._cursor = 0

    # --- state ---
    @property
    def console_log(self) -> Path:
        return self.dir / sv.CONSOLE_LOG

    @property
    def tty_link(self) -> Path:
        return self.dir / sv.TTY_LINK

    def state(self) -> dict[str, Any]:
        """sim/supervisor.json, with `running` checked against the pid file's lock."""
        st = read_json(self.dir / sv.STATEFILE) or {}
        st["running"] = self.supervisor_pid() is not None
        return st

    def supervisor_pid(self) -> int | None:
        """The running supervisor's pid, or None: the pid file counts only while it is locked."""
        path = self.dir / sv.PIDFILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                text = os.read(fd, 32).decode().strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def running(self) -> bool:
        return self.supervisor_pid() is not None

    def tty(self) -> str:
        """The serial port's path (/dev/pts/N) of the running device."""
        if not self.running():
            raise NotRunning(f"no virtual device running in {self.dir}")
        return os.readlink(self.tty_link)

    def firmware_pid(self) -> int | None:
        st = self.state()
        return st.get("firmware_pid") if st["running"] else None

    # --- power ---
    def start(self, restart: bool = True, detach: bool = False, reset_cause: str = "power_on",
              heapsize: str | None = None, env: dict[str, str] | None = None,
              timeout_s: float = START_TIMEOUT_S) -> str:
        """Powers the device on; returns its pty path once the firmware process runs.

        detach=False: the supervisor stops by itself if this process ends (tests).
        detach=True: it runs on until `stop()` (the CLI's background mode)."""
        if self.running():
            raise AlreadyRunning(f"already running in {self.dir} (pid {self.supervisor_pid()}, {self.tty()})")
        if heapsize:
            check_heapsize(heapsize, self._micropython or micropython_binary())
        firmware = Path(self._firmware) if self._firmware else app_dir(self._source, rom=takes_romfs(self.dir))
        argv = [sys.executable, "-m", "firelink.virtual.supervisor", str(self.dir),
                "--firmware", str(firmware), "--micropython", self._micropython or micropython_binary(),
                "--reset-cause", reset_cause]
        if not restart:
            argv.append("--no-restart")
        if heapsize:
            argv += ["--heapsize", heapsize]
        if not detach:
            argv += ["--parent-pid", str(os.getpid())]
        (self.dir / "sim").mkdir(parents=True, exist_ok=True)
        sv.rotate_console_log(self.dir)  # here, so that the cursor below stays valid
        self._cursor = self.log_position()
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_HERE.parents[2]), child_env.get("PYTHONPATH")]))
        with open(self.dir / sv.SUPERVISOR_LOG, "ab") as errlog:
            # Own session: a Ctrl-C typed at the caller's terminal is for the caller, not the device.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog,
                                    env=child_env, start_new_session=True, close_fds=True)
        self._proc = None if detach else proc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = read_json(self.dir / sv.STATEFILE) or {}
            # Running means the firmware process lives and has spoken on its console, not only
            # that the supervisor launched it (an interpreter refusing its arguments dies at once).
            # Or a test jig holds its supply off or its EN low (or BOOT low: download mode): the
            # port is up, the firmware waits for the jig.
            held = st.get("state") in ("unpowered", "reset", "download")
            if st.get("pid") == proc.pid and self.running() and (held or (
                    st.get("state") == "running" and isinstance(st.get("firmware_pid"), int)
                    and _alive(st["firmware_pid"]) and self.log_position() > self._cursor)):
                return str(st["tty"])
            if proc.poll() is not None:
                raise StartFailed(f"the virtual device did not start (status {proc.returncode}):\n"
                                  + _tail(self.dir / sv.SUPERVISOR_LOG))
            time.sleep(0.02)
        proc.kill()
        raise StartFailed(f"the virtual device did not start within {timeout_s} s:\n" + _tail(self.dir / sv.SUPERVISOR_LOG))

    def stop(self, clean: bool = True, timeout_s: float = 15.0) -> int | None:
        """Clean: ^C, so the firmware publishes `offline` and disconnects, then the process
        ends. clean=False is `kill()`. Returns the firmware's last exit status if known."""
        if not clean:
            self.kill()
            return None
        pid = self.supervisor_pid()
        if pid is None:
            self._reap()
            return (read_json(self.dir / sv.STATEFILE) or {}).get("last_exit")
        os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout_s):
            self.kill()
            raise VirtualError(f"the device did not stop within {timeout_s} s; killed it")
        self._reap()
        return (read_json(self.dir / sv.STATEFILE) or {}).get("last_exit")

    def kill(self) -> None:
        """Power cut: SIGKILL the firmware at once (nothing is flushed), then the supervisor."""
        st = read_json(self.dir / sv.STATEFILE) or {}
        pid = self.supervisor_pid()
        if pid is None:
            self._reap()
            return
        fw = st.get("firmware_pid") if st.get("pid") == pid else None
        for victim in (fw, pid):
            if victim:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._wait_gone(pid, 5.0)
        self._reap()
        if fw:
            _wait_dead(fw, 5.0)
        if self.tty_link.is_symlink():
            self.tty_link.unlink()
        write_json_atomic(self.dir / sv.STATEFILE, {**st, "state": "killed", "firmware_pid": None})

    def reset(self) -> None:
        """Presses the reset button: the firmware restarts at once with reset cause `hard`."""
        pid = self.supervisor_pid()
        if pid is None:
            raise NotRunning(f"no virtual device running in {self.dir}")
        before = self.state().get("boots", 0)
        os.kill(pid, signal.SIGUSR1)
        self.wait_for_boot(before + 1)

    def wait_for_boot(self, boots: int, timeout_s: float = 10.0) -> None:
        """Waits until the supervisor has started the firmware `boots` times."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.state()
            if st.get("boots", 0) >= boots and st.get("state") == "running":
                return
            if not st["running"]:
                raise NotRunning("the device powered off")
            time.sleep(0.02)
        raise VirtualError(f"no boot #{boots} within {timeout_s} s")

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif self.supervisor_pid() != pid and not _alive(pid):
                return True
            time.sleep(0.02)
        return False

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    # --- console ---
    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.console_log, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_position(self) -> int:
        """A mark for `wait_for_log(since=...)`: the console log's current end."""
        try:
            return self.console_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout_s: float = 10.0,
                     since: int | None = None) -> re.Match[str]:
        """Waits for `pattern` (a regex) in what the device printed, searching from `since` (a
        log_position()), or by default from the end of the previous match (the start of
        this power-on at first). Raises LogTimeout with the log's tail."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        start = self._cursor if since is None else since
        if start > self.log_position():  # rotated under us
            start = 0
        deadline = time.monotonic() + timeout_s
        while True:
            raw = b""
            try:
                with open(self.console_log, "rb") as f:
                    f.seek(start)
                    raw = f.read()
            except FileNotFoundError:
                pass
            # Byte offsets: decode each time so that a match maps back exactly.
            text = raw.decode("utf-8", "replace")
            m = rx.search(text)
            if m:
                self._cursor = start + len(text[:m.end()].encode("utf-8", "replace"))
                return m
            if time.monotonic() >= deadline:
                tail = text[-1500:]
                raise LogTimeout(f"{rx.pattern!r} not printed within {timeout_s} s; console ends with:\n{tail}")
            time.sleep(0.02)

    # --- what it reports ---
    def reported_inputs(self) -> dict[str, str]:
        """Input states from the console: the last `inputs: {...}` line, updated by the
        `input NAME: OLD -> NEW` lines after it. Best effort; empty if nothing was printed."""
        states: dict[str, str] = {}
        for line in self.log_text().splitlines():
            m = re.search(r" INFO app: inputs: (\{.*\})\s*$", line)
            if m:
                try:
                    value = ast.literal_eval(m.group(1))
                    states = {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else states
                except (ValueError, SyntaxError):
                    pass
                continue
            m = re.search(r" app: input (\w+): \w+ -> (\w+)\s*$", line)
            if m:
                states[m.group(1)] = m.group(2)
        return states


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.01)
    return False


_HEAPSIZE_RE = re.compile(r"[0-9]+[km]?\Z")


def check_heapsize(value: str, micropython: str) -> None:
    """StartFailed unless MicroPython accepts `-X heapsize=value` (it decides: e.g. 256k, 2m)."""
    problem = None
    if not _HEAPSIZE_RE.match(value):
        problem = "expected a number of bytes with k or m, e.g. 256k or 2m"
    else:
        try:
            r = subprocess.run([micropython, "-X", "heapsize=" + value, "-c", "pass"], capture_output=True,
                               timeout=10)
            if r.returncode != 0:
                problem = "MicroPython refuses it (too small or too large?)"
        except (OSError, subprocess.TimeoutExpired) as e:
            problem = f"cannot check it with {micropython}: {e}"
    if problem:
        raise StartFailed(f"--heapsize {value!r}: {problem}")


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no supervisor log)"
