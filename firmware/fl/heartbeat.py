"""Heartbeat: the device's full health in one JSON message, infrequent by default.

It carries what a technician needs without a site visit: uptime, firmware, reset cause, every
input's state, link and signal, mains and battery, outbox depth, faults, counters and heap.
Liveness is not its job: the MQTT keepalive and the retained will (`status` `offline`) tell
the centre within minutes that a device is gone, at a fraction of the bytes (issue 9 §5).

One goes out at connect, then every `heartbeat_s`; each says in `next_s` how many seconds
until the next scheduled one, so the centre knows when one is overdue. When a fault comes or
goes, or the network path changes, one goes out early (at most every EARLY_MIN_S: a flapping
link must not cost what a heartbeat a minute would); the schedule itself is unchanged.
"""
import asyncio
import gc
import json

from fl import VERSION, ticks
from fl.log import Logger

_log = Logger("heartbeat")
EARLY_MIN_S = 300


class Heartbeat:
    def __init__(self, board, clock, health, inputs, links, outbox, mqtt, topic, interval_s, reset_cause):
        self._board = board
        self._clock = clock
        self._health = health
        self._inputs = inputs
        self._links = links
        self._outbox = outbox
        self._mqtt = mqtt
        self._topic = topic
        self._interval_s = interval_s
        self._interval_ms = interval_s * 1000
        # A countdown, not a tick deadline: offline for a week, a deadline's age would wrap.
        self._due = None  # ticks.Countdown to the next scheduled heartbeat (run() sets it)
        self._changed = False  # a fault or the path changed since the last heartbeat
        self._sent_at = None  # ticks.ms() of the last heartbeat sent
        health.listen(self._on_fault)
        links.listen(self._on_change)
        self._reset_cause = reset_cause
        self._boot = ticks.ms()
        self._uptime_s = 0
        self._uptime_ms = 0  # below a second, kept apart so neither grows past a small int
        self.progress = 0
        self.sent = 0
        self.bytes_sent = 0
        self._heap_peak = 0
        self._ident_sent = -1  # the link's identity generation last delivered (fl.pathmgr)

    def _on_fault(self, name, active, detail):
        self._changed = True

    def _on_change(self):
        if not self._links.quiet_change:
            self._changed = True

    def _next_s(self):
        if self._due is None:
            return self._interval_s
        # At least 1: the scheduled one may be overdue by a loop turn (it goes within a second),
        # and the centre reads 0 as no schedule at all.
        return max(1, (self._due.left() + 999) // 1000)

    def payload(self, counters=True, next_s=None, full=True):
        """full: the link's whole health (the status command, and a heartbeat whose link
        identity the centre has not had yet); else its changing fields only."""
        ts, synced = self._clock.now()
        fire, fault, status = self._outbox.depth_by_priority()
        states = self._inputs.states()
        mains = "lost" if any(s == "active" for n, s in self._mains_states(states)) else "ok"
        # Compact separators: 63 B less per heartbeat, ~89 KB a day at 60 s (make bench).
        return json.dumps({
            "ts": ts,
            "tsync": synced,
            "next_s": self._next_s() if next_s is None else next_s,
            "uptime_s": self.uptime_s(),
            "fw": VERSION,
            "reset": self._reset_cause,
            "inputs": states,
            "link": self._links.describe(full),
            "mains": mains,
            "battery_mv": self._board.battery_mv(),
            "outbox": {"depth": fire + fault + status, "fire": fire, "fault": fault, "status": status,
                       "capacity": self._outbox.capacity, "fill_pct": self._outbox.fill_percent(),
                       "dropped": self._outbox.dropped, "in_ram": self._outbox.in_ram()},
            "faults": self._health.faults,
            "counters": self._health.counters if counters else {"omitted": len(self._health.counters)},
            "heap_free": self._board.free_heap(),
            "heap_peak": self._heap_high_water(),
        }, separators=(",", ":")).encode()

    def uptime_s(self):
        # A tick difference is only valid for 2^29 ms (6.2 days) on the ESP32: add up the
        # time since the last look instead (run() looks every second, connected or not).
        now = ticks.ms()
        ms = self._uptime_ms + ticks.diff(now, self._boot)
        self._boot = now
        self._uptime_s += ms // 1000
        self._uptime_ms = ms % 1000
        return self._uptime_s

    def _heap_high_water(self):
        """The most heap found in use right after a collection, over this boot's heartbeats
        (`make bench` reads it). Not micropython.mem_peak(): on the unix port that counts every
        allocation the GC has since reclaimed, and ESP32 builds do not have it."""
        gc.collect()
        used = gc.mem_alloc()
        if used > self._heap_peak:
            self._heap_peak = used
        return self._heap_peak

    def _mains_states(self, states):
        for spec in self._inputs.specs:
            if spec["kind"] == "mains":
                yield spec["name"], states.get(spec["name"])

    async def run(self):
        self._due = ticks.Countdown(0)
        while True:
            self.progress += 1
            self.uptime_s()
            if self._mqtt.connected:
                if self._due.due():
                    ok = await self._send(self._interval_s)
                    if ok is not False:
                        self._due.start(self._interval_ms)
                elif self._changed and not ticks.recent(self._sent_at, EARLY_MIN_S * 1000):
                    await self._send(None)
            # Wake every second so the watchdog sees progress and a reconnect sends promptly.
            await asyncio.sleep_ms(min(1000, self._interval_ms))

    async def send_now(self):
        """A heartbeat out of schedule (fl.pathmgr's backup test); True when acknowledged."""
        return await self._send(None)

    async def _send(self, next_s):
        """One heartbeat; True when acknowledged, False when not (try again), None when it
        can never be sent (wait for the next)."""
        self._changed = False  # a change from here on is news for the next one
        gen = self._links.ident_gen
        full = gen != self._ident_sent
        body = self.payload(next_s=next_s, full=full)
        try:
            ok = await self._mqtt.publish(self._topic, body, qos=1)
        except ValueError:
            # Too big for one packet: the counters are the part that grows.
            body = self.payload(counters=False, next_s=next_s, full=full)
            try:
                ok = await self._mqtt.publish(self._topic, body, qos=1)
            except ValueError as e:
                _log.error("heartbeat of %d bytes cannot be sent: %s", len(body), e)
                self._health.count("heartbeat_unsendable")
                ok = None  # retrying would not help: wait for the next one
        if ok:
            self.sent += 1
            self.bytes_sent += len(body)
            self._ident_sent = gen
            self._sent_at = ticks.ms()
        elif ok is False:
            self._changed = True  # not delivered: whatever changed is still news
        return ok
