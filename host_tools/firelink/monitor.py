"""The monitoring centre: receive, store, acknowledge and supervise every FireLink device.

Threads: paho's network thread only stamps each message and queues it; one worker thread
takes what is queued in batches, writes the batch to the store in one transaction, and only
then publishes the `ack`s, sends the MQTT PUBACKs (manual acknowledgement) and tells the sinks.
So an event is acknowledged, to the device and to the broker, only once it is on disk; if the
monitor dies before that, the broker keeps the message in the monitor's persistent session
(clean_session False, stable client id) and delivers it again.

Events are de-duplicated by (device, id): a re-sent event is stored as a message, acknowledged
again (the device may have missed the first ack), and not shown again. Sinks see each event as
it arrives (fire first after an outage); the store answers in `seq` order and lists the gaps.
"""
from __future__ import annotations

import json
import queue
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt

from firelink import contact_id
from firelink.monitor_devices import OFFLINE, ONLINE, WENT_LOST, DeviceBook, Supervision
from firelink.monitor_payload import SUBSCRIPTIONS, TOPIC_PREFIX, PayloadError, parse_event, parse_json, parse_topic
from firelink.monitor_store import Device, Event, MonitorStore


class MonitorError(RuntimeError):
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


@dataclass
class MonitorConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = "monitor"
    password: str | None = None
    # The site broker binds the client id to the account (docs/threat-model.md): it is "monitor"
    # whatever is sent; the same value here keeps logs and the broker's view in agreement.
    client_id: str = "monitor"
    keepalive_s: int = 30
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None  # the site broker's TLS listener wants a client certificate
    key: Path | None = None
    supervision: Supervision = field(default_factory=Supervision)
    gap_grace_s: float = 60.0  # a backlog arrives fire-first; a gap open this long is reported
    batch_max: int = 500


@dataclass
class MonitorStats:
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    malformed: int = 0
    acks_sent: int = 0
    batches: int = 0


@dataclass
class _Incoming:
    topic: str
    payload: bytes
    received_at: float
    retained: bool = False
    dup: bool = False
    mid: int | None = None  # to PUBACK once stored; None for injected messages
    generation: int = 0  # the connection it arrived on: a PUBACK is only valid on that one


@dataclass
class _AckConfirmed:
    mid: int
    at: float


@dataclass
class _Link:
    up: bool
    at: float
    reason: str = ""


@dataclass
class _Outcome:
    """What a batch does once committed, in order."""

    acks: list[tuple[str, str]] = field(default_factory=list)
    pubacks: list[tuple[int, int]] = field(default_factory=list)  # (mid, generation)
    notes: list[Callable[[Sink], object]] = field(default_factory=list)  # each called with every sink


