"""What the monitor shows: a live terminal view for people, one JSON line per happening for scripts.

Both are sinks (see `monitor.Sink`), called from the monitor's worker thread once a batch is
committed. Every line of `LineSink` is one JSON object with `type` first:

    alarm | fault | status | restore   an event (new ones only; restore = q "restore" of any class)
    suspect                            an event whose class does not fit its code: never a plain alarm
    retained                           an event the broker replayed as retained: not live
    device_lost | device_back | device_offline | device_online | device_revoked
    seq_gap                            sequence numbers missing for longer than the grace time
    seq_lost                           sequence numbers the device declared lost (outbox overflow)
    flood | flood_end                  a device sending more events than a panel can: its events are
                                       stored and acknowledged, not printed one by one
    broker_down | broker_up            the monitor's own link to the broker
    warning                            something received that the centre could not use, or a link problem

Output is strict JSON (no NaN/Infinity); the live view strips control characters and terminal
escapes from everything a device sent.
"""
from __future__ import annotations

import json
import threading
import time
import unicodedata
from collections import deque
from typing import IO, Any, Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from firelink.centre import contact_id
from firelink.centre.devices import (CAME_BACK, LOST, OFFLINE, ONLINE, REVOKED, WENT_LOST, WENT_OFFLINE,
                                     WENT_ONLINE, WENT_REVOKED)
from firelink.centre.monitor import MonitorWarning, Sink
from firelink.centre.store import Device, Event

CLASS_STYLE = {"fire": "bold red", "fault": "yellow", "status": "cyan"}
STATE_STYLE = {ONLINE: "green", OFFLINE: "yellow", LOST: "bold red", REVOKED: "magenta", "unknown": "dim"}
_DROP = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, format (bidi overrides), unassigned


def clean(value: Any, limit: int = 80) -> str:
    """A device's text made safe for a terminal: no control characters or escape sequences (ESC
    goes, so what followed it is plain text), no bidi overrides, at most `limit` characters."""
    text = str(value)
    if not text.isprintable() or len(text) > limit:
        text = "".join(c if unicodedata.category(c) not in _DROP else "?" for c in text[:limit * 2])
        if len(text) > limit:
            text = text[:limit - 1] + "…"
    return text


def event_type(ev: Event) -> str:
    if ev.suspect:
        return "suspect"
    if ev.retained:
        return "retained"
    if ev.q == "restore":
        return "restore"
    return {"fire": "alarm", "fault": "fault"}.get(ev.cls, "status")


