"""Outbox → broker: one event at a time, fire first, each removed only after its PUBACK.

Also supervises the centre's acknowledgements: a fire event with no `ack` from the centre
within the configured time (EN 54-21: 100 s) raises a local fault that is itself reported.
The fire events awaited survive a reboot (fl/reported.py keeps `snapshot()`, the app gives it
back to `restore()`), as due times that do not depend on the tick counter.

Removals are marked on flash in batches (fl/outbox.py): the sender flushes them once nothing
has been removed for REMOVE_FLUSH_MS and nothing waits, so an idle device writes nothing.
"""
import asyncio
import json

from fl import ticks
from fl.log import Logger

_log = Logger("sender")
PRIORITY_FIRE = 0
KICK_MS = 2000  # while a fire waits, the reconnect backoff is cut to this; a dead broker is not hammered
OVERDUE_MAX = 64  # overdue ids kept, so a centre that never acks cannot exhaust the heap
REMOVE_FLUSH_MS = 5000


class Sender:
    def __init__(self, outbox, mqtt, topic, wake, health, retry_ms=1000):
        self._outbox = outbox
        self._mqtt = mqtt
        self._topic = topic
        self._wake = wake  # asyncio.Event set by the recorder whenever it queues an event
        self._health = health
        self._retry_ms = retry_ms
        self.tag_path = False  # with two paths each event says which carried it (`"path"`)
        self._kicked_at = None  # ticks_ms of the last kick()
        # One event for both reasons to look again while disconnected: an event was queued (a
        # fire must kick at once) or the connection came up.
        mqtt.signal_on_connect(wake)
        self._removed_at = None  # ticks_ms of the last removal not yet marked on flash
        self.kicks = 0
        self.progress = 0
        self.sent = 0
        self.resent = 0

    async def run(self):
        while True:
            self.progress += 1
            if self._kicked_at is not None and not ticks.recent(self._kicked_at, KICK_MS):
                # Forgotten once old (this loop turns at least every second), so a stamp can
                # never look fresh again when the ticks come round (every 2^30 ms on the board).
                self._kicked_at = None
            # Clear before looking so an event queued while we look still wakes us.
            self._wake.clear()
            item = self._outbox.peek()
            if item is None:
                if self._removed_at is not None and \
                        ticks.diff(ticks.ms(), self._removed_at) >= REMOVE_FLUSH_MS:
                    self._removed_at = None
                    self._outbox.flush_removals()
                await _wait_event(self._wake, 1000)
                continue
            handle, payload, sent_before = item
            if not self._mqtt.connected:
                wait_ms = 1000
                if self._outbox.priority(handle) == PRIORITY_FIRE:
                    # A fire must not wait out a backoff grown during an outage: end it now, but
                    # at most every KICK_MS so that a dead broker is not hammered.
                    # A stamp days old (or wrapped) is simply not recent: kick.
                    left = KICK_MS - ticks.since(self._kicked_at) if ticks.recent(self._kicked_at, KICK_MS) else 0
                    if left <= 0:
                        self._kicked_at = ticks.ms()
                        self.kicks += 1
                        self._mqtt.kick()
                        left = KICK_MS
                    wait_ms = min(wait_ms, left)
                await _wait_event(self._wake, wait_ms)  # set by the recorder and on connect
                continue
            self._outbox.mark_sent(handle)
            if sent_before:
                self.resent += 1
            if self.tag_path:
                payload = _tagged(payload, self._mqtt.path_name())
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
                self._removed_at = ticks.ms() if self._outbox.removals_pending() else None
                self.sent += 1
            else:
                # The client drops and rebuilds the connection; the event stays in the outbox.
                await asyncio.sleep_ms(50)


def _tagged(payload, path):
    """The event as published: its stored JSON object with `"path": "<name>"` added last."""
    if not path or len(payload) < 2 or payload[-1] != 0x7D:  # "}"
        return payload
    return bytes(payload[:-1]) + b',"path":"' + path.encode() + b'"}'


class AckWatch:
    """Fire events awaiting the centre's `ack`, each with a deadline from when it was recorded."""

    def __init__(self, timeout_s, health):
        self._timeout_ms = int(timeout_s * 1000)
        self._health = health  # the `centre_ack` fault is reported as an event by whoever listens
        self._pending = {}  # event id -> deadline (ticks_ms)
        self._overdue = set()
        self.untracked = 0  # overdue beyond OVERDUE_MAX: counted, not kept
        self.changed = False  # an ack ended a wait: the app persists the awaited set soon
        self.progress = 0
        self.acked = 0
        self.rejected = 0

    def expect(self, event_id, left_ms=None):
        left = self._timeout_ms if left_ms is None else max(0, min(int(left_ms), self._timeout_ms))
        self._pending[event_id] = ticks.add(ticks.ms(), left)

    def pending(self):
        return len(self._pending)

    def snapshot(self, now_ts, synced):
        """{event id: [due_ts, left_ms]} of every fire event still awaiting its ack (overdue
        ones with 0 left). due_ts is in RTC seconds when the clock is set, else 0: a tick
        stamp would mean nothing after a reboot or across the 32-bit tick wrap."""
        now = ticks.ms()
        out = {}
        for event_id, deadline in self._pending.items():
            left = max(0, ticks.diff(deadline, now))
            out[event_id] = [now_ts + (left + 999) // 1000 if synced else 0, left]
        for event_id in self._overdue:
            out[event_id] = [now_ts if synced else 0, 0]
        return out

    def restore(self, saved, now_ts, synced):
        """Supervises again what a snapshot() held before a reboot: by the RTC when it and the
        snapshot are both set, else with the time that was left then (never shorter)."""
        for event_id, v in saved.items():
            try:
                due_ts, left = int(v[0]), int(v[1])
            except (TypeError, ValueError, IndexError):
                continue
            if synced and due_ts > 0:
                left = (due_ts - now_ts) * 1000
            self.expect(event_id, left)
        if saved:
            _log.info("awaiting the centre's ack for %d fire event(s) from before the reboot", len(saved))

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
        if self._pending.pop(event_id, None) is not None:
            self.changed = True
        if event_id in self._overdue:
            self.changed = True
            self._overdue.discard(event_id)
            if not self._overdue:
                self._health.set_fault("centre_ack", False)

    async def run(self):
        while True:
            self.progress += 1
            now = ticks.ms()
            late = [i for i, d in self._pending.items() if ticks.diff(now, d) >= 0]
            if len(late) > 1:  # oldest first: those are the ones kept past OVERDUE_MAX
                late.sort(key=lambda i: ticks.diff(self._pending[i], now))
            for event_id in late:
                del self._pending[event_id]
                if not self._overdue:
                    self._health.set_fault("centre_ack", True, "no ack for fire event " + event_id)
                if len(self._overdue) >= OVERDUE_MAX:
                    # The oldest OVERDUE_MAX stay tracked and keep the fault up until each is
                    # acked; the centre acks in delivery order, so newer ones are only counted
                    # (the heartbeat shows the counter) rather than kept without bound.
                    self.untracked += 1
                    self._health.count("centre_ack_untracked")
                    continue
                self._overdue.add(event_id)
                _log.error("no acknowledgement from the centre for fire event %s", event_id)
            await asyncio.sleep_ms(500)


async def _wait_event(ev, timeout_ms):
    try:
        await asyncio.wait_for_ms(ev.wait(), timeout_ms)
    except asyncio.TimeoutError:
        pass
