"""A configuration with mistakes: the device says precisely what is wrong, on its console and to
the centre (event 307, input `config`, the problems in its detail; the heartbeat's `faults`),
runs every good value, and still watches its inputs: a fire input change is delivered.

Known gap (reported, see the xfail below): the 307 event must fit one outbox slot (240 bytes,
fl/slotfile.py), so fl/recorder.py cuts its detail to ~95 characters, and fl/app.py cuts the
joined problems to 200 for the health fault: with several problems the centre gets the first
one or two in the event, and 200 characters in the heartbeat."""
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


def test_bad_config_is_reported_precisely_and_inputs_still_watched(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    dut.wait_for_log(r"INFO app: inputs: ", timeout_s=15)
    logged = [line.split(" ERROR app: ", 1)[1] for line in dut.log_text(0).splitlines() if " ERROR app: " in line]
    assert sorted(logged) == sorted(PROBLEMS)
    joined = "; ".join(logged)
    report = centre.wait_event(dev, code="307", timeout_s=10)
    assert (report.q, report.cls, report.zone, report.input) == ("new", "fault", 0, "config")
    # The start of the list, at least its first problem whole.
    assert report.detail and joined.startswith(report.detail) and len(report.detail) >= len(logged[0])
    heartbeat = centre.wait_message(dev, "heartbeat", lambda r: True, 10, "heartbeat")
    assert heartbeat.doc["faults"] == {"config": joined[:200]}
    assert heartbeat.doc["inputs"] == {"panel_fire": "normal", "smoke": "normal"}

    dut.set_input("panel_fire", "active")
    alarm = centre.wait_event(dev, code="110", timeout_s=10)
    assert (alarm.q, alarm.cls, alarm.zone, alarm.input) == ("new", "fire", 1, "panel_fire")
    dut.set_input("smoke", "active")  # the fire-class channel nobody configured is watched anyway
    smoke = centre.wait_event(dev, code="111", timeout_s=10)
    assert (smoke.cls, smoke.zone, smoke.input) == ("fire", 3, "smoke")


@pytest.mark.xfail(strict=True, reason="firmware: the 307 detail is cut to one outbox slot (~95 chars, "
                   "fl/recorder.py _fit) and the config fault to 200 chars (fl/app.py): with several "
                   "problems the centre never learns them all; reported, needs a decision")
def test_every_config_problem_reaches_the_centre(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    dut.wait_for_log(r"INFO app: inputs: ", timeout_s=15)
    report = centre.wait_event(dev, code="307", timeout_s=10)
    heartbeat = centre.wait_message(dev, "heartbeat", lambda r: True, 10, "heartbeat")
    told = [report.detail or "", *heartbeat.doc["faults"].values()]
    assert [p for p in PROBLEMS if not any(p in t for t in told)] == []
