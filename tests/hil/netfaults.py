"""Network faults for the HIL suite: a resolver and an NTP server that can go silent (and
then answer, for real), a broker gate that accepts TCP and then stalls (and later relays
to the broker), and the measure the faults are judged by: how long a fire input takes to
reach the device's flash (the recorder logs each fire event once the outbox holds it).

The device is the virtual one: its sim board takes the path's DNS server from
sim/control.json (`dns`), as a board takes it from DHCP; the servers here listen on the
loopback. Written for these tests (RFC 1035 and RFC 4330 answers), nothing mocked inside
the firmware: it runs its real resolver, SNTP client and TLS stack against them.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from firelink.virtual import device as virtual
from tests.hil.dut import Dut, VirtualDut, make_dut
from tests.hil.tcp_relay import TcpRelay

NTP_DELTA = 2208988800
FIRE_ON_FLASH = r"INFO recorder: fire 110 new zone \d+ seq \d+"
FLASH_LIMIT_S = 1.0  # issue 8: an input change is on flash within 1 s whatever the network does


class UdpServer:
    """A UDP service on the loopback; `answering` False swallows every request."""

    def __init__(self, reply: Callable[[bytes], bytes | None], answering: bool = False) -> None:
        self._reply = reply
        self.answering = answering
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="udp-service", daemon=True)

    def __enter__(self) -> UdpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                req, peer = self._sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            self.requests += 1
            if self.answering:
                out = self._reply(req)
                if out is not None:
                    self._sock.sendto(out, peer)

    def wait_requests(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.requests < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.requests} requests to {self.addr} within {timeout_s} s, expected {n}")
            time.sleep(0.01)


def dns_answer(ip: str) -> Callable[[bytes], bytes | None]:
    """Answers every A question with ip (the owner name points at the question)."""
    def reply(req: bytes) -> bytes | None:
        if len(req) < 17:
            return None
        head = req[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
        question_end = req.index(b"\x00", 12) + 5
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
        return head + req[12:question_end] + rr
    return reply


def ntp_answer(req: bytes) -> bytes | None:
    """A stratum-2 server's answer with the host's time, echoing the client's transmit stamp."""
    if len(req) < 48:
        return None
    now = time.time()
    secs = int(now) + NTP_DELTA
    frac = int((now % 1) * (1 << 32))
    out = bytearray(48)
    out[0] = 0 << 6 | 4 << 3 | 4
    out[1] = 2
    out[24:32] = req[40:48]
    out[32:40] = struct.pack("!II", secs, frac)
    out[40:48] = struct.pack("!II", secs, frac)
    return bytes(out)


class TcpGate(TcpRelay):
    """Stands where the broker is. `stall` (the default): accepts each connection and then
    says nothing, whatever the device sends (a broker or middlebox hung mid-handshake).
    `relay`: forwards new connections to the real broker."""

    name = "tcp-gate"

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        super().__init__(target_host, target_port, host)
        self.stall = True

    def _hold(self, device: socket.socket) -> bool:
        return self.stall  # held open, never read from nor answered

    def wait_accepted(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.accepted < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.accepted} connections to the gate within {timeout_s} s, expected {n}")
            time.sleep(0.01)


def start_virtual(request: pytest.FixtureRequest, directory: Path, config: dict[str, Any],
                  secrets: dict[str, Any], certs: dict[str, bytes], firmware: Path, heapsize: str | None,
                  world: dict[str, Any]) -> Iterator[Dut]:
    """Like conftest's `dut`, with sim/control.json holding `world` before the first boot (the
    network the board finds when it powers up)."""
    spec = str(request.config.getoption("--dut"))
    if spec != "virtual":
        pytest.skip("the device's network (its DNS server, its clock) is set around the virtual device only")
    d = make_dut(spec, directory, config, secrets, certs, firmware=firmware, heapsize=heapsize)
    assert isinstance(d, VirtualDut)
    virtual.write_control(d.dir, world)
    d.start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.dev.kill()


def fire_to_flash_s(dut: Dut, timeout_s: float = 10.0) -> float:
    """Raises the fire input and returns the seconds until the device logged the fire event as
    held by its outbox (on flash). The wait is generous; the caller judges the figure."""
    since = dut.log_position()
    t0 = time.monotonic()
    dut.set_input("panel_fire", "active")
    dut.wait_for_log(FIRE_ON_FLASH, timeout_s=timeout_s, since=since)
    took = time.monotonic() - t0
    print(f"input-to-flash {took * 1000:.0f} ms")
    return took
