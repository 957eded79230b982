"""The broker's ACL as the monitoring centre relies on it: a device speaks only under its own
prefix, reads only its own `ack`/`cmd`, and only the monitor may publish `ack`.

mosquitto drops a denied PUBLISH silently (MQTT 3.1.1 has no way to say no), so each check
ends with a message that is allowed, sent after the denied ones on an ordered path: once it
arrives, a denied message that got through would have arrived before it."""
from __future__ import annotations

import json

import pytest

from tests.host.monitor_fixtures import device_peer, devices, peers, start_monitor  # noqa: F401 (fixtures)
from tests.host.mqtt_peer import Peer, event_payload, wait_until

TEST1 = "fl-test1"


@pytest.fixture
def test1(broker):
    peer = Peer(broker.host, broker.port, broker.device_user, broker.device_pass)
    assert not peer.connect().is_failure
    yield peer
    peer.close()


@pytest.fixture
def observer(broker):
    """The monitor account seeing everything under firelink/."""
    peer = Peer(broker.host, broker.port, broker.centre_user, broker.centre_pass)
    assert not peer.connect().is_failure
    assert not peer.subscribe("firelink/#")[0].is_failure
    yield peer
    peer.close()


def test_a_device_cannot_publish_outside_its_prefix_nor_ack(broker, test1, observer, start_monitor):
    run = start_monitor()
    forbidden = ["firelink/fl-other/event", "firelink/fl-other/status", "firelink/fl-other/heartbeat",
                 "firelink/fl-other/ack", f"firelink/{TEST1}/ack", f"firelink/{TEST1}/cmd", "firelink/other-root"]
    for topic in forbidden:
        test1.publish(topic, event_payload(1, "forged"))
    marker = event_payload(2, "marker-acl-1", code="601", cls="status")
    test1.publish(f"firelink/{TEST1}/event", marker)

    wait_until(lambda: observer.messages(f"firelink/{TEST1}/event"))
    # (the monitor's own ack for the marker may show up on fl-test1/ack: only the forged body counts)
    assert not [t for t, p in observer.received if b"forged" in p]
    run.sink.wait(lambda s: s.events_of(TEST1))
    assert run.monitor.wait_idle(5)
    assert not [m for m in run.store.messages() if m.topic in forbidden or b"forged" in m.payload]


def test_a_device_cannot_read_another_devices_topics(broker, test1, devices, peers):
    other = devices("fl-other")
    other_peer = peers(other)
    assert not other_peer.subscribe(other.topic("ack"))[0].is_failure
    granted = [test1.subscribe(t)[0] for t in (f"firelink/{other.id}/#", other.topic("ack"), "firelink/fl-other/ack",
                                              "firelink/+/event")]
    assert not test1.subscribe(f"firelink/{TEST1}/ack")[0].is_failure
    monitor = Peer(broker.host, broker.port, broker.centre_user, broker.centre_pass)
    assert not monitor.connect().is_failure
    try:
        other_peer.publish(other.topic("event"), event_payload(1, "other-1"))
        other_peer.publish(other.topic("status"), b'{"state": "online"}')
        monitor.publish(other.topic("ack"), json.dumps({"id": "other-1"}).encode())
        monitor.publish("firelink/fl-other/ack", b'{"id": "x"}')
        monitor.publish(f"firelink/{TEST1}/ack", b'{"id": "marker"}')  # allowed: the sync point

        wait_until(lambda: test1.messages(f"firelink/{TEST1}/ack"))
        wait_until(lambda: other_peer.messages(other.topic("ack")))  # the real device did get its ack
        assert [t for t, _ in test1.received] == [f"firelink/{TEST1}/ack"], f"SUBACKs {granted}"
    finally:
        monitor.close()


def test_only_the_monitor_may_publish_ack(broker, test1, devices, peers):
    other = devices("fl-other")
    other_peer = peers(other)
    ack = f"firelink/{TEST1}/ack"
    assert not test1.subscribe(ack)[0].is_failure
    test1.publish(ack, b'{"id": "self-acked"}')  # a device acknowledging its own alarm
    other_peer.publish(ack, b'{"id": "acked-by-another-device"}')
    monitor = Peer(broker.host, broker.port, broker.centre_user, broker.centre_pass)
    assert not monitor.connect().is_failure
    try:
        monitor.publish(ack, b'{"id": "from-the-centre"}')
        wait_until(lambda: test1.messages(ack))
        assert test1.messages(ack) == [b'{"id": "from-the-centre"}']
    finally:
        monitor.close()


def test_a_new_device_account_works_after_the_reload(broker, devices):
    dev = devices("fl-new")  # waits for mosquitto to accept it after SIGHUP
    wrong = Peer(broker.host, broker.port, dev.id, dev.password + "x")
    assert wrong.connect().is_failure
    wrong.close()
    peer = device_peer(broker, dev)
    peer.close()
