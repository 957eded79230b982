"""A MicroPython board's raw REPL over a serial port: the only module that uses mpremote.

mpremote is pinned (requirements.txt: 1.29.0) because `SerialTransport` is not a stable API
("The API is going to change significantly", transport_serial.py). We use it the same way
for a real ESP32 and for the unix-port virtual device:

- The raw REPL is always entered with `soft_reset=False`: the unix port exits on a soft
  reset instead of rebooting, and on a board a soft reset would restart main.py.
- Every wait is bounded: the serial read timeout, mpremote's inter-character timeouts, and
  a deadline when waiting for a freshly flashed board.
- Files are written to `<path>.tmp`, their sha256 is checked on the board, and only then
  renamed over `<path>` (littlefs and POSIX renames are atomic), so an interrupted write
  never leaves a half-written module where the board would import it.
- Hashes are computed on the board (hashlib.sha256, 1 kB at a time): only digests cross the
  wire when nothing changed.

Paths are relative to the board's current directory ("/" on an ESP32, the device directory
for the unix port).
"""
from __future__ import annotations

import ast
import binascii
import hashlib
import io
import struct
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, Iterable

import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from firelink.board.build import arch_for_mpy_code
from firelink.board.ports import PortBusy, PortError, check_port, classify
from firelink.errors import FireLinkError

BAUDRATE = 115200
TIMEOUT_S = 10.0  # longest silence accepted from the board within one command
ENTER_TIMEOUT_S = 5.0  # to get a raw REPL prompt after Ctrl-C, Ctrl-A
WRITE_CHUNK = 2048  # bytes per command when writing a file (base64 in a raw-paste)
ENOSPC = 28


class DeviceError(FireLinkError):
    """Talking to the board failed; the message says what to do."""


class NotMicroPython(DeviceError):
    """The board does not answer as a MicroPython REPL."""


class DeviceTimeout(DeviceError):
    def __init__(self, port: str, what: str, detail: str = "") -> None:
        super().__init__(f"the board on {port} stopped answering while {what}"
                         + (f" ({detail})" if detail else "")
                         + ": check the cable, then run the command again (files are replaced "
                         "atomically, so nothing half-written is ever used)")


class DeviceLost(DeviceError):
    def __init__(self, port: str, what: str, detail: str = "") -> None:
        super().__init__(f"lost the connection to {port} while {what} ({detail}): was the cable "
                         "pulled or the board reset? plug it back in and run the command again")


class DeviceFull(DeviceError):
    pass


class DeviceCommandFailed(DeviceError):
    """Code sent to the board raised; `board_traceback` has the board's words."""

    def __init__(self, message: str, board_traceback: str) -> None:
        super().__init__(message)
        self.board_traceback = board_traceback


class HashMismatch(DeviceError):
    pass


@dataclass(frozen=True)
class DeviceInfo:
    platform: str  # sys.platform: "esp32", "linux" (unix port)
    version: tuple[object, ...]  # sys.implementation.version
    mpy_version: tuple[int, int]  # (major, sub) of .mpy files it loads
    mpy_arch: str | None  # native architecture, as an mpy-cross -march name
    machine: str  # sys.implementation._machine

    @property
    def version_text(self) -> str:
        numbers = ".".join(str(v) for v in self.version if isinstance(v, int))
        tags = "-".join(str(v) for v in self.version if isinstance(v, str) and v)
        return f"{numbers}-{tags}" if tags else numbers


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str


# Board-side helpers, sent with the commands that use them (so a session never depends on
# state left by an earlier one).
_HASH_FN = """
import os, hashlib, binascii
def _fl_sha(p):
    h = hashlib.sha256()
    b = bytearray(1024)
    m = memoryview(b)
    n = 0
    with open(p, 'rb') as f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            h.update(m[:k])
            n += k
    return n, binascii.hexlify(h.digest()).decode()
"""

_LIST = _HASH_FN + """
def _fl_visit(p):
    try:
        mode = os.stat(p)[0]
    except OSError:
        return
    if mode & 0x4000:
        for e in os.ilistdir(p):
            _fl_visit(p + '/' + e[0])
    else:
        n, h = _fl_sha(p)
        print(repr((p, n, h)))
for _p in {paths!r}:
    _fl_visit(_p)
"""

