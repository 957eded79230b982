"""The demo: a fire alarm and its restore, end to end, on this PC.

`run_demo()` starts a site broker (mosquitto in `<dir>/broker`, free ports), creates the device
and monitor accounts, starts the monitoring centre in this process and a virtual device (the
real firmware under the unix port, `firelink.virtual.device`'s defaults) configured for that broker,
waits until the device is online, puts `panel_fire` in alarm and then back to normal, and
waits for each event to reach the monitor and for the monitor's ack to be accepted by the
broker. Then it stops everything (the device says `offline` itself, the broker stops) and
returns a `DemoResult`. Latency is measured on the host's clock: from just before the sim
control file is written to the moment the monitor's MQTT client received the event.

Each run starts from nothing: the broker state, the store and the device's flash from an
earlier run in the same directory are removed first (the logs of this run stay afterwards).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from firelink.centre.monitor import MonitorStats, Sink
from firelink.centre.store import Event
from firelink.errors import FireLinkError
from firelink.progress import Reporter
from firelink.site.local import LocalSite, SiteError
from firelink.virtual.world import WorldError

FIRE_INPUT = "panel_fire"


class DemoError(FireLinkError, RuntimeError):
    """The demo could not run to its end; the message says what failed and what to do."""


@dataclass
class DemoConfig:
    directory: Path = Path("run/demo")
    device_id: str = "fl-demo"
    input_name: str = FIRE_INPUT
    hold_s: float = 1.0  # how long the alarm stays on before the restore
    start_timeout_s: float = 15.0
    online_timeout_s: float = 45.0  # a first boot creates the outbox's flash slots
    event_timeout_s: float = 10.0
    ack_timeout_s: float = 10.0
    offline_timeout_s: float = 5.0
    firmware: Path | None = None  # what the device runs; None: firelink.virtual.device's default


@dataclass
class DemoStep:
    what: str  # "alarm" | "restore"
    changed_at: float  # host time just before the control file was written
    event: Event
    acked_at: float

    @property
    def latency_s(self) -> float:
        """Input change -> the monitor's MQTT client has the event."""
        return self.event.received_at - self.changed_at

    @property
    def ack_after_s(self) -> float:
        """Receipt -> the broker accepted the monitor's ack (the event was stored first)."""
        return self.acked_at - self.event.received_at


@dataclass
class DemoResult:
    steps: list[DemoStep] = field(default_factory=list)
    device_id: str = ""
    broker_port: int = 0
    online_after_s: float = 0.0
    offline_seen: bool = False
    stats: MonitorStats | None = None
    debounce_ms: int | None = None
    directory: Path = Path()
    console_log: Path = Path()
    broker_log: Path = Path()
    db: Path = Path()

    @property
    def ok(self) -> bool:
        """The alarm and the restore both arrived and were acknowledged."""
        whats = [s.what for s in self.steps]
        return whats == ["alarm", "restore"]

    def latency_summary(self) -> tuple[float, float, float]:
        """(min, mean, max) latency in seconds."""
        lat = [s.latency_s for s in self.steps]
        return min(lat), statistics.fmean(lat), max(lat)


def run_demo(config: DemoConfig | None = None, reporter: Reporter | None = None,
             sinks: list[Sink] | None = None) -> DemoResult:
    """Runs the demo; raises DemoError (everything stopped) when a step fails."""
    config = config or DemoConfig()
    reporter = reporter or Reporter()
    site = LocalSite(config.directory, config.device_id, sinks=sinks, monitor_client_id="firelink-demo-monitor",
                     firmware=config.firmware)
    result = DemoResult(device_id=config.device_id, directory=config.directory, console_log=site.console_log,
                        broker_log=site.broker_dir / "mosquitto.log", db=site.db_path)
    try:
        site.wipe()
        reporter.start("site broker (mosquitto)")
        broker = site.start_broker(config.start_timeout_s)
        result.broker_port = broker.port
        reporter.finish(f"127.0.0.1:{broker.port}, accounts {config.device_id} and monitor")

        reporter.start("monitoring centre")
        site.start_monitor(config.start_timeout_s)
        reporter.finish(f"store {site.db_path}")

        reporter.start(f"virtual device {config.device_id}")
        t0 = time.monotonic()
        tty = site.start_device(config.start_timeout_s)
        reporter.finish(f"firmware running on {tty}")

        reporter.start(f"{config.device_id} online at the monitor")
        site.wait_online(config.online_timeout_s)
        result.online_after_s = time.monotonic() - t0
        reporter.finish(f"{result.online_after_s:.1f} s after power-on")
        result.debounce_ms = site.debounce_ms(config.input_name)

        for what, state, q in (("alarm", "active", "new"), ("restore", "normal", "restore")):
            if what == "restore":
                time.sleep(config.hold_s)
            reporter.start(f"fire {what}: {config.input_name} {state}")
            mark = len(site.watch.events())
            changed = site.set_input(config.input_name, state)
            ev = site.wait_event(lambda e, q=q: e.input == config.input_name and e.cls == "fire" and e.q == q,
                                 config.event_timeout_s, after=mark, what=f"the fire {what}")
            acked = site.wait_acked(ev, config.ack_timeout_s)
            step = DemoStep(what, changed, ev, acked)
            result.steps.append(step)
            reporter.finish(f"code {ev.code} seq {ev.seq}: at the monitor {step.latency_s * 1000:.0f} ms after "
                            f"the input changed, acked {step.ack_after_s * 1000:.0f} ms later")

        reporter.start("stopping (device offline, monitor, broker)")
        result.offline_seen = site.stop_device(config.offline_timeout_s)
        if site.monitor is not None:
            result.stats = site.monitor.stats
        site.close()
        reporter.finish("device said offline" if result.offline_seen else "no offline message seen")
        if not result.offline_seen:
            reporter.warn(f"the monitor did not hear {config.device_id} say offline within "
                          f"{config.offline_timeout_s:g} s; see {site.console_log}")
    except (SiteError, WorldError) as e:
        raise DemoError(str(e)) from e
    finally:
        site.close()
    return result
