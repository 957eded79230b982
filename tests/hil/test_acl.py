"""A device's credentials, as provisioned on it, are confined to its own prefix: someone who
copies them off a device can neither speak for another device, nor read another device's
messages, nor acknowledge the device's own alarms. (tests/host/test_monitor_acl.py checks the
broker's ACL in full; this is the same rule seen from a provisioned device; tests/hil/
test_hostile.py replays the rest of a stolen box's attempts.)

The copied credentials are a second device's: the broker binds the client id to the account,
so a copy of the device under test's own credentials would only take its place (one account,
one connection) and the alarm used as the sync point would flap.

mosquitto drops a denied PUBLISH silently and may grant a denied subscription without ever
delivering, so each check ends at a sync point that is allowed and comes later on the same
ordered path: once it has arrived, anything denied that got through would have arrived too."""
from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import BrokerFixture, wait_accepted
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.host.mqtt_peer import Peer, wait_until

OTHER = "fl-other"


@pytest.mark.needs("inputs")
def test_device_credentials_cannot_reach_outside_the_device_prefix(centre: Centre, dut: Dut, site: BrokerFixture,
                                                                   dut_secrets: dict[str, Any]) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 15)
    copy_id = f"fl-copy-{secrets.token_hex(3)}"
    account, _ = site.broker.add_device(copy_id)
    wait_accepted(site.host, site.port, copy_id, account.password)
    copied = Peer(site.host, site.port, copy_id, account.password)
    assert not copied.connect().is_failure
    centre_peer = Peer(site.host, site.port, site.centre_user, site.centre_pass)
    assert not centre_peer.connect().is_failure
    try:
        assert not copied.subscribe(f"firelink/{copy_id}/ack")[0].is_failure
        for topic in (f"firelink/{OTHER}/#", f"firelink/{dev}/#", "firelink/+/event", "firelink/#"):
            copied.subscribe(topic)
        forged = b'{"id": "forged", "seq": 1, "ts": 0, "tsync": false, "code": "110", "q": "new", "zone": 1, ' \
                 b'"input": "forged", "class": "fire"}'
        for victim in (OTHER, dev):
            for kind in ("event", "status", "heartbeat"):
                copied.publish(f"firelink/{victim}/{kind}", forged)
        copied.publish(f"firelink/{copy_id}/ack", b'{"id": "forged-ack"}')  # acknowledging its own alarms
        # What the centre says to another device must not reach these credentials.
        centre_peer.publish(f"firelink/{OTHER}/ack", b'{"id": "for-the-other-device"}')
        centre_peer.publish(f"firelink/{OTHER}/cmd", b'{"for": "the other device"}')

        # The sync point: a real alarm from the device, the centre's ack for it, then the
        # centre's word to the copied account on the one topic it may read.
        dut.set_input("panel_fire", "active")
        alarm = centre.wait_event(dev, code="110", timeout_s=10)
        wait_until(lambda: centre.messages(dev, "event") and alarm.id in {
            r.doc.get("id") for r in centre.messages(dev, "event")}, 5)
        centre_peer.publish(f"firelink/{copy_id}/ack", b'{"id": "sync"}')
        wait_until(lambda: b'{"id": "sync"}' in copied.messages(f"firelink/{copy_id}/ack"), 5)
        assert copied.received == [(f"firelink/{copy_id}/ack", b'{"id": "sync"}')], copied.received[:5]
        # (The centre's own command to the other device is in the store: the monitor records
        # the commands it sees, issue 12. Nothing from the other device's topics may be.)
        assert not [m for m in centre.store.messages()
                    if (OTHER in m.topic and m.kind != "cmd") or b"forged" in m.payload]
    finally:
        copied.close()
        centre_peer.close()
