"""How messages reach the monitor's worker: the MQTT intake and the fair queue between them.

`MqttIntake` is the one MQTT client of the centre (paho). Its network thread only stamps each
message and puts it in the `FairQueue`; the worker settles it (MQTT PUBACK) once stored. It
reconnects every `retry_s` (0.5 s) while the broker is away, so the centre is back within a
second of the broker's return, and tells the worker of each loss and return (`Link`).

`FairQueue` is how one device's burst cannot delay another device's fire: the worker takes
its batches round-robin over devices, from three lanes in order: the monitor's own notices
(link, ack confirmations), then events that look like fire, then everything else. A device
that sends 10,000 messages gets one slot per round like any other, so another device's alarm
waits for at most one round, not for the burst.

Another intake (a cluster of brokers, shared subscriptions) only has to feed a FairQueue the
same items and offer `publish_ack` and `settle`.
"""
from __future__ import annotations

import ssl
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from firelink.centre.payload import MAX_PAYLOAD, SUBSCRIPTIONS, TOPIC_PREFIX, looks_like_fire, parse_topic
from firelink.errors import FireLinkError

KEEP_OVERSIZED = 4096  # bytes of an oversized payload kept for the quarantine; the rest is dropped at once


@dataclass
class Incoming:
    topic: str
    payload: bytes
    received_at: float
    retained: bool = False
    dup: bool = False
    token: Any = None  # to settle (PUBACK) once stored; None for injected messages
    size: int = -1  # bytes received, when `payload` holds only the start of an oversized one

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.payload)


@dataclass
class AckConfirmed:
    mid: int
    at: float


@dataclass
class Link:
    up: bool
    at: float
    reason: str = ""


Item = Incoming | AckConfirmed | Link


class FairQueue:
    """Per-device queues in three lanes, drained round-robin; thread-safe."""

    CONTROL, URGENT, NORMAL = 0, 1, 2

    def __init__(self) -> None:
        self._lanes: list[OrderedDict[str, deque[Item]]] = [OrderedDict(), OrderedDict(), OrderedDict()]
        self._cond = threading.Condition()
        self._size = 0
        self._unfinished = 0  # put and not yet reported done by the worker
        self._closed = False

    def put(self, item: Item) -> None:
        if isinstance(item, Incoming):
            where = parse_topic(item.topic)
            key, kind = where if where else ("", "unknown")
            lane = self.URGENT if looks_like_fire(kind, item.payload) else self.NORMAL
        else:
            key, lane = "", self.CONTROL
        with self._cond:
            q = self._lanes[lane].get(key)
            if q is None:
                q = self._lanes[lane][key] = deque()
            q.append(item)
            self._size += 1
            self._unfinished += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def done(self, n: int) -> None:
        """The worker finished n items taken from get_batch."""
        with self._cond:
            self._unfinished -= n
            self._cond.notify_all()

    def wait_done(self, timeout_s: float, also: Any = None) -> bool:
        """Waits until every item put so far is done (or `also()` is true); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished <= 0 or (also is not None and also()), timeout_s)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return self._size

    def get_batch(self, limit: int, timeout_s: float) -> list[Item] | None:
        """Up to `limit` items, fairly; waits up to timeout_s for the first. None once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._size > 0 or self._closed, timeout_s):
                return []
            if self._size == 0:
                return None
            out: list[Item] = []
            for lanes in self._lanes:
                while lanes and len(out) < limit:
                    for key in list(lanes):  # one round: one item per device
                        q = lanes[key]
                        out.append(q.popleft())
                        if q:
                            lanes.move_to_end(key)
                        else:
                            del lanes[key]
                        if len(out) >= limit:
                            break
            self._size -= len(out)
            return out


class Intake(Protocol):
    """What the monitor needs from its message source."""

    def start(self, timeout_s: float) -> None: ...
    def stop(self) -> None: ...
    def publish_ack(self, device: str, payload: bytes) -> int: ...
    def settle(self, token: Any) -> None: ...


class IntakeError(FireLinkError, RuntimeError):
    pass


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = "monitor"
    password: str | None = None
    client_id: str = "firelink-monitor"
    keepalive_s: int = 30
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    retry_s: float = 0.5  # reconnect attempts while the broker is away


class MqttIntake:
    """The centre's MQTT connection: persistent session (clean_session false, stable client id),
    manual PUBACK, QoS 1 subscriptions to every device's status, event, heartbeat and cmd/result."""

    def __init__(self, settings: MqttSettings, queue: FairQueue) -> None:
        self.s = settings
        self.queue = queue
        self._generation = 0
        self._subscribed = threading.Event()
        self.refused: str | None = None
        self._stopping = False
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.s
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv311,
                             clean_session=False, manual_ack=True)
        client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(ca_certs=str(s.ca) if s.ca else None, certfile=str(s.cert) if s.cert else None,
                           keyfile=str(s.key) if s.key else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        # paho doubles the delay from min to max; equal bounds mean "every retry_s" (issue 9 §7:
        # back within 1 s of the broker). A connect attempt to a closed port costs nothing.
        client.reconnect_delay_set(s.retry_s, s.retry_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(100)  # acks after a burst: fewer round trips
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def start(self, timeout_s: float) -> None:
        s = self.s
        try:
            self._client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except (OSError, ssl.SSLError) as e:
            raise IntakeError(f"cannot reach the broker at {s.host}:{s.port}: {e}") from e
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s) or self.refused:
            why = self.refused or f"no connection and subscription within {timeout_s:g} s"
            self.stop()
            raise IntakeError(f"broker {s.host}:{s.port}: {why}")

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def publish_ack(self, device: str, payload: bytes) -> int:
        return self._client.publish(f"{TOPIC_PREFIX}/{device}/ack", payload, qos=1).mid

    def settle(self, token: Any) -> None:
        mid, generation = token
        if generation == self._generation:  # a PUBACK is only valid on the connection it came on
            self._client.ack(mid, 1)

    # --- paho's network thread: stamp, queue, return ---
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.refused = f"connection refused: {rc}"
            self._subscribed.set()
            return
        self.refused = None
        self._generation += 1
        client.subscribe([(f"{TOPIC_PREFIX}/+/{t}", 1) for t in SUBSCRIPTIONS])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[Any], props: Any) -> None:
        refused = [str(rc) for rc in rcs if rc.is_failure]
        if refused or len(rcs) != len(SUBSCRIPTIONS):
            self.refused = (f"subscription refused: {', '.join(refused) or 'return codes missing'} "
                            "(is the ACL giving `monitor` read access?)")
        self.queue.put(Link(True, time.time()))
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._generation += 1  # PUBACKs for what arrived on that connection are void now
        if not self._stopping:
            self.queue.put(Link(False, time.time(), str(rc)))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Nothing here may raise: an exception in a callback ends paho's network thread.
        payload = msg.payload
        size = len(payload)
        if size > MAX_PAYLOAD:
            payload = payload[:KEEP_OVERSIZED]  # the rest is let go now, not queued
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # MQTT wants UTF-8 topics; keep what came, marked
            topic = msg._topic.decode("utf-8", "replace")
        self.queue.put(Incoming(topic, bytes(payload), time.time(), bool(msg.retain), bool(msg.dup),
                                (msg.mid, self._generation) if msg.qos > 0 else None, size))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.queue.put(AckConfirmed(mid, time.time()))

