"""A TCP relay that adds latency to what the device sends: a slow path (a cellular link's
round trip) between the device and the broker, so that a backlog takes seconds to drain and
the device can be watched while it does (the loopback drains 500 events in 0.3 s)."""
from __future__ import annotations

import socket
import threading
import time

from firelink.site.broker import free_port


class SlowLink:
    def __init__(self, target_host: str, target_port: int, delay_s: float) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.host = "127.0.0.1"
        self.port = free_port()
        self._server = socket.create_server((self.host, self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="slow-link", daemon=True)

    def __enter__(self) -> SlowLink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()
        with self._lock:
            for s in self._socks:
                s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                device, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                broker = socket.create_connection(self.target, timeout=5)
            except OSError:
                device.close()
                continue
            broker.settimeout(None)
            with self._lock:
                self._socks += [device, broker]
            threading.Thread(target=self._pump, args=(device, broker, self.delay_s), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, device, 0.0), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay_s: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delay_s:
                    time.sleep(delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # one side gone: the other sees the connection end too
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
