"""The diagnostics console: a line protocol on the serial console, served beside the app.

The technician's tool (`firelink diag`) writes request lines and reads framed replies among
the log lines; inputs keep being watched and events keep flowing meanwhile (issue 12). The
protocol (docs/diag.md):

  request   ?<tag> <verb> [args]\\n       tag: 1..8 of [A-Za-z0-9], echoed in the reply
  reply     #FL1 <tag> <k>/<n> <crc32> <chunk>\\n   k = 1..n; the chunks joined are one JSON
                                          object; crc32 (8 hex digits) is the chunk's

A reply is cut into chunks of CHUNK characters, one printed line each, so that no print holds
the loop long (a UART writes ≈11 characters a millisecond) and a log line printed by another
task falls between two frames, never inside one. Lines that do not start with `?` are not for
the console: ignored (counted). The serial line is untrusted: a line longer than LINE_MAX is
dropped whole, non-ASCII bytes refuse the line, and nothing answered carries a secret (config
values from secrets.json are never read here; see fl/diag_ask.py).

The REPL stays where it was: Ctrl-C (0x03) never reaches this reader (the UART driver, or the
virtual device's line discipline, turns it into KeyboardInterrupt), so `firelink flash`,
provisioning and mpremote break in as before. This module stays small because it is always
loaded; the answers live in fl/diag_ask.py and the actions in fl/service.py, imported on the
first request (the lean board's heap: docs/memory.md). What must exist before anyone asks lives
here: the last log lines, this boot's number, the walk test's end.

The log ring keeps references to the last LOG_LINES lines fl.log printed (a preallocated list of
slots): the strings are the logger's own, so keeping them allocates nothing, and what it holds
is bounded by LOG_LINES lines.
"""
import asyncio
import sys

from fl import log, store

LINE_MAX = 160
LOG_LINES = 8


class Console:
    def __init__(self, app, out=None):
        self._app = app
        self._ring = [None] * LOG_LINES
        self._ring_next = 0
        log.tap = self._keep
        self.boot = _note_boot(app.reset_cause)
        self.walk = None  # ticks.Countdown while walk test mode is on (fl/service.py)
        # A config change from the centre awaits proof that the broker is still reached: the
        # seconds counted so far, -1 when none does (fl/service.py keeps ROLLBACK_FILE).
        self.rollback_s = 0 if store.exists("config.rollback") else -1
        self._line = bytearray(LINE_MAX)
        self._n = 0
        self._over = False  # the line being read passed LINE_MAX: dropped at its end
        self._one = bytearray(1)
        self._ask = None  # fl.diag_ask, once asked something
        self.out = out or _print
        self.progress = 0
        self.requests = 0
        self.ignored = 0  # lines not for the console
        self.refused = 0  # malformed requests

    # --- what exists before anyone asks ---
    def _keep(self, line):
        self._ring[self._ring_next] = line
        self._ring_next = (self._ring_next + 1) % LOG_LINES

    def log_lines(self, n):
        """The last n log lines, oldest first."""
        n = max(0, min(n, LOG_LINES))
        out = []
        for k in range(n):
            line = self._ring[(self._ring_next - n + k) % LOG_LINES]
            if line is not None:
                out.append(line)
        return out

    def test_flag(self):
        """The JSON an input event carries in walk test (fl/app.py): `"test": true`."""
        return ',"test":true' if self.walk is not None else None

    def tick(self):
        """Housekeeping's, every second: the walk test's own end, a config rollback's watch."""
        if (self.walk is not None and self.walk.due()) or self.rollback_s >= 0:
            from fl.service import on_tick
            on_tick(self._app)

    # --- the serial line ---
    async def run(self, stream=None):
        """Reads the console for ever, one byte at a time: a board's stdin read blocks until
        it has every byte asked for, so asking for one keeps the wait on the event loop."""
        if stream is None:
            stream = asyncio.StreamReader(getattr(sys.stdin, "buffer", sys.stdin))
        mv = memoryview(self._one)
        while True:
            n = await stream.readinto(mv)
            if not n:
                await asyncio.sleep_ms(200)  # stdin closed (a detached unix port): look again later
                continue
            await self.feed_byte(self._one[0])

    def _asker(self):
        if self._ask is None:
            from fl import diag_ask
            self._ask = diag_ask
        return self._ask

    async def feed_byte(self, b):
        if b == 10 or b == 13:
            n, over = self._n, self._over
            self._n = 0
            self._over = False
            if over:
                if self._line[0] == 63:  # "?"
                    await self._asker().overlong(self)
                else:
                    self.ignored += 1
            elif n:
                if self._line[0] == 63:
                    await self._asker().line(self._app, self, memoryview(self._line)[:n])
                else:  # a person typing, line noise, a terminal's answerback
                    self.ignored += 1
            return
        if self._n < LINE_MAX:
            self._line[self._n] = b
            self._n += 1
        else:
            self._over = True

def _print(line):
    print(line)


def _note_boot(reset_cause):
    """This boot's number; fl.crash (boot counter, last crash) is released after."""
    from fl import crash
    from fl.boot import release
    try:
        crash.note_boot(reset_cause)
        return crash.boots()
    except Exception:  # noqa: BLE001 - a failing flash must not stop the boot
        return 0
    finally:
        release(("fl.crash",))
