"""Local indications: status LED, fault LED and the fault buzzer.

Status LED: steady when the broker is connected, slow blink while it is not. Fault LED:
steady while any fault is active. Buzzer: a short chirp every `chirp_every_ms` while any
fault is active (like a smoke alarm's low-battery chirp), until silenced; a new fault
re-arms it. Standards ask for a common fault indication and a buzzer that can be silenced.
"""
import asyncio

TICK_MS = 500


class Indicators:
    def __init__(self, board, health, mqtt, chirp_every_ms=30000, chirp_ms=100, console=None):
        self._console = console  # fl/diag.py: read every tick (the local user interface's other half)
        self._board = board
        self._health = health
        self._mqtt = mqtt
        self._chirp_every_ms = chirp_every_ms
        self._chirp_ms = chirp_ms
        self.silenced = False
        self.progress = 0
        health.listen(self._on_fault)

    def _on_fault(self, name, active, detail):
        if active:
            self.silenced = False

    def silence(self):
        self.silenced = True

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
            await asyncio.sleep_ms(TICK_MS)
            if self._console is not None:
                await self._console.poll()
