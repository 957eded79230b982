"""Both paths stalled for 5 minutes with 1000 events queued (issue 11): nothing is lost, and
everything is delivered in the outbox's order once the paths return.

A silent stall of both (sockets open, every byte dropped: firelink.pathproxy's `stall` on the
Wi-Fi and the 4G proxies, the modem still in data mode), so nothing tells the device; its own
supervision must find that neither path works, light the local fault output at once, and report
the path faults and "both paths failed" (350 `paths_all`) when a path returns. The stall is real
time (the device's timers run on it); the backlog is made inside it, and everything else waits
on a condition, so the test takes the stall plus boot and drain (≈6 min; its wall time is printed).
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from tests.hil.backlog import FAST_INPUTS, PRIORITY, input_changes, make_backlog
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.test_cell import CELL_HEAP, control, wait_state, world

STALL_S = 300
FAULT_WRITES = 240  # x 4 fault-class events = 960
FIRE_EVERY = 12  # a smoke alarm and its restore after every 12th: 20 x 2 = 40 fire events
BACKLOG = 1000
DELAY_S = 5


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    # A 10 s keepalive: a silent stall is found within ~20 s (a ping and its deadline). The
    # backup test at boot only: the scheduled one would fall inside the stall.
    return {**dut_config, "inputs": FAST_INPUTS, "path_fault_delay_s": DELAY_S, "heartbeat_s": 10,
            "broker": {**dut_config["broker"], "keepalive_s": 10},
            "cellular": {"enabled": True, "failback_stable_s": 10, "backup_test_s": 3600}}


@pytest.fixture
def dut_heapsize(dut_heapsize: str | None) -> str | None:
    return None if dut_heapsize is None else CELL_HEAP


@pytest.mark.slow  # ≈6 min: make test's workers start it first, beside the rest
def test_both_paths_stalled_5_min_with_1000_queued_all_delivered_in_order(centre: Centre, dut: Dut) -> None:
    t_start = time.monotonic()
    d = world(dut)
    dev = dut.device_id
    boot = centre.wait_event(dev, code="305", timeout_s=15)
    # The backup test at boot, and the session back on Wi-Fi after it.
    dut.wait_for_log(r"backup test over cellular: ok[\s\S]*connected to \S+ over wifi", timeout_s=60)
    centre.wait(lambda: dut.read_indicators()["led_fault"] == 0, 10, "no fault before the stall")
    mark = centre.mark()

    control(d, wifi="stall", cellular="stall")
    stall = time.monotonic()
    wait_state(d, lambda s: {s["paths"][p]["mode"] for p in ("wifi", "cellular")} == {"stall"}, 5,
               "both proxies stalling")
    since = dut.log_position()
    assert make_backlog(dut, FAULT_WRITES, FIRE_EVERY, since) == BACKLOG
    made_s = time.monotonic() - stall
    dut.wait_for_log(r"WARN recorder: outbox level 622 new", timeout_s=1, since=since)
    dut.wait_for_log(r"WARN recorder: outbox level 623 new", timeout_s=1, since=since)
    # The session fails over Wi-Fi, moves to 4G, fails there too: nowhere to go.
    dut.wait_for_log(r"moving to cellular", timeout_s=60, since=since)
    centre.wait(lambda: dut.read_indicators()["led_fault"] == 1, 60, "the local fault output during the stall")
    found_s = time.monotonic() - stall
    # The stall itself is the scenario: 5 minutes of the device's own timers (pings, backoff,
    # probes, fault delays). Meanwhile nothing may reach the centre and the device must live on.
    while time.monotonic() - stall < STALL_S:
        assert not centre.events_of(dev, since=mark), "an event got through a stalled path"
        assert "MemoryError" not in dut.log_text(since), dut.log_text(since)[-2000:]
        time.sleep(min(5.0, max(0.0, STALL_S - (time.monotonic() - stall))))
    assert dut.read_indicators()["led_fault"] == 1

    control(d, wifi="pass", cellular="pass")
    back = time.monotonic()
    wait_state(d, lambda s: {s["paths"][p]["mode"] for p in ("wifi", "cellular")} == {"pass"}, 5,
               "both proxies passing")
    names = {i["name"] for i in FAST_INPUTS}

    def inputs_delivered() -> int:
        return sum(1 for e in centre.events_of(dev, since=mark) if e.input in names)

    centre.wait(lambda: inputs_delivered() >= BACKLOG, 180, f"{BACKLOG} input events after the restore")
    delivered_s = time.monotonic() - back
    # The restores of what the stall raised follow the backlog (status class last).
    centre.wait(lambda: {("350", "restore"), ("622", "restore"), ("623", "restore")}
                <= {(e.code, e.q) for e in centre.events_of(dev, since=mark)}, 60, "the restores")
    arrived = centre.events_of(dev, since=mark)

    # Nothing lost, nothing twice: every number from the boot event on, each once.
    seqs = [e.seq for e in arrived]
    assert len(seqs) == len(set(seqs)), "an event twice"
    assert sorted(seqs) == list(range(boot.seq + 1, max(seqs) + 1)), "a gap"
    assert "624" not in {e.code for e in arrived}, "the outbox dropped events"
    # Every input change as the device logged it, in its order.
    logged = [(name, "new" if new == "active" else "restore") for name, _, new in input_changes(dut, since)]
    assert len(logged) == BACKLOG
    assert [(e.input, e.q) for e in sorted(arrived, key=lambda e: e.seq) if e.input in names] == logged
    # The backlog (everything recorded during the stall: the inputs, the levels, the path faults
    # raised) reached the centre in the outbox's order, fire first, then oldest first.
    backlog = [e for e in arrived if e.input in names or e.q == "new"]
    assert [e.seq for e in backlog] == [e.seq for e in sorted(backlog, key=lambda e: (PRIORITY[e.cls], e.seq))]
    news = {(e.code, e.input) for e in backlog if e.q == "new" and e.input not in names}
    assert {("351", "path_wifi"), ("352", "path_cellular"), ("350", "paths_all"), ("622", ""), ("623", "")} <= news, news
    # A heartbeat once it is over: empty outbox, both paths up, no fault left but what is true.
    hb = centre.wait_message(dev, "heartbeat", lambda r: r.doc["outbox"]["depth"] == 0 and r.at > time.time() - 5,
                             30, "a heartbeat with an empty outbox")
    assert not {"paths_all", "path_wifi", "path_cellular"} & set(hb.doc["faults"]), hb.doc["faults"]
    assert "MemoryError" not in dut.log_text(since)
    total_s = time.monotonic() - t_start
    print(f"\n{len(arrived)} events ({BACKLOG} input changes made in {made_s:.1f} s) after a {STALL_S} s stall of "
          f"both paths: stall found (fault output) in {found_s:.1f} s, delivered {delivered_s:.1f} s after the "
          f"restore; heap_peak {hb.doc['heap_peak'] / 1024:.0f} KB under -X heapsize={CELL_HEAP}; "
          f"test wall time {total_s:.0f} s")
