"""A configuration with mistakes: the device says precisely what is wrong, on its console and to
the centre (event 307, input `config`, the problems in its detail; the heartbeat's `faults`),
runs every good value, and still watches its inputs: a fire input change is delivered.

The 307 event holds what fits one outbox slot (240 bytes): the count and the first problems.
The heartbeat's `faults.config` carries the whole list, so the centre learns every problem."""
from __future__ import annotations

from typing import Any

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut

PROBLEMS = [
    'config.json: heartbeat_s: expected an integer 5..86400, got "fast"',
    'config.json: inputs[1].kind: expected one of "fire", "smoke", "heat", "manual", "supervisory", "fault", '
    '"mains", "battery", "tamper", got "fir"; entry dropped',
    'config.json: inputs: channel in3 is not configured; watching it as the board default "smoke" (smoke)',
    "config.json: brokr: unknown key (ignored)",
]


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    return {**dut_config, "heartbeat_s": "fast", "brokr": {"host": "typo.example"},
            "inputs": [{"name": "panel_fire", "kind": "fire", "channel": "in1", "zone": 1},
                       {"name": "pump", "kind": "fir", "channel": "in6", "zone": 6}]}


@pytest.mark.needs("inputs")
def test_bad_config_is_reported_precisely_and_inputs_still_watched(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    dut.wait_for_log(r"INFO app: inputs: ", timeout_s=15)
    logged = [line.split(" ERROR app: ", 1)[1] for line in dut.log_text(0).splitlines() if " ERROR app: " in line]
    assert sorted(logged) == sorted(PROBLEMS)
    told = f"{len(logged)} problems: " + "; ".join(logged)
    report = centre.wait_event(dev, code="307", timeout_s=10)
    assert (report.q, report.cls, report.zone, report.input) == ("new", "fault", 0, "config")
    # The event holds what fits one outbox slot: the count and the start of the list.
    assert report.detail and told.startswith(report.detail) and len(report.detail) >= 60
    heartbeat = centre.wait_message(dev, "heartbeat", lambda r: True, 10, "heartbeat")
    assert heartbeat.doc["faults"] == {"config": told}
    assert heartbeat.doc["inputs"] == {"panel_fire": "normal", "smoke": "normal"}

    dut.set_input("panel_fire", "active")
    alarm = centre.wait_event(dev, code="110", timeout_s=10)
    assert (alarm.q, alarm.cls, alarm.zone, alarm.input) == ("new", "fire", 1, "panel_fire")
    dut.set_input("smoke", "active")  # the fire-class channel nobody configured is watched anyway
    smoke = centre.wait_event(dev, code="111", timeout_s=10)
    assert (smoke.cls, smoke.zone, smoke.input) == ("fire", 3, "smoke")


def test_every_config_problem_reaches_the_centre(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    dut.wait_for_log(r"INFO app: inputs: ", timeout_s=15)
    report = centre.wait_event(dev, code="307", timeout_s=10)
    heartbeat = centre.wait_message(dev, "heartbeat", lambda r: True, 10, "heartbeat")
    told = [report.detail or "", *heartbeat.doc["faults"].values()]
    assert [p for p in PROBLEMS if not any(p in t for t in told)] == []