_INFO = """
import sys
_i = sys.implementation
print(repr((sys.platform, tuple(_i.version), _i.name, getattr(_i, '_mpy', 0), getattr(_i, '_machine', ''))))
"""

_CLOSE_PENDING = """
try:
    _fl_f.close()
except Exception:
    pass
"""

_COMMIT = """
import os
for _t, _p in {pairs!r}:
    try:
        os.rename(_t, _p)
    except OSError:
        # FAT will not rename over an existing file
        try:
            os.remove(_p)
        except OSError:
            pass
        os.rename(_t, _p)
for _p in {remove!r}:
    try:
        os.remove(_p)
    except OSError:
        pass
"""

_MKDIR = """
import os
_d = ''
for _c in {parts!r}:
    _d = _d + '/' + _c if _d else _c
    try:
        os.mkdir(_d)
    except OSError:
        if not os.stat(_d)[0] & 0x4000:
            raise OSError(17, 'a file is in the way: ' + _d)
"""


def _board_error(port: str, what: str, board_traceback: str) -> DeviceError:
    last = board_traceback.strip().splitlines()[-1] if board_traceback.strip() else "error"
    if "ENOSPC" in board_traceback or f"Errno {ENOSPC}" in board_traceback or last.endswith(f" {ENOSPC}"):
        return DeviceFull(f"the board's filesystem is full while {what}: erase it with "
                          "`firelink flash` (without --app-only), which also reinstalls MicroPython")
    return DeviceCommandFailed(f"the board reported an error while {what}: {last}", board_traceback)


class _BoundedTransport(SerialTransport):  # type: ignore[misc]  # mpremote ships no types
    """mpremote's transport with every wait capped: some of its waits are fixed at 10 s or
    unbounded (`timeout=None`); here none is longer than `max_silence_s` of silence."""

    max_silence_s = TIMEOUT_S

    def read_until(self, min_num_bytes: int, ending: bytes, timeout: float | None = 10,
                   data_consumer: Callable[[bytes], None] | None = None,
                   timeout_overall: float | None = None) -> bytes:
        if timeout is None or timeout > self.max_silence_s:
            timeout = self.max_silence_s
        return bytes(super().read_until(min_num_bytes, ending, timeout, data_consumer, timeout_overall))


