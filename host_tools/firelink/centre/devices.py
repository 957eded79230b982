"""What the centre knows about each device: its state, its supervision and its sequence numbers.

Pure bookkeeping with the time passed in, so it is tested without a broker or a clock. The
monitor feeds it what arrives and asks it which devices went silent for longer than their
supervision time ("device lost", EN 50136 path supervision as seen from the receiver) and
which gaps in a device's sequence numbers have stayed open long enough to report.

States: `unknown` (known only from an old retained status), `online`, `offline` (the device
said so, or the broker published its last will), `lost` (silent past its supervision time)
and `revoked` (the site broker withdrew its account: not supervised, never "lost").

The centre's own broker outage is not the devices' (issue 9 §7): an `offline` is held for
`offline_hold_s` before it is shown, so the wills the broker fires as it shuts down (just
before the monitor's own connection drops) are never shown; after the monitor reconnects,
every `offline` (held, or replayed retained) waits `reconnect_grace_s` for the device to come
back, and is shown only if it does not.
"""
from __future__ import annotations

import bisect
import statistics
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from firelink.centre.payload import Heartbeat
from firelink.centre.store import Device, merged, subtract

UNKNOWN, ONLINE, OFFLINE, LOST, REVOKED = "unknown", "online", "offline", "lost", "revoked"

# Changes the monitor reports, besides plain updates.
WENT_ONLINE, WENT_OFFLINE, WENT_LOST, CAME_BACK, WENT_REVOKED = "online", "offline", "lost", "back", "revoked"

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
    next_factor: float = 2.0  # TEAM contract: lost when a heartbeat is overdue by 2 x next_s + 60 s
    next_margin_s: float = 60.0
    offline_hold_s: float = 2.0  # an `offline` waits this long: was it the broker shutting down?
    reconnect_grace_s: float = 75.0  # after the monitor's reconnect: > the devices' 60 s backoff cap

    def time_for(self, device: str, learned_heartbeat_s: float | None, next_s: float | None = None) -> float:
        if device in self.per_device:
            return self.per_device[device]
        if self.fixed_s is not None:
            return self.fixed_s
        if next_s is not None:  # the device said when its next heartbeat is due
            return self.next_factor * next_s + self.next_margin_s
        interval = learned_heartbeat_s if (self.learn and learned_heartbeat_s) else self.default_heartbeat_s
        return self.factor * interval + self.margin_s


@dataclass
class _Gap:
    first: int
    last: int
    since: float
    reported: bool = False


MAX_RANGES = 1000  # open gaps, and declared lost ranges, tracked per device


