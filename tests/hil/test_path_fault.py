"""A path down longer than `path_fault_delay_s` is reported (Contact ID 351 for Wi-Fi), once,
and restored when the path returns; alarms raised meanwhile are delivered when it does.

The delay is 90 s by default (LAN practice: a router reboot is not a fault); here it is 5 s,
the shortest the configuration allows."""
from __future__ import annotations

import time
from typing import Any

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut

DELAY_S = 5


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    return {**dut_config, "path_fault_delay_s": DELAY_S}


@pytest.mark.needs("inputs", "path")
def test_path_down_past_the_delay_is_reported_and_restored(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=15)
    mark = centre.mark()
    dut.set_link("wifi", False)
    cut = time.time()
    dut.wait_for_log(r"WARN link: wifi went down", timeout_s=5)
    dut.set_input("panel_fire", "active")
    dut.wait_for_log(r"INFO recorder: fire 110 new", timeout_s=5)
    time.sleep(DELAY_S + 2)  # the delay itself is what is tested
    dut.set_link("wifi", True)
    restore = centre.wait_event(dev, since=mark, code="351", q="restore", timeout_s=15)
    events = centre.events_of(dev, since=mark)
    path = [(e.code, e.q, e.cls, e.input) for e in events if e.code == "351"]
    assert path == [("351", "new", "fault", "path_wifi"), ("351", "restore", "fault", "path_wifi")]
    new = next(e for e in events if e.code == "351" and e.q == "new")
    assert new.detail == "wifi down"
    assert new.ts >= int(cut) + DELAY_S - 1, "reported before the delay had passed"
    assert new.seq < restore.seq
    fire = [e for e in events if e.code == "110"]
    assert [(e.q, e.cls) for e in fire] == [("new", "fire")]
    # Fire first: the alarm raised during the cut reached the centre before the path fault.
    assert events.index(fire[0]) < events.index(new)
