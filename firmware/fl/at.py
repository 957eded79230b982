"""AT command channel to a cellular modem, over any asyncio stream (UART, pty, test pipe).

One reader task turns the byte stream into lines; a command waits (always with a deadline)
for its final result code while everything else that arrives goes to the unsolicited-code
handler. What a modem really sends and this must survive (../shared/reference/cellular.md):
the echo of the command (on after boot), a reply split across any number of writes,
unsolicited codes (`+CGEV: ...`, `PB DONE`, `+CPIN: READY`) in the middle of another
command's answer, `+CME ERROR: 13` for a while after boot, garbage while the module powers
up. Buffers are fixed: a line longer than LINE_MAX is dropped whole (counted as garbage),
a reply keeps at most LINES_MAX lines. Nothing in the input can raise out of the reader.

The stream needs `async readinto(buf) -> n`, `write(bytes)` and `async drain()` (asyncio's
Stream has all three). While another owner has the stream (PPP on the ESP32 after CONNECT)
the reader task is cancelled and started again afterwards (fl/modem.py).
"""
import asyncio

from fl import ticks

LINE_MAX = 160
LINES_MAX = 8
RX_CHUNK = 64
DEFAULT_TIMEOUT_MS = 9000

# Final result codes of a dial that did not connect (and, outside a dial, the end of data mode).
_DIAL_FAIL = ("NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE")
# Unsolicited codes this module knows as such. A line with one of these prefixes is never
# taken as part of a reply unless the command asked for that prefix.
URC_PREFIXES = ("+CGEV:", "+CPIN:", "RDY", "*ATREADY", "PB DONE", "SMS DONE", "RING", "+CMTI:", "+CTZV:",
                "UNDER-VOLTAGE", "OVER-VOLTAGE", "+CMTE:", "+CEREG:", "+CREG:", "+CGREG:", "*PSUTTZ", "DST:",
                "+PSUTTZ", "+CLIP:", "NO CARRIER", "+CFUN:", "+CPSI:", "+CNMP:", "+CSQ:")

# +CME ERROR numbers worth a name (3GPP TS 27.007 §9.2) for the log and the decisions above.
CME = {3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted", 11: "SIM PIN required",
       12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy", 15: "SIM wrong", 16: "incorrect password",
       30: "no network service", 100: "unknown"}


class ATError(Exception):
    """A command ended with an error code. `code`: "ERROR", "CME", "CMS" or a dial failure
    ("NO CARRIER", ...); `cme`: the +CME/+CMS number (or None when the modem gave text)."""

    def __init__(self, command, code, cme=None, text=""):
        super().__init__("%s: %s%s" % (command, code, (" " + text) if text else ""))
        self.command = command
        self.code = code
        self.cme = cme
        self.text = text


class ATTimeout(ATError):
    def __init__(self, command, timeout_ms):
        super().__init__(command, "TIMEOUT", None, "no final result within %d ms" % timeout_ms)


def _cme(line):
    """(number or None, text) from '+CME ERROR: 10' or '+CME ERROR: SIM not inserted'."""
    rest = line[line.find(":") + 1:].strip()
    if rest.isdigit():
        n = int(rest)
        return n, CME.get(n, "")
    low = rest.lower()
    for n, text in CME.items():
        if text == low:
            return n, rest
    return None, rest