class SeqTracker:
    """One device's sequence numbers: the lowest and highest held, the runs missing between them,
    and the ranges the device declared lost (TEAM contract: `lost` on its 624 event), which are
    a loss already reported, not a gap.

    Bounded for a hostile device: at most MAX_RANGES open gaps and MAX_RANGES declared ranges
    (sorted and merged); beyond that `capped` is set and new ones are not tracked. The work per
    event is a bisection, and `due` looks at the gaps only when one can be due."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.gaps: list[_Gap] = []  # sorted by first
        self.declared: list[tuple[int, int]] = []  # sorted and merged
        self.capped = False
        self._next_due: float | None = None  # the oldest unreported gap's `since`, or earlier

    def _open(self, first: int, last: int, now: float) -> list[_Gap]:
        room = MAX_RANGES - len(self.gaps)
        parts = subtract((first, last), self.declared)
        if len(parts) > room:
            self.capped = True
            parts = parts[:max(0, room)]
        if parts and (self._next_due is None or now < self._next_due):
            self._next_due = now
        return [_Gap(a, b, now) for a, b in parts]

    def add(self, seq: int, now: float) -> bool:
        """Records a new event's seq; returns whether it arrived late (after a higher seq)."""
        if self.lo is None or self.hi is None:
            self.lo = self.hi = seq
            return False
        if seq > self.hi:
            if seq > self.hi + 1:
                self.gaps += self._open(self.hi + 1, seq - 1, now)
            self.hi = seq
            return False
        if seq < self.lo:
            if seq < self.lo - 1:
                self.gaps[0:0] = self._open(seq + 1, self.lo - 1, now)
            self.lo = seq
            return True
        i = bisect.bisect_right(self.gaps, seq, key=lambda g: g.first) - 1
        if i >= 0 and self.gaps[i].first <= seq <= self.gaps[i].last:
            g = self.gaps[i]
            self.gaps[i:i + 1] = [_Gap(a, b, g.since, g.reported)
                                  for a, b in ((g.first, seq - 1), (seq + 1, g.last)) if a <= b]
        return True

    def declare_lost(self, first: int, last: int) -> bool:
        """The device says it dropped first..last: no longer a gap. Returns whether it is news
        (not already declared, and tracked)."""
        if not subtract((first, last), self.declared):
            return False
        if len(self.declared) >= MAX_RANGES:
            self.capped = True
            return False
        self.declared = merged(self.declared + [(first, last)])
        lo = bisect.bisect_left(self.gaps, first, key=lambda g: g.last)
        hi = bisect.bisect_right(self.gaps, last, key=lambda g: g.first)
        kept = [_Gap(a, b, g.since, g.reported) for g in self.gaps[lo:hi]
                for a, b in subtract((g.first, g.last), [(first, last)])]
        self.gaps[lo:hi] = kept
        return True

    def missing(self) -> int:
        return sum(g.last - g.first + 1 for g in self.gaps)

    def due(self, now: float, grace_s: float) -> list[tuple[int, int]]:
        """Gaps open for `grace_s` and not yet reported; marks them reported."""
        if self._next_due is None or now - self._next_due < grace_s:
            return []
        out = []
        pending = None
        for g in self.gaps:
            if g.reported:
                continue
            if now - g.since >= grace_s:
                g.reported = True
                out.append((g.first, g.last))
            elif pending is None or g.since < pending:
                pending = g.since
        self._next_due = pending
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
        self._next_s: dict[str, float] = {}
        self._base = now  # supervision counts from here at the earliest: the centre cannot hear while down
        self._suspended = False
        self._connected_before = False
        self._grace_until = 0.0  # after a reconnect: `offline` waits until then for the device to return
        self._resumed_at = now
        # device -> [when its `offline` is shown unless heard, when it came, whether the monitor's own
        # outage may explain it (then a return cancels it; otherwise the return shows it, late).
        self.pending_offline: dict[str, list[Any]] = {}
        self.early: list[tuple[Device, str]] = []  # changes dated before the one being returned
        for name, d in devices.items():
            # The last heartbeat's promise outlives a monitor restart (it was checked when stored).
            next_s = (d.last_heartbeat or {}).get("next_s")
            if isinstance(next_s, (int, float)) and not isinstance(next_s, bool) and next_s > 0:
                self._next_s[name] = float(next_s)
            self._set_supervision(d)

    # --- supervision of the centre's own connection ---
    def suspend(self) -> None:
        """The monitor lost the broker: silence now says nothing about the devices, and an
        `offline` just received may be a will the broker fired as it went down."""
        self._suspended = True
        for pending in self.pending_offline.values():
            pending[0], pending[2] = float("inf"), True

    def resume(self, now: float) -> None:
        self._suspended = False
        self._base = now
        self._resumed_at = now
        if self._connected_before:
            self._grace_until = now + self.supervision.reconnect_grace_s
            for pending in self.pending_offline.values():
                pending[0] = self._grace_until
        self._connected_before = True

    @property
    def suspended(self) -> bool:
        return self._suspended

    # --- devices ---
    def get(self, name: str, now: float) -> Device:
        d = self.devices.get(name)
        if d is None:
            d = Device(name, UNKNOWN, now, self.supervision.time_for(name, None))
            self.devices[name] = d
            self.dirty.add(name)
        return d

    def _set_supervision(self, d: Device) -> None:
        d.supervision_s = self.supervision.time_for(d.device, d.heartbeat_s, self._next_s.get(d.device))

    def _to(self, d: Device, state: str, now: float) -> None:
        d.state, d.state_since = state, now
        self.dirty.add(d.device)

    def heard(self, name: str, now: float) -> str | None:
        """A live message other than a status came from the device: it is alive and connected."""
        d = self.get(name, now)
        d.last_heard = now
        self.dirty.add(name)
        pending = self.pending_offline.pop(name, None)
        if pending is not None and not pending[2] and d.state == ONLINE:
            # A real drop, shorter than the hold: shown now, with its own time, then the return.
            self._to(d, OFFLINE, pending[1])
            self.early.append((replace(d, faults=dict(d.faults)), WENT_OFFLINE))
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
        if state == REVOKED:
            self.pending_offline.pop(name, None)
            if d.state == REVOKED:
                return None
            self._to(d, REVOKED, now)
            return WENT_REVOKED
        if state == OFFLINE:
            # Not "heard": the broker publishes the last will for a device that is gone.
            if d.state in (OFFLINE, LOST, REVOKED) or name in self.pending_offline:
                return None
            if retained and now >= self._grace_until:
                return self._offline(d, now)  # at monitor start: the broker's word, at once
            hold, tainted = now + self.supervision.offline_hold_s, self._suspended
            if now < self._grace_until and (retained or not (d.last_heard and d.last_heard >= self._resumed_at)):
                hold, tainted = max(hold, self._grace_until), True  # not heard since the reconnect: the grace
            self.pending_offline[name] = [float("inf") if self._suspended else hold, now, tainted]
            return None
        if retained:
            return None  # an `unknown` device stays so until it speaks (or its supervision runs out)
        return self.heard(name, now)

    def _offline(self, d: Device, now: float) -> str | None:
        self.pending_offline.pop(d.device, None)
        if d.state in (OFFLINE, LOST, REVOKED):
            return None
        self._to(d, OFFLINE, now)
        return WENT_OFFLINE

    def heartbeat(self, name: str, hb: Heartbeat, now: float) -> str | None:
        """A checked heartbeat (payload.parse_heartbeat)."""
        d = self.get(name, now)
        change = self.heard(name, now)
        d.last_heartbeat = hb.doc
        d.link_path = hb.path if hb.path is not None else d.link_path
        d.signal_dbm = hb.signal_dbm if hb.signal_dbm is not None else d.signal_dbm
        d.outbox_depth = hb.outbox_depth if hb.outbox_depth is not None else d.outbox_depth
        d.fw = hb.fw or d.fw
        d.reset = hb.reset or d.reset
        d.faults = hb.faults
        if hb.tsync and hb.ts is not None:
            d.clock_offset_s = round(now - hb.ts, 3)
        if hb.next_s is not None:
            self._next_s[name] = hb.next_s
        else:
            self._next_s.pop(name, None)
        self._learn(d, now)
        self._set_supervision(d)
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

    def expire(self, now: float) -> list[tuple[Device, str]]:
        """Devices whose held `offline` or supervision time ran out since the last call, with
        the change (offline, lost)."""
        if self._suspended:
            return []
        out = []
        for name, (at, _, _) in list(self.pending_offline.items()):
            if now >= at:
                d = self.devices[name]
                if self._offline(d, now):
                    out.append((d, WENT_OFFLINE))
        for d in self.devices.values():
            if d.state not in (LOST, REVOKED) and now > self.deadline(d):
                self._to(d, LOST, now)
                out.append((d, WENT_LOST))
        return out

    def deadline(self, d: Device) -> float:
        return max(d.last_heard or 0.0, self._base) + d.supervision_s

    def next_deadline(self) -> float | None:
        live = [self.deadline(d) for d in self.devices.values() if d.state not in (LOST, REVOKED)]
        live += [p[0] for p in self.pending_offline.values()]
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

    def load_seqs(self, bounds: dict[str, tuple[int, int]], gaps: list[tuple[str, int, int]], now: float,
                  losses: list[tuple[str, int, int]] = ()) -> None:
        for name, (lo, hi) in bounds.items():
            self.seqs[name] = SeqTracker(lo, hi)
        for name, first, last in losses:
            self.seq(name).declared.append((first, last))
        for tracker in self.seqs.values():
            tracker.declared = merged(tracker.declared)
        for name, first, last in gaps:
            self.seqs[name].gaps.append(_Gap(first, last, now))
            self.seqs[name]._next_due = now


