"""`firelink monitor`: the monitoring centre in a terminal (live view) or for scripts (`--lines`)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from firelink.centre.devices import Supervision
from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig, MonitorError, Sink
from firelink.centre.store import Event, MonitorStore
from firelink.centre.view import LineSink, LiveView
from firelink.errors import UsageError

DEFAULT_DB = Path("run/monitor.db")
PASSWORD_ENV = "FL_MONITOR_PASS"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="receive, store and acknowledge alarms; supervise devices")
    p.add_argument("--host", default="127.0.0.1", help="broker address (default: %(default)s)")
    p.add_argument("--port", type=int, default=1883, help="broker port (default: %(default)s)")
    p.add_argument("--username", default="monitor", help="broker account (default: %(default)s)")
    p.add_argument("--password", default=None,
                   help=f"broker password (default: ${PASSWORD_ENV}, which keeps it out of the process list)")
    p.add_argument("--client-id", default="monitor",
                   help="MQTT client id; keep it stable so the broker holds messages while the monitor restarts. "
                        "A FireLink site broker replaces it with the account name (default: %(default)s)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca", type=Path, help="CA certificate (PEM) for --tls")
    p.add_argument("--cert", type=Path, help="client certificate (PEM), when the listener asks for one")
    p.add_argument("--key", type=Path, help="client key (PEM) for --cert")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite store (default: %(default)s)")
    p.add_argument("--lines", action="store_true", help="one JSON line per alarm, fault, restore or device change")
    p.add_argument("--supervision-s", type=float, default=None,
                   help="report a device lost after this much silence (default: 3 heartbeat intervals, learned "
                        "from their spacing, + --supervision-margin-s)")
    p.add_argument("--supervision-margin-s", type=float, default=20.0, help="(default: %(default)s)")
    p.add_argument("--heartbeat-s", type=float, default=60.0,
                   help="heartbeat interval assumed until one is learned (default: %(default)s)")
    p.add_argument("--device-supervision", action="append", default=[], metavar="DEVICE=SECONDS",
                   help="supervision time for one device; repeatable")
    p.add_argument("--gap-grace-s", type=float, default=60.0,
                   help="report missing sequence numbers still missing after this long (default: %(default)s)")
    p.add_argument("--reconnect-grace-s", type=float, default=75.0,
                   help="after the monitor gets its broker back, how long a device may take to reconnect before "
                        "its `offline` is shown (default: %(default)s; the devices' backoff caps at 60 s)")
    p.add_argument("--flood-events", type=int, default=100,
                   help="more events than this from one device within --flood-window-s is a flood: one fault, "
                        "events stored but not shown one by one (default: %(default)s)")
    p.add_argument("--flood-window-s", type=float, default=2.0, help="(default: %(default)s)")
    p.add_argument("--connect-timeout-s", type=float, default=10.0, help="(default: %(default)s)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--exit-after-events", type=int, metavar="N", help="exit once N new events have arrived")
    stop.add_argument("--exit-after-s", type=float, metavar="S", help="exit after S seconds")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> MonitorConfig:
    per_device: dict[str, float] = {}
    for item in args.device_supervision:
        name, _, seconds = item.partition("=")
        try:
            per_device[name] = float(seconds)
        except ValueError:
            raise UsageError(f"--device-supervision wants DEVICE=SECONDS, not {item!r}") from None
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    if args.flood_events < 1 or args.flood_window_s <= 0 or args.reconnect_grace_s < 0:
        raise UsageError("--flood-events, --flood-window-s must be positive, --reconnect-grace-s not negative")
    return MonitorConfig(
        mqtt=MqttSettings(host=args.host, port=args.port, username=args.username,
                          password=args.password if args.password is not None else os.environ.get(PASSWORD_ENV),
                          client_id=args.client_id, tls=args.tls or bool(args.ca or args.cert), ca=args.ca,
                          cert=args.cert, key=args.key),
        gap_grace_s=args.gap_grace_s, flood_events=args.flood_events,
        flood_window_s=args.flood_window_s,
        supervision=Supervision(fixed_s=args.supervision_s, per_device=per_device,
                                margin_s=args.supervision_margin_s, default_heartbeat_s=args.heartbeat_s,
                                reconnect_grace_s=args.reconnect_grace_s))


class _Countdown(Sink):
    """Sets `done` once N new events have been reported."""

    def __init__(self, n: int | None) -> None:
        self.left = n
        self.done = threading.Event()

    def on_event(self, event: Event) -> None:
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                self.done.set()


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    config = config_from_args(args)
    store = MonitorStore(args.db)
    countdown = _Countdown(args.exit_after_events)
    monitor = Monitor(store, config)
    view = None if args.lines else LiveView(missing=monitor.missing_seqs)
    monitor.sinks += [LineSink(sys.stdout) if view is None else view, countdown]
    try:
        monitor.start(args.connect_timeout_s)
    except MonitorError:
        store.close()
        raise
    err.print(f"monitoring {config.mqtt.host}:{config.mqtt.port} as {config.mqtt.username}; store {args.db}; Ctrl-C to stop")
    signal.signal(signal.SIGTERM, _interrupt)
    deadline = None if args.exit_after_s is None else time.monotonic() + args.exit_after_s
    try:
        if view is None:
            _wait(monitor, countdown, deadline)
        else:
            with Live(get_renderable=view.renderable, console=Console(), refresh_per_second=4, screen=False):
                _wait(monitor, countdown, deadline)
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop()
        store.close()
    if monitor.failure is not None:
        raise MonitorError(f"monitor stopped: {monitor.failure}")
    s = monitor.stats
    err.print(f"{s.messages} messages, {s.events} events, {s.duplicates} duplicates, {s.malformed} quarantined, "
              f"{s.suspect} suspect, {s.floods} floods, {s.acks_sent} acks sent")
    return 0


def _wait(monitor: Monitor, countdown: _Countdown, deadline: float | None) -> None:
    while not countdown.done.wait(0.2):
        if monitor.failure is not None:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM stops the monitor as cleanly as Ctrl-C does.
    raise KeyboardInterrupt
