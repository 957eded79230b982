"""Helpers for the monitor tests: a real MQTT peer (a device, or anyone with credentials),
a sink that records what the monitor reports, and deadline-bound waits."""
from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt

from firelink.centre.monitor import MonitorWarning, Sink
from firelink.centre.store import Device, Event

_ids = itertools.count(1)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0, interval_s: float = 0.02) -> Any:
    """Polls until predicate() is truthy; returns its value or fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**8:08d}-{next(_ids)}"


def event_payload(seq: int, event_id: str | None = None, code: str = "110", q: str = "new", cls: str = "fire",
                  ts: float | None = None, tsync: bool = True, zone: int = 1, input: str = "panel_fire",
                  **extra: Any) -> bytes:
    doc = {"id": event_id or f"{seq:08x}-test", "seq": seq, "ts": int(time.time()) if ts is None else ts,
           "tsync": tsync, "code": code, "q": q, "zone": zone, "input": input, "class": cls, **extra}
    return json.dumps(doc).encode()


class Peer:
    """A paho client with someone's credentials: publishes with PUBACK waits, records what it receives."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str | None = None,
                 clean_session: bool = True) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or unique(username),
                                  protocol=mqtt.MQTTv311, clean_session=clean_session)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.host, self.port = host, port
        self.received: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._connack: Any = None
        self._subacks: dict[int, list[Any]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            self._connack = rc
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[Any], props: Any) -> None:
        with self._cond:
            self._subacks[mid] = rcs
            self._cond.notify_all()

    def connect(self, timeout_s: float = 5.0) -> Any:
        """Connects; returns the CONNACK reason code (success or not)."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._connack is not None, timeout_s):
                raise AssertionError("no CONNACK")
        if self._connack.is_failure:
            self.client.loop_stop()
        return self._connack

    def subscribe(self, topic: str, timeout_s: float = 5.0) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout_s):
                raise AssertionError(f"no SUBACK for {topic}")
            return self._subacks[mid]

    def publish(self, topic: str, payload: bytes, retain: bool = False, timeout_s: float = 5.0) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout_s)

    def messages(self, topic: str) -> list[bytes]:
        with self._cond:
            return [p for t, p in self.received if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RecordingSink(Sink):
    """Everything a monitor reports, in order, for tests to wait on."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changes: list[tuple[str, str]] = []  # (device, change)
        self.gaps: list[tuple[str, int, int]] = []
        self.warnings: list[MonitorWarning] = []
        self._cond = threading.Condition()

    def on_event(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def on_device(self, device: Device, change: str | None) -> None:
        if change:
            with self._cond:
                self.changes.append((device.device, change))
                self._cond.notify_all()

    def on_gap(self, device: str, first: int, last: int, at: float) -> None:
        with self._cond:
            self.gaps.append((device, first, last))
            self._cond.notify_all()

    def on_warning(self, warning: MonitorWarning) -> None:
        with self._cond:
            self.warnings.append(warning)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[RecordingSink], Any], timeout_s: float = 5.0) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout_s):
                raise AssertionError(f"sink condition not met within {timeout_s} s")
            return predicate(self)

    def events_of(self, device: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.device == device]

    def changes_of(self, device: str) -> list[str]:
        with self._cond:
            return [c for d, c in self.changes if d == device]

    def warnings_of(self, device: str) -> list[MonitorWarning]:
        with self._cond:
            return [w for w in self.warnings if w.device == device]