class AT:
    def __init__(self, stream, on_urc=None):
        self._s = stream
        self._on_urc = on_urc
        self._line = bytearray(LINE_MAX)
        self._n = 0
        self._too_long = False
        self._rx = bytearray(RX_CHUNK)
        self._cmd = None
        self._prefix = None
        self._lines = []
        self._final = None
        self._fail = None
        self._done = asyncio.Event()
        self._lock = asyncio.Lock()
        self.garbage = 0  # lines dropped: too long, not text, surplus reply lines
        self.urcs = 0
        self.final = None  # the last command's final result line
        self.progress = 0

    # --- the reader ---
    async def run(self):
        """The reader: runs until cancelled. Never raises for anything received."""
        self._n = 0  # a line cut by data mode is not continued after it
        s = self._s
        while True:
            self.progress += 1
            n = await s.readinto(self._rx)
            if not n:
                # A pty at VMIN 0 can report readable and give nothing: not an end.
                await asyncio.sleep_ms(20)
                continue
            self.feed(self._rx, n)

    def feed(self, data, n=None):
        """Takes n bytes of data (a reader's chunk, or a test's)."""
        line = self._line
        for i in range(len(data) if n is None else n):
            b = data[i]
            if b == 13 or b == 10:
                if self._too_long:
                    self.garbage += 1
                    self._too_long = False
                elif self._n:
                    self._take(self._n)
                self._n = 0
            elif self._n < LINE_MAX:
                line[self._n] = b
                self._n += 1
            else:
                self._too_long = True
                self._n = 0

    def _take(self, n):
        try:
            text = bytes(memoryview(self._line)[:n]).decode().strip()
        except (UnicodeError, ValueError):
            self.garbage += 1
            return
        if not text:
            return
        try:
            self._classify(text)
        except Exception:  # noqa: BLE001 - a handler's bug must not end the reader
            self.garbage += 1

    def _classify(self, text):
        cmd = self._cmd
        if cmd is not None and self._final is None:
            if text == cmd:
                return  # echo
            if text == "OK":
                return self._end(text, None)
            if text == "ERROR":
                return self._end(text, ATError(cmd, "ERROR"))
            if text.startswith("+CME ERROR:") or text.startswith("+CMS ERROR:"):
                n, why = _cme(text)
                return self._end(text, ATError(cmd, text[1:4], n, why))
            if cmd.startswith("ATD"):
                if text.startswith("CONNECT"):
                    return self._end(text, None)
                if text in _DIAL_FAIL:
                    return self._end(text, ATError(cmd, text))
            prefix = self._prefix
            if prefix is not None and text.startswith(prefix):
                return self._keep(text)
            if not _is_urc(text) and prefix is None:
                return self._keep(text)
        self.urcs += 1
        if self._on_urc is not None:
            self._on_urc(text)

    def _keep(self, text):
        if len(self._lines) < LINES_MAX:
            self._lines.append(text)
        else:
            self.garbage += 1

    def _end(self, text, fail):
        self._final = text
        self._fail = fail
        self._done.set()

    # --- commands ---
    async def cmd(self, command, timeout_ms=DEFAULT_TIMEOUT_MS, prefix=None):
        """Sends command; returns its reply lines (echo and unsolicited codes removed; only
        lines starting with prefix if given) once it ends in OK or CONNECT. Raises ATError for
        an error result, ATTimeout when nothing final came within timeout_ms."""
        deadline = ticks.after(timeout_ms)
        async with self._lock:
            self._cmd = command
            self._prefix = prefix
            self._lines = []
            self._final = None
            self._fail = None
            self._done.clear()
            try:
                self._s.write(command.encode() + b"\r")
                await asyncio.wait_for_ms(self._s.drain(), max(1, ticks.left(deadline)))
                await asyncio.wait_for_ms(self._done.wait(), max(1, ticks.left(deadline)))
            except asyncio.TimeoutError:
                raise ATTimeout(command, timeout_ms)
            finally:
                self._cmd = None
            self.final = self._final
            if self._fail is not None:
                raise self._fail
            return self._lines

    async def query(self, command, prefix, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The value after `prefix` in the reply's first such line, e.g. query("AT+CSQ", "+CSQ:")
        → "21,99"; None if the modem answered OK without one."""
        lines = await self.cmd(command, timeout_ms, prefix)
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    async def escape(self, guard_ms=1100, timeout_ms=2000):
        """Leaves data mode: `+++` with a second of silence either side, then expects OK."""
        async with self._lock:
            await asyncio.sleep_ms(guard_ms)
            self._s.write(b"+++")
            await asyncio.wait_for_ms(self._s.drain(), timeout_ms)
            await asyncio.sleep_ms(guard_ms)
        await self.cmd("AT", timeout_ms)


def _is_urc(text):
    for p in URC_PREFIXES:
        if text.startswith(p):
            return True
    return False
