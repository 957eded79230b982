"""Link faults made on the host (issue 13): the device reaches the broker through the suite's
TCP proxy, which stalls, resets, refuses or delays the connection, on any rig (virtual device,
or a board on the test jig). Whatever the fault, an alarm raised during it reaches the centre
once it clears, exactly once; the status LED says whether the device is connected."""
from __future__ import annotations

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.link_proxy import LinkProxy

DELAY_S = 1.5


@pytest.mark.needs("inputs", "link")
# "cut": open connections reset and the port refused (link_proxy's cut()); "refuse" alone leaves
# an open connection be, so it is tested within the cut.
@pytest.mark.parametrize("mode", ["stall", "reset", "cut", "delay"])
def test_an_alarm_raised_during_a_link_fault_arrives_once_it_clears(centre: Centre, dut: Dut, link: LinkProxy,
                                                                    mode: str) -> None:
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=15)  # booted and delivering
    mark = centre.mark()
    if mode == "cut":
        link.cut()
    else:
        link.set_mode(mode, delay_s=DELAY_S if mode == "delay" else 0.0)
    since = dut.log_position()
    dut.set_input("panel_fire", "active")
    dut.wait_for_log(r"INFO recorder: fire 110 new zone 1 seq \d+", timeout_s=5, since=since)
    if mode == "delay":
        # Slow, not broken: it arrives through the delay, not before.
        alarm = centre.wait_event(dev, code="110", since=mark, timeout_s=DELAY_S + 10)
        assert dut.edge_time is not None and alarm.received_at - dut.edge_time >= DELAY_S
    else:
        assert [e for e in centre.events_of(dev, since=mark) if e.code == "110"] == []  # nothing got through
        link.restore()
        alarm = centre.wait_event(dev, code="110", since=mark, timeout_s=30)
    link.restore()
    assert (alarm.q, alarm.input) == ("new", "panel_fire")
    dut.set_input("panel_fire", "normal")  # a later event: everything before it has been delivered
    centre.wait_event(dev, code="110", q="restore", since=mark, timeout_s=30)
    assert [(e.code, e.q) for e in centre.store.events(dev) if e.code == "110"] == [("110", "new"), ("110", "restore")]


@pytest.mark.needs("indicators", "link")
def test_status_led_follows_the_broker_connection(centre: Centre, dut: Dut, link: LinkProxy) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 15)
    centre.wait(lambda: dut.read_indicators()["led_status"] == 1, 5, "status LED on while connected")
    link.cut()
    centre.wait(lambda: dut.read_indicators()["led_status"] == 0, 10, "status LED off once the link is cut")
    link.restore()
    centre.wait(lambda: dut.read_indicators()["led_status"] == 1, 30, "status LED on again once reconnected")


@pytest.mark.needs("link")
def test_offline_when_the_link_is_cut_and_online_again_when_it_returns(centre: Centre, dut: Dut,
                                                                       link: LinkProxy) -> None:
    """Needs nothing of a jig: runs on a bare board too."""
    dev = dut.device_id
    centre.wait_change(dev, "online", 15)
    n = len(centre.changes_of(dev))
    link.cut()  # the broker sees the connection reset: the device's will, at once
    centre.wait_change(dev, "offline", 10, since=n)
    link.restore()
    centre.wait_change(dev, "online", 30, since=n)
    assert centre.live_statuses(dev)[-2:] == ["offline", "online"]
