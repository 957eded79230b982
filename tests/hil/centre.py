"""The receiving centre of a HIL scenario: the real `firelink.centre.monitor.Monitor` in-process, with
its SQLite store, acknowledging every event and supervising the devices, as on site.

`Centre` is also the monitor's sink, so a scenario waits on what the monitor reports (new
events in arrival order, device changes) with a deadline, and reads the store for what it
holds (events in seq order, every message as received, with its retained flag).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import paho.mqtt.client as mqtt

from firelink.centre.devices import Supervision
from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig, MonitorWarning, Sink
from firelink.centre.store import Device, Event, MonitorStore
from tests.conftest import BrokerFixture

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    device: str
    change: str  # online, offline, lost, back
    at: float
    last_heard: float | None
    supervision_s: float


@dataclass(frozen=True)
class Received:
    """One message as the centre received it (decoded JSON payload)."""

    doc: dict[str, Any]
    at: float
    retained: bool
    index: int  # position among every message the centre received (the store's message id)


class Centre(Sink):
    def __init__(self, site: BrokerFixture, db: Path, supervision: Supervision | None = None) -> None:
        self.site = site
        self.client_id = f"hil-centre-{uuid.uuid4().hex[:10]}"
        self.store = MonitorStore(db)
        cfg = MonitorConfig(MqttSettings(host=site.host, port=site.port, username=site.monitor_user,
                                         password=site.monitor_pass, client_id=self.client_id),
                            supervision=supervision or Supervision())
        self.monitor = Monitor(self.store, cfg, [self])
        self._cond = threading.Condition()
        self.arrivals: list[Event] = []  # new events (never duplicates) in the order they arrived
        self.changes: list[Change] = []
        self.warnings: list[MonitorWarning] = []
        self.losses: list[tuple[str, int, int]] = []  # (device, first, last) the devices declared lost
        self.gaps: list[tuple[str, int, int]] = []  # (device, first, last) missing past the grace time
        self._version = 0  # bumped by every report

    # --- lifetime ---
    def start(self) -> Centre:
        self.monitor.start(timeout_s=10)
        return self

    def close(self) -> None:
        try:
            self.monitor.stop()
        finally:
            self.store.close()
            forget_session(self.site, self.client_id)

    # --- the monitor's sink (its worker thread, after each commit) ---
    def on_event(self, event: Event) -> None:
        with self._cond:
            self.arrivals.append(event)
            self._version += 1
            self._cond.notify_all()

    def on_device(self, device: Device, change: str | None) -> None:
        if change:
            with self._cond:
                self.changes.append(Change(device.device, change, time.time(), device.last_heard,
                                           device.supervision_s))
                self._version += 1
                self._cond.notify_all()

    def on_warning(self, warning: MonitorWarning) -> None:
        with self._cond:
            self.warnings.append(warning)
            self._version += 1
            self._cond.notify_all()

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        with self._cond:
            self.gaps.append((device, first, last))
            self._version += 1
            self._cond.notify_all()

    def on_loss(self, device: str, first: int, last: int, at: float, event_id: str) -> None:
        """The monitor's report of a range a device declared lost (TEAM contract: `lost` on a 624)."""
        with self._cond:
            self.losses.append((device, first, last))
            self._version += 1
            self._cond.notify_all()

    # --- waiting ---
    def wait(self, predicate: Callable[[], T], timeout_s: float, what: str) -> T:
        """predicate() is evaluated whenever the monitor reports something, and at least every
        0.2 s (for what is read from the store). Not under the sink's lock: a predicate may
        wait for the monitor's worker, which may be about to call the sink."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                seen = self._version
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"centre: {what} not seen within {timeout_s} s")
            with self._cond:
                self._cond.wait_for(lambda: self._version != seen, min(left, 0.2))

    def events_of(self, device: str, since: int = 0) -> list[Event]:
        """New events from `device` in arrival order, from arrival number `since`."""
        with self._cond:
            return [e for e in self.arrivals[since:] if e.device == device]

    def mark(self) -> int:
        """A position in the arrivals, for `since=`."""
        with self._cond:
            return len(self.arrivals)

    def wait_event(self, device: str, timeout_s: float = 10.0, since: int = 0, **fields: Any) -> Event:
        """The first new event from `device` (from arrival `since`) whose attributes equal
        `fields` (code=, q=, cls=, input=, zone=, ...)."""
        def match() -> Event | None:
            for e in self.events_of(device, since):
                if all(getattr(e, k) == v for k, v in fields.items()):
                    return e
            return None
        return self.wait(match, timeout_s, f"event {fields} from {device}")

    def changes_of(self, device: str) -> list[Change]:
        with self._cond:
            return [c for c in self.changes if c.device == device]

    def wait_change(self, device: str, change: str, timeout_s: float, since: int = 0) -> Change:
        """The first `change` (online, offline, lost, back) of `device` after the first
        `since` changes of that device."""
        def match() -> Change | None:
            for c in self.changes_of(device)[since:]:
                if c.change == change:
                    return c
            return None
        return self.wait(match, timeout_s, f"device {device} {change}")

    # --- what the store holds ---
    def messages(self, device: str, kind: str) -> list[Received]:
        """Every `kind` message (status, heartbeat, event) from `device`, in arrival order."""
        self.monitor.wait_idle(5)
        out = []
        for m in self.store.messages(device=device, kind=kind):
            try:
                doc = json.loads(m.payload)
            except ValueError:
                continue
            out.append(Received(doc, m.received_at, m.retained, m.id))
        return out

    def live_statuses(self, device: str) -> list[str]:
        """The `state` of each status message received live (not a retained replay)."""
        return [r.doc.get("state") for r in self.messages(device, "status") if not r.retained]

    def wait_message(self, device: str, kind: str, predicate: Callable[[Received], bool], timeout_s: float,
                     what: str) -> Received:
        def match() -> Received | None:
            for r in self.messages(device, kind):
                if predicate(r):
                    return r
            return None
        return self.wait(match, timeout_s, what)


def forget_session(site: BrokerFixture, client_id: str, timeout_s: float = 5.0) -> None:
    """Drops a persistent session, or the broker queues every later scenario's messages for it."""
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                    clean_session=True)
    c.username_pw_set(site.monitor_user, site.monitor_pass)
    c.on_connect = lambda client, userdata, flags, rc, props: done.set()
    try:
        c.connect(site.host, site.port, keepalive=30)
    except OSError:
        return  # the broker is gone, and the session with it
    c.loop_start()
    done.wait(timeout_s)
    c.disconnect()
    c.loop_stop()
