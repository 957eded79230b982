"""The device's way to the broker, made faulty on demand: a TCP proxy the suite controls.

A board on a test jig reaches the suite's broker through this proxy (its config names the
proxy's address), so link faults are real TCP events on the wire without an access point's API
(issue 13); the virtual device goes through it the same way. Modes, switched at any moment:

  pass     bytes flow both ways
  delay    each chunk is held `delay_s` before it goes on (a slow path: 4G, a congested uplink)
  stall    nothing goes on and nothing is lost: held bytes flow again when the mode changes
           (a path that stops answering; the peers' keepalives notice, nobody is told)
  reset    every open connection is reset (RST both ways) and so is each new one
  refuse   nothing listens: connecting fails at once (the broker's host up, its port closed)

`cut()` is reset then refuse: the broker unreachable, both ends told at once.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

from firelink.site.broker import free_port

MODES = ("pass", "delay", "stall", "reset", "refuse")
_POLL_S = 0.01


class LinkProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or free_port()
        self.mode = "pass"
        self.delay_s = 0.0
        self.connections = 0  # accepted and connected through, since start
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._listening = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifetime ---
    def __enter__(self) -> LinkProxy:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> LinkProxy:
        self._thread = threading.Thread(target=self._accept_loop, name="link-proxy", daemon=True)
        self._thread.start()
        self._wait_listening(True)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._reset_all()

    # --- faults ---
    def set_mode(self, mode: str, delay_s: float = 0.0) -> None:
        """Switches the mode; returns once it holds (a refused port is closed, open
        connections reset)."""
        if mode not in MODES:
            raise ValueError(f"unknown link mode {mode!r}: one of {', '.join(MODES)}")
        if mode == "delay" and delay_s <= 0:
            raise ValueError("delay needs delay_s > 0")
        with self._lock:
            self.mode, self.delay_s = mode, delay_s if mode == "delay" else 0.0
        if mode == "reset":
            self._reset_all()
        self._wait_listening(mode != "refuse")

    def cut(self) -> None:
        """The broker unreachable: open connections reset, new ones refused."""
        self.set_mode("reset")
        self.set_mode("refuse")

    def restore(self) -> None:
        self.set_mode("pass")

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # --- the proxy ---
    def _wait_listening(self, listening: bool, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._listening != listening:
                left = deadline - time.monotonic()
                if left <= 0 or not (self._thread and self._thread.is_alive()):
                    raise RuntimeError(f"the link proxy did not {'open' if listening else 'close'} its port "
                                       f"{self.host}:{self.port}")
                self._changed.wait(left)

    def _accept_loop(self) -> None:
        # This thread alone opens and closes the listening socket: closed from elsewhere while
        # accept() waits on it, it would go on accepting until that wait ended.
        server: socket.socket | None = None
        try:
            while not self._stop.is_set():
                want = self.mode != "refuse"
                if want and server is None:
                    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    server.bind((self.host, self.port))  # the same port each time: the device's config names it
                    server.listen(8)
                    server.settimeout(_POLL_S * 5)
                elif not want and server is not None:
                    server.close()  # what waited in the backlog is reset
                    server = None
                if self._listening != (server is not None):
                    with self._changed:
                        self._listening = server is not None
                        self._changed.notify_all()
                if server is None:
                    time.sleep(_POLL_S)
                    continue
                try:
                    device, _ = server.accept()
                except (socket.timeout, OSError):
                    continue
                self._serve(device)
        finally:
            if server is not None:
                server.close()
            with self._changed:
                self._listening = False
                self._changed.notify_all()

    def _serve(self, device: socket.socket) -> None:
        if self.mode in ("reset", "refuse"):
            _reset(device)
            return
        try:
            broker = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(device)  # the broker itself is down: the device sees its connection fail
            return
        for s in (device, broker):
            s.settimeout(_POLL_S * 10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (device, broker)
        with self._lock:
            self._conns.append(pair)
            self.connections += 1
        threading.Thread(target=self._pump, args=(device, broker, pair), daemon=True).start()
        threading.Thread(target=self._pump, args=(broker, device, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                arrived = time.monotonic()
                while self.mode == "stall" and not self._stop.is_set():
                    time.sleep(_POLL_S)
                due = arrived + self.delay_s
                while time.monotonic() < due and not self._stop.is_set():
                    time.sleep(min(_POLL_S, max(0.0, due - time.monotonic())))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in pair:  # one side gone: the other is told (FIN), as a closed socket would
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                if pair in self._conns:
                    self._conns.remove(pair)

    def _reset_all(self) -> None:
        with self._lock:
            pairs, self._conns = self._conns, []
        for pair in pairs:
            for s in pair:
                _reset(s)


def _reset(s: socket.socket) -> None:
    """Close with RST rather than FIN (linger on, timeout 0)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()