class FloodMeter:
    """A device sending more than `limit` events (or quarantined messages) within `window_s` is
    flooding the centre: one `flood` fault for it, its events still stored and acknowledged but
    not shown one by one (nor a warning per bad message), until it has sent fewer than `limit`
    in a whole window."""

    def __init__(self, limit: int = 100, window_s: float = 2.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: dict[str, deque[float]] = {}
        self.flooding: dict[str, dict[str, Any]] = {}  # device -> {"since", "events", "fire", ...}

    def note(self, name: str, cls: str, now: float) -> bool:
        """An event from `name`; returns True when this one starts a flood."""
        times = self._times.get(name)
        if times is None:
            times = self._times[name] = deque(maxlen=self.limit + 1)
        times.append(now)
        flood = self.flooding.get(name)
        if flood is not None:
            flood["events"] += 1
            flood[cls] = flood.get(cls, 0) + 1
            flood["last"] = now
            return False
        if len(times) > self.limit and now - times[0] <= self.window_s:
            self.flooding[name] = {"since": now, "last": now, "events": 1, cls: 1}
            return True
        return False

    def ended(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Floods over: fewer than `limit` events in the last window."""
        out = []
        for name, flood in list(self.flooding.items()):
            times = self._times[name]
            recent = sum(1 for t in times if now - t <= self.window_s)
            if recent < self.limit and now - flood["since"] >= self.window_s:
                del self.flooding[name]
                out.append((name, flood))
        return out

    def next_check(self) -> float | None:
        return None if not self.flooding else min(f["last"] for f in self.flooding.values()) + self.window_s
