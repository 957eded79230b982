"""32-bit time on the virtual device: the firmware counts ticks like an ESP32 (period 2^30 ms,
fl/ticks.py). Started a few seconds before the wrap and configured for a weekly periodic test
(604800 s: more than the 2^29 ms a board's ticks_add accepts), it runs on through the wrap:
no part fails, the watchdog is fed (its allowance for housekeeping is 30 s), there is one
boot, and an alarm raised after the wrap reaches the centre."""
from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut, VirtualDut

PERIOD = 1 << 30
BEFORE_WRAP_MS = 8000
# The watchdog stops feeding once a part shows no progress for its allowance (30 s for
# housekeeping, the longest but the links'); running past it proves every part kept moving.
RUN_S = 40


@pytest.fixture
def dut_config(dut_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # The wrap after boot, not inside it: boot takes a few seconds under a busy CI.
    monkeypatch.setenv("FL_TICKS_START", str(PERIOD - BEFORE_WRAP_MS))
    return {**dut_config, "periodic_test_s": 604800}


def _stamps(text: str) -> list[int]:
    return [int(m[1]) for m in re.finditer(r"^(\d+) (?:DEBUG|INFO|WARN|ERROR) ", text, re.M)]


@pytest.mark.needs("inputs", "ticks")
def test_weekly_periodic_test_runs_on_through_a_tick_wrap(centre: Centre, dut: Dut) -> None:
    if not isinstance(dut, VirtualDut):
        pytest.skip("the tick start is set on the unix port only")
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=15)
    first = _stamps(dut.log_text(0))[0]
    assert PERIOD - BEFORE_WRAP_MS <= first < PERIOD, f"the device started its ticks at {first}"
    started = time.monotonic()
    while time.monotonic() - started < RUN_S:  # past the wrap and the watchdog's allowance: what is tested
        time.sleep(1)
    mark = centre.mark()
    since = dut.log_position()
    dut.set_input("panel_fire", "active")
    line = dut.wait_for_log(r"(\d+) INFO app: input panel_fire: normal -> active", timeout_s=5, since=since)
    assert int(line[1]) < PERIOD // 2, f"the alarm's log stamp {line[1]} is from before the wrap"
    centre.wait_event(dev, since=mark, code="110", q="new", timeout_s=10)
    text = dut.log_text(0)
    assert "stopped making progress" not in text, text[-2000:]
    assert not re.search(r"task \w+ failed", text), text[-2000:]
    assert "OverflowError" not in text, text[-2000:]
    assert dut.dev.state().get("boots") == 1, dut.dev.state()
