# The modem's side of an in-memory UART for fl.at and fl.modem tests: chunks queued in `rx` are
# delivered one per read (a longer chunk is split across reads, as a UART's bytes are).
import asyncio


class UartPipe:
    def __init__(self):
        self.rx = []
        self._ev = asyncio.Event()

    def push(self, *chunks):
        for c in chunks:
            self.rx.append(c)
        self._ev.set()

    async def readinto(self, buf):
        while not self.rx:
            self._ev.clear()
            await self._ev.wait()
        c = self.rx.pop(0)
        n = min(len(c), len(buf))
        buf[:n] = c[:n]
        if n < len(c):
            self.rx.insert(0, c[n:])
        return n
