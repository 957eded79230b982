"""The centre sees the truth across reboots (issue 9 §1, §2): sequence numbers without holes,
real losses declared with their range, restores owed across a reboot sent, no second `new` for
what is still active, pre-provisioning faults restored, ack supervision that survives a reboot."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from firelink.centre.monitor import Sink
from firelink.virtual import device as virtual
from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.host.mqtt_peer import Peer

TOGGLE = "overflow_toggle"
FIRE_CODES = ("110", "111")


def with_config(**extra: Any) -> Callable[[Any], Any]:
    """Per-test additions to the device's config.json (read by the dut_config fixture below)."""
    def mark(fn: Any) -> Any:
        fn.dut_extra = extra
        return fn
    return mark


def unprovisioned(fn: Any) -> Any:
    fn.dut_unprovisioned = True
    return fn


@pytest.fixture
def dut_config(dut_config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**dut_config, **getattr(request.function, "dut_extra", {})}


@pytest.fixture
def dut_secrets(dut_secrets: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any] | None:
    return None if getattr(request.function, "dut_unprovisioned", False) else dut_secrets


def raw_events(centre: Centre, dev: str) -> list[dict[str, Any]]:
    """Every event message as the device sent it (extra keys included), first copy of each id."""
    seen: dict[str, dict[str, Any]] = {}
    for r in centre.messages(dev, "event"):
        seen.setdefault(str(r.doc.get("id")), r.doc)
    return list(seen.values())


