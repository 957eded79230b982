"""Talks to a FireLink device's diagnostics console over its serial port (issue 12).

The firmware answers request lines `?<tag> <verb> [args]` with frames
`#FL1 <tag> <k>/<n> <crc32> <chunk>` printed among its log lines (fl/diag.py, docs/diag.md).
`DiagLink` opens the port without touching DTR/RTS (an ESP32 board's auto-reset circuit fires
when they change, and a reset is exactly what a technician watching a live system must not
cause), reads everything in one thread, keeps the log lines apart from the frames, and
answers `ask()` with the reassembled JSON object or a specific error:

  PortBusy        another program holds the port (a monitor, mpremote, a second diag)
  InBootloader    the ESP32 ROM is waiting for a download (BOOT held, or esptool left it so)
  AtRepl          MicroPython's prompt answers: the firmware is not running
  FirmwareTooOld  the firmware prints log lines but does not answer the protocol
  NoAnswer        nothing FireLink-like answered within the time
  DeviceRefused   the device answered `ok: false` (its message is kept)

It never sends Ctrl-C or Ctrl-D: the firmware keeps running while it is attached, on a board
and on a virtual device's pty alike.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Callable

import serial

from firelink.errors import FAILED, NOT_DONE, FireLinkError

PROTO = 1
READ_TIMEOUT_S = 0.1
ANSWER_TIMEOUT_S = 5.0
LOG_KEEP = 500
_FRAME = re.compile(r"^#FL1 ([A-Za-z0-9-]{1,8}) (\d+)/(\d+|\+) ([0-9a-f]{8}) (.*)$")
MAX_FRAMES = 10000
_LOG = re.compile(r"^\d+ (DEBUG|INFO|WARN|ERROR) ")
# What the ESP32's ROM prints when it boots into the serial bootloader.
_BOOTLOADER = re.compile(r"waiting for download|boot:0x[0-9a-f]+ \(DOWNLOAD", re.I)
SECRET_MASK = "***"


class DiagError(FireLinkError):
    """A diagnostics failure with a message for the user (and what to do). The port or the
    device's console cannot be used: exit status 2; a refusal by the device: 1."""

    exit_code = NOT_DONE


class PortBusy(DiagError):
    pass


class PortMissing(DiagError):
    pass


class InBootloader(DiagError):
    pass


class AtRepl(DiagError):
    pass


class FirmwareTooOld(DiagError):
    pass


class NoAnswer(DiagError):
    pass


class BadFrame(DiagError):
    pass


class DeviceRefused(DiagError):
    exit_code = FAILED


def resolve_port(port: str) -> str:
    """A serial port, or a virtual device's directory (its `tty` link)."""
    p = Path(port)
    if p.is_dir():
        tty = p / "tty"
        if not tty.exists():
            raise PortMissing(f"{port} is a directory without a tty link: is the virtual device running? "
                              f"(firelink virtual start --dir {port})")
        return os.path.realpath(tty)
    return port


def open_port(port: str, baudrate: int = 115200) -> serial.Serial:
    """Opens the port with DTR and RTS left de-asserted, exclusively."""
    ser = serial.Serial()
    ser.port = resolve_port(port)
    ser.baudrate = baudrate
    ser.timeout = READ_TIMEOUT_S
    ser.exclusive = True
    # Set before open(): pyserial applies them as the port opens, so the lines never pulse.
    ser.dtr = False
    ser.rts = False
    try:
        ser.open()
    except serial.SerialException as e:
        text = str(e)
        if "exclusively lock" in text or "Resource temporarily unavailable" in text or "busy" in text.lower():
            raise PortBusy(f"{port} is busy: another program has it open (a monitor, mpremote, "
                           f"firelink diag, a virtual device's console follower); close it and try again") from e
        if "No such file" in text or "could not open port" in text:
            raise PortMissing(f"{port}: no such serial port ({text}); list ports with "
                              f"`python -m serial.tools.list_ports`") from e
        raise DiagError(f"{port}: cannot open: {text}") from e
    return ser


