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
loaded; the answers live in fl/diag_ask.py, imported on the first request (the lean board's
heap: docs/memory.md).
"""
import asyncio
import sys

from binascii import crc32

PROTO = 1
LINE_MAX = 160
CHUNK = 192
PREFIX = "#FL1 "
_TAG_OK = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class Console:
    def __init__(self, app, out=None):
        self._app = app
        self._line = bytearray(LINE_MAX)
        self._n = 0
        self._over = False  # the line being read passed LINE_MAX: dropped at its end
        self._one = bytearray(1)
        self._onemv = memoryview(self._one)
        self._ask = None  # fl.diag_ask, once asked something
        self._out = out or _print
        self.progress = 0
        self.requests = 0
        self.ignored = 0  # lines not for the console
        self.refused = 0  # malformed requests

    async def run(self, stream=None):
        """Reads the console for ever, one byte at a time: a board's stdin read blocks until
        it has every byte asked for, so asking for one keeps the wait on the event loop."""
        if stream is None:
            stream = asyncio.StreamReader(getattr(sys.stdin, "buffer", sys.stdin))
        mv = self._onemv
        while True:
            n = await stream.readinto(mv)
            if not n:
                await asyncio.sleep_ms(200)  # stdin closed (a detached unix port): look again later
                continue
            await self.feed_byte(self._one[0])

    async def feed_byte(self, b):
        if b == 10 or b == 13:
            n, over = self._n, self._over
            self._n = 0
            self._over = False
            if over:
                if self._line[0] == 63:  # "?"
                    self.refused += 1
                    self.reply("-", {"ok": False, "error": "line longer than %d bytes: dropped" % LINE_MAX})
                else:
                    self.ignored += 1
            elif n:
                await self.line(memoryview(self._line)[:n])
            return
        if self._n < LINE_MAX:
            self._line[self._n] = b
            self._n += 1
        else:
            self._over = True

    async def line(self, raw):
        """One complete line (bytes-like, without its end)."""
        self.progress += 1
        if raw[0] != 63:  # not "?": a person typing, line noise, a terminal's answerback
            self.ignored += 1
            return
        for c in raw:
            if c < 32 or c > 126:
                self.refused += 1
                self.reply("-", {"ok": False, "error": "request is not printable ASCII"})
                return
        text = bytes(raw[1:]).decode()
        tag, _, rest = text.partition(" ")
        if not 1 <= len(tag) <= 8 or any(ord(c) not in _TAG_OK for c in tag):
            self.refused += 1
            self.reply("-", {"ok": False, "error": "tag must be 1..8 letters or digits"})
            return
        self.requests += 1
        try:
            if self._ask is None:
                from fl import diag_ask
                self._ask = diag_ask
            answer = await self._ask.answer(self._app, self, rest.strip())
        except MemoryError:
            answer = {"ok": False, "error": "out of memory: ask for less (e.g. one part)"}
        except Exception as e:  # noqa: BLE001 - a bad request or a bug in an answer never ends the console
            self.refused += 1
            answer = {"ok": False, "error": ("%s: %s" % (type(e).__name__, e))[:200]}
        await self.send(tag, answer)

    def reply(self, tag, obj):
        """Sends a short answer at once (no wait between frames)."""
        import json
        body = json.dumps(obj)
        self._frames(tag, body, False)

    async def send(self, tag, obj):
        import json
        body = json.dumps(obj)
        obj = None
        n = (len(body) + CHUNK - 1) // CHUNK or 1
        for k in range(n):
            chunk = body[k * CHUNK:(k + 1) * CHUNK]
            self._out("%s%s %d/%d %08x %s" % (PREFIX, tag, k + 1, n, crc32(chunk.encode()) & 0xFFFFFFFF, chunk))
            await asyncio.sleep_ms(0)  # the alarm path runs between frames

    def _frames(self, tag, body, _):
        n = (len(body) + CHUNK - 1) // CHUNK or 1
        for k in range(n):
            chunk = body[k * CHUNK:(k + 1) * CHUNK]
            self._out("%s%s %d/%d %08x %s" % (PREFIX, tag, k + 1, n, crc32(chunk.encode()) & 0xFFFFFFFF, chunk))


def _print(line):
    print(line)