class Device:
    """A board in raw REPL. Open with `Device.open(port)` (or `wait_for_repl`), use as a
    context manager; closing leaves the board at its normal REPL prompt."""

    def __init__(self, port: str, transport: SerialTransport, timeout_s: float = TIMEOUT_S) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self._t = transport
        self.bytes_sent = 0

    # --- session ---
    @classmethod
    def open(cls, port: str, baudrate: int = BAUDRATE, timeout_s: float = TIMEOUT_S,
             enter_timeout_s: float = ENTER_TIMEOUT_S) -> Device:
        """Opens the port, interrupts whatever runs (Ctrl-C) and enters the raw REPL."""
        check_port(port)
        try:
            # Until the prompt shows, no wait may exceed enter_timeout_s (on a pty mpremote
            # blocks in serial.read, so the port's own timeout must be short too).
            transport = _BoundedTransport(port, baudrate=baudrate, timeout=enter_timeout_s)
        except TransportError as e:
            raise _open_error(port, e) from None
        transport.max_silence_s = enter_timeout_s
        seen = io.StringIO()
        try:
            # One Ctrl-C only (mpremote's own): a second one while main.py is still handling
            # the first kills the unix port (its SIGINT handler gives up on a pending
            # KeyboardInterrupt), which a virtual device takes as a power cut.
            with redirect_stdout(seen):  # mpremote prints what it saw before raising
                transport.enter_raw_repl(soft_reset=False, timeout_overall=enter_timeout_s)
        except TransportError:
            _close_quietly(transport)
            raise _no_repl(port, enter_timeout_s, seen.getvalue()) from None
        except (serial.SerialException, OSError) as e:
            _close_quietly(transport)
            raise DeviceLost(port, "entering the REPL", str(e)) from None
        transport.serial.timeout = timeout_s
        transport.max_silence_s = timeout_s
        device = cls(port, transport, timeout_s)
        try:
            device._exec("import sys, os\nif sys.platform == 'esp32':\n os.chdir('/')", "starting")
        except DeviceError:
            device.close()
            raise
        return device

    def close(self) -> None:
        try:
            if self._t.in_raw_repl:
                self._t.exit_raw_repl()
        except (serial.SerialException, OSError):
            pass
        _close_quietly(self._t)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _exec(self, code: str, what: str, timeout_s: float | None = None) -> str:
        data = code.encode()
        try:
            with redirect_stdout(io.StringIO()):
                out, err = self._t.exec_raw(data, timeout=timeout_s or self.timeout_s)
        except TransportError as e:
            raise DeviceTimeout(self.port, what, str(e)) from None
        except struct.error:  # raw-paste window header never came
            raise DeviceTimeout(self.port, what, "no raw-paste reply") from None
        except (serial.SerialException, OSError) as e:
            raise DeviceLost(self.port, what, str(e)) from None
        self.bytes_sent += len(data)
        if err:
            raise _board_error(self.port, what, err.decode(errors="replace"))
        return str(out.decode(errors="replace"))

    def run(self, code: str, timeout_s: float | None = None) -> str:
        """Runs MicroPython code on the board and returns what it printed; raises
        DeviceCommandFailed (with the board's traceback) if it raised."""
        return self._exec(code, "running a command", timeout_s)

    # --- queries ---
    def info(self) -> DeviceInfo:
        """What runs on the board; NotMicroPython if it is not MicroPython."""
        out = self._exec(_INFO, "asking what it runs")
        try:
            platform, version, name, mpy, machine = ast.literal_eval(out.strip().splitlines()[-1])
        except (ValueError, SyntaxError, IndexError):
            raise NotMicroPython(f"the board on {self.port} answered {out.strip()[:80]!r} instead of "
                                 "its platform: reflash MicroPython (`firelink flash`)") from None
        if name != "micropython":
            raise NotMicroPython(f"the board on {self.port} runs {name}, not MicroPython: reflash it "
                                 "with `firelink flash --port … --firmware <MicroPython .bin>`")
        return DeviceInfo(platform=platform, version=tuple(version),
                          mpy_version=(mpy & 0xFF, (mpy >> 8) & 3),
                          mpy_arch=arch_for_mpy_code(mpy >> 10), machine=machine)

    def list_files(self, paths: Iterable[str]) -> dict[str, RemoteFile]:
        """Every file at or under `paths` (files or directories; missing ones are skipped),
        with its size and sha256 computed on the board."""
        wanted = list(paths)
        if not wanted:
            return {}
        out = self._exec(_LIST.format(paths=wanted), "hashing its files")
        found: dict[str, RemoteFile] = {}
        for line in out.splitlines():
            line = line.strip()
            if line:
                path, size, digest = ast.literal_eval(line)
                found[path] = RemoteFile(path, size, digest)
        return found

    def sha256(self, path: str) -> str | None:
        """The file's sha256 (hex) on the board, None when it does not exist or is a directory."""
        entry = self.list_files([path]).get(path)
        return entry.sha256 if entry else None

    def read_file(self, path: str) -> bytes:
        code = (f"import binascii\nwith open({path!r}, 'rb') as _f:\n while True:\n"
                "  _b = _f.read(1024)\n  if not _b:\n   break\n  print(binascii.b2a_base64(_b).decode(), end='')")
        out = self._exec(code, f"reading {path}")
        return b"".join(binascii.a2b_base64(line) for line in out.split() if line)

    # --- changes ---
    def mkdir_p(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts:
            self._exec(_MKDIR.format(parts=parts), f"creating {path}/")

    def remove(self, path: str) -> None:
        """Removes a file; a missing file is not an error."""
        self._exec(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass", f"removing {path}")

    def stage_file(self, path: str, data: bytes, on_chunk: Callable[[int], None] | None = None,
                   chunk_size: int = WRITE_CHUNK) -> str:
        """Writes `data` to `<path>.tmp` and checks its sha256 on the board; returns that
        path. `on_chunk(n)` after each n bytes written. `commit` puts it in place."""
        tmp = path + ".tmp"
        expected = hashlib.sha256(data).hexdigest()
        what = f"writing {path}"
        self._exec(_CLOSE_PENDING + f"import binascii\n_fl_f = open({tmp!r}, 'wb')\n_fl_w = _fl_f.write\n"
                   "_fl_d = binascii.a2b_base64", what)
        try:
            for i in range(0, len(data), chunk_size):
                chunk = data[i:i + chunk_size]
                self._exec(f"_fl_w(_fl_d({binascii.b2a_base64(chunk, newline=False)!r}))", what)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            out = self._exec(_HASH_FN + f"_fl_f.close()\nprint(_fl_sha({tmp!r})[1])", f"checking {path}")
        except DeviceError as e:
            if not isinstance(e, (DeviceTimeout, DeviceLost)):
                self._discard(tmp)
            raise
        got = out.strip().splitlines()[-1] if out.strip() else ""
        if got != expected:
            self._discard(tmp)
            raise HashMismatch(f"{path} arrived damaged on the board (sha256 {got[:12]}…, expected "
                               f"{expected[:12]}…): run again; if it repeats, try a shorter USB cable")
        return tmp

    def discard(self, path: str) -> None:
        """Removes a staged `<path>.tmp` that will not be committed, closing its write if one was
        cut short; a missing file is not an error, and a board that no longer answers is left as is."""
        self._discard(path + ".tmp")

    def _discard(self, tmp: str) -> None:
        try:
            self._exec(_CLOSE_PENDING + f"import os\ntry:\n os.remove({tmp!r})\nexcept OSError:\n pass",
                       f"removing {tmp}")
        except DeviceError:
            pass

    def commit(self, paths: Iterable[str], remove: Iterable[str] = ()) -> None:
        """Renames each staged `<path>.tmp` over `<path>` and removes `remove`, in one command,
        so the switch from the old files to the new ones is as short as it can be."""
        pairs = [(p + ".tmp", p) for p in paths]
        self._exec(_COMMIT.format(pairs=pairs, remove=list(remove)), "putting the new files in place")

    def write_file(self, path: str, data: bytes, on_chunk: Callable[[int], None] | None = None) -> None:
        """Atomic write of one file: stage to `<path>.tmp`, verify its hash, rename."""
        self.stage_file(path, data, on_chunk)
        self.commit([path])

    def reboot(self) -> None:
        """Restarts the board so main.py runs (machine.reset on an ESP32; on the unix port a
        soft reset, which ends the process: its supervisor starts it again). Closes the session."""
        try:
            platform = self._exec("import sys\nprint(sys.platform)", "asking its platform").strip()
            if platform == "esp32":
                self._t.exec_raw_no_follow(b"import machine\nmachine.reset()")
            else:
                self._t.exit_raw_repl()
                self._t.serial.write(b"\x04")
        except (TransportError, struct.error, serial.SerialException, OSError):
            pass  # the board went down as asked, or was already gone
        finally:
            _close_quietly(self._t)


def _close_quietly(transport: SerialTransport) -> None:
    # mpremote's close() drops RTS/DTR first, which fails (EIO, ENOTTY) on a line that is gone.
    try:
        transport.close()
    except (serial.SerialException, OSError):
        try:
            transport.serial.close()
        except (serial.SerialException, OSError):
            pass


def _open_error(port: str, e: Exception) -> Exception:
    # SerialTransport hides the OSError; open the port once more to learn why.
    try:
        serial.Serial(port, exclusive=True).close()
    except (serial.SerialException, OSError) as why:
        return classify(port, why) or DeviceLost(port, "opening the port", str(why))
    return PortBusy(port)


def _no_repl(port: str, timeout_s: float, seen: str) -> NotMicroPython:
    text = seen.strip()
    hint = ""
    if "invalid header: 0xffffffff" in text:
        hint = " (its flash is empty)"
    elif text:
        hint = f" (it sent: {text[-120:]!r})"
    return NotMicroPython(f"the board on {port} does not answer as MicroPython: no REPL prompt within "
                          f"{timeout_s:g} s{hint}. Flash MicroPython first: `firelink flash --port {port} "
                          "--firmware <ESP32_GENERIC-….bin>`; if it was just flashed, press EN and try again")


def wait_for_repl(port: str, timeout_s: float = 30.0, baudrate: int = BAUDRATE,
                  poll_s: float = 0.5) -> Device:
    """Opens the board as soon as its MicroPython REPL answers (after a flash and reset it
    boots, formats its filesystem the first time, then prompts). Raises the last failure
    when `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return Device.open(port, baudrate=baudrate, enter_timeout_s=min(3.0, timeout_s))
        except (NotMicroPython, DeviceTimeout, DeviceLost, PortError):
            # USB-serial bridges re-enumerate after a reset: the port may vanish briefly.
            if time.monotonic() + poll_s >= deadline:
                raise
            time.sleep(poll_s)
