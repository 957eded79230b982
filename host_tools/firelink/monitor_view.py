"""What the monitor shows: a live terminal view for people, one JSON line per happening for scripts.

Both are sinks (see `monitor.Sink`), called from the monitor's worker thread once a batch is
committed. Every line of `LineSink` is one JSON object with `type` first:

    alarm | fault | status | restore   an event (new ones only; restore = q "restore" of any class)
    device_lost | device_back | device_offline | device_online
    seq_gap                            sequence numbers missing for longer than the grace time
    warning                            something received that the centre could not use, or a link problem
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import IO, Any, Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from firelink import contact_id
from firelink.monitor import MonitorWarning, Sink
from firelink.monitor_devices import CAME_BACK, LOST, OFFLINE, ONLINE, WENT_LOST, WENT_OFFLINE, WENT_ONLINE
from firelink.monitor_store import Device, Event

CLASS_STYLE = {"fire": "bold red", "fault": "yellow", "status": "cyan"}
STATE_STYLE = {ONLINE: "green", OFFLINE: "yellow", LOST: "bold red", "unknown": "dim"}


def event_type(ev: Event) -> str:
    if ev.q == "restore":
        return "restore"
    return {"fire": "alarm", "fault": "fault"}.get(ev.cls, "status")


def event_record(ev: Event) -> dict[str, Any]:
    return {"type": event_type(ev), "at": round(ev.received_at, 3), "device": ev.device, "id": ev.id,
            "seq": ev.seq, "class": ev.cls, "q": ev.q, "code": ev.code, "meaning": contact_id.meaning(ev.code),
            "zone": ev.zone, "input": ev.input, "detail": ev.detail, "ts": ev.ts, "tsync": ev.tsync,
            "latency_s": ev.latency_s, "late": ev.late}


def device_record(d: Device, change: str, now: float) -> dict[str, Any]:
    return {"type": f"device_{change}", "at": round(now, 3), "device": d.device, "state": d.state,
            "last_heard": None if d.last_heard is None else round(d.last_heard, 3),
            "supervision_s": d.supervision_s}


class LineSink(Sink):
    """One JSON object per line, written and flushed as each happens."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def on_event(self, event: Event) -> None:
        self._write(event_record(event))

    def on_device(self, device: Device, change: str | None) -> None:
        if change:
            self._write(device_record(device, change, device.state_since))

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        self._write({"type": "seq_gap", "at": round(at, 3), "device": device, "first": first, "last": last})

    def on_warning(self, warning: MonitorWarning) -> None:
        self._write({"type": "warning", "at": round(warning.at, 3), "device": warning.device,
                     "topic": warning.topic, "reason": warning.reason})


class LiveView(Sink):
    """Devices table and the latest alarms, faults and restores, for `rich.live.Live(get_renderable=...)`."""

    def __init__(self, recent: int = 15, missing: Callable[[str], int] | None = None) -> None:
        self.devices: dict[str, Device] = {}
        self.recent: deque[tuple[float, Text]] = deque(maxlen=recent)
        self.warnings: deque[str] = deque(maxlen=3)
        self.events = 0
        self._missing = missing  # device -> how many seq numbers are missing (Monitor.missing_seqs)
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        style = CLASS_STYLE.get(event.cls, "")
        what = f"{'RESTORE ' if event.q == 'restore' else ''}{event.cls.upper()}"
        line = Text.assemble(
            (f"{event.device:<12} ", "bold"), (f"{what:<14}", style if event.q == "new" else "green"),
            f" {event.code} {contact_id.meaning(event.code)}",
            f"  zone {event.zone} {event.input or '-'}  seq {event.seq}",
            (" late" if event.late else "", "dim"),
            (f"  +{event.latency_s:.1f} s" if event.latency_s is not None else "  (clock not synced)", "dim"))
        with self._lock:
            self.events += 1
            self.recent.appendleft((event.received_at, line))

    def on_device(self, device: Device, change: str | None) -> None:
        with self._lock:
            self.devices[device.device] = device
            if change:
                text = {WENT_LOST: f"DEVICE LOST (silent > {device.supervision_s:g} s)", CAME_BACK: "device back",
                        WENT_OFFLINE: "device offline", WENT_ONLINE: "device online"}[change]
                style = "bold red" if change == WENT_LOST else ("yellow" if change == WENT_OFFLINE else "green")
                self.recent.appendleft((device.state_since, Text.assemble((f"{device.device:<12} ", "bold"),
                                                                          (text, style))))

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        with self._lock:
            self.recent.appendleft((at, Text.assemble((f"{device:<12} ", "bold"),
                                                      (f"seq {first}..{last} missing", "yellow"))))

    def on_warning(self, warning: MonitorWarning) -> None:
        with self._lock:
            where = warning.device or warning.topic or "monitor"
            self.warnings.appendleft(f"{time.strftime('%H:%M:%S', time.localtime(warning.at))} {where}: "
                                     f"{warning.reason}")

    def renderable(self) -> RenderableType:
        now = time.time()
        with self._lock:
            devices = sorted(self.devices.values(), key=lambda d: d.device)
            recent = list(self.recent)
            warnings = list(self.warnings)
        table = Table(title="FireLink devices", expand=True)
        for col in ("device", "state", "last heard", "link", "signal", "outbox", "fw", "faults", "missing seq"):
            table.add_column(col)
        for d in devices:
            heard = "never" if d.last_heard is None else f"{now - d.last_heard:.0f} s ago"
            missing = self._missing(d.device) if self._missing else 0
            table.add_row(d.device, Text(d.state, STATE_STYLE.get(d.state, "")), heard, d.link_path or "-",
                          "-" if d.signal_dbm is None else f"{d.signal_dbm} dBm",
                          "-" if d.outbox_depth is None else str(d.outbox_depth), d.fw or "-",
                          Text(", ".join(d.faults) or "-", "yellow" if d.faults else ""),
                          Text(str(missing), "yellow") if missing else "0")
        log = Table(title="Recent", expand=True, show_header=False)
        log.add_column("time", width=8)
        log.add_column("what")
        for at, line in recent:
            log.add_row(time.strftime("%H:%M:%S", time.localtime(at)), line)
        parts: list[RenderableType] = [table, log]
        parts += [Text(w, "yellow") for w in warnings]
        return Group(*parts)
