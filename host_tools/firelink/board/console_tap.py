"""Listens to a board's serial console without interrupting it.

After provisioning reboots a board, what it prints (config problems, "broker refused
connection: not authorized", TLS failures) is the quickest way to say why it does not come
online. This tap only reads: it never sends a byte, so main.py keeps running (the REPL is
entered only by Ctrl-C, which device.py sends). The port is opened the way mpremote opens it,
so DTR/RTS stay as they are during a device.py session and an ESP32's auto-reset circuit does
not fire. Lines are kept in a bounded buffer by a reader thread; every read waits at most
READ_TIMEOUT_S, and `close()` returns within that.
"""
from __future__ import annotations

import re
import threading
from collections import deque

import serial

READ_TIMEOUT_S = 0.2
MAX_LINES = 400
# Log lines are `<ms> <LEVEL> <source>: <message>` (fl/log.py).
_PROBLEM = re.compile(r"^\d+ (ERROR|WARN) ")


class ConsoleTap:
    def __init__(self, port: str, baudrate: int = 115200) -> None:
        self.port = port
        self._ser = serial.Serial(port, baudrate=baudrate, timeout=READ_TIMEOUT_S, exclusive=True)
        self._lines: deque[str] = deque(maxlen=MAX_LINES)
        self._partial = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"console-tap {port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._ser.read(4096)
            except (serial.SerialException, OSError) as e:
                self.error = str(e)  # the board went away (USB re-enumerated, cable)
                return
            if not data:
                continue
            data = self._partial + data
            *complete, self._partial = data.split(b"\n")
            with self._lock:
                for raw in complete:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if line:
                        self._lines.append(line)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def problems(self, limit: int = 5) -> list[str]:
        """The last `limit` distinct ERROR/WARN lines, without their timestamps."""
        seen: list[str] = []
        for line in reversed(self.lines()):
            if _PROBLEM.match(line):
                text = line.split(" ", 1)[1]
                if text not in seen:
                    seen.append(text)
            if len(seen) >= limit:
                break
        return list(reversed(seen))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(READ_TIMEOUT_S * 5)
        try:
            self._ser.close()
        except (serial.SerialException, OSError):
            pass

    def __enter__(self) -> ConsoleTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
