"""What the centre knows about each device: its state, its supervision and its sequence numbers.

Pure bookkeeping with the time passed in, so it is tested without a broker or a clock. The
monitor feeds it what arrives and asks it which devices went silent for longer than their
supervision time ("device lost", EN 50136 path supervision as seen from the receiver) and
which gaps in a device's sequence numbers have stayed open long enough to report.

States: `unknown` (known only from an old retained status), `online`, `offline` (the device
said so, or the broker published its last will) and `lost` (silent past its supervision time).
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from firelink.monitor_store import Device

UNKNOWN, ONLINE, OFFLINE, LOST = "unknown", "online", "offline", "lost"

# Changes the monitor reports, besides plain updates.
WENT_ONLINE, WENT_OFFLINE, WENT_LOST, CAME_BACK = "online", "offline", "lost", "back"

DEFAULT_HEARTBEAT_S = 60.0  # protocol.md: `heartbeat_s` default


@dataclass
class Supervision:
    """How long a device may stay silent. Per device override, else the run-wide figure, else
    `factor` heartbeat intervals (learned from their spacing, or the protocol default) plus a margin."""

    fixed_s: float | None = None
    per_device: dict[str, float] = field(default_factory=dict)
    factor: float = 3.0
    margin_s: float = 20.0
    default_heartbeat_s: float = DEFAULT_HEARTBEAT_S
    learn: bool = True
    min_spacing_s: float = 0.2  # closer heartbeats were queued somewhere and say nothing about the interval

    def time_for(self, device: str, learned_heartbeat_s: float | None) -> float:
        if device in self.per_device:
            return self.per_device[device]
        if self.fixed_s is not None:
            return self.fixed_s
        interval = learned_heartbeat_s if (self.learn and learned_heartbeat_s) else self.default_heartbeat_s
        return self.factor * interval + self.margin_s


@dataclass
class _Gap:
    first: int
    last: int
    since: float
    reported: bool = False


class SeqTracker:
    """One device's sequence numbers: the lowest and highest held, and the runs missing between them."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.gaps: list[_Gap] = []

    def add(self, seq: int, now: float) -> bool:
        """Records a new event's seq; returns whether it arrived late (after a higher seq)."""
        if self.lo is None or self.hi is None:
            self.lo = self.hi = seq
            return False
        if seq > self.hi:
            if seq > self.hi + 1:
                self.gaps.append(_Gap(self.hi + 1, seq - 1, now))
            self.hi = seq
            return False
        if seq < self.lo:
            if seq < self.lo - 1:
                self.gaps.insert(0, _Gap(seq + 1, self.lo - 1, now))
            self.lo = seq
            return True
        for i, g in enumerate(self.gaps):
            if g.first <= seq <= g.last:
                parts = [_Gap(a, b, g.since, g.reported) for a, b in ((g.first, seq - 1), (seq + 1, g.last)) if a <= b]
                self.gaps[i:i + 1] = parts
                break
        return True

    def missing(self) -> int:
        return sum(g.last - g.first + 1 for g in self.gaps)

    def due(self, now: float, grace_s: float) -> list[tuple[int, int]]:
        """Gaps open for `grace_s` and not yet reported; marks them reported."""
        out = []
        for g in self.gaps:
            if not g.reported and now - g.since >= grace_s:
                g.reported = True
                out.append((g.first, g.last))
        return out


