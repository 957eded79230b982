"""Resends under a persistent session (MQTT 3.1.1 §4.4), with the whole firmware: the device
(CleanSession=0, its own client id) publishes a fire event, the link is cut between mosquitto's
PUBACK and the device (mosquitto holds the PUBLISH, the device never hears it was taken), and
once reconnected to the session mosquitto kept, the device sends the event again under the
packet id mosquitto first saw, with DUP=1: one message, one packet id, however often it is sent.

The relay reads MQTT packets both ways (a host-side view of what crosses the wire), so the test
sees every PUBLISH's flags and packet id and every CONNACK's session-present flag."""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.tcp_relay import TcpRelay, end_both

PUBLISH, PUBACK, CONNACK = 3, 4, 2


@dataclass
class Packet:
    at: float
    up: bool  # device -> broker
    data: bytes

    @property
    def type(self) -> int:
        return self.data[0] >> 4

    def publish(self) -> tuple[str, int, bool, bytes]:
        """(topic, packet id, DUP, payload) of a QoS 1 PUBLISH."""
        hl = _header_len(self.data)
        tl = int.from_bytes(self.data[hl:hl + 2], "big")
        topic = self.data[hl + 2:hl + 2 + tl].decode()
        pid = int.from_bytes(self.data[hl + 2 + tl:hl + 4 + tl], "big")
        return topic, pid, bool(self.data[0] & 0x08), self.data[hl + 4 + tl:]


def _header_len(buf: bytes) -> int:
    i = 1
    while buf[i] & 0x80:
        i += 1
    return i + 1


def _split(buf: bytes) -> tuple[list[bytes], bytes]:
    out = []
    while len(buf) >= 2:
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return out, buf
            n += (buf[i] & 0x7F) * mult
            mult *= 128
            if not buf[i] & 0x80:
                break
            i += 1
        size = i + 1 + n
        if len(buf) < size:
            break
        out.append(buf[:size])
        buf = buf[size:]
    return out, buf


class CuttingRelay(TcpRelay):
    """device <-> relay <-> mosquitto, packet by packet; `cut_on_puback_of(topic)` closes both
    sockets instead of passing on mosquitto's PUBACK for the next PUBLISH on `topic`."""

    name = "cutting-relay"

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.packets: list[Packet] = []
        self.cut_at: float | None = None
        self._cut_topic: str | None = None
        self._cut_pids: set[int] = set()

    def cut_on_puback_of(self, topic: str) -> None:
        with self._lock:
            self._cut_topic = topic

    def publishes(self, topic: str) -> list[Packet]:
        with self._lock:
            return [p for p in self.packets if p.up and p.type == PUBLISH and p.publish()[0] == topic]

    def connacks(self) -> list[bool]:
        """Session present, for each CONNACK mosquitto sent."""
        with self._lock:
            return [bool(p.data[2] & 1) for p in self.packets if not p.up and p.type == CONNACK]

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                pkts, buf = _split(buf + data)
                for raw in pkts:
                    p = Packet(time.time(), up, raw)
                    with self._lock:
                        self.packets.append(p)
                        if up and p.type == PUBLISH and raw[0] & 0x06 and p.publish()[0] == self._cut_topic:
                            self._cut_pids.add(p.publish()[1])
                        cut = (not up and p.type == PUBACK and self._cut_pids
                               and int.from_bytes(raw[2:4], "big") in self._cut_pids)
                        if cut:
                            self._cut_topic, self._cut_pids, self.cut_at = None, set(), time.time()
                    if cut:
                        raise OSError("cut between mosquitto's PUBACK and the device")
                    dst.sendall(raw)
        except OSError:
            pass
        finally:
            end_both(src, dst)


@pytest.fixture
def relay(site: BrokerFixture) -> Iterator[CuttingRelay]:
    with CuttingRelay(site.host, site.port) as r:
        yield r


@pytest.fixture
def dut_config(dut_config: dict[str, Any], relay: CuttingRelay) -> dict[str, Any]:
    # A short backoff so the test does not wait out the default after the cut.
    return {**dut_config, "broker": {"host": relay.host, "port": relay.port, "backoff_max_s": 2}}


@pytest.mark.needs("inputs")
def test_a_resent_event_keeps_its_packet_id_with_dup_at_a_broker_that_keeps_the_session(
        centre: Centre, dut: Dut, relay: CuttingRelay) -> None:
    dev = dut.device_id
    topic = f"firelink/{dev}/event"
    centre.wait_event(dev, code="305", timeout_s=15)  # the boot's events are through
    relay.cut_on_puback_of(topic)
    dut.set_input("panel_fire", "active")
    fire = centre.wait_event(dev, code="110", q="new", timeout_s=15)
    deadline = time.monotonic() + 15
    while len([p for p in relay.publishes(topic) if json.loads(p.publish()[3])["id"] == fire.id]) < 2:
        assert time.monotonic() < deadline, "the event was not sent again after the cut"
        time.sleep(0.05)
    assert relay.cut_at is not None, "the link was cut after mosquitto's PUBACK"
    sends = [p.publish() for p in relay.publishes(topic) if json.loads(p.publish()[3])["id"] == fire.id]
    pids = {pid for _, pid, _, _ in sends}
    assert len(pids) == 1, f"one packet id for one message, got {sends}"
    assert [dup for _, _, dup, _ in sends] == [False] + [True] * (len(sends) - 1), "DUP on every resend"
    assert relay.connacks()[-1] is True, "mosquitto kept the session (CleanSession=0, the same client id)"
    # QoS 1 is at least once: the centre may hear it twice, and keeps it once.
    time.sleep(1.0)
    assert len([e for e in centre.events_of(dev) if e.id == fire.id]) == 1, "one event at the centre"
    dut.wait_for_log(r"INFO mqtt: connected to .* \(session resumed\)", timeout_s=5, since=0)
