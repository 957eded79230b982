"""Millisecond ticks with the ESP32's rules: the one place the firmware takes ticks.

On the ESP32 ticks count modulo 2^30 ms (12.4 days, the small-int range), `time.ticks_add`
raises OverflowError for |d| >= 2^29 ms (6.2 days) and `ticks_diff` is right only for
stamps less than 2^29 ms apart (extmod/modtime.c). The 64-bit unix port counts modulo 2^62
and would hide every wrap bug, so there this module counts like the board: period 2^30,
starting START_MS after boot's first reading (default a few seconds before the wrap, so any
run of more than a few seconds crosses it; $FL_TICKS_START sets the first value, in ms),
and `add` refuses what the board refuses. It is stricter than the board in one way: a
value that is not a tick of this period (e.g. a raw `time.ticks_ms()` from the unix port)
raises ValueError instead of giving a silently wrong answer.
On a 32-bit build of the unix port (the board's own tick rules) tests/firmware/test_ticks.py
checks this emulation against time.ticks_add/ticks_diff value by value.

Rules for callers:
- A deadline is `add(ms(), d)` with d < 2^29 ms; compare with `diff(deadline, ms())`.
- A stamp compared with `diff` must be younger than 2^29 ms. Anything that can wait longer
  (a weekly test) is a Countdown, polled at least once per 2^29 ms.
- `recent(stamp, window)` treats a stamp that appears to lie in the future as old: only a
  wrap (an age of 2^29 ms or more) can make it so.
- The one exception: a time handed to asyncio's scheduler (fl/edgewait.py) is asyncio's own
  `time.ticks_ms`, which is the board's anyway.
"""
import sys
import time

PERIOD = 1 << 30
HALF = 1 << 29
_MASK = PERIOD - 1

if sys.platform == "esp32":
    ms = time.ticks_ms
    add = time.ticks_add
    diff = time.ticks_diff
    START_MS = None
else:
    import os

    START_MS = int(os.getenv("FL_TICKS_START") or (PERIOD - 3000)) & _MASK
    _t0 = time.ticks_ms()

    def ms():
        return (START_MS + time.ticks_diff(time.ticks_ms(), _t0)) & _MASK

    def _check(t):
        if not 0 <= t < PERIOD:
            raise ValueError("not a tick stamp of period 2**30: %r" % (t,))

    def add(t, d):
        _check(t)
        # The board's test, in extmod/modtime.c: -2^29 < d < 2^29.
        if not -HALF < d < HALF:
            raise OverflowError("ticks interval overflow")
        return (t + d) & _MASK

    def diff(a, b):
        _check(a)
        _check(b)
        return ((a - b + HALF) & _MASK) - HALF

    def rebase(t):
        """Tests only (not on the board): ms() reads t from now on. Moving it forward is time
        passing for everything that polls ms(), e.g. days in a test that runs seconds."""
        global START_MS, _t0
        _check(t)
        START_MS, _t0 = t, time.ticks_ms()


def after(d):
    """The deadline d ms from now (d < 2^29)."""
    return add(ms(), d)


def left(deadline):
    """ms until deadline, 0 once it has passed."""
    d = diff(deadline, ms())
    return d if d > 0 else 0


def due(deadline):
    return diff(ms(), deadline) >= 0


def since(stamp):
    """ms since stamp (valid while it is younger than 2^29 ms)."""
    return diff(ms(), stamp)


def recent(stamp, window_ms):
    """True if stamp (None: never) was taken less than window_ms ago. A stamp that appears to
    be in the future has wrapped (2^29 ms or older): not recent."""
    if stamp is None:
        return False
    d = diff(ms(), stamp)
    return 0 <= d < window_ms


class Countdown:
    """A wait of any length, even beyond what add() accepts (a weekly periodic test): it
    subtracts the ticks elapsed since the last poll. Exact as long as it is polled at least
    once per 2^29 ms; the remaining time is a small int on the board up to 2^30 ms."""

    def __init__(self, ms_=0):
        self.start(ms_)

    def start(self, ms_):
        self._left = ms_
        self._at = ms()

    def extend(self, ms_):
        """Adds ms_ to what is left: a periodic job re-armed without drift."""
        self._poll()
        self._left += ms_

    def _poll(self):
        now = ms()
        left = self._left - diff(now, self._at)
        # Overdue for days (a heartbeat while offline): stay a small int on the board.
        self._left = left if left > -HALF else -HALF
        self._at = now

    def left(self):
        """ms left (negative once overdue)."""
        self._poll()
        return self._left

    def due(self):
        return self.left() <= 0
