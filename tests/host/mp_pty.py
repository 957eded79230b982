"""A MicroPython REPL on a serial line, without hardware: the unix port on a pseudo-terminal.

`micropython -i` runs on one pty (its controlling terminal: ONLCR and ECHO|ICANON cleared,
ISIG kept, as on a board's UART), in its own directory, which is its filesystem. A second
pty is the "cable": a relay thread copies bytes between the two masters, and clients
(mpremote's SerialTransport) open the second pty's slave, `PtyBoard.port`. The relay can
be cut (`cut()`), as when a cable is pulled, and restored (`restore()`).
"""
from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
import threading
import time
from pathlib import Path

from tests.tooling import micropython_binary


def _line_like(fd: int) -> None:
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.ONLCR
    attrs[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _take_terminal() -> None:  # runs in the child: the pty becomes its controlling terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyBoard:
    def __init__(self, directory: Path, heapsize: str = "2m") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._dev_master, dev_slave = pty.openpty()
        self._host_master, self._host_slave = pty.openpty()
        _line_like(dev_slave)
        _line_like(self._host_slave)
        env = dict(os.environ, MICROPYPATH=":.frozen")  # sys.path ["", ".frozen"], as on a board
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={heapsize}", "-i"],
            stdin=dev_slave, stdout=dev_slave, stderr=dev_slave, cwd=self.directory, env=env,
            start_new_session=True, preexec_fn=_take_terminal, close_fds=True)
        os.close(dev_slave)
        self.port = os.ttyname(self._host_slave)
        self._connected = threading.Event()
        self._connected.set()
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._run_relay, daemon=True)
        self._relay.start()
        self._wait_for_prompt()

    def _wait_for_prompt(self, timeout_s: float = 10.0) -> None:
        # The banner goes to the host side; a client entering the raw REPL flushes it anyway.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"micropython exited with {self.proc.returncode}")
            if self.seen_prompt:
                return
            time.sleep(0.02)
        raise RuntimeError("micropython printed no prompt")

    seen_prompt = False

    def _run_relay(self) -> None:
        dev, host = self._dev_master, self._host_master
        for fd in (dev, host):
            os.set_blocking(fd, False)
        pending = {dev: bytearray(), host: bytearray()}  # bytes waiting to be written to fd
        other = {dev: host, host: dev}
        while not self._stop.is_set():
            writable = [fd for fd, buf in pending.items() if buf]
            try:
                ready, can_write, _ = select.select([dev, host], writable, [], 0.1)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # nobody on the other end yet, or the process ended
                    data = b""
                if not data:
                    continue
                if fd == dev and b">>> " in data:
                    self.seen_prompt = True
                # while cut, bytes in both directions are lost, as on a pulled cable
                if self._connected.is_set():
                    buf = pending[other[fd]]
                    buf += data
                    del buf[:-self.MAX_PENDING]  # nobody reading: keep the newest, like a UART
            for fd in can_write:
                try:
                    n = os.write(fd, pending[fd])
                except BlockingIOError:
                    continue
                except OSError:
                    pending[fd].clear()
                    continue
                del pending[fd][:n]

    MAX_PENDING = 1 << 20

    def cut(self) -> None:
        self._connected.clear()

    def restore(self) -> None:
        self._connected.set()

    def close(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        self._relay.join(timeout=2)
        for fd in (self._dev_master, self._host_master, self._host_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