class DiagLink:
    def __init__(self, port: str, baudrate: int = 115200, on_log: Callable[[str], None] | None = None,
                 ser: Any = None) -> None:
        self.port = port
        self._ser = ser if ser is not None else open_port(port, baudrate)
        self._tags = (f"h{n}" for n in itertools.count(1))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._parts: dict[str, dict[int, str]] = {}
        self._done: dict[str, Any] = {}
        self.log: deque[str] = deque(maxlen=LOG_KEEP)
        self.other: deque[str] = deque(maxlen=50)  # neither frames nor log lines (REPL, ROM, noise)
        self.bad_frames = 0
        self.unreadable = 0
        self.on_log = on_log
        self.error: str | None = None
        self._partial = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"diag {port}", daemon=True)
        self._thread.start()

    # --- reading ---
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._ser.read(4096)
            except (serial.SerialException, OSError) as e:
                with self._cond:
                    self.error = str(e)
                    self._cond.notify_all()
                return
            if not data:
                # A prompt has no newline: look at what is pending too.
                if self._partial.endswith(b">>> ") or self._partial.endswith(b"> "):
                    self._take_line(self._partial)
                    self._partial = b""
                continue
            data = self._partial + data
            *lines, self._partial = data.split(b"\n")
            if len(self._partial) > 65536:  # binary noise without newlines: do not grow for ever
                self._partial = b""
            for raw in lines:
                self._take_line(raw)

    def _take_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        m = _FRAME.match(line)
        with self._cond:
            if m:
                tag, k, crc, chunk = m.group(1), int(m.group(2)), m.group(4), m.group(5)
                n = None if m.group(3) == "+" else int(m.group(3))  # "+": more follow
                if zlib.crc32(chunk.encode()) != int(crc, 16) or not 1 <= k <= (n or k) <= MAX_FRAMES:
                    self.bad_frames += 1
                    self._done.setdefault(tag, BadFrame(f"a damaged frame (checksum) in the answer to {tag}"))
                    self._cond.notify_all()
                    return
                parts = self._parts.setdefault(tag, {})
                parts[k] = chunk
                if n is not None and len(parts) == n:
                    del self._parts[tag]
                    try:
                        self._done[tag] = json.loads("".join(parts[i] for i in range(1, n + 1)))
                    except ValueError:
                        self._done[tag] = BadFrame(f"the answer to {tag} is not JSON")
                    self._cond.notify_all()
                return
            if not line:
                return
            if _LOG.match(line):
                self.log.append(line)
                callback = self.on_log
            else:
                self.other.append(line)
                callback = None
                self._cond.notify_all()
        if callback:
            callback(line)

    # --- asking ---
    def ask(self, request: str, timeout_s: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
        """Sends one request and returns the device's answer (a dict with ok=True), or raises."""
        if "\n" in request or "\r" in request:
            raise ValueError("one line per request")
        tag = next(self._tags)
        with self._cond:
            self._done.pop(tag, None)
        self._ser.write(f"?{tag} {request}\n".encode("ascii"))
        self._ser.flush()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while tag not in self._done:
                if "-" in self._done:
                    # An answer to a line the console could not read (noise, someone typing):
                    # ours are always well formed, so it is someone else's. Counted, not raised.
                    self._done.pop("-")
                    self.unreadable += 1
                if self.error:
                    raise DiagError(f"{self.port}: the port went away: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._why_silent()
                self._cond.wait(min(left, 0.2))
            answer = self._done.pop(tag)
        if isinstance(answer, Exception):
            raise answer
        if not isinstance(answer, dict):
            raise BadFrame(f"the answer to {request!r} is not a JSON object")
        if not answer.get("ok"):
            raise DeviceRefused(f"{request.split(' ')[0]}: {answer.get('error', 'refused')}")
        return answer

    def _why_silent(self) -> DiagError:
        other = "\n".join(self.other)
        if _BOOTLOADER.search(other):
            return InBootloader(f"{self.port}: the board is in its ROM bootloader (waiting for download): "
                                "release BOOT/IO0 and press EN (reset), or run `firelink flash` if that was the plan")
        if ">>>" in other or "raw REPL" in other:
            return AtRepl(f"{self.port}: MicroPython's REPL answers, the firmware is not running: press EN "
                          "(reset) or, on a virtual device, `firelink virtual reset`")
        if self.log:
            return FirmwareTooOld(f"{self.port}: the firmware prints its log but does not answer the diagnostics "
                                  f"protocol (v{PROTO}): it is too old; update it with `firelink flash`")
        return NoAnswer(f"{self.port}: no answer from a FireLink device (wrong port, wrong baud rate, or the board "
                        "is off?)")

    def hello(self, timeout_s: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
        answer = self.ask("hello", timeout_s)
        if answer.get("proto") != PROTO:
            raise FirmwareTooOld(f"{self.port}: the firmware speaks diagnostics protocol v{answer.get('proto')}, "
                                 f"this tool v{PROTO}: update the firmware or the tools")
        return answer

    def close(self) -> None:
        self._stop.set()
        self._thread.join(READ_TIMEOUT_S * 10)
        try:
            self._ser.close()
        except (serial.SerialException, OSError):
            pass

    def __enter__(self) -> DiagLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def level_of(line: str) -> str:
    m = _LOG.match(line)
    return m.group(1) if m else ""


def snapshot(link: DiagLink) -> dict[str, Any]:
    """Everything the live view shows, in one answer."""
    return link.ask("all")


def report(link: DiagLink) -> dict[str, Any]:
    """The support bundle's content: identity, every part, config (masked), the last crash,
    the log lines kept on the device and those seen here."""
    out: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "port": link.port}
    out.update({k: v for k, v in link.ask("all").items() if k != "ok"})
    out["log"] = link.ask("log 10").get("log", [])
    out["config"] = mask(link.ask("config").get("config", {}))
    out["crash"] = link.ask("crash").get("crash")
    out["host_log"] = list(link.log)[-100:]
    return out


_SECRET_WORDS = ("password", "secret", "key", "token", "cert", "tls_ca")


def mask(obj: Any) -> Any:
    """A second line of defence on top of the firmware's own masking: any key that looks like a
    credential has its value replaced, whatever the device sent."""
    if isinstance(obj, dict):
        return {k: (SECRET_MASK if any(w in str(k).lower() for w in _SECRET_WORDS) and v not in (None, "", False)
                    and not isinstance(v, (dict, list)) else mask(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask(v) for v in obj]
    return obj


def report_markdown(rep: dict[str, Any]) -> str:
    ident = rep.get("id", {})
    lines = [f"# FireLink support report: {ident.get('id', '?')}", "",
             f"Generated {rep.get('generated_at')} from `{rep.get('port')}`.", "", "## Identity", ""]
    lines += [f"- {k}: `{v}`" for k, v in ident.items()]
    lines += ["", "## Inputs", "", "| input | kind | state | raw | EOL V | debouncing |", "|---|---|---|---|---|---|"]
    for i in rep.get("inputs", []):
        lines.append(f"| {i.get('name')} | {i.get('kind')} | {i.get('state')} | {i.get('raw', '')} | "
                     f"{i.get('eol_v', '')} | {'yes' if i.get('debouncing') else ''} |")
    paths = rep.get("paths", {})
    lines += ["", "## Paths", ""]
    for p in paths.get("paths", []):
        lines.append(f"- {p.get('name')}: {'up' if p.get('up') else 'DOWN'}"
                     f"{' (current)' if p.get('current') else ''}, signal {p.get('signal_dbm')} dBm, "
                     f"ip {p.get('ip')}, failures {p.get('failures')}")
    m = paths.get("mqtt", {})
    lines.append(f"- broker {m.get('broker')}: {'connected' if m.get('connected') else 'NOT connected'}, "
                 f"connects {m.get('connects')}, last error `{m.get('last_error') or '-'}`")
    ob = rep.get("outbox", {})
    lines += ["", "## Outbox", "", f"fire {ob.get('fire')}, fault {ob.get('fault')}, status {ob.get('status')} "
              f"(depth {ob.get('depth')}/{ob.get('capacity')}, in RAM {ob.get('in_ram')}, dropped {ob.get('dropped')})"]
    lines += ["", "## Active faults", ""] + ([f"- {k}: {v}" for k, v in rep.get("faults", {}).items()] or ["none"])
    lines += ["", "## Memory and clock", "", f"- {rep.get('mem')}", f"- {rep.get('clock')}"]
    crash = rep.get("crash")
    lines += ["", "## Last crash", ""]
    if crash:
        lines += [f"part `{crash.get('part')}`, firmware {crash.get('fw')}, after {crash.get('uptime_s')} s up "
                  f"(boot {crash.get('boot')}); reset that followed: `{crash.get('reset_after', 'not yet')}`", "",
                  "```", crash.get("traceback", "").rstrip(), "```"]
    else:
        lines.append("none recorded")
    lines += ["", "## Config (secrets masked)", "", "```json", json.dumps(rep.get("config"), indent=2), "```",
              "", "## Last log lines (device)", "", "```"] + list(rep.get("log", [])) + ["```", ""]
    return "\n".join(lines)


def write_report(rep: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"firelink-report-{rep.get('id', {}).get('id', 'device')}-{time.strftime('%Y%m%d-%H%M%S')}"
    jpath, mpath = directory / f"{name}.json", directory / f"{name}.md"
    jpath.write_text(json.dumps(rep, indent=2) + "\n")
    mpath.write_text(report_markdown(rep))
    return jpath, mpath
