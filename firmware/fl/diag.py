"""The diagnostics console: a line protocol on the serial console, served beside the app.

The technician's tool (`firelink diag`) writes request lines and reads framed replies among
the log lines; inputs keep being watched and events keep flowing meanwhile (issue 12). The
protocol (docs/diag.md):

  request   ?<tag> <verb> [args]\\n       tag: 1..8 of [A-Za-z0-9], echoed in the reply
  reply     #FL1 <tag> <k>/<n> <crc32> <chunk>\\n   k = 1..n; the chunks joined are one JSON
                                          object; crc32 (8 hex digits) is the chunk's;
                                          n is `+` while more follow (a streamed answer)

A reply is cut into chunks of CHUNK characters, one printed line each, so that no print holds
the loop long (a UART writes ≈11 characters a millisecond) and a log line printed by another
task falls between two frames, never inside one. Lines that do not start with `?` are not for
the console: ignored (counted). The serial line is untrusted: a line longer than LINE_MAX is
dropped whole, non-ASCII bytes refuse the line, and nothing answered carries a secret (config
values from secrets.json are never read here; see fl/diag_ask.py).

The REPL stays where it was: Ctrl-C (0x03) never reaches this reader (the UART driver, or the
virtual device's line discipline, turns it into KeyboardInterrupt), and from then on the line is
the REPL's: fl/app.py calls release() before the clean stop, whose loop still runs this reader
for up to 2 s, so the Ctrl-A that mpremote sends after its Ctrl-C waits for the REPL instead of
being taken here (docs/diag.md, "Breaking in"). This module stays small because it is always
loaded; the answers live in fl/diag_ask.py and the actions in fl/service.py, imported on the
first request, and fl/diag_ask.py is forgotten IDLE_DROP_S after the last (the lean board's
heap: docs/memory.md). What must exist before anyone asks lives here: the last log lines, this
boot's number, the walk test's end.

The log ring keeps the last LOG_LINES lines fl.log printed, each cut at LOG_WIDTH bytes, in one
buffer made at boot. Everything here is counted in the lean board's heap (tests/hil/
test_heap_fit.py): the rest of the console is in fl/diag_ask.py and fl/service.py.
"""
import sys

from fl import log, store
from fl.indicators import readable

LINE_MAX = 160
LOG_LINES = 6
LOG_WIDTH = 100
IDLE_DROP_S = 3
POLL_BYTES = 2048
# The answer when even fl/diag_ask.py cannot load: made here, with its crc, so it costs no heap then.
NOMEM = '#FL1 - 1/1 a764097f {"ok": false, "error": "out of memory: try again"}'


class Console:
    def __init__(self, app):
        self._app = app
        self.ring = bytearray(LOG_LINES * LOG_WIDTH)
        self.lens = bytearray(LOG_LINES)
        self.next = 0
        log.tap = self._keep
        self.boot = _count_boot()
        if store.exists("crash.json"):  # the last crash learns the reset that followed it
            from fl import crash
            from fl.boot import release
            crash.note_boot(app.reset_cause, self.boot)
            crash = None
            release(("fl.crash",))  # boot-only (its names stay interned: only when a crash is kept)
        self.walk = None  # ticks.Countdown while walk test mode is on (fl/service.py)
        # A config change awaits proof that the broker is still reached: seconds counted so far,
        # -1 when none does (fl/service.py keeps the old config in config.rollback).
        self.rollback_s = 0 if store.exists("config.rollback") else -1
        self.idle_s = -1  # seconds since the last request while fl.diag_ask is loaded
        self.line = bytearray(LINE_MAX)
        self.n = 0  # bytes of the line so far; LINE_MAX + 1: too long, dropped at its end
        self.out = print
        self._poller = None
        self.reading = True  # False once Ctrl-C stopped the app: the line is the REPL's
        self._one = bytearray(1)
        self.requests = self.ignored = self.refused = 0

    def _keep(self, line):
        i = self.next
        b = line.encode()[:LOG_WIDTH]  # one copy, freed at once: the ring holds no object
        self.ring[i * LOG_WIDTH:i * LOG_WIDTH + len(b)] = b
        self.lens[i] = len(b)
        self.next = (i + 1) % LOG_LINES

    def test_flag(self):
        """The JSON an input event carries in walk test (fl/app.py): `"test": true`."""
        return ',"test":true' if self.walk is not None else None

    def tick(self):
        """Housekeeping's, every second: the walk test's end, a config rollback's watch, and
        forgetting the answers once nobody asks (fl/service.py)."""
        if self.idle_s >= 0:
            self.idle_s += 1
            if self.idle_s > IDLE_DROP_S:  # nobody asks any more: the answers' code goes
                self.idle_s = -1
                import fl
                busy = self.walk is not None or self.rollback_s >= 0  # fl.service ticks them
                for name in ("diag_ask", "crash") if busy else ("diag_ask", "crash", "service"):
                    sys.modules.pop("fl." + name, None)
                    if name in fl.__dict__:
                        delattr(fl, name)
        if self.walk is not None or self.rollback_s >= 0:
            from fl.service import on_tick
            on_tick(self._app)

    def release(self):
        """Reads the serial line no more: the app stops on Ctrl-C and what follows it on the
        line (mpremote's Ctrl-A) is the REPL's."""
        self.reading = False

    async def poll(self):
        """Takes what the serial line holds now, without waiting: fl/indicators.py calls it every
        tick (the console's local user interface rides on the indicators' task: a task of its
        own would cost the lean board ≈1 KB). One byte per read: a board's stdin read blocks
        until it has every byte asked for. At most POLL_BYTES per call."""
        if not self.reading:
            return
        if self._poller is None:
            import select
            self._stdin = getattr(sys.stdin, "buffer", sys.stdin)
            self._poller = select.poll()
            self._poller.register(self._stdin, select.POLLIN)
        k = 0
        while k < POLL_BYTES and readable(self._poller):
            if not self._stdin.readinto(self._one):
                return  # closed (a detached unix port)
            await self.feed_byte(self._one[0])
            k += 1

    async def feed_byte(self, b):
        n = self.n
        if b != 10 and b != 13:
            if n < LINE_MAX:
                self.line[n] = b
                self.n = n + 1
            else:
                self.n = LINE_MAX + 1
            return
        self.n = 0
        if not n:
            return
        if self.line[0] != 63:  # not "?": a person typing, line noise, a terminal's answerback
            self.ignored += 1
            return
        self.idle_s = 0
        try:
            from fl import diag_ask
            await diag_ask.line(self._app, self, memoryview(self.line)[:min(n, LINE_MAX)], n > LINE_MAX)
        except MemoryError:
            self.refused += 1
            self.out(NOMEM)


def _count_boot():
    """This boot's number, counted on flash (here, not in fl/crash.py: a module loaded at every
    boot leaves its names in RAM for good)."""
    try:
        n = int(store.read_bytes("boots.dat") or 0) + 1
    except ValueError:
        n = 1
    try:
        store.write_atomic("boots.dat", str(n).encode())
    except OSError:
        pass  # a full flash: the count is this boot's only
    return n
