"""Outbox → broker: one event at a time, fire first, each removed only after its PUBACK.

Also supervises the centre's acknowledgements: a fire event with no `ack` from the centre
within the configured time (EN 54-21: 100 s) raises a local fault that is itself reported.
"""
import asyncio
import json
import time

from fl.log import Logger

_log = Logger("sender")
PRIORITY_FIRE = 0


class Sender:
    def __init__(self, outbox, mqtt, topic, wake, health, retry_ms=1000):
        self._outbox = outbox
        self._mqtt = mqtt
        self._topic = topic
        self._wake = wake  # asyncio.Event set by the recorder whenever it queues an event
        self._health = health
        self._retry_ms = retry_ms
        self.progress = 0
        self.sent = 0
        self.resent = 0

    async def run(self):
        while True:
            self.progress += 1
            # Clear before looking so an event queued while we look still wakes us.
            self._wake.clear()
            item = self._outbox.peek()
            if item is None:
                await _wait_event(self._wake, 1000)
                continue
            if not self._mqtt.connected:
                await self._mqtt.wait_connected(1000)
                continue
            handle, payload, sent_before = item
            self._outbox.mark_sent(handle)
            if sent_before:
                self.resent += 1
            try:
                ok = await self._mqtt.publish(self._topic, payload, qos=1, dup=sent_before)
            except ValueError as e:
                # Cannot happen for a record the outbox accepted (slots are far below the packet
                # limit); if it ever does, retrying forever would block every event behind it.
                _log.error("event can never be sent (%s): removing it and reporting", e)
                self._health.count("events_unsendable")
                self._health.set_fault("unsendable", True, str(e)[:80])
                self._outbox.remove(handle)
                continue
            if ok:
                self._outbox.remove(handle)
                self.sent += 1
            else:
                # The client drops and rebuilds the connection; the event stays in the outbox.
                await asyncio.sleep_ms(50)


class AckWatch:
    """Fire events awaiting the centre's `ack`, each with a deadline from when it was recorded."""

    def __init__(self, timeout_s, health):
        self._timeout_ms = int(timeout_s * 1000)
        self._health = health  # the `centre_ack` fault is reported as an event by whoever listens
        self._pending = {}  # event id -> deadline (ticks_ms)
        self._overdue = set()
        self.progress = 0
        self.acked = 0
        self.rejected = 0

    def expect(self, event_id):
        self._pending[event_id] = time.ticks_add(time.ticks_ms(), self._timeout_ms)

    def pending(self):
        return len(self._pending)

    def on_ack(self, payload):
        """Handles one `ack` message; anything malformed is logged and ignored."""
        try:
            msg = json.loads(payload)
            event_id = msg["id"]
            if not isinstance(event_id, str):
                raise ValueError("id is not a string")
        except (ValueError, KeyError, TypeError) as e:
            self.rejected += 1
            _log.warn("ignoring malformed ack (%d bytes): %s", len(payload), e)
            return
        self.acked += 1
        self._pending.pop(event_id, None)
        if event_id in self._overdue:
            self._overdue.discard(event_id)
            if not self._overdue:
                self._health.set_fault("centre_ack", False)

    async def run(self):
        while True:
            self.progress += 1
            now = time.ticks_ms()
            late = [i for i, d in self._pending.items() if time.ticks_diff(now, d) >= 0]
            for event_id in late:
                del self._pending[event_id]
                if not self._overdue:
                    self._health.set_fault("centre_ack", True, "no ack for fire event " + event_id)
                self._overdue.add(event_id)
                _log.error("no acknowledgement from the centre for fire event %s", event_id)
            await asyncio.sleep_ms(500)


async def _wait_event(ev, timeout_ms):
    try:
        await asyncio.wait_for_ms(ev.wait(), timeout_ms)
    except asyncio.TimeoutError:
        pass
