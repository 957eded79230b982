"""The monitoring centre: receive, store, acknowledge and supervise every FireLink device.

Threads: the intake (intake.py: paho's network thread) only stamps each message and puts
it in a fair queue; one worker thread takes batches from it (round-robin over devices, fire
first), checks every message (payload.py), writes the batch to the store in one
transaction, and only then publishes the `ack`s, settles the messages with the broker (MQTT
PUBACK, manual acknowledgement) and tells the sinks. So an event is acknowledged, to the device
and to the broker, only once it is on disk; if the monitor dies before that, the broker keeps
the message in the monitor's persistent session and delivers it again.

Devices are hostile (issue 10 §3): a message that fails its checks is kept raw in the bounded
quarantine, settled with the broker so it cannot come back forever, reported, and never `ack`ed
as if held. Each message is written under its own savepoint: one that still cannot be stored
costs only itself. Only a failing store (disk, I/O) stops the worker, unacknowledged.

Events are de-duplicated by (device, id): a re-sent event is stored as a message, acknowledged
again (the device may have missed the first ack), and not shown again; the same id with other
content is quarantined and reported. Sinks see each event as it arrives (fire first after an
outage); the store answers in `seq` order and lists the gaps.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any, Callable

from firelink.centre.devices import MAX_RANGES, DeviceBook, FloodMeter, Supervision
from firelink.centre.intake import (AckConfirmed, FairQueue, Incoming, Intake, IntakeError, Item, Link, MqttIntake,
                                    MqttSettings)
from firelink.centre.payload import (MAX_PAYLOAD, PayloadError, event_id, parse_cmd_result, parse_event,
                                     parse_heartbeat, parse_json, parse_status, parse_topic)
from firelink.centre.store import Device, Event, MonitorStore, Store
from firelink.errors import FireLinkError


class MonitorError(FireLinkError, RuntimeError):
    """The monitor cannot run: broker unreachable, credentials refused, store failed."""


@dataclass(frozen=True)
class MonitorWarning:
    at: float
    reason: str
    topic: str | None = None
    device: str | None = None


class Sink:
    """What the monitor reports; override what you need. Called from the monitor's worker thread,
    after the batch is committed, so whatever a sink is told is already in the store."""

    def on_event(self, event: Event) -> None:
        """A new event (never a duplicate), in arrival order."""

    def on_device(self, device: Device, change: str | None) -> None:
        """A device's state or health changed; `change` is online, offline, lost, back, or None for an update."""

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        """Sequence numbers first..last still missing after the grace time."""

    def on_warning(self, warning: MonitorWarning) -> None:
        """Something received that the centre could not use, or trouble with the monitor's own link."""

    def on_loss(self, device: str, first: int, last: int, at: float, event_id: str) -> None:
        """The device declared sequence numbers first..last lost (its outbox overflowed)."""

    def on_flood(self, device: str, started: bool, info: dict[str, Any], at: float) -> None:
        """A device started (or stopped) flooding the centre; `info` counts its events by class."""

    def on_broker(self, up: bool, at: float, detail: str) -> None:
        """The monitor lost the broker, or got it back (detail: how long it was away)."""


def _monitor_account() -> MqttSettings:
    # The site broker binds the client id to the account (docs/threat-model.md): it is "monitor"
    # whatever is sent; the same value here keeps logs and the broker's view in agreement.
    return MqttSettings(client_id="monitor")


@dataclass
class MonitorConfig:
    mqtt: MqttSettings = field(default_factory=_monitor_account)  # the intake's connection
    supervision: Supervision = field(default_factory=Supervision)
    gap_grace_s: float = 60.0  # a backlog arrives fire-first; a gap open this long is reported
    batch_max: int = 200
    flood_events: int = 100  # more events than this from one device within flood_window_s is a flood
    flood_window_s: float = 2.0


@dataclass
class MonitorStats:
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    malformed: int = 0  # quarantined
    acks_sent: int = 0
    batches: int = 0
    suspect: int = 0
    floods: int = 0


@dataclass
class _Outcome:
    """What a batch (or one message of it) does once committed, in order."""

    acks: list[tuple[str, str]] = field(default_factory=list)
    settle: list[Any] = field(default_factory=list)  # intake tokens (MQTT PUBACKs)
    notes: list[Callable[[Sink], object]] = field(default_factory=list)  # each called with every sink

    def merge(self, other: _Outcome) -> None:
        self.acks += other.acks
        self.settle += other.settle
        self.notes += other.notes


