"""The centre rides out its broker (issue 9 §7): the site broker is stopped for 30 s while the
device raises alarms; on its return every alarm reaches the centre within 2 s, and the device
(connected again at once) is never shown offline: the outage is the broker's.

The broker is this test's own mosquitto; the device runs its default configuration (a pending
fire ends its reconnect backoff)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import BrokerFixture, own_site
from tests.hil.centre import Centre
from tests.hil.dut import Dut

OUTAGE_S = 30.0
ALARM_AFTER_RETURN_S = 2.0  # issue 9 acceptance


@pytest.fixture
def site(tmp_path: Path) -> Iterator[BrokerFixture]:
    with own_site(tmp_path / "broker") as s:  # this scenario stops its broker
        yield s


@pytest.mark.needs("inputs")
def test_broker_stopped_30_s_during_alarms(site: BrokerFixture, centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=15)
    centre.wait_change(dev, "online", 15)
    n_changes = len(centre.changes_of(dev))
    mark = centre.mark()

    site.broker.stop()
    stopped = time.monotonic()
    centre.wait(lambda: any("lost the broker" in w.reason for w in centre.warnings), 10, "broker loss noticed")
    dut.set_input("panel_fire", "active")
    dut.wait_for_log(r"INFO recorder: fire 110 new", timeout_s=10)
    dut.set_input("smoke", "active")
    dut.wait_for_log(r"INFO recorder: fire 111 new", timeout_s=10)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself
    site.broker.start()
    back = time.time()

    fire = centre.wait_event(dev, code="110", q="new", since=mark, timeout_s=15)
    smoke = centre.wait_event(dev, code="111", q="new", since=mark, timeout_s=15)
    late = max(fire.received_at, smoke.received_at) - back
    print(f"\nbroker away {OUTAGE_S:.0f} s; both alarms at the centre {late:.2f} s after its return")
    assert late <= ALARM_AFTER_RETURN_S, f"alarms reached the centre {late:.2f} s after the broker returned"

    # The device said `online` again at once; the centre never showed it offline, even after its
    # offline hold has passed.
    centre.wait_message(dev, "status", lambda r: not r.retained and r.at > back - 1 and r.doc["state"] == "online",
                        10, "online after the broker's return")
    hold_over = time.monotonic() + centre.monitor.config.supervision.offline_hold_s + 1
    centre.wait(lambda: time.monotonic() > hold_over, 10, "offline hold over")
    assert [c.change for c in centre.changes_of(dev)][n_changes:] == []
    assert centre.monitor.device(dev).state == "online"