def event_record(ev: Event) -> dict[str, Any]:
    return {"type": event_type(ev), "at": round(ev.received_at, 3), "device": ev.device, "id": ev.id,
            "seq": ev.seq, "class": ev.cls, "q": ev.q, "code": ev.code, "meaning": contact_id.meaning(ev.code),
            "zone": ev.zone, "input": ev.input, "detail": ev.detail, "ts": ev.ts, "tsync": ev.tsync,
            "latency_s": ev.latency_s, "late": ev.late, "suspect": ev.suspect, "retained": ev.retained}


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
        # allow_nan=False: a value that is not strict JSON is a bug here, never a line out.
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def on_event(self, event: Event) -> None:
        if not event.flood:  # stored; the flood's own lines count them
            self._write(event_record(event))

    def on_device(self, device: Device, change: str | None) -> None:
        if change:
            self._write(device_record(device, change, device.state_since))

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        self._write({"type": "seq_gap", "at": round(at, 3), "device": device, "first": first, "last": last})

    def on_loss(self, device: str, first: int, last: int, at: float, event_id: str) -> None:
        self._write({"type": "seq_lost", "at": round(at, 3), "device": device, "first": first, "last": last,
                     "event": event_id})

    def on_flood(self, device: str, started: bool, info: dict[str, Any], at: float) -> None:
        self._write({"type": "flood" if started else "flood_end", "at": round(at, 3), "device": device,
                     "since": round(info["since"], 3), "events": info["events"],
                     "fire": info.get("fire", 0), "fault": info.get("fault", 0), "status": info.get("status", 0),
                     "quarantined": info.get("quarantined", 0)})

    def on_broker(self, up: bool, at: float, detail: str) -> None:
        self._write({"type": "broker_up" if up else "broker_down", "at": round(at, 3), "detail": detail})

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
        self.flooded: dict[str, int] = {}  # device -> events stored while it floods
        self.broker: str | None = None  # why the broker is away, None while connected
        self._missing = missing  # device -> how many seq numbers are missing (Monitor.missing_seqs)
        self._lock = threading.Lock()

    def _note(self, at: float, device: str, text: str, style: str) -> None:
        with self._lock:
            self.recent.appendleft((at, Text.assemble((f"{clean(device, 32):<12} ", "bold"), (text, style))))

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.events += 1
            if event.flood:
                self.flooded[event.device] = self.flooded.get(event.device, 0) + 1
                return
        if event.suspect:
            what, style = f"SUSPECT {clean(event.cls, 8)}", "bold magenta"
        elif event.retained:
            what, style = f"REPLAY {clean(event.cls, 8)}", "dim"
        else:
            what = f"{'RESTORE ' if event.q == 'restore' else ''}{event.cls.upper()}"
            style = CLASS_STYLE.get(event.cls, "") if event.q == "new" else "green"
        line = Text.assemble(
            (f"{clean(event.device, 32):<12} ", "bold"), (f"{what:<14}", style),
            f" {event.code} {clean(contact_id.meaning(event.code))}",
            f"  zone {event.zone} {clean(event.input, 40) or '-'}  seq {event.seq}",
            (" late" if event.late else "", "dim"),
            (f"  +{event.latency_s:.1f} s" if event.latency_s is not None else "  (clock not synced)", "dim"),
            (f"  ({clean(event.suspect)})" if event.suspect else "", "magenta"))
        with self._lock:
            self.recent.appendleft((event.received_at, line))

    def on_device(self, device: Device, change: str | None) -> None:
        with self._lock:
            self.devices[device.device] = device
        if change:
            text = {WENT_LOST: f"DEVICE LOST (silent > {device.supervision_s:g} s)", CAME_BACK: "device back",
                    WENT_OFFLINE: "device offline", WENT_ONLINE: "device online",
                    WENT_REVOKED: "device revoked (account withdrawn)"}[change]
            style = {WENT_LOST: "bold red", WENT_OFFLINE: "yellow", WENT_REVOKED: "magenta"}.get(change, "green")
            self._note(device.state_since, device.device, text, style)

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        self._note(at, device, f"seq {first}..{last} missing", "yellow")

    def on_loss(self, device: str, first: int, last: int, at: float, event_id: str) -> None:
        self._note(at, device, f"EVENTS LOST on the device: seq {first}..{last} (outbox overflow)", "bold yellow")

    def on_flood(self, device: str, started: bool, info: dict[str, Any], at: float) -> None:
        if started:
            text = "FLOOD: more messages than a panel can send; stored, not shown one by one"
            with self._lock:
                self.flooded[device] = 0
        else:
            text = (f"flood over: {info['events']} messages ({info.get('fire', 0)} fire, {info.get('fault', 0)} "
                    f"fault, {info.get('status', 0)} status events, {info.get('quarantined', 0)} quarantined)")
            with self._lock:
                self.flooded.pop(device, None)
        self._note(at, device, text, "bold magenta" if started else "magenta")

    def on_broker(self, up: bool, at: float, detail: str) -> None:
        with self._lock:
            self.broker = None if up else (clean(detail) or "disconnected")
        self._note(at, "monitor", f"broker {'back: ' if up else 'lost: '}{clean(detail)}", "green" if up else "bold red")

    def on_warning(self, warning: MonitorWarning) -> None:
        with self._lock:
            where = clean(warning.device or warning.topic or "monitor", 40)
            self.warnings.appendleft(f"{time.strftime('%H:%M:%S', time.localtime(warning.at))} {where}: "
                                     f"{clean(warning.reason, 160)}")

    def renderable(self) -> RenderableType:
        now = time.time()
        with self._lock:
            devices = sorted(self.devices.values(), key=lambda d: d.device)
            recent = list(self.recent)
            warnings = list(self.warnings)
            flooded = dict(self.flooded)
            broker = self.broker
        title = "FireLink devices" if broker is None else f"FireLink devices: BROKER UNREACHABLE ({broker})"
        table = Table(title=Text(title, "" if broker is None else "bold red"), expand=True)
        for col in ("device", "state", "last heard", "link", "signal", "outbox", "fw", "faults", "missing seq"):
            table.add_column(col)
        for d in devices:
            heard = "never" if d.last_heard is None else f"{now - d.last_heard:.0f} s ago"
            missing = self._missing(d.device) if self._missing else 0
            state = Text(d.state, STATE_STYLE.get(d.state, ""))
            if d.device in flooded:
                state = Text(f"FLOOD ({flooded[d.device]})", "bold magenta")
            # Text(...) everywhere: a plain str cell would be read as rich markup.
            table.add_row(Text(clean(d.device, 32)), state, heard, Text(clean(d.link_path or "-", 16)),
                          "-" if d.signal_dbm is None else f"{d.signal_dbm} dBm",
                          "-" if d.outbox_depth is None else str(d.outbox_depth), Text(clean(d.fw or "-", 32)),
                          Text(clean(", ".join(d.faults), 60) or "-", "yellow" if d.faults else ""),
                          Text(str(missing), "yellow") if missing else "0")
        log = Table(title="Recent", expand=True, show_header=False)
        log.add_column("time", width=8)
        log.add_column("what")
        for at, line in recent:
            log.add_row(time.strftime("%H:%M:%S", time.localtime(at)), line)
        parts: list[RenderableType] = [table, log]
        parts += [Text(w, "yellow") for w in warnings]  # cleaned when received
        return Group(*parts)
