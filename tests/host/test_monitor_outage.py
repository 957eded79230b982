"""The centre rides out its broker (issue 9 §7): the monitor is back within a second of the
broker's return, the alarms raised meanwhile reach it at once, and the outage is shown as the
broker's, not as every device going offline. Its own mosquitto, stopped and started again;
devices are real MQTT clients that behave like the firmware: a retained `offline` will, a
retained `online` on every connect, QoS 1 events queued while the broker is away."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest

from firelink.centre.devices import Supervision
from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig
from firelink.centre.store import MonitorStore
from firelink.site.broker import Broker, free_port
from tests.host.mqtt_peer import RecordingSink, event_payload, wait_until

OFFLINE = b'{"state": "offline"}'
ONLINE = b'{"state": "online", "fw": "0.1.0", "reset": "power_on"}'


class FakeFirmware:
    """The firmware's MQTT behaviour as far as the centre sees it."""

    def __init__(self, broker: Broker, name: str, password: str) -> None:
        self.name = name
        self.connects = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311,
                             clean_session=False)
        self.c.username_pw_set(name, password)
        self.c.will_set(f"firelink/{name}/status", OFFLINE, qos=1, retain=True)
        self.c.reconnect_delay_set(1, 1)  # the test's devices come back fast; the centre's grace covers 60 s
        self.c.on_connect = self._on_connect
        self.c.connect(broker.bind, broker.port, keepalive=30)
        self.c.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self.connects += 1
            client.publish(f"firelink/{self.name}/status", ONLINE, qos=1, retain=True)

    def alarm(self, seq: int) -> None:
        self.c.publish(f"firelink/{self.name}/event", event_payload(seq, f"{seq:08x}-{self.name}"), qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Broker, dict[str, str], Any]]:
    b = Broker(tmp_path / "broker", port=free_port(), tls_port=free_port())
    accounts = {name: b.add_device(name)[0].password for name in ("fl-out-a", "fl-out-b", "fl-out-c")}
    mon = b.add_monitor()
    b.start()
    try:
        yield b, accounts, mon
    finally:
        b.stop()


@pytest.mark.parametrize("outage_s", [3.0])
def test_broker_outage_is_the_brokers_and_alarms_arrive_on_its_return(site, tmp_path, outage_s):
    broker, accounts, mon = site
    store = MonitorStore(tmp_path / "centre.db")
    sink = RecordingSink()
    monitor = Monitor(store, MonitorConfig(MqttSettings(host=broker.bind, port=broker.port, username=mon.username,
                                                        password=mon.password, client_id="centre-outage"),
                                           supervision=Supervision(offline_hold_s=2.0, reconnect_grace_s=30.0)),
                      [sink])
    ups: list[float] = []

    class Link(RecordingSink):
        def on_broker(self, up: bool, at: float, detail: str) -> None:
            (ups if up else downs).append(at)

    downs: list[float] = []
    monitor.sinks.append(Link())
    monitor.start(timeout_s=10)
    devices = [FakeFirmware(broker, name, pw) for name, pw in accounts.items()]
    try:
        sink.wait(lambda s: all(s.changes_of(d.name) == ["online"] for d in devices), timeout_s=10)
        for d in devices:
            d.alarm(1)
        sink.wait(lambda s: all(s.events_of(d.name) for d in devices))

        broker.stop()
        wait_until(lambda: downs, timeout_s=5)
        for d in devices:  # alarms raised while the broker is away wait in the devices
            d.alarm(2)
        time.sleep(outage_s)  # the outage itself: nothing to wait for
        broker.start()
        back = time.time()
        sink.wait(lambda s: all(len(s.events_of(d.name)) == 2 for d in devices), timeout_s=15)
        arrived = max(e.received_at for d in devices for e in sink.events_of(d.name))
        print(f"\nmonitor back {ups[-1] - back:.2f} s after the broker; last alarm {arrived - back:.2f} s after")
        assert ups and ups[-1] - back < 1.5  # retried every 0.5 s
        assert arrived - back < 2.0
        # The devices were connected again at once: none is shown offline, neither now nor after the grace.
        wait_until(lambda: all(d.connects >= 2 for d in devices), timeout_s=5)
        assert monitor.wait_idle(5)
        time.sleep(2.5)  # longer than offline_hold_s: a held `offline` would be shown by now
        assert monitor.wait_idle(5)
        for d in devices:
            assert sink.changes_of(d.name) == ["online"], sink.changes_of(d.name)
            assert monitor.device(d.name).state == "online"
        assert any("lost the broker" in w.reason for w in sink.warnings)

        # A device that really is gone after the outage is still reported, once the grace is over.
        devices[0].c.loop_stop()
        devices[0].c.socket().close()
        sink.wait(lambda s: s.changes_of("fl-out-a")[-1:] == ["offline"], timeout_s=10)
    finally:
        for d in devices:
            d.close()
        monitor.stop()
        store.close()


def test_retained_offline_after_a_reconnect_waits_for_the_grace(tmp_path):
    """Bookkeeping only: an `offline` replayed on the monitor's reconnect is shown only when the
    device does not come back within the grace; at the monitor's start it is shown at once."""
    from firelink.centre.devices import DeviceBook

    book = DeviceBook(Supervision(fixed_s=1000.0, offline_hold_s=2.0, reconnect_grace_s=30.0), {}, now=0.0)
    book.resume(0.0)  # first connection
    assert book.status("gone", "offline", 0.1, retained=True) == "offline"  # at start: at once
    book.heard("a", 1.0)
    book.heard("b", 1.0)
    book.status("a", "offline", 10.0, retained=False)  # a will, then the monitor's link drops
    book.suspend()
    assert book.expire(20.0) == []
    book.resume(40.0)
    book.status("b", "offline", 40.1, retained=True)  # the broker replays b's will
    assert book.expire(60.0) == []
    book.heard("b", 61.0)  # b reconnected: never shown offline
    assert [(d.device, c) for d, c in book.expire(70.5)] == [("a", "offline")]
    assert book.devices["b"].state == "online"
    # A live `offline` outside an outage is shown after the hold.
    book.status("b", "offline", 80.0, retained=False)
    assert book.expire(81.0) == []
    assert [(d.device, c) for d, c in book.expire(82.1)] == [("b", "offline")]
    # A drop shorter than the hold is still shown, dated when it came, when the device returns.
    assert book.heard("b", 90.0) == "online"
    book.status("b", "offline", 91.0, retained=False)
    assert book.heard("b", 92.0) == "online"
    assert [(d.device, d.state, d.state_since, c) for d, c in book.early] == [("b", "offline", 91.0, "offline")]
    # Revoked: shown as such, never lost.
    assert book.status("b", "revoked", 83.0, retained=True) == "revoked"
    assert all(d.device != "b" for d, _ in book.expire(5000.0))
