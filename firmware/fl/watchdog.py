"""Feeds the hardware watchdog only while every task shows progress.

Each watched object exposes a `progress` counter that its task bumps on every loop; a
task that stops moving for longer than its allowance stops the feeding, and the board
resets. Idle services still tick (they wake at least every second), so an idle MQTT link
never causes the fixed-interval reboots that peers' users complain about.
"""
import asyncio

from fl import ticks
from fl.log import Logger

_log = Logger("watchdog")


class Watchdog:
    def __init__(self, board, timeout_ms=30000, period_ms=1000):
        self._board = board
        self._timeout_ms = timeout_ms
        self._period_ms = period_ms
        self._watched = []  # [name, obj, allowance_ms, last_value, last_change]
        self.stalled = None

    def watch(self, name, obj, allowance_ms=15000):
        self._watched.append([name, obj, allowance_ms, obj.progress, ticks.ms()])

    def _check(self):
        now = ticks.ms()
        for w in self._watched:
            value = w[1].progress
            if value != w[3]:
                w[3] = value
                w[4] = now
            elif ticks.diff(now, w[4]) > w[2]:
                return w[0]
        return None

    async def run(self):
        hw = self._board.watchdog(self._timeout_ms)
        while True:
            stalled = self._check()
            if stalled is None:
                hw.feed()
            elif stalled != self.stalled:
                _log.error("task '%s' stopped making progress: no longer feeding the watchdog", stalled)
            self.stalled = stalled
            check = getattr(hw, "check", None)
            if check:  # the simulated watchdog resets from here
                check()
            await asyncio.sleep_ms(self._period_ms)
