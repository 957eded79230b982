# fl.at against a scripted modem on an in-memory stream: echo, replies split at every byte,
# unsolicited codes inside replies, error codes, dial results, deadlines, and thousands of
# random scripts (garbage included) that must never hang the engine or grow its memory.
import asyncio
import gc
import os

from fwtest import eq, ok

from fl import ticks
from fl.at import AT, ATError, ATTimeout, LINE_MAX, LINES_MAX
from uart_pipe import UartPipe

TIMEOUT_S = 120


class Pipe(UartPipe):
    """The modem's side of a UART: `reply(command) -> [chunks]` answers each command line the
    engine writes; `push()` sends at any time. Chunks are delivered one per read."""

    def __init__(self, reply=None):
        super().__init__()
        self.reply = reply
        self.written = []

    def write(self, data):
        if self.written is not None:
            self.written.append(bytes(data))
        if self.reply is not None:
            for c in self.reply(bytes(data).rstrip(b"\r").decode()):
                self.rx.append(c)
            self._ev.set()

    async def drain(self):
        pass


def split_every(data, k):
    return [data[i:i + k] for i in range(0, len(data), k)]


async def start(pipe, urcs=None):
    at = AT(pipe, (lambda line: urcs.append(line)) if urcs is not None else None)
    task = asyncio.create_task(at.run())
    await asyncio.sleep_ms(0)
    return at, task


async def test_echo_split_and_urc_inside_reply():
    urcs = []

    def reply(cmd):
        if cmd == "AT+CSQ":
            # echo, the answer split byte by byte, two unsolicited codes in the middle
            return split_every(b"AT+CSQ\r\r\n+CSQ: 2", 1) + [b"1,99\r\n\r\n+CGEV: ME PDN ACT 1\r\nPB DO",
                                                            b"NE\r\n\r\nOK\r\n"]
        return [b"\r\nOK\r\n"]

    at, task = await start(Pipe(reply), urcs)
    eq(await at.cmd("AT+CSQ", 1000, "+CSQ:"), ["+CSQ: 21,99"], "reply lines")
    eq(urcs, ["+CGEV: ME PDN ACT 1", "PB DONE"], "unsolicited codes")
    eq(await at.query("AT+CSQ", "+CSQ:"), "21,99", "query")
    task.cancel()


async def test_bare_reply_lines_and_errors():
    def reply(cmd):
        return {"AT+CGSN": [b"\r\n861234567890123\r\n\r\nOK\r\n"],
                "AT+CPIN?": [b"\r\n+CME ERROR: 10\r\n"],
                "AT+CPIN=1234": [b"\r\n+CME ERROR: incorrect password\r\n"],
                "AT+X": [b"\r\nERROR\r\n"]}.get(cmd, [b"\r\nOK\r\n"])

    at, task = await start(Pipe(reply))
    eq(await at.cmd("AT+CGSN"), ["861234567890123"], "IMEI line")
    try:
        await at.cmd("AT+CPIN?", 1000, "+CPIN:")
        ok(False, "CME error not raised")
    except ATError as e:
        eq((e.code, e.cme, e.text), ("CME", 10, "SIM not inserted"), "+CME ERROR decoded")
    try:
        await at.cmd("AT+CPIN=1234")
        ok(False, "CME error not raised")
    except ATError as e:
        eq((e.code, e.cme), ("CME", 16), "verbose +CME ERROR decoded")
    try:
        await at.cmd("AT+X")
        ok(False, "ERROR not raised")
    except ATError as e:
        eq(e.code, "ERROR", "plain ERROR")
    task.cancel()


async def test_dial_connect_and_no_carrier():
    urcs = []
    answers = [[b"\r\nNO CARRIER\r\n"], [b"ATD*99#\r\r\nCONNECT 150000000\r\n"]]
    at, task = await start(Pipe(lambda cmd: answers.pop(0)), urcs)
    try:
        await at.cmd("ATD*99#", 1000)
        ok(False, "NO CARRIER not raised")
    except ATError as e:
        eq(e.code, "NO CARRIER", "dial failure")
    await at.cmd("ATD*99#", 1000)
    eq(at.final, "CONNECT 150000000", "connect")
    at._s.push(b"\r\nNO CARRIER\r\n")  # the operator ends the session later
    await asyncio.sleep_ms(10)
    eq(urcs, ["NO CARRIER"], "NO CARRIER outside a dial is unsolicited")
    task.cancel()