class Monitor:
    """One connection to the site broker as the `monitor` account, feeding a store and sinks."""

    def __init__(self, store: MonitorStore, config: MonitorConfig, sinks: list[Sink] | None = None) -> None:
        self.store = store
        self.config = config
        self.sinks: list[Sink] = list(sinks or [])
        self.stats = MonitorStats()
        self.failure: BaseException | None = None
        now = time.time()
        self._book = DeviceBook(config.supervision, store.devices(), now)
        self._book.load_seqs(store.seq_bounds(), store.seq_gaps(), now)
        self._book_lock = threading.Lock()  # snapshots for other threads
        self._queue: queue.Queue[_Incoming | _AckConfirmed | _Link | None] = queue.Queue()
        self._generation = 0
        self._ack_mids: dict[int, tuple[str, str]] = {}
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._client = self._make_client()

    # --- lifecycle ---
    def _make_client(self) -> mqtt.Client:
        c = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=mqtt.MQTTv311,
                             clean_session=False, manual_ack=True)
        client.username_pw_set(c.username, c.password)
        if c.tls:
            client.tls_set(ca_certs=str(c.ca) if c.ca else None, certfile=str(c.cert) if c.cert else None,
                           keyfile=str(c.key) if c.key else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(1, 30)
        client.max_inflight_messages_set(100)  # acks after a burst: fewer round trips
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def start(self, timeout_s: float = 10.0) -> None:
        """Connects, subscribes and starts the worker; raises MonitorError unless all done within timeout_s."""
        self._resend_unconfirmed_acks()
        self._worker = threading.Thread(target=self._work, name="monitor-worker", daemon=True)
        self._worker.start()
        try:
            self._client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        except (OSError, ssl.SSLError) as e:
            self.stop()
            raise MonitorError(f"cannot reach the broker at {self.config.host}:{self.config.port}: {e}") from e
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s) or self._refused:
            why = self._refused or f"no connection and subscription within {timeout_s:g} s"
            self.stop()
            raise MonitorError(f"broker {self.config.host}:{self.config.port}: {why}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Processes what has arrived, then disconnects. Bounded by timeout_s."""
        self.wait_idle(timeout_s)
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout_s)
            self._worker = None

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until every message received so far is processed; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0 or self.failure is not None, timeout_s)

    def ingest(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Handles a message as if the broker had delivered it (replays, tests)."""
        self._enqueue(_Incoming(topic, payload, time.time(), retained))

    def device(self, name: str) -> Device | None:
        with self._book_lock:
            return self._book.snapshot(name)

    def missing_seqs(self, name: str) -> int:
        with self._book_lock:
            tracker = self._book.seqs.get(name)
            return tracker.missing() if tracker else 0

    # --- paho's thread: stamp, queue, return ---
    def _enqueue(self, item: _Incoming | _AckConfirmed | _Link) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            # paho keeps retrying; start() gives up, a running monitor reports it via on_disconnect.
            self._refused = f"connection refused: {rc}"
            self._subscribed.set()
            return
        self._refused = None
        self._generation += 1
        client.subscribe([(f"{TOPIC_PREFIX}/+/{t}", 1) for t in SUBSCRIPTIONS])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[Any], props: Any) -> None:
        refused = [str(rc) for rc in rcs if rc.is_failure]
        if refused:
            self._refused = f"subscription refused: {', '.join(refused)} (is the ACL giving `monitor` read access?)"
        self._enqueue(_Link(True, time.time()))
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._generation += 1  # PUBACKs for what arrived on that connection are void now
        if not self._stopping:
            self._enqueue(_Link(False, time.time(), str(rc)))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._enqueue(_Incoming(msg.topic, bytes(msg.payload), time.time(), bool(msg.retain), bool(msg.dup),
                                msg.mid if msg.qos > 0 else None, self._generation))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._enqueue(_AckConfirmed(mid, time.time()))

    # --- the worker ---
    def _work(self) -> None:
        while True:
            # Wake at least twice a second to look at supervision deadlines and open seq gaps.
            deadline = self._book.next_deadline()
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.time()))
            batch: list[_Incoming | _AckConfirmed | _Link] = []
            try:
                first = self._queue.get(timeout=wait)
                if first is None:
                    return
                batch.append(first)
            except queue.Empty:
                pass  # only the clocks to look at
            while len(batch) < self.config.batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                self._process(batch)
            except Exception as e:  # the store failed: stop rather than acknowledge what is not held
                self.failure = e
                self._warn_now(f"monitor stopped: {type(e).__name__}: {e}")
                return
            finally:
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()

    def _process(self, batch: list[_Incoming | _AckConfirmed | _Link]) -> None:
        out = _Outcome()
        with self.store.batch(), self._book_lock:
            for item in batch:
                if isinstance(item, _Incoming):
                    self._handle(item, out)
                elif isinstance(item, _AckConfirmed):
                    if item.mid in self._ack_mids:
                        self.store.mark_acked(*self._ack_mids.pop(item.mid), at=item.at)
                elif isinstance(item, _Link):
                    self._link(item, out)
            self._clocks(time.time(), out)
            for name in self._book.dirty:
                self.store.save_device(self._book.devices[name])
            self._book.dirty.clear()
        if batch:
            self.stats.batches += 1
        # Committed: now it may be acknowledged and shown.
        for device, event_id in out.acks:
            self._publish_ack(device, event_id)
        for mid, generation in out.pubacks:
            if generation == self._generation:
                self._client.ack(mid, 1)
        for note in out.notes:
            for sink in list(self.sinks):
                try:
                    note(sink)
                except Exception as e:  # a broken display must not stop the centre
                    self.sinks.remove(sink)
                    self._warn_now(f"sink {type(sink).__name__} removed after {type(e).__name__}: {e}")

    def _publish_ack(self, device: str, event_id: str) -> None:
        info = self._client.publish(f"{TOPIC_PREFIX}/{device}/ack", json.dumps({"id": event_id}), qos=1)
        self._ack_mids[info.mid] = (device, event_id)
        self.stats.acks_sent += 1

    def _resend_unconfirmed_acks(self) -> None:
        """Acks the broker never confirmed before the last stop: publish them again (paho queues them)."""
        for device, event_id in self.store.unacked():
            self._publish_ack(device, event_id)

    def _handle(self, m: _Incoming, out: _Outcome) -> None:
        self.stats.messages += 1
        if m.mid is not None:
            out.pubacks.append((m.mid, m.generation))
        where = parse_topic(m.topic)
        device, kind = where if where else (None, "unknown")
        message_id = self.store.add_message(m.received_at, m.topic, device, kind, m.payload, m.retained, m.dup)
        if device is None:
            return self._malformed(out, message_id, "unexpected topic", m.topic, None)
        try:
            doc = parse_json(m.payload)
            if kind == "event":
                self._event(parse_event(device, doc, m.received_at), message_id, m.topic, out)
            elif kind == "status":
                state = doc.get("state")
                if state not in (ONLINE, OFFLINE):
                    raise PayloadError(f"status 'state' is {state!r}")
                change = self._book.status(device, state, m.received_at, m.retained, doc.get("fw"), doc.get("reset"))
                self._device_note(device, change, out)
            elif kind == "heartbeat":
                self._device_note(device, self._book.heartbeat(device, doc, m.received_at), out)
            else:
                self._device_note(device, self._book.heard(device, m.received_at), out)
        except PayloadError as e:
            # Whatever it says, it came from the device (the ACL sees to that): it is alive.
            if not m.retained:
                self._device_note(device, self._book.heard(device, m.received_at), out)
            self._malformed(out, message_id, str(e), m.topic, device)
        except sqlite3.Error:
            raise  # the store failed: the worker stops
        except Exception as e:  # a payload this code did not foresee: keep it, say so, carry on
            self._malformed(out, message_id, f"monitor could not handle it: {type(e).__name__}: {e}", m.topic,
                            device)

    def _event(self, ev: Event, message_id: int, topic: str, out: _Outcome) -> None:
        self._device_note(ev.device, self._book.heard(ev.device, ev.received_at), out)
        out.acks.append((ev.device, ev.id))  # duplicates too: the device may have missed the first ack
        if self.store.event(ev.device, ev.id) is not None:
            self.store.count_ack_sent(ev.device, ev.id)
            self.stats.duplicates += 1
            return
        other = self.store.id_for_seq(ev.device, ev.seq)
        if other is not None:  # protocol.md: seq never repeats, so one of the two is suspect
            self._warn(out, f"event {ev.id} reuses seq {ev.seq} of event {other}", topic, ev.device)
        ev.late = self._book.seq(ev.device).add(ev.seq, ev.received_at)
        ev.acks = 1
        self.store.add_event(ev, message_id)
        self.stats.events += 1
        out.notes.append(methodcaller("on_event", ev))
        mismatch = contact_id.class_mismatch(ev.code, ev.cls)
        if mismatch:
            self._warn(out, f"event {ev.id}: {mismatch}", topic, ev.device)

    def _malformed(self, out: _Outcome, message_id: int, reason: str, topic: str, device: str | None) -> None:
        self.stats.malformed += 1
        self.store.set_problem(message_id, reason)
        self._warn(out, reason, topic, device)

    def _device_note(self, name: str, change: str | None, out: _Outcome) -> None:
        d = self._book.snapshot(name)
        if d is not None:
            out.notes.append(methodcaller("on_device", d, change))

    def _link(self, item: _Link, out: _Outcome) -> None:
        if item.up:
            self._book.resume(item.at)
        else:
            self._book.suspend()
            self._warn(out, f"monitor lost the broker ({item.reason}); device supervision paused")

    def _clocks(self, now: float, out: _Outcome) -> None:
        for d in self._book.expire(now):
            self._device_note(d.device, WENT_LOST, out)
        for name, tracker in self._book.seqs.items():
            for first, last in tracker.due(now, self.config.gap_grace_s):
                out.notes.append(methodcaller("on_gap", name, first, last, now))

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