# A store that fails like this is broken (disk, I/O, closed): stop. Other errors are one message's.
_STORE_BROKEN = (sqlite3.OperationalError, sqlite3.InternalError, sqlite3.ProgrammingError)


class Monitor:
    """One connection to the site broker as the `monitor` account, feeding a store and sinks."""

    def __init__(self, store: Store | MonitorStore, config: MonitorConfig, sinks: list[Sink] | None = None,
                 intake: Callable[[MqttSettings, FairQueue], Intake] = MqttIntake) -> None:
        self.store = store
        self.config = config
        self.sinks: list[Sink] = list(sinks or [])
        self.stats = MonitorStats()
        self.failure: BaseException | None = None
        now = time.time()
        self._book = DeviceBook(config.supervision, store.devices(), now)
        self._book.load_seqs(store.seq_bounds(), store.seq_gaps(), now, store.losses())
        self._flood = FloodMeter(config.flood_events, config.flood_window_s)
        self._book_lock = threading.Lock()  # snapshots for other threads
        self._queue = FairQueue()
        self._ack_mids: dict[int, tuple[str, str]] = {}
        self._down_since: float | None = None
        self._retained_rejected: set[tuple[str, int]] = set()
        self._capped: set[str] = set()  # devices whose seq tracking hit its bound (warned once)
        self._next_clock = 0.0
        self._worker: threading.Thread | None = None
        self._intake = intake(config.mqtt, self._queue)

    # --- lifecycle ---
    def start(self, timeout_s: float = 10.0) -> None:
        """Connects, subscribes and starts the worker; raises MonitorError unless all done within timeout_s."""
        self._resend_unconfirmed_acks()
        self._worker = threading.Thread(target=self._work, name="monitor-worker", daemon=True)
        self._worker.start()
        try:
            self._intake.start(timeout_s)
        except IntakeError as e:
            self._stop_worker(1.0)
            raise MonitorError(str(e)) from e

    def stop(self, timeout_s: float = 5.0) -> None:
        """Processes what has arrived, lets the broker confirm the acks sent (at most 1 s: an
        unconfirmed one is sent again at the next start), then disconnects. Bounded by timeout_s."""
        deadline = time.monotonic() + timeout_s
        self.wait_idle(timeout_s)
        confirm_by = min(deadline, time.monotonic() + 1.0)
        while self._ack_mids and self.failure is None and time.monotonic() < confirm_by:
            self.wait_idle(0.02)
            time.sleep(0.01)
        self._intake.stop()
        self._stop_worker(timeout_s)

    def _stop_worker(self, timeout_s: float) -> None:
        if self._worker is not None:
            self._queue.close()
            self._worker.join(timeout_s)
            self._worker = None

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until every message received so far is processed; False on timeout."""
        return self._queue.wait_done(timeout_s, lambda: self.failure is not None)

    def ingest(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Handles a message as if the broker had delivered it (replays, tests)."""
        self._queue.put(Incoming(topic, payload, time.time(), retained))

    def device(self, name: str) -> Device | None:
        with self._book_lock:
            return self._book.snapshot(name)

    def missing_seqs(self, name: str) -> int:
        with self._book_lock:
            tracker = self._book.seqs.get(name)
            return tracker.missing() if tracker else 0

    def flooding(self) -> list[str]:
        with self._book_lock:
            return sorted(self._flood.flooding)

    # --- the worker ---
    def _work(self) -> None:
        while True:
            # Wake at least twice a second to look at supervision deadlines, open gaps and floods.
            deadlines = [max(d, self._next_clock) for d in (self._book.next_deadline(), self._flood.next_check())
                         if d is not None]
            wait = max(0.0, min([0.5] + [d - time.time() for d in deadlines]))
            batch = self._queue.get_batch(self.config.batch_max, wait)
            if batch is None:
                return
            try:
                self._process(batch)
            except Exception as e:  # the store failed: stop rather than acknowledge what is not held
                self.failure = e
                self._warn_now(f"monitor stopped: {type(e).__name__}: {e}")
                return
            finally:
                self._queue.done(len(batch))

    def _process(self, batch: list[Item]) -> None:
        out = _Outcome()
        with self.store.batch(), self._book_lock:
            for item in batch:
                if isinstance(item, Incoming):
                    self._handle(item, out)
                elif isinstance(item, AckConfirmed):
                    if item.mid in self._ack_mids:
                        self.store.mark_acked(*self._ack_mids.pop(item.mid), at=item.at)
                elif isinstance(item, Link):
                    self._link(item, out)
            now = time.time()
            if now >= self._next_clock:  # every device's clocks: at most ten times a second, not per batch
                self._next_clock = now + 0.1
                self._clocks(now, out)
            for name in self._book.dirty:
                self.store.save_device(self._book.devices[name])
            self._book.dirty.clear()
        if batch:
            self.stats.batches += 1
        # Committed: now it may be acknowledged and shown.
        for device, eid in out.acks:
            self._publish_ack(device, eid)
        for token in out.settle:
            self._intake.settle(token)
        for note in out.notes:
            for sink in list(self.sinks):
                try:
                    note(sink)
                except Exception as e:  # a broken display must not stop the centre
                    self.sinks.remove(sink)
                    self._warn_now(f"sink {type(sink).__name__} removed after {type(e).__name__}: {e}")

    def _publish_ack(self, device: str, eid: str) -> None:
        mid = self._intake.publish_ack(device, json.dumps({"id": eid}).encode())
        self._ack_mids[mid] = (device, eid)
        self.stats.acks_sent += 1

    def _resend_unconfirmed_acks(self) -> None:
        """Acks the broker never confirmed before the last stop: publish them again (paho queues them)."""
        for device, eid in self.store.unacked():
            self._publish_ack(device, eid)

    def _handle(self, m: Incoming, out: _Outcome) -> None:
        self.stats.messages += 1
        if m.token is not None:
            out.settle.append(m.token)  # stored or quarantined, the broker may forget it
        where = parse_topic(m.topic)
        device, kind = where if where else (None, "unknown")
        mine = _Outcome()
        try:
            with self.store.savepoint():
                self._use(m, device, kind, mine)
        except PayloadError as e:
            return self._reject(m, device, kind, str(e), out)
        except _STORE_BROKEN:
            raise  # the store failed: the worker stops
        except Exception as e:  # a payload this code did not foresee, or that the store refused
            return self._reject(m, device, kind, f"monitor could not handle it: {type(e).__name__}: {e}"[:300], out)
        out.merge(mine)

    def _use(self, m: Incoming, device: str | None, kind: str, out: _Outcome) -> None:
        if device is None:
            raise PayloadError("unexpected topic")
        if m.size > MAX_PAYLOAD:
            raise PayloadError(f"oversized: {m.size} bytes (limit {MAX_PAYLOAD})")
        if kind == "status" and not m.payload:
            # A retained status cleared (an account removed): nothing to show of the device.
            self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained, m.dup)
            return self._warn(out, "retained status cleared", m.topic, device)
        doc = parse_json(m.payload)
        if kind == "event":
            try:
                ev = parse_event(device, doc, m.received_at)
            except PayloadError as e:
                eid = event_id(doc)
                raise PayloadError(f"event {eid or '(no usable id)'} not held: {e}") from None
            ev.retained = m.retained
            self._event(ev, self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained,
                                                   m.dup), m, out)
        elif kind == "status":
            st = parse_status(doc)
            self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained, m.dup)
            self._device_note(device, self._book.status(device, st.state, m.received_at, m.retained, st.fw,
                                                        st.reset), out)
        elif kind == "heartbeat":
            hb = parse_heartbeat(doc)
            self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained, m.dup)
            if not m.retained:
                self._device_note(device, self._book.heartbeat(device, hb, m.received_at), out)
        elif kind == "cmd":  # sent by the centre, not heard from the device: recorded only
            parse_cmd_result(doc)
            self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained, m.dup)
        else:
            parse_cmd_result(doc)
            self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained, m.dup)
            if not m.retained:
                self._device_note(device, self._book.heard(device, m.received_at), out)

    def _event(self, ev: Event, message_id: int, m: Incoming, out: _Outcome) -> None:
        held = self.store.event(ev.device, ev.id)
        if held is not None and not held.same_content(ev):
            raise PayloadError(f"event id {ev.id} reused with different content (held: seq {held.seq} code "
                               f"{held.code} {held.q} {held.cls}; this: seq {ev.seq} code {ev.code} {ev.q} {ev.cls})")
        if not m.retained:
            change = self._book.heard(ev.device, ev.received_at)
            if change or self._book.early:  # a plain "heard" is left to the heartbeats: work per event
                self._device_note(ev.device, change, out)
        out.acks.append((ev.device, ev.id))  # duplicates too: the device may have missed the first ack
        if held is not None:
            self.store.count_ack_sent(ev.device, ev.id)
            self.stats.duplicates += 1
            return
        other = self.store.id_for_seq(ev.device, ev.seq)
        if other is not None:  # protocol.md: seq never repeats, so one of the two is suspect
            self._warn(out, f"event {ev.id} reuses seq {ev.seq} of event {other}", m.topic, ev.device)
        tracker = self._book.seq(ev.device)
        ev.late = tracker.add(ev.seq, ev.received_at)
        ev.acks = 1
        if self._flood.note(ev.device, ev.cls, ev.received_at):
            self.stats.floods += 1
            info = dict(self._flood.flooding[ev.device])
            out.notes.append(methodcaller("on_flood", ev.device, True, info, ev.received_at))
        ev.flood = ev.device in self._flood.flooding
        self.store.add_event(ev, message_id)
        self.stats.events += 1
        if ev.suspect:
            self.stats.suspect += 1
        for first, last in ev.lost:
            if tracker.declare_lost(first, last) and self.store.add_loss(ev.device, first, last, ev.id,
                                                                          ev.received_at):
                out.notes.append(methodcaller("on_loss", ev.device, first, last, ev.received_at, ev.id))
        if tracker.capped and ev.device not in self._capped:
            self._capped.add(ev.device)
            self._warn(out, f"more than {MAX_RANGES} gaps or lost ranges: the monitor tracks no more for this "
                            "device (its events are still stored)", m.topic, ev.device)
        out.notes.append(methodcaller("on_event", ev))
        if ev.retained:
            self._warn(out, f"event {ev.id} arrived as a retained message (a replay, not live)", m.topic, ev.device)

    def _reject(self, m: Incoming, device: str | None, kind: str, reason: str, out: _Outcome) -> None:
        if m.retained:
            # The broker replays retained junk at every (re)subscription: keep and report it once.
            key = (m.topic, hash(m.payload))
            if key in self._retained_rejected:
                return
            if len(self._retained_rejected) >= 10000:
                self._retained_rejected.clear()
            self._retained_rejected.add(key)
        self.stats.malformed += 1
        self.store.quarantine(m.received_at, m.topic, device, kind, m.payload, reason, m.retained, m.dup)
        if device is None:
            return self._warn(out, reason, m.topic[:128], None)
        if not m.retained:
            # Whatever it says, it came from the device (the ACL sees to that): it is alive.
            self._device_note(device, self._book.heard(device, m.received_at), out)
        # Junk counts towards a flood too: one fault for the device, not a warning per message.
        if self._flood.note(device, "quarantined", m.received_at):
            self.stats.floods += 1
            out.notes.append(methodcaller("on_flood", device, True, dict(self._flood.flooding[device]),
                                          m.received_at))
        if device not in self._flood.flooding:
            self._warn(out, reason, m.topic[:128], device)

    def _device_note(self, name: str, change: str | None, out: _Outcome) -> None:
        for early, what in self._book.early:
            out.notes.append(methodcaller("on_device", early, what))
        self._book.early.clear()
        d = self._book.snapshot(name)
        if d is not None:
            out.notes.append(methodcaller("on_device", d, change))

    def _link(self, item: Link, out: _Outcome) -> None:
        if item.up:
            self._book.resume(item.at)
            if self._down_since is not None:
                away = item.at - self._down_since
                self._down_since = None
                out.notes.append(methodcaller("on_broker", True, item.at, f"back after {away:.1f} s"))
        else:
            self._book.suspend()
            if self._down_since is None:
                self._down_since = item.at
                out.notes.append(methodcaller("on_broker", False, item.at, item.reason))
                self._warn(out, f"monitor lost the broker ({item.reason}); device supervision paused, "
                                "retrying every {:g} s".format(self.config.mqtt.retry_s))

    def _clocks(self, now: float, out: _Outcome) -> None:
        for d, change in self._book.expire(now):
            self._device_note(d.device, change, out)
        for name, tracker in self._book.seqs.items():
            for first, last in tracker.due(now, self.config.gap_grace_s):
                out.notes.append(methodcaller("on_gap", name, first, last, now))
        for name, info in self._flood.ended(now):
            out.notes.append(methodcaller("on_flood", name, False, info, now))

    def _warn(self, out: _Outcome, reason: str, topic: str | None = None, device: str | None = None) -> None:
        w = MonitorWarning(time.time(), reason, topic, device)
        out.notes.append(methodcaller("on_warning", w))

    def _warn_now(self, reason: str) -> None:
        w = MonitorWarning(time.time(), reason)
        for sink in list(self.sinks):
            try:
                sink.on_warning(w)
            except Exception:
                self.sinks.remove(sink)
