"""Input-to-centre latency per alarm, from the moment the input changed to the moment the
centre's MQTT client received the event. On the test jig the start is the jig's own stamp of
the edge it drove (its clock mapped onto the host's, tests/hil/jig.py); on the virtual device,
the moment the control file changed. Printed as p50/p95/p99 (`-s` shows it; `make bench` has
the virtual device's figures); asserted only that each alarm arrived and after its edge."""
from __future__ import annotations

import statistics

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut

CHANGES = 20


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


@pytest.mark.needs("inputs")
def test_input_to_centre_latency_per_alarm(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 15)
    latencies = []
    for i in range(CHANGES):
        q = "new" if i % 2 == 0 else "restore"
        mark = centre.mark()
        dut.set_input("panel_fire", "active" if q == "new" else "normal")
        edge = dut.edge_time
        event = centre.wait_event(dev, code="110", q=q, since=mark, timeout_s=10)
        assert edge is not None and event.received_at > edge
        latencies.append(event.received_at - edge)
    ms = [x * 1000 for x in latencies]
    print(f"\ninput-to-centre latency over {CHANGES} changes ({type(dut).__name__}): "
          f"p50 {percentile(ms, 50):.0f} ms, p95 {percentile(ms, 95):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
          f"max {max(ms):.0f} ms, mean {statistics.mean(ms):.0f} ms")
