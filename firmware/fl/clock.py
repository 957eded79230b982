"""UTC time for events: the one place that knows the board's epoch."""
import time

# time.time() counts from 2000-01-01 on the ESP32 and from 1970-01-01 on the unix port.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
# Anything before this instant means the RTC was never set (2024-01-01 UTC).
PLAUSIBLE_AFTER = 1704067200


def utc_now():
    """Seconds since 1970-01-01 UTC, as an int."""
    return int(time.time()) + EPOCH_OFFSET


class Clock:
    """Event timestamps with a flag while the clock is not known to be right."""

    def __init__(self, board):
        self._board = board

    def now(self):
        """(utc_seconds, synced)."""
        t = utc_now()
        return t, self._board.clock_synced() and t >= PLAUSIBLE_AFTER
