"""A serial port read line by line on a thread of its own, for tools that watch a running board.

The console tap (provisioning's "why is it not online") and the diagnostics link both leave the
board's firmware running and only listen, so both need the same reader: every read waits at most
the port's timeout, so `close()` returns promptly; a line split across reads is joined; binary
noise without newlines is dropped past MAX_PARTIAL rather than kept for ever; the board going away
(USB re-enumerated, cable pulled) ends the reader with the reason in `error`.
"""
from __future__ import annotations

import threading
from typing import Any

import serial

MAX_PARTIAL = 65536


class SerialLines:
    """Subclasses say what a line means (`_take_line`) and, if they care, what a quiet read
    means (`_quiet`: a prompt has no newline) and how a lost port is announced (`_lost`)."""

    def __init__(self, ser: Any, name: str) -> None:
        self._ser = ser
        self._partial = b""
        self._stop = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._ser.read(4096)
            except (serial.SerialException, OSError) as e:
                self._lost(str(e))
                return
            if not data:
                self._quiet()
                continue
            data = self._partial + data
            *lines, self._partial = data.split(b"\n")
            if len(self._partial) > MAX_PARTIAL:
                self._partial = b""
            for raw in lines:
                self._take_line(raw)

    def _take_line(self, raw: bytes) -> None:
        raise NotImplementedError

    def _quiet(self) -> None:
        pass

    def _lost(self, why: str) -> None:
        self.error = why

    def close(self) -> None:
        self._stop.set()
        timeout = getattr(self._ser, "timeout", None) or 0.2
        self._thread.join(timeout * 10)
        try:
            self._ser.close()
        except (serial.SerialException, OSError):
            pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
