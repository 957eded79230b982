"""No acknowledgement from the centre for a fire event within `centre_ack_timeout_s` (EN 54-21:
100 s; 5 s here, the shortest the configuration allows): the device raises its local fault
`centre_ack` and reports it as a 354 event; the fault is restored when the ack comes.

The centre here is a bare MQTT client with the monitor's account that receives and never
acknowledges (the monitor always does)."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture
from tests.hil.dut import Dut
from tests.host.mqtt_peer import Peer

ACK_TIMEOUT_S = 5


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    return {**dut_config, "centre_ack_timeout_s": ACK_TIMEOUT_S}


@pytest.fixture
def silent_centre(site: BrokerFixture) -> Iterator[Peer]:
    peer = Peer(site.host, site.port, site.centre_user, site.centre_pass)
    assert not peer.connect().is_failure
    assert not peer.subscribe(f"firelink/{site.device_user}/event")[0].is_failure
    yield peer
    peer.close()


def _wait_event(peer: Peer, topic: str, timeout_s: float, **fields: Any) -> tuple[dict[str, Any], float]:
    """The first event received with these fields, and when (time.time()) it was seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        for payload in peer.messages(topic):
            doc = json.loads(payload)
            if all(doc.get(k) == v for k, v in fields.items()):
                return doc, time.time()
        if time.monotonic() >= deadline:
            raise AssertionError(f"no event {fields} within {timeout_s} s: {peer.messages(topic)[-5:]}")
        time.sleep(0.02)


@pytest.mark.needs("inputs")
def test_no_ack_for_a_fire_event_raises_the_local_fault_and_reports_354(silent_centre: Peer, dut: Dut) -> None:
    dev = dut.device_id
    topic = f"firelink/{dev}/event"
    _wait_event(silent_centre, topic, 15, code="305")
    dut.set_input("panel_fire", "active")
    fire, fire_at = _wait_event(silent_centre, topic, 5, code="110", q="new")

    fault, fault_at = _wait_event(silent_centre, topic, ACK_TIMEOUT_S + 3, code="354", q="new")
    assert ACK_TIMEOUT_S - 0.5 <= fault_at - fire_at <= ACK_TIMEOUT_S + 1.5, fault_at - fire_at
    assert (fault["class"], fault["zone"], fault["input"], fault["detail"]) == (
        "fault", 0, "centre_ack", f"no ack for fire event {fire['id']}")
    dut.wait_for_log(rf"ERROR sender: no acknowledgement from the centre for fire event {fire['id']}", timeout_s=1)

    # The centre acknowledges at last: the fault clears, and the centre is told.
    silent_centre.publish(f"firelink/{dev}/ack", json.dumps({"id": fire["id"]}).encode())
    restore, _ = _wait_event(silent_centre, topic, 5, code="354", q="restore")
    assert (restore["class"], restore["input"]) == ("fault", "centre_ack")
    assert restore["seq"] > fault["seq"] > fire["seq"]
