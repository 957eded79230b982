"""The device's credentials, as provisioned on it, are confined to its own prefix: someone who
copies them off the device can neither speak for another device, nor read another device's
messages, nor acknowledge the device's own alarms. (tests/host/test_monitor_acl.py checks the
broker's ACL in full; this is the same rule seen from a provisioned device.)

mosquitto drops a denied PUBLISH silently and may grant a denied subscription without ever
delivering, so each check ends at a sync point that is allowed and comes later on the same
ordered path: once it has arrived, anything denied that got through would have arrived too."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.host.mqtt_peer import Peer, wait_until

OTHER = "fl-other"


@pytest.mark.needs("inputs")
def test_device_credentials_cannot_reach_outside_the_device_prefix(centre: Centre, dut: Dut, site: BrokerFixture,
                                                                   dut_secrets: dict[str, Any]) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 15)
    # Another client id: reusing the device's would take its session over.
    copied = Peer(site.host, site.port, dut_secrets["mqtt_username"], dut_secrets["mqtt_password"],
                  client_id=f"{dev}-copied-credentials")
    assert not copied.connect().is_failure
    centre_peer = Peer(site.host, site.port, site.centre_user, site.centre_pass)
    assert not centre_peer.connect().is_failure
    try:
        for topic in (f"firelink/{OTHER}/#", "firelink/+/event", "firelink/#"):
            copied.subscribe(topic)
        forged = b'{"id": "forged", "seq": 1, "ts": 0, "tsync": false, "code": "110", "q": "new", "zone": 1, ' \
                 b'"input": "forged", "class": "fire"}'
        for kind in ("event", "status", "heartbeat"):
            copied.publish(f"firelink/{OTHER}/{kind}", forged)
        copied.publish(f"firelink/{dev}/ack", b'{"id": "forged-ack"}')  # acknowledging its own alarms
        # What the centre says to another device must not reach these credentials.
        centre_peer.publish(f"firelink/{OTHER}/ack", b'{"id": "for-the-other-device"}')
        centre_peer.publish(f"firelink/{OTHER}/cmd", b'{"for": "the other device"}')

        # The sync point: a real alarm from the device, and the centre's ack for it.
        dut.set_input("panel_fire", "active")
        alarm = centre.wait_event(dev, code="110", timeout_s=10)
        ack = json.dumps({"id": alarm.id}).encode()
        wait_until(lambda: ack in copied.messages(f"firelink/{dev}/ack"), 5)
        # Only the device's own acks, and only the centre's (the ack of its boot event may be here too).
        assert {t for t, _ in copied.received} == {f"firelink/{dev}/ack"}
        assert {json.loads(p)["id"] for _, p in copied.received} <= {e.id for e in centre.store.events(dev)}
        assert not [m for m in centre.store.messages() if OTHER in m.topic or b"forged" in m.payload]
    finally:
        copied.close()
        centre_peer.close()
