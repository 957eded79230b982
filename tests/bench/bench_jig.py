"""`make bench`, through the test jig (issue 13): fire latency timed from the jig's own stamp
of the edge it drove to the monitor's receipt, the way a board on the real jig is timed.

Here the jig is the simulated one (the jig firmware under the unix port on a pty, driving the
bench's virtual device through its sim files; tests/hil/jig.py), so the figure adds the jig's
path (serial line, its control-file write) to the virtual device's; on a board the same
numbers come from `pytest tests/hil/test_input_latency.py --dut PORT --jig PORT -s`. Runs last
among the device parts: taking the jig powers the device off and on (the jig's safe state).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from firelink.site.local import LocalSite
from tests.hil.dut import JigDut, VirtualDut
from tests.hil.jig import Jig, SimJig

FIRE = "panel_fire"


@dataclass
class JigLatency:
    seconds: list[float] = field(default_factory=list)  # jig edge stamp -> the monitor received it
    sync_s: float = 0.0  # the clock pairing's uncertainty (half a CLOCK round trip)


def measure(site: LocalSite, changes: int, console: Console) -> JigLatency:
    assert site.device is not None
    out = JigLatency()
    sim = SimJig(site.device_dir, site.dir / "jig.log")
    port = sim.start()
    try:
        jig = Jig.open(port)
        try:
            dut = JigDut(VirtualDut(site.device_dir, firmware=site.firmware, heapsize=site.heapsize), jig,
                         site.device_dir)
            with console.status("jig: powering the device through the jig, waiting for its boot event"):
                mark = len(site.watch.events())
                jig.power(False)  # answered once the device is down: a real power cycle, not a blink
                dut.start()
                site.wait_event(lambda e: e.code == "305", 30.0, after=mark, what="the boot event after the jig's power-on")
            out.sync_s = jig.sync_clock()
            state = "normal"
            with console.status(f"jig: {changes} changes of {FIRE}"):
                for i in range(changes):
                    state = "active" if state == "normal" else "normal"
                    q = "new" if state == "active" else "restore"
                    mark = len(site.watch.events())
                    dut.set_input(FIRE, state)
                    assert dut.edge_time is not None
                    ev = site.wait_event(lambda e, q=q: e.input == FIRE and e.q == q, 10.0, after=mark,
                                         what=f"jig change {i + 1} ({FIRE} {state})")
                    out.seconds.append(ev.received_at - dut.edge_time)
        finally:
            jig.close()
    finally:
        sim.stop()
    return out


def table(lat: JigLatency, percentile: object) -> Table:
    pct = percentile  # run.py's, so both tables count alike
    t = Table(title=f"Fire latency through the simulated jig: the jig's edge stamp → receipt at the monitor "
                    f"({len(lat.seconds)} changes; clock pairing ±{lat.sync_s * 1000:.2f} ms)", title_justify="left")
    for col in ("", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("total", *(f"{pct(lat.seconds, p) * 1000:.1f} ms" for p in (50, 95, 99, 100)))  # type: ignore[operator]
    return t
