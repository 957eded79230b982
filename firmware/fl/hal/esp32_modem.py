"""The modem on the ESP32: its UART, PWRKEY and RESET lines (board.json), and PPP after dialling.

Loaded only when 4G is configured. Needs MicroPython ≥ 1.27 (network.PPP's current API; earlier
disconnects could crash). PPP sends no AT commands: fl.modem dials (`ATD*99#` → CONNECT), then
PPP takes the UART until data_stop(). Connecting PPP makes it the default route and replaces the
global DNS, so every socket of either path is bound to its interface (`ifname`, SO_BINDTODEVICE
in fl.netio) and each path resolves with its own servers. The esp32 build has no LCP echo: a
dead radio leaves isconnected() True; the MQTT session's own liveness finds it (fl.pathmgr).
"""
import asyncio

import machine
import network

from fl import ticks


class ModemHw:
    ppp_owns_uart = True

    def __init__(self, info):
        m = info["modem"]
        self._uart_id, self._baud, self._tx, self._rx = m["uart"], m["baud"], m["tx"], m["rx"]
        self.pwrkey_on_ms = m["pwrkey"]["on_ms"]
        self.pwrkey_off_ms = m["pwrkey"]["off_ms"]
        self.reset_ms = m["reset"]["pulse_ms"]
        self._lines = {}
        for name in ("pwrkey", "reset"):
            active = 0 if m[name].get("active_low", True) else 1
            # Released (inactive) from the first instant: a glitch here would power the module off.
            pin = machine.Pin(m[name]["gpio"], machine.Pin.OUT, value=1 - active)
            self._lines[name] = (pin, active)
        self._uart = None
        self._ppp = None
        self.ifname = None

    def open(self):
        if self._uart is None:
            # timeout 0: reads return what is there, as asyncio's stream expects.
            self._uart = machine.UART(self._uart_id, baudrate=self._baud, tx=self._tx, rx=self._rx,
                                      timeout=0, rxbuf=1024)
        return asyncio.StreamReader(self._uart)

    async def pulse(self, line, ms):
        pin, active = self._lines[line]
        pin.value(active)
        try:
            await asyncio.sleep_ms(ms)
        finally:
            pin.value(1 - active)

    def urc(self, line):
        pass

    async def data_start(self, timeout_ms):
        if self._ppp is None:
            self._ppp = network.PPP(self._uart)
        ppp = self._ppp
        ppp.active(True)
        ppp.connect()
        deadline = ticks.after(timeout_ms)
        while not ppp.isconnected():
            if ticks.due(deadline):
                await self.data_stop()
                return False
            await asyncio.sleep_ms(200)
        try:
            self.ifname = ppp.config("ifname")
        except (OSError, ValueError):
            self.ifname = "pp1"
        return True

    def data_up(self):
        return self._ppp is not None and self._ppp.isconnected()

    async def data_stop(self):
        ppp = self._ppp
        if ppp is None:
            return
        try:
            ppp.disconnect()
        except OSError:
            pass
        # The UART is PPP's until it has let go (cellular.md): bounded wait.
        deadline = ticks.after(5000)
        while ppp.isconnected() and not ticks.due(deadline):
            await asyncio.sleep_ms(100)
        try:
            ppp.active(False)
        except OSError:
            pass

    def route(self, addr):
        return addr

    def dns_servers(self):
        try:
            return (self._ppp.ifconfig()[3],)
        except (AttributeError, OSError, IndexError):
            return ()
