"""Local indications: status LED, fault LED and the fault buzzer.

Status LED: steady when the broker is connected, slow blink while it is not. Fault LED:
steady while any fault is active. Buzzer: a short chirp every `chirp_every_ms` while any
fault is active (like a smoke alarm's low-battery chirp), until silenced; a new fault
re-arms it. Standards ask for a common fault indication and a buzzer that can be silenced.
"""
import asyncio

from fl import ticks

TICK_MS = 500
ASKED_MS = 100  # the console's read while a technician's tool is asking


def readable(poller):
    """True when the one stream registered with `poller` has a byte now. ipoll, not poll: poll()
    builds a list on every call (≈64 B on the unix port), twice a second for ever."""
    for _ in poller.ipoll(0):
        return True
    return False


class Indicators:
    def __init__(self, board, health, mqtt, chirp_every_ms=30000, chirp_ms=100, console=None):
        # fl/diag.py: read every tick (the local user interface's other half). False: a board
        # built without it (the lean board), where what arrives is dropped and one log line says
        # why nothing answers (_no_console).
        self._console = console
        self._quiet = 0  # ticks before _no_console may log again
        self._poll = None
        self._owed = False
        self._board = board
        self._health = health
        self._mqtt = mqtt
        self._chirp_every_ms = chirp_every_ms
        self._chirp_ms = chirp_ms
        self.silenced = False
        self._hushed = None  # while silenced: the faults that were active then
        self.progress = 0
        health.listen(self._on_fault)

    def _on_fault(self, name, active, detail):
        hushed = self._hushed
        if hushed is None:
            return
        if not active:
            hushed.discard(name)  # should it come back, that is a new fault
        elif name not in hushed:  # a new fault sounds again; a new detail of a known one does not
            self.silenced, self._hushed = False, None

    def silence(self):
        """Until the next new fault, as panels do: the faults active now (whose details may
        change, e.g. the broker's last error) stay quiet while they last."""
        self.silenced = True
        self._hushed = set(self._health.faults)

    async def run(self):
        since_chirp = self._chirp_every_ms  # chirp at once when a fault is already active
        blink = False
        while True:
            self.progress += 1
            blink = not blink
            faulty = self._health.any_fault()
            self._board.output("led_status", self._mqtt.connected or blink)
            self._board.output("led_fault", faulty)
            since_chirp += TICK_MS
            if faulty and not self.silenced and since_chirp >= self._chirp_every_ms:
                since_chirp = 0
                self._board.output("buzzer", True)
                await asyncio.sleep_ms(self._chirp_ms)
                self._board.output("buzzer", False)
            con = self._console
            if con and con.idle_s >= 0:
                # Someone is asking (a live view): the line is read every ASKED_MS, so an answer
                # starts within that, not within a tick (the view shows a change within 1 s).
                for _ in range(TICK_MS // ASKED_MS):
                    await asyncio.sleep_ms(ASKED_MS)
                    await con.poll()
            else:
                await asyncio.sleep_ms(TICK_MS)
                if con:
                    await con.poll()
                elif con is False:
                    self._no_console()

    def _no_console(self):
        """The lean board runs without the diagnostics console (hardware/boards/lean.json: its heap,
        docs/diag.md). Whatever arrives on the serial line is read and dropped, and at most one log
        line every 2 s says so: `firelink diag` shows it as its error instead of guessing at an
        old firmware. Ctrl-C never gets here (the UART driver takes it): the REPL stays reachable."""
        if self._quiet:
            self._quiet -= 1
        p = self._poll
        if p is None:  # once: nothing is allocated per tick after this
            import select
            import sys
            self._stdin = getattr(sys.stdin, "buffer", sys.stdin)
            p = self._poll = select.poll()
            p.register(self._stdin, select.POLLIN)
        n = 0
        while n < 2048 and readable(p):
            if not self._stdin.read(1):
                break  # closed (a detached unix port)
            n += 1
        if n:
            self._owed = True  # said after the quiet time if not now: each asker is told
        if self._owed and not self._quiet:
            self._quiet, self._owed = 4, False
            print("%d WARN diag: no diagnostics console on this board (built without it: diag_console false); "
                  "ask the centre (firelink cmd) or use the REPL" % ticks.ms())
