"""A network path's faults on the loopback: a TCP proxy in front of the broker, one per path.

The simulated board routes each path's sockets through its own proxy (fl/hal/sim.py), so a
test or `firelink virtual link wifi stall` breaks one path and not the other. Modes, switched
at any moment:

  pass     bytes flow both ways
  stall    sockets stay open and every byte is dropped silently (a dead radio or WAN: nobody
           is told; only the peers' own supervision can notice)
  reset    every open connection is reset, and so is each new one
  refuse   new connections are refused (RST at once); open ones are reset
  delay    each chunk waits `delay_s` before it goes on (a slow path)
  flap     alternates pass and reset every `flap_s`

Bytes are counted per direction (`up`, `down`) since start: what the path would bill.
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time

MODES = ("pass", "stall", "reset", "refuse", "delay", "flap")


class FaultProxy:
    def __init__(self, target: tuple[str, int], name: str = "path") -> None:
        self.target = target
        self.name = name
        self.mode = "pass"
        self.delay_s = 2.0
        self.flap_s = 5.0
        self.up = 0  # device → broker bytes delivered
        self.down = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stop = threading.Event()
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(16)
        self.port = self._lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: str, delay_s: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"proxy mode {mode!r}: want one of {', '.join(MODES)}")
        if delay_s is not None:
            self.delay_s = delay_s
        self.mode = mode
        if mode in ("reset", "refuse"):
            self.reset_all()

    def effective_mode(self) -> str:
        if self.mode == "flap":
            return "pass" if int(time.monotonic() / self.flap_s) % 2 == 0 else "reset"
        return self.mode

    def reset_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _rst(a)
            _rst(b)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._stop.set()
        self.reset_all()
        try:
            self._lsock.close()
        except OSError:
            pass
        self._thread.join(2)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self._lsock], [], [], 0.05)
            if not r:
                continue
            try:
                dev, _ = self._lsock.accept()
            except OSError:
                return
            if self.effective_mode() in ("reset", "refuse"):
                _rst(dev)
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                _rst(dev)
                continue
            self.connections += 1
            with self._lock:
                self._pairs.append((dev, up))
            threading.Thread(target=self._pump, args=(dev, up), daemon=True).start()

    def _pump(self, dev: socket.socket, up: socket.socket) -> None:
        socks = [dev, up]
        try:
            while not self._stop.is_set():
                with self._lock:
                    if (dev, up) not in self._pairs:
                        return
                mode = self.effective_mode()
                if mode == "reset":
                    self._drop(dev, up)
                    return
                try:
                    r, _, _ = select.select(socks, [], [], 0.05)
                except (OSError, ValueError):
                    return
                for s in r:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    mode = self.effective_mode()
                    if not data and mode == "stall":
                        # A dead path carries no FIN either: the other side is not told.
                        socks.remove(s)
                        if not socks:
                            self._drop(dev, up, close=True)
                            return
                        continue
                    if not data:
                        self._drop(dev, up, close=True)
                        return
                    if mode == "stall":
                        continue  # dropped without a word
                    if mode == "delay":
                        time.sleep(self.delay_s)
                    other = up if s is dev else dev
                    try:
                        other.sendall(data)
                    except OSError:
                        self._drop(dev, up)
                        return
                    if s is dev:
                        self.up += len(data)
                    else:
                        self.down += len(data)
        finally:
            pass

    def _drop(self, dev: socket.socket, up: socket.socket, close: bool = False) -> None:
        with self._lock:
            if (dev, up) in self._pairs:
                self._pairs.remove((dev, up))
        for s in (dev, up):
            if close:
                try:
                    s.close()
                except OSError:
                    pass
            else:
                _rst(s)


def _rst(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
