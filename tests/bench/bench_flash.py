"""The alarm path with the flash modelled: `make bench` (tests/bench/run.py) calls `run()`.

The simulated board stalls for every flash block write the firmware makes, as long as a 4 KB
littlefs block rewrite takes on the reference SPI NOR flash (fl/hal/sim.py: `typical` 50 ms,
`worst` 450 ms), and counts them (sim/flash.json). For each model, on a site of its own
(mosquitto, the monitor, the virtual device running the shipped build):

1. fire latency: `panel_fire` changes timed from the control file to the monitor (run.py's
   measure_latency), p50/p95/p99;
2. backlog: events recorded with the link down, then the time until the monitor holds them all
   (run.py's measure_backlog);
3. block writes per delivered event in each phase, counted once the device has marked its
   removals and checkpointed (the counter stays still for SETTLE_S);
4. an idle spell (heartbeats only), once the boot has been marked healthy (a write once per
   boot): block writes, and that rate per day.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEVICE_ID = "fl-02000000f1a5"
SETTLE_S = 7.0  # the sender marks removals after 5 s without one; the checkpoint follows acks within 3 s
DAY_S = 86400


@dataclass
class FlashRun:
    model: str
    stall_ms: int
    changes: int
    latency_ms: tuple[float, float, float]  # p50, p95, p99
    debounce_ms: int
    latency_writes: int
    latency_events: int
    backlog_events: int
    backlog_fill_s: float
    backlog_all_s: float
    backlog_writes: int
    backlog_duplicates: int
    backlog_gaps: int
    idle_s: float
    idle_writes: int

    def per_event(self, writes: int, events: int) -> float:
        return writes / events if events else float("nan")

    @property
    def idle_per_day(self) -> float:
        return self.idle_writes * DAY_S / self.idle_s


def flash_stats(device_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((device_dir / "sim" / "flash.json").read_text())
    except (OSError, ValueError):
        return {}


def settled_writes(device_dir: Path, timeout_s: float = 60.0) -> int:
    """The block-write count once it has stayed still for SETTLE_S (raises if it never does)."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while True:
        n = flash_stats(device_dir).get("block_writes")
        now = time.monotonic()
        if n != last:
            last, since = n, now
        elif n is not None and now - since >= SETTLE_S:
            return int(n)
        if now > deadline:
            raise RuntimeError(f"the flash write count in {device_dir}/sim/flash.json never settled (last {last})")
        time.sleep(0.2)


