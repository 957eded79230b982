"""`make bench`, the diagnostics part (issue 12): a fire's input-to-centre time without and with
`firelink diag`'s live view attached (the whole picture asked twice a second over the device's
serial port), and how soon that view shows the input's change. One site: mosquitto, the real
monitor, the virtual device running the shipped build (reference board, with the console).
Nothing is asserted; the figures are printed against the issue's aims (as fast as without;
the view within 1 s)."""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

from rich.console import Console

from firelink.board.diag import DiagLink, snapshot
from firelink.commands.diag import REFRESH_S
from firelink.site.local import LocalSite, SiteError

FIRE = "panel_fire"
HEAP = "384k"  # the reference board's room for the console's answers on the 64-bit port
CHANGES = 20


def _changes(site: LocalSite, n: int, out: list[float]) -> None:
    state = "normal"
    for _ in range(n):
        state = "active" if state == "normal" else "normal"
        mark = len(site.watch.events())
        t0 = site.set_input(FIRE, state)
        ev = site.wait_event(lambda e: e.code == "110" and e.q == ("new" if state == "active" else "restore"),
                             15, after=mark, what="the fire change")
        out.append(ev.received_at - t0)
        time.sleep(0.3)


def measure(directory: Path, firmware: Path) -> dict[str, list[float]]:
    site = LocalSite(directory, "bench-diag", {}, heapsize=HEAP, monitor_client_id="firelink-bench-diag",
                     firmware=firmware)
    site.wipe()
    out: dict[str, list[float]] = {"without": [], "with": [], "view": []}
    try:
        site.start_broker()
        site.start_monitor()
        site.start_device()
        site.wait_online(30)
        _changes(site, CHANGES, out["without"])
        assert site.device is not None
        with DiagLink(site.device.tty()) as link:
            link.hello(10)
            stop = threading.Event()
            seen: list[tuple[float, str]] = []

            def view() -> None:
                while not stop.is_set():
                    snap = snapshot(link)
                    seen.append((time.time(), {i["name"]: i["state"] for i in snap["inputs"]}[FIRE]))
                    stop.wait(REFRESH_S)

            t = threading.Thread(target=view, daemon=True)
            t.start()
            try:
                state = "normal"
                for _ in range(CHANGES):
                    state = "active" if state == "normal" else "normal"
                    mark = len(site.watch.events())
                    t0 = site.set_input(FIRE, state)
                    want = "new" if state == "active" else "restore"
                    ev = site.wait_event(lambda e: e.code == "110" and e.q == want, 15, after=mark,
                                         what="the fire change with the console attached")
                    out["with"].append(ev.received_at - t0)
                    deadline = time.monotonic() + 10
                    while not any(at > t0 and s == state for at, s in seen) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    shown = [at for at, s in seen if at > t0 and s == state]
                    if shown:
                        out["view"].append(min(shown) - t0)
                    time.sleep(0.3)
            finally:
                stop.set()
                t.join(5)
    finally:
        site.close()
    return out


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


def run_part(directory: Path, app: Path, console: Console, summary: list[tuple[str, str, str]]) -> str | None:
    """run.py's hook: measures, prints, adds summary rows; returns what failed, or None."""
    try:
        with console.status("fire latency with and without `firelink diag` attached (bench_diag.py)"):
            f = measure(directory, app)
    except (SiteError, OSError, AssertionError) as e:
        return f"diag bench: {e}"
    rows = [
        ("fire to centre, no console", f"p50 {_p(f['without'], .5):.0f} ms, p95 {_p(f['without'], .95):.0f} ms",
         f"{len(f['without'])} changes"),
        ("fire to centre, live view attached", f"p50 {_p(f['with'], .5):.0f} ms, p95 {_p(f['with'], .95):.0f} ms",
         "aim: as without"),
        ("live view shows the change", f"p50 {_p(f['view'], .5):.0f} ms, max {max(f['view'] or [0]) * 1000:.0f} ms",
         f"aim ≤ 1000 ms; {len(f['view'])} of {CHANGES} seen"),
    ]
    for r in rows:
        console.print(f"{r[0]}: {r[1]} ({r[2]})")
    summary.extend(rows)
    return None if statistics.median(f["with"]) < 2 * statistics.median(f["without"]) + 0.1 else \
        "diag bench: the console slows the fire down"