def assert_no_hole_no_double(centre: Centre, dev: str) -> list[int]:
    evs = centre.store.events(dev)
    seqs = sorted(e.seq for e in evs)
    assert len(seqs) == len(set(seqs)), f"a seq received twice: {seqs}"
    assert len({e.id for e in evs}) == len(evs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"holes in {seqs}"
    return seqs


@pytest.mark.needs("inputs", "power", "reset")
def test_twenty_resets_and_power_cuts_with_input_changes_leave_no_gap_and_no_double(centre: Centre,
                                                                                    dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=20)
    states = {"panel_fire": "normal", "smoke": "normal"}
    for i in range(20):
        dut.wait_for_log(r"INFO app: inputs: ", timeout_s=20)  # this boot watches its inputs
        name = ("panel_fire", "smoke")[i % 2]
        states[name] = "active" if states[name] == "normal" else "normal"
        since = dut.log_position()
        dut.set_input(name, states[name])
        if i % 3 == 0:
            dut.wait_for_log(rf"INFO recorder: fire 11\d \w+ zone \d seq \d+", timeout_s=10, since=since)
        elif i % 3 == 1:
            time.sleep(0.03)  # the power goes while the contact is still being debounced
        if i % 2 == 0:
            dut.power_cut()
            dut.start()
        else:
            dut.restart()
    boots = 21

    def settled() -> bool:
        evs = centre.store.events(dev)
        if sum(1 for e in evs if e.code == "305") < boots:
            return False
        for name, state in states.items():
            own = [e for e in sorted(evs, key=lambda e: e.seq) if e.input == name and e.code in FIRE_CODES]
            want = "new" if state == "active" else "restore"
            if not own or own[-1].q != want:
                return False
        return True

    try:
        centre.wait(settled, 60, "every boot and the inputs' final states")
    except AssertionError as e:
        raise AssertionError(f"{e}; console:\n{dut.log_text()[-6000:]}") from None
    assert_no_hole_no_double(centre, dev)
    # Each input's own events alternate new/restore: a reboot never sent a second `new` for an
    # alarm still active, nor missed the restore of one that ended while the device was off.
    evs = sorted(centre.store.events(dev), key=lambda e: e.seq)
    for name in states:
        qs = [e.q for e in evs if e.input == name and e.code in FIRE_CODES]
        assert all(a != b for a, b in zip(qs, qs[1:])), f"{name}: {qs}"
    assert not centre.gaps


@with_config(outbox_capacity=1000,
             inputs=[*json.loads(virtual.board_json_path().read_text())["default_inputs"],
                     {"name": TOGGLE, "kind": "supervisory", "channel": "in6", "debounce_ms": 0, "zone": 60}])
@pytest.mark.needs("inputs", "path")
def test_outbox_overflow_is_reported_with_the_dropped_range(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=20)
    dut.set_link("wifi", False)
    dut.wait_for_log(r"WARN link: wifi went down", timeout_s=10)
    state = "normal"
    for _ in range(1080):  # 1000 slots: the oldest non-fire events give way
        state = "active" if state == "normal" else "normal"
        since = dut.log_position()
        dut.set_input(TOGGLE, state)
        dut.wait_for_log(rf"INFO app: input {TOGGLE}: \w+ -> {state}", timeout_s=10, since=since)
    dut.wait_for_log(r"outbox level 624 new", timeout_s=10, since=0)
    dut.set_link("wifi", True)
    centre.wait_event(dev, code="624", q="restore", timeout_s=120)

    def declared() -> list[list[int]]:
        out = []
        for doc in raw_events(centre, dev):
            if doc.get("code") == "624":
                out += doc.get("lost", [])
        return out

    # Every seq is either held by the centre or inside a range the device declared lost.
    def accounted() -> bool:
        held = {e.seq for e in centre.store.events(dev)}
        lost = {s for a, b in declared() for s in range(a, b + 1)}
        top = max(held)
        return not held & lost and held | lost == set(range(min(held | lost), top + 1))

    centre.wait(accounted, 120, "every seq delivered or declared lost")
    ranges = declared()
    assert ranges, "the overflow dropped events: a 624 names them"
    assert all(len(doc.get("lost", [])) <= 8 for doc in raw_events(centre, dev))
    # The monitor reports the loss with its range (monitor slice: Sink.on_loss), not a gap.
    if not hasattr(Sink, "on_loss"):
        pytest.xfail("monitor slice: the monitor's side of declared `lost` ranges (Sink.on_loss) is not on main yet; "
                     "the device's side passed")
    want = {(dev, a, b) for a, b in ranges}
    centre.wait(lambda: want <= set(centre.losses), 10, f"losses {sorted(want)} reported by the monitor")


@pytest.mark.needs("inputs", "reset")
def test_fault_cleared_during_a_reboot_is_restored_at_the_centre(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=20)
    dut.set_input("panel_fault", "active")
    centre.wait_event(dev, code="373", q="new", timeout_s=15)
    mark = centre.mark()
    dut.set_input("panel_fault", "normal")  # cleared, and the reset comes within its 2 s debounce
    dut.restart()
    centre.wait_event(dev, code="305", timeout_s=20, since=mark)
    centre.wait_event(dev, code="373", q="restore", input="panel_fault", timeout_s=15, since=mark)
    assert [e.q for e in centre.events_of(dev) if e.code == "373"] == ["new", "restore"]
    assert_no_hole_no_double(centre, dev)


@pytest.mark.needs("inputs", "reset")
def test_active_alarm_across_a_reboot_is_not_reported_new_again(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=20)
    dut.set_input("panel_fire", "active")
    first = centre.wait_event(dev, code="110", q="new", timeout_s=15)
    mark = centre.mark()
    dut.restart()
    boot = centre.wait_event(dev, code="305", timeout_s=20, since=mark)
    doc = [d for d in raw_events(centre, dev) if d["id"] == boot.id][0]
    assert doc["active"] == ["110:panel_fire"], doc
    # Anything the new boot had to say about the alarm would go out before its 305 (fire first);
    # the first heartbeat lists the input active.
    centre.wait_message(dev, "heartbeat", lambda r: r.index > 0 and r.doc.get("inputs", {}).get("panel_fire") ==
                        "active" and r.doc.get("uptime_s", 99) < 30, 30, "a heartbeat of the new boot")
    assert [e for e in centre.events_of(dev, since=mark) if e.code == "110"] == []
    dut.set_input("panel_fire", "normal")
    centre.wait_event(dev, code="110", q="restore", timeout_s=15, since=mark)
    assert [(e.code, e.q) for e in centre.events_of(dev) if e.code == "110"] == [("110", "new"), ("110", "restore")]
    assert first.seq < boot.seq
    assert_no_hole_no_double(centre, dev)


@pytest.mark.needs("flash", "reset")
@unprovisioned
def test_faults_from_before_provisioning_are_restored_by_it(centre: Centre, dut: Dut, site: BrokerFixture) -> None:
    dev = dut.device_id
    dut.wait_for_log(r"not authori[sz]ed", timeout_s=30)  # no password: the broker refuses it
    assert centre.events_of(dev) == []
    # Provisioning: the credentials land on the device's flash, then it is restarted.
    assert isinstance(dut, virtual_dut_type())
    virtual.prepare(dut.dir, secrets={"mqtt_username": site.device_user, "mqtt_password": site.device_pass})
    dut.restart()
    for code, name in (("307", "config"), ("350", "mqtt_auth")):
        centre.wait_event(dev, code=code, q="new", input=name, timeout_s=30)
        centre.wait_event(dev, code=code, q="restore", input=name, timeout_s=30)
    assert_no_hole_no_double(centre, dev)


def virtual_dut_type() -> type:
    from tests.hil.dut import VirtualDut
    return VirtualDut


@pytest.mark.needs("inputs", "reset")
@with_config(centre_ack_timeout_s=8)
def test_fire_unacked_across_a_reboot_is_reported_354_later(dut: Dut, site: BrokerFixture) -> None:
    # The centre is a bare MQTT client with the monitor's account that never acknowledges.
    dev = dut.device_id
    topic = f"firelink/{dev}/event"
    peer = Peer(site.host, site.port, site.monitor_user, site.monitor_pass)
    assert not peer.connect().is_failure
    try:
        assert not peer.subscribe(topic)[0].is_failure
        dut.wait_for_log(r"INFO app: inputs: ", timeout_s=20)
        dut.set_input("panel_fire", "active")
        seq = int(dut.wait_for_log(r"INFO recorder: fire 110 new zone 1 seq (\d+)", timeout_s=10)[1])
        fire = wait_peer_event(peer, topic, 10, code="110", q="new", seq=seq)
        recorded_at = time.time()
        dut.restart()
        dut.wait_for_log(r"awaiting the centre's ack for 1 fire event", timeout_s=20)
        dut.wait_for_log(r"INFO mqtt: connected", timeout_s=20)
        ev = wait_peer_event(peer, topic, 30, code="354", q="new", input="centre_ack")
        assert time.time() - recorded_at >= 8 - 1, "not before the ack timeout"
        assert ev["detail"] == f"no ack for fire event {fire['id']}", ev
    finally:
        peer.close()


def wait_peer_event(peer: Peer, topic: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        for payload in peer.messages(topic):
            doc = json.loads(payload)
            if all(doc.get(k) == v for k, v in fields.items()):
                return dict(doc)
        if time.monotonic() >= deadline:
            raise AssertionError(f"no event {fields} within {timeout_s} s: {peer.messages(topic)[-5:]}")
        time.sleep(0.02)
