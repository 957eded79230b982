"""Periodic heartbeat: the device's health in one small JSON message.

It proves the device and its path are alive to the centre's supervision, and carries what
a technician needs without a site visit: uptime, firmware, reset cause, every input's state,
link and signal, mains and battery, outbox depth, fault counters and free heap.
"""
import asyncio
import gc
import json

from fl import VERSION, ticks
from fl.log import Logger

_log = Logger("heartbeat")


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
        self._interval_ms = interval_s * 1000
        self._reset_cause = reset_cause
        self._boot = ticks.ms()
        self._uptime_s = 0
        self._uptime_ms = 0  # below a second, kept apart so neither grows past a small int
        self.progress = 0
        self.sent = 0
        self.bytes_sent = 0
        self._heap_peak = 0

    def payload(self, counters=True):
        ts, synced = self._clock.now()
        fire, fault, status = self._outbox.depth_by_priority()
        states = self._inputs.states()
        mains = "lost" if any(s == "active" for n, s in self._mains_states(states)) else "ok"
        # Compact separators: 63 B less per heartbeat, ~89 KB a day at 60 s (make bench).
        return json.dumps({
            "ts": ts,
            "tsync": synced,
            "uptime_s": self.uptime_s(),
            "fw": VERSION,
            "reset": self._reset_cause,
            "inputs": states,
            "link": self._links.describe(),
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
        # A countdown, not a tick deadline: offline for a week, a deadline's age would wrap.
        due = ticks.Countdown(0)
        while True:
            self.progress += 1
            self.uptime_s()
            if due.due() and self._mqtt.connected:
                body = self.payload()
                try:
                    ok = await self._mqtt.publish(self._topic, body, qos=1)
                except ValueError:
                    # Too big for one packet: the counters are the part that grows.
                    body = self.payload(counters=False)
                    try:
                        ok = await self._mqtt.publish(self._topic, body, qos=1)
                    except ValueError as e:
                        _log.error("heartbeat of %d bytes cannot be sent: %s", len(body), e)
                        self._health.count("heartbeat_unsendable")
                        ok = None  # retrying would not help: wait for the next one
                if ok:
                    self.sent += 1
                    self.bytes_sent += len(body)
                if ok is not False:
                    due.start(self._interval_ms)
            # Wake every second so the watchdog sees progress and a reconnect sends promptly.
            await asyncio.sleep_ms(min(1000, self._interval_ms))