async def test_deadline_on_a_silent_modem():
    at, task = await start(Pipe(lambda cmd: []))
    t0 = ticks.ms()
    try:
        await at.cmd("AT", 200)
        ok(False, "no timeout")
    except ATTimeout:
        pass
    took = ticks.diff(ticks.ms(), t0)
    ok(150 <= took < 1500, "deadline kept (%d ms)" % took)
    # The channel still works after a timeout: a late reply to the old command is not taken
    # as the next command's answer beyond its final code.
    at._s.reply = lambda cmd: [b"\r\nOK\r\n"]
    eq(await at.cmd("AT", 500), [], "works after a timeout")
    task.cancel()


async def test_long_lines_and_garbage_are_dropped():
    def reply(cmd):
        return [b"\x00\xff\xfe" * 100 + b"\r\n", b"x" * (LINE_MAX * 3) + b"\r\n", b"\r\n" + b"l\r\n" * 20 + b"OK\r\n"]

    at, task = await start(Pipe(reply))
    lines = await at.cmd("AT+LONG", 1000)
    eq(len(lines), LINES_MAX, "reply lines bounded")
    ok(at.garbage >= 2, "garbage counted (%d)" % at.garbage)
    task.cancel()


def _random_script(rnd):
    """A random answer: pieces of real replies, unsolicited codes, echo and noise, split at
    random points; maybe no final code at all."""
    pieces = [b"OK\r\n", b"ERROR\r\n", b"+CME ERROR: 13\r\n", b"+CSQ: 20,99\r\n", b"RDY\r\n", b"+CPIN: READY\r\n",
              b"\r\n", b"\r", b"\n", b"AT+T\r", b"CONNECT\r\n", b"NO CARRIER\r\n", b"+CGEV: NW DETACH\r\n",
              b"x" * 200, b"\xff\x00\x80", b"+CME ERROR:\r\n", b"+CME ERROR: 99999999999999999999\r\n"]
    data = b"".join(pieces[rnd() % len(pieces)] for _ in range(rnd() % 6))
    chunks = []
    while data:
        k = 1 + rnd() % 40
        chunks.append(data[:k])
        data = data[k:]
    return chunks


async def test_random_scripts_never_hang_or_grow():
    seed = [int.from_bytes(os.urandom(4), "little") | 1]

    def rnd():
        # xorshift32: reproducible from the printed seed
        x = seed[0]
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        seed[0] = x
        return x

    print("seed", seed[0])
    scripts = [0]

    def reply(cmd):
        scripts[0] += 1
        return _random_script(rnd)

    pipe = Pipe(reply)
    pipe.written = None  # thousands of commands: the test keeps none of them
    at, task = await start(pipe, [])
    at._on_urc = lambda line: None
    gc.collect()
    free0 = gc.mem_free()
    worst = 0
    outcomes = {}
    for i in range(3000):
        t0 = ticks.ms()
        try:
            await at.cmd("AT+T", 8)
            k = "ok"
        except ATTimeout:
            k = "timeout"
        except ATError:
            k = "error"
        outcomes[k] = outcomes.get(k, 0) + 1
        worst = max(worst, ticks.diff(ticks.ms(), t0))
        ok(len(at._lines) <= LINES_MAX, "reply bounded")
        ok(len(pipe.rx) < 50, "input consumed")
        if i % 500 == 499:
            gc.collect()
            ok(gc.mem_free() > free0 - 4096, "memory bounded (%d -> %d)" % (free0, gc.mem_free()))
    print("outcomes", outcomes, "worst ms", worst)
    eq(scripts[0], 3000, "every command written")
    ok(worst < 1000, "every command ended within its deadline (worst %d ms)" % worst)
    ok(len(outcomes) == 3, "all outcomes seen: %r" % outcomes)
    task.cancel()