class DeviceBook:
    """Every device's state and supervision. Returns changes; the caller stores and reports them."""

    def __init__(self, supervision: Supervision, devices: dict[str, Device], now: float) -> None:
        self.supervision = supervision
        self.devices = devices
        self.seqs: dict[str, SeqTracker] = {}
        self.dirty: set[str] = set()
        self._spacings: dict[str, deque[float]] = {}
        self._last_hb: dict[str, float] = {}
        self._base = now  # supervision counts from here at the earliest: the centre cannot hear while down
        self._suspended = False
        for name, d in devices.items():
            self._set_supervision(d)

    # --- supervision of the centre's own connection ---
    def suspend(self) -> None:
        """The monitor lost the broker: silence now says nothing about the devices."""
        self._suspended = True

    def resume(self, now: float) -> None:
        self._suspended = False
        self._base = now

    # --- devices ---
    def get(self, name: str, now: float) -> Device:
        d = self.devices.get(name)
        if d is None:
            d = Device(name, UNKNOWN, now, self.supervision.time_for(name, None))
            self.devices[name] = d
            self.dirty.add(name)
        return d

    def _set_supervision(self, d: Device) -> None:
        d.supervision_s = self.supervision.time_for(d.device, d.heartbeat_s)

    def _to(self, d: Device, state: str, now: float) -> None:
        d.state, d.state_since = state, now
        self.dirty.add(d.device)

    def heard(self, name: str, now: float) -> str | None:
        """A live message other than a status came from the device: it is alive and connected."""
        d = self.get(name, now)
        d.last_heard = now
        self.dirty.add(name)
        if d.state == ONLINE:
            return None
        change = CAME_BACK if d.state == LOST else WENT_ONLINE
        self._to(d, ONLINE, now)
        return change

    def status(self, name: str, state: str, now: float, retained: bool, fw: Any = None,
               reset: Any = None) -> str | None:
        """A status message. A retained one is old news (the broker replays it to every new
        subscription): it may tell us a device is offline, never that it is alive now."""
        d = self.get(name, now)
        if isinstance(fw, str):
            d.fw = fw
        if isinstance(reset, str):
            d.reset = reset
        self.dirty.add(name)
        if state == OFFLINE:
            # Not "heard": the broker publishes the last will for a device that is gone.
            if d.state in (OFFLINE, LOST):
                return None
            self._to(d, OFFLINE, now)
            return WENT_OFFLINE
        if retained:
            return None  # an `unknown` device stays so until it speaks (or its supervision runs out)
        return self.heard(name, now)

    def heartbeat(self, name: str, hb: dict[str, Any], now: float) -> str | None:
        d = self.get(name, now)
        change = self.heard(name, now)
        d.last_heartbeat = hb
        link: dict[str, Any] = hb["link"] if isinstance(hb.get("link"), dict) else {}
        outbox: dict[str, Any] = hb["outbox"] if isinstance(hb.get("outbox"), dict) else {}
        d.link_path = _typed(link.get("path"), str, d.link_path)
        d.signal_dbm = _typed(link.get("signal_dbm"), int, d.signal_dbm)
        d.outbox_depth = _typed(outbox.get("depth"), int, d.outbox_depth)
        d.fw = _typed(hb.get("fw"), str, d.fw)
        d.reset = _typed(hb.get("reset"), str, d.reset)
        faults = hb.get("faults")
        d.faults = faults if isinstance(faults, dict) else d.faults
        ts = hb.get("ts")
        if hb.get("tsync") is True and isinstance(ts, (int, float)) and not isinstance(ts, bool):
            d.clock_offset_s = round(now - ts, 3)
        self._learn(d, now)
        return change

    def _learn(self, d: Device, now: float) -> None:
        last = self._last_hb.get(d.device)
        self._last_hb[d.device] = now
        if last is None or now - last < self.supervision.min_spacing_s:
            return
        spacings = self._spacings.setdefault(d.device, deque(maxlen=8))
        spacings.append(now - last)
        if len(spacings) >= 2:
            d.heartbeat_s = round(statistics.median(spacings), 3)
            self._set_supervision(d)

    def expire(self, now: float) -> list[Device]:
        """Devices whose supervision time ran out since the last call; now `lost`."""
        if self._suspended:
            return []
        lost = []
        for d in self.devices.values():
            if d.state != LOST and now > self.deadline(d):
                self._to(d, LOST, now)
                lost.append(d)
        return lost

    def deadline(self, d: Device) -> float:
        return max(d.last_heard or 0.0, self._base) + d.supervision_s

    def next_deadline(self) -> float | None:
        live = [self.deadline(d) for d in self.devices.values() if d.state != LOST]
        return None if self._suspended or not live else min(live)

    def snapshot(self, name: str) -> Device | None:
        d = self.devices.get(name)
        return None if d is None else replace(d, faults=dict(d.faults))

    # --- sequence numbers ---
    def seq(self, name: str) -> SeqTracker:
        tracker = self.seqs.get(name)
        if tracker is None:
            tracker = self.seqs[name] = SeqTracker()
        return tracker

    def load_seqs(self, bounds: dict[str, tuple[int, int]], gaps: list[tuple[str, int, int]], now: float) -> None:
        for name, (lo, hi) in bounds.items():
            self.seqs[name] = SeqTracker(lo, hi)
        for name, first, last in gaps:
            self.seqs[name].gaps.append(_Gap(first, last, now))


def _typed(value: Any, kind: type, default: Any) -> Any:
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    return default
