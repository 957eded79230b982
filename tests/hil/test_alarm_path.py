"""The alarm path end to end: a contact changes on the device, the event reaches the centre
with its Contact ID code, class, zone and sequence number, the centre acknowledges it (in
time: no 354); the restore follows; the heartbeat carries the device's health."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut

HEARTBEAT_S = 5
ACK_TIMEOUT_S = 5  # the shortest allowed: the centre's acks must beat it
# Advertised nationally: an alarm reaches the centre within 3 s (standards.md).
ALARM_DELIVERY_S = 3.0


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    return {**dut_config, "heartbeat_s": HEARTBEAT_S, "centre_ack_timeout_s": ACK_TIMEOUT_S}


def documented_heartbeat() -> dict[str, Any]:
    """The heartbeat example in docs/protocol.md: what the centre is promised."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    block = re.search(r"## heartbeat\n.*?```json\n(.*?)```", text, re.S)
    assert block, "docs/protocol.md has no heartbeat example"
    return json.loads(block[1])


def _row(e: Any) -> tuple[Any, ...]:
    return (e.seq, e.code, e.q, e.cls, e.zone, e.input)


@pytest.mark.needs("inputs")
def test_alarm_and_restore_reach_the_centre_with_code_class_zone_and_sequence(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    boot = centre.wait_event(dev, code="305", timeout_s=15)
    assert (boot.q, boot.cls, boot.zone, boot.input, boot.detail) == ("new", "status", 0, "", "power_on")

    t0 = time.time()
    dut.set_input("panel_fire", "active")
    fire = centre.wait_event(dev, code="110", q="new", timeout_s=10)
    assert fire.received_at - t0 <= ALARM_DELIVERY_S, f"alarm took {fire.received_at - t0:.2f} s"
    dut.wait_for_log(rf"INFO recorder: fire 110 new zone 1 seq {fire.seq}\b", timeout_s=1, since=0)
    assert fire.tsync and abs(fire.ts - t0) <= 2

    dut.set_input("panel_fire", "normal")
    centre.wait_event(dev, code="110", q="restore", timeout_s=10)
    dut.set_input("smoke", "active")
    centre.wait_event(dev, code="111", timeout_s=10)
    dut.set_input("panel_fault", "active")  # a fault contact: 2 s confirmation by default
    centre.wait_event(dev, code="373", timeout_s=10)

    s = boot.seq
    assert [_row(e) for e in centre.store.events(dev)] == [
        (s, "305", "new", "status", 0, ""),
        (s + 1, "110", "new", "fire", 1, "panel_fire"),
        (s + 2, "110", "restore", "fire", 1, "panel_fire"),
        (s + 3, "111", "new", "fire", 3, "smoke"),
        (s + 4, "373", "new", "fault", 2, "panel_fault"),
    ]
    # Every event acknowledged by the centre (the broker confirmed each ack), none twice.
    centre.wait(lambda: all(e.acked_at for e in centre.store.events(dev)), 5, "acks confirmed")
    assert [e.acks for e in centre.store.events(dev)] == [1] * 5
    # About this device: the session broker may hold other tests' retained junk, which the centre
    # rightly quarantines and reports.
    assert not [w for w in centre.warnings if w.device == dev]


@pytest.mark.needs("inputs", "signal", "battery")
def test_heartbeat_carries_inputs_link_outbox_firmware_and_reset_cause(centre: Centre, dut: Dut,
                                                                      dut_heapsize: str | None) -> None:
    dev = dut.device_id
    online = centre.wait_message(dev, "status", lambda r: not r.retained and r.doc["state"] == "online", 15,
                                 "live online")
    dut.set_rssi(-71)
    dut.set_battery_mv(3900)
    dut.set_input("smoke", "active")
    alarm = centre.wait_event(dev, code="111", timeout_s=10)
    changed = time.time()
    first = centre.wait_message(dev, "heartbeat", lambda r: r.at > changed, HEARTBEAT_S + 3, "heartbeat")
    second = centre.wait_message(dev, "heartbeat", lambda r: r.index > first.index, HEARTBEAT_S + 3,
                                 "next heartbeat")

    hb = first.doc
    promised = documented_heartbeat()
    assert set(promised) <= set(hb) and set(promised["outbox"]) <= set(hb["outbox"])
    assert hb["inputs"] == {"panel_fire": "normal", "panel_fault": "normal", "smoke": "active",
                            "tamper": "normal", "mains": "normal", "battery": "normal"}
    assert hb["link"] == {"path": "wifi", "signal_dbm": -71}
    assert (hb["mains"], hb["battery_mv"]) == ("ok", 3900)
    assert {k: hb["outbox"][k] for k in promised["outbox"]} == {
        "depth": 0, "fire": 0, "fault": 0, "status": 0, "capacity": 1024, "fill_pct": 0, "dropped": 0, "in_ram": 0}
    assert hb["faults"] == {}
    assert (hb["fw"], hb["reset"]) == (online.doc["fw"], "power_on") and online.doc["reset"] == "power_on"
    assert hb["tsync"] is True and abs(hb["ts"] - first.at) <= 2
    assert 0 <= hb["uptime_s"] <= first.at - online.at + 2
    assert hb["counters"].get("mqtt_connects") == 1
    assert isinstance(hb["heap_free"], int) and 0 < hb["heap_free"] < _bytes(dut_heapsize or "1g")
    # The interval, as the centre sees it.
    assert HEARTBEAT_S - 0.5 <= second.at - first.at <= HEARTBEAT_S + 1.5
    assert second.doc["uptime_s"] - hb["uptime_s"] in range(HEARTBEAT_S - 1, HEARTBEAT_S + 2)
    # The centre acknowledged the alarm: past the ack timeout, no local fault and no 354.
    time.sleep(max(0.0, alarm.received_at + ACK_TIMEOUT_S + 1.5 - time.time()))  # already past, normally
    assert "no acknowledgement" not in dut.log_text(0)
    assert second.doc["faults"] == {} and "354" not in {e.code for e in centre.store.events(dev)}


def _bytes(size: str) -> int:
    """A MicroPython heap size (`256k`, `2m`) in bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(size[-1].lower(), 1)
    return int(size.rstrip("kKmMgG")) * scale
