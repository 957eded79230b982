"""A TCP relay that adds latency to what the device sends: a slow path (a cellular link's
round trip) between the device and the broker, so that a backlog takes seconds to drain and
the device can be watched while it does (the loopback drains 500 events in 0.3 s)."""
from __future__ import annotations

import socket
import time

from tests.hil.tcp_relay import TcpRelay, end_both


class SlowLink(TcpRelay):
    name = "slow-link"

    def __init__(self, target_host: str, target_port: int, delay_s: float) -> None:
        super().__init__(target_host, target_port)
        self.delay_s = delay_s

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                if up and self.delay_s:
                    time.sleep(self.delay_s)  # the path's latency, on what the device sends
                dst.sendall(data)
        except OSError:
            pass
        finally:
            end_both(src, dst)