def wait_console(path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not in {path} within {timeout_s:g} s")
        time.sleep(0.5)


def measure(model: str, root: Path, changes: int, backlog: int, idle_s: float, heapsize: str, app: Path,
            console: Console) -> FlashRun:
    from firelink.site.local import LocalSite
    from tests.bench import run as bench

    site = LocalSite(root / model, DEVICE_ID, bench.device_config(), heapsize=heapsize,
                     monitor_client_id=f"firelink-bench-flash-{model}", firmware=app)
    previous = os.environ.get("FL_FLASH_MODEL")
    os.environ["FL_FLASH_MODEL"] = model  # the device inherits it
    try:
        site.wipe()
        with console.status(f"flash model {model}: starting the site"):
            site.start_broker()
            site.start_monitor()
            # The first boot pre-allocates the outbox: 65 block writes, 29 s at the worst case.
            site.start_device(timeout_s=120.0)
            site.wait_online(180.0)
            w0 = settled_writes(site.device_dir)
        stall_ms = int(flash_stats(site.device_dir).get("stall_ms", -1))
        lat = bench.measure_latency(site, changes, console)
        with console.status(f"flash model {model}: waiting for removals and checkpoint"):
            w1 = settled_writes(site.device_dir)
        b = bench.measure_backlog(site, backlog, console)
        with console.status(f"flash model {model}: waiting for removals and checkpoint"):
            w2 = settled_writes(site.device_dir)
        with console.status(f"flash model {model}: waiting for the boot to be marked healthy (once per boot)"):
            # 60 s connected clears the boot counter (fl/bootguard.py): a write per boot, not per day.
            wait_console(site.console_log, "app: healthy: boot counter cleared", 180.0)
            w_idle = settled_writes(site.device_dir)
        with console.status(f"flash model {model}: idle for {idle_s:.0f} s (heartbeats only)"):
            t0 = time.monotonic()
            time.sleep(idle_s)
            site.check_device()
            w3 = int(flash_stats(site.device_dir).get("block_writes", w_idle))
            idle = time.monotonic() - t0
    finally:
        if previous is None:
            os.environ.pop("FL_FLASH_MODEL", None)
        else:
            os.environ["FL_FLASH_MODEL"] = previous
        site.close()
    return FlashRun(model, stall_ms, changes, (lat.ms(50), lat.ms(95), lat.ms(99)), lat.debounce_ms,
                    w1 - w0, len(lat.seconds), b.events, b.fill_s, b.all_s, w2 - w1, b.duplicates, len(b.gaps),
                    idle, w3 - w_idle)


def table(runs: list[FlashRun]) -> Table:
    t = Table(title="Flash modelled: every 4 KB block write stalls the simulated board (fl/hal/sim.py) and is "
                    "counted", title_justify="left")
    t.add_column("")
    for r in runs:
        t.add_column(f"{r.model} ({r.stall_ms} ms/block)", justify="right")
    t.add_row("fire latency p50 / p95 / p99", *(f"{r.latency_ms[0]:.0f} / {r.latency_ms[1]:.0f} / "
                                                f"{r.latency_ms[2]:.0f} ms" for r in runs))
    t.add_row("  of which debounce", *(f"{r.debounce_ms} ms" for r in runs))
    t.add_row("block writes per delivered fire event (each acked)",
              *(f"{r.per_event(r.latency_writes, r.latency_events):.2f} ({r.latency_writes}/{r.latency_events})"
                for r in runs))
    t.add_row("backlog: events recorded with the link down", *(f"{r.backlog_events} in {r.backlog_fill_s:.1f} s"
                                                               for r in runs))
    t.add_row("backlog: link restored → the monitor holds all", *(f"{r.backlog_all_s:.2f} s" for r in runs))
    t.add_row("block writes per delivered backlog event",
              *(f"{r.per_event(r.backlog_writes, r.backlog_events):.2f} ({r.backlog_writes}/{r.backlog_events})"
                for r in runs))
    t.add_row("duplicates / seq gaps at the monitor", *(f"{r.backlog_duplicates} / {r.backlog_gaps}" for r in runs))
    t.add_row("idle: block writes (heartbeats only)", *(f"{r.idle_writes} in {r.idle_s:.0f} s" for r in runs))
    t.add_row("idle: block writes per day", *(f"{r.idle_per_day:.0f}" for r in runs))
    return t


def run(args: Any, app: Path, console: Console) -> list[tuple[str, str, str]]:
    """Runs each model; prints its table; returns rows for the bench summary."""
    runs = []
    for model, changes, backlog in (("typical", args.flash_changes, args.flash_backlog),
                                    ("worst", max(10, args.flash_changes // 4), max(20, args.flash_backlog // 5))):
        runs.append(measure(model, args.dir / "flash", changes, backlog, args.flash_idle_s, args.heapsize, app,
                            console))
        console.print(table(runs[-1:]))
    if len(runs) > 1:
        console.print(table(runs))
    rows = []
    for r in runs:
        ev = r.per_event(r.backlog_writes, r.backlog_events)
        rows.append((f"flash {r.model} ({r.stall_ms} ms/block): fire p50/p95/p99, backlog",
                     f"{r.latency_ms[0]:.0f} / {r.latency_ms[1]:.0f} / {r.latency_ms[2]:.0f} ms; "
                     f"{r.backlog_events} events drained in {r.backlog_all_s:.2f} s",
                     f"block writes per delivered event {ev:.2f} (aim ≤ 1.2; fire with acks "
                     f"{r.per_event(r.latency_writes, r.latency_events):.2f}), per idle day {r.idle_per_day:.0f} "
                     f"(aim 0)"))
    return rows
