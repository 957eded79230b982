"""`firelink demo`: a site broker, a virtual device and the monitor on this PC; a fire alarm and its
restore end to end, with their latency and the centre's ack; then everything stopped.

Exit status 0 only if the alarm and the restore both reached the monitor and were acknowledged.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from firelink.centre.monitor import Sink
from firelink.centre.view import LineSink, LiveView
from firelink.progress import Reporter
from firelink.site.demo import DemoConfig, DemoError, DemoResult, run_demo

DEFAULT_DIR = Path("run/demo")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="a fire alarm and its restore end to end on a virtual device",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                   help="where the broker state, the device, the logs and the store go; emptied first "
                        "(default: %(default)s)")
    p.add_argument("--device-id", default="fl-demo", help="(default: %(default)s)")
    p.add_argument("--lines", action="store_true",
                   help="the monitor's JSON lines on stdout instead of its live view")
    p.add_argument("--hold-s", type=float, default=1.0, help="how long the alarm stays on (default: %(default)s)")
    p.add_argument("--online-timeout-s", type=float, default=45.0,
                   help="how long to wait for the device to come online (default: %(default)s)")
    p.set_defaults(func=run)


class StepScreen(Reporter):
    """The demo's steps, one line each (a spinner while one runs, ✓ with what it achieved when done),
    above the monitor's own live view."""

    def __init__(self, view: LiveView | None) -> None:
        self.view = view
        self.done: list[Text] = []
        self.current: str | None = None
        self.started = 0.0
        self.notes: list[Text] = []

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        if self.current is not None:
            self.finish()
        self.current, self.started = step, time.monotonic()

    def finish(self, message: str = "") -> None:
        if self.current is None:
            return
        took = time.monotonic() - self.started
        self.done.append(Text.assemble(("✓ ", "green"), self.current, (f"  {message}" if message else "", "dim"),
                                       (f"  {took:.1f} s", "dim")))
        self.current = None

    def failed(self) -> None:
        if self.current is not None:
            self.done.append(Text.assemble(("✗ ", "red"), (self.current, "red")))
            self.current = None

    def info(self, message: str) -> None:
        self.notes.append(Text(message))

    def warn(self, message: str) -> None:
        self.notes.append(Text.assemble(("warning: ", "yellow"), message))

    def renderable(self) -> RenderableType:
        parts: list[RenderableType] = [*self.done]
        if self.current is not None:
            parts.append(Spinner("dots", text=Text(self.current)))
        parts += self.notes
        if self.view is not None and self.view.devices:
            parts.append(self.view.renderable())
        return Group(*parts)


def summary(result: DemoResult) -> Table:
    t = Table(title="FireLink demo", show_header=False, title_justify="left", box=None, padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    for s in result.steps:
        ev = s.event
        t.add_row(f"fire {s.what}", f"{ev.input} code {ev.code} q {ev.q} seq {ev.seq} id {ev.id}: "
                                    f"[bold]{s.latency_s * 1000:.0f} ms[/] input change → monitor, "
                                    f"acked {s.ack_after_s * 1000:.0f} ms after receipt")
    if result.steps:
        lo, mean, hi = result.latency_summary()
        debounce = f"; includes the input's {result.debounce_ms} ms debounce" if result.debounce_ms else ""
        t.add_row("latency", f"min {lo * 1000:.0f} / mean {mean * 1000:.0f} / max {hi * 1000:.0f} ms{debounce} "
                             "(host clock; the monitor's own latency column uses the device's whole-second "
                             "timestamps)")
    t.add_row("device", f"{result.device_id} online {result.online_after_s:.1f} s after power-on; "
                        f"{'said offline at stop' if result.offline_seen else 'no offline message seen'}")
    if result.stats is not None:
        s = result.stats
        t.add_row("monitor", f"{s.messages} messages, {s.events} events (with the device's reset report), "
                             f"{s.acks_sent} acks sent, {s.malformed} malformed")
    t.add_row("console log", str(result.console_log))
    t.add_row("broker log", str(result.broker_log))
    t.add_row("store", f"{result.db}  (sqlite3 {result.db} 'select seq, code, q, input, received_at, acked_at "
                       "from events')")
    return t


def run(args: argparse.Namespace) -> int:
    out = Console(soft_wrap=False)
    config = DemoConfig(directory=args.dir, device_id=args.device_id, hold_s=args.hold_s,
                        online_timeout_s=args.online_timeout_s)
    view = None if args.lines else LiveView(recent=8)
    sinks: list[Sink] = [LineSink(sys.stdout) if view is None else view]
    screen = StepScreen(view)
    out.print(f"[bold]FireLink demo[/]: broker, monitor and a virtual device in {args.dir}; Ctrl-C stops everything")
    if args.lines:
        result = _run_plain(config, sinks)
    else:
        try:
            with Live(get_renderable=screen.renderable, console=out, refresh_per_second=8):
                try:
                    result = run_demo(config, screen, sinks)
                except BaseException:
                    screen.failed()
                    raise
        finally:
            out.line()  # the live display's last frame may end without one
    out.print(summary(result))
    if not result.ok:
        raise DemoError("the alarm and its restore did not both arrive acknowledged")
    out.print("[bold green]demo passed[/]: alarm and restore received and acknowledged")
    return 0


def _run_plain(config: DemoConfig, sinks: list[Sink]) -> DemoResult:
    """--lines: steps printed to stderr as they finish, the monitor's JSON lines on stdout."""
    err = Console(stderr=True)

    class _Printing(StepScreen):
        def finish(self, message: str = "") -> None:
            n = len(self.done)
            super().finish(message)
            for line in self.done[n:]:
                err.print(line)

        def warn(self, message: str) -> None:
            err.print(f"[yellow]warning:[/] {message}")

    printing = _Printing(None)
    try:
        return run_demo(config, printing, sinks)
    except BaseException:
        printing.failed()
        if printing.done:
            err.print(printing.done[-1])
        raise
