"""A TCP relay standing where the broker is: the suite's fault makers (a stalled handshake, a slow
path, a connection cut at a chosen packet) are each this relay with one thing changed.

It listens on a free port, and for each device connection it opens one to the broker and pumps
both ways on threads of their own; closing it (the `with` block's end) closes every socket, so the
device sees its connection end. Subclasses change `_hold` (accept but never connect onwards) or
`_pump` (what happens to the bytes on the way)."""
from __future__ import annotations

import socket
import threading

from firelink.site.broker import free_port


class TcpRelay:
    name = "tcp-relay"

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port(host)
        self.accepted = 0
        self._server = socket.create_server((self.host, self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=self.name, daemon=True)

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()
        with self._lock:
            for s in self._socks:
                s.close()

    def _hold(self, device: socket.socket) -> bool:
        """True: keep this connection open and silent (never relayed)."""
        return False

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                device, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._socks.append(device)
                self.accepted += 1
            if self._hold(device):
                continue
            try:
                broker = socket.create_connection(self.target, timeout=5)
            except OSError:
                device.close()
                continue
            broker.settimeout(None)
            with self._lock:
                self._socks.append(broker)
            threading.Thread(target=self._pump, args=(device, broker, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, device, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        """up: from the device to the broker."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            end_both(src, dst)


def end_both(src: socket.socket, dst: socket.socket) -> None:
    """One side gone: the other sees the connection end too."""
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
