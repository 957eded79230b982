"""UTC time for events: the one place that knows the board's epoch."""
import time

# time.time() counts from 2000-01-01 on the ESP32 and from 1970-01-01 on the unix port.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
# Anything before this instant means the RTC was never set (2024-01-01 UTC).
PLAUSIBLE_AFTER = 1704067200


def utc_now():
    """Seconds since 1970-01-01 UTC, as an int."""
    return int(time.time()) + EPOCH_OFFSET


def _ns_offset():
    """What to add to time.time_ns() // 10**9 for time.time()'s epoch. Both read the same
    clock (gettimeofday on the ESP32 and the unix port); older ports counted time_ns from
    1970 while time() counted from 2000, so the difference is measured, not assumed."""
    if not hasattr(time, "time_ns"):
        return None
    d = int(time.time()) - time.time_ns() // 1000000000
    return 0 if -2 <= d <= 2 else d


_NS_OFFSET = _ns_offset()


def utc_now_ms():
    """(seconds since 1970-01-01 UTC, milliseconds within that second 0..999), from one
    reading of the clock, so the pair never straddles a second."""
    if _NS_OFFSET is None:
        return utc_now(), 0
    ms = time.time_ns() // 1000000
    return ms // 1000 + _NS_OFFSET + EPOCH_OFFSET, ms % 1000


class Clock:
    """Event timestamps with a flag while the clock is not known to be right."""

    def __init__(self, board):
        self._board = board

    def now(self):
        """(utc_seconds, synced)."""
        t = utc_now()
        return t, self._board.clock_synced() and t >= PLAUSIBLE_AFTER

    def stamp(self):
        """(utc_seconds, ms 0..999, synced): an event's time."""
        t, ms = utc_now_ms()
        return t, ms, self._board.clock_synced() and t >= PLAUSIBLE_AFTER
