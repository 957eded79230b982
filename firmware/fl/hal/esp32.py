"""ESP32 board: the only module that imports machine, network and esp32.

Creates nothing at import time; each hardware object is made when first asked for, from
the pin map in board.json (deployed beside the application by `firelink flash`).
"""
import asyncio
import gc
import json
import os
import socket
import struct
import time

import machine
import network

from fl import clock, link, ticks
from fl.log import Logger

_log = Logger("esp32")

_RESET_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "software",
}
# Not every port exposes BROWNOUT_RESET as a constant; on the esp32 it is 6.
_RESET_CAUSES[getattr(machine, "BROWNOUT_RESET", 6)] = "brownout"
NTP_DELTA = 2208988800  # 1900-01-01 to 1970-01-01
# Long enough for a deploy or a technician's look, short enough that a stray Ctrl-C on the
# console does not leave the transmitter stopped for long.
REPL_WATCHDOG_MS = 10 * 60 * 1000
_RESET_MARKER = "reset.cause"


class Board:
    name = "esp32"

    def __init__(self):
        self._info = None
        self._flag = asyncio.ThreadSafeFlag()
        # Bound once here so the IRQ handler allocates nothing when it runs.
        self._irq_handler = self._on_edge
        self._synced = False
        self._outputs = {}
        self._battery = None

    def _on_edge(self, pin):
        self._flag.set()

    def board_info(self):
        if self._info is None:
            with open("board.json") as f:
                self._info = json.load(f)
        return self._info

    def unique_id(self):
        return network.WLAN(network.STA_IF).config("mac")

    def reset_cause(self):
        # The esp32 port reports machine.reset() and panics as HARD_RESET and a brown-out as
        # PWRON_RESET; our own resets leave a marker so they are told apart. A brown-out still
        # reads as power_on.
        try:
            with open(_RESET_MARKER) as f:
                cause = f.read().strip() or "software"
            os.remove(_RESET_MARKER)
            return cause
        except OSError:
            return _RESET_CAUSES.get(machine.reset_cause(), "unknown")

    def reset(self, cause="software"):
        _log.warn("reset (%s)", cause)
        try:
            with open(_RESET_MARKER, "w") as f:
                f.write(cause)
        except OSError:
            pass
        time.sleep_ms(100)
        machine.reset()

    def _gpio(self, channel):
        return self.board_info()["inputs"][channel]

    def digital_input(self, channel):
        spec = self._gpio(channel)
        pull = machine.Pin.PULL_UP if spec.get("pull") == "internal" else None
        pin = machine.Pin(spec["gpio"], machine.Pin.IN, pull)
        pin.irq(handler=self._irq_handler, trigger=machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)
        return pin

    def analog_input(self, channel):
        return _AnalogIn(self._gpio(channel)["gpio"])

    def battery_mv(self):
        spec = self.board_info()["battery"]
        if self._battery is None:
            self._battery = _AnalogIn(spec["gpio"])
        return int(self._battery.read_mv() * spec["divider"])

    async def wait_inputs(self, timeout_ms):
        try:
            await asyncio.wait_for_ms(self._flag.wait(), timeout_ms)
        except asyncio.TimeoutError:
            pass

    def output(self, name, on):
        pin = self._outputs.get(name)
        spec = self.board_info()["outputs"][name]
        if pin is None:
            pin = self._outputs[name] = machine.Pin(spec["gpio"], machine.Pin.OUT)
        pin.value(1 if bool(on) == spec.get("active_high", True) else 0)

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def relax_watchdog(self, timeout_ms=REPL_WATCHDOG_MS):
        """The app stopped for the REPL (a technician, or `firelink flash --app-only`): nothing
        feeds the watchdog any more, and it cannot be stopped. A second WDT() reconfigures the
        same watchdog on the esp32 port, so the session gets a long timeout instead of a reset
        in the middle of a file write."""
        try:
            machine.WDT(timeout=timeout_ms).feed()
        except (OSError, ValueError) as e:
            _log.warn("could not relax the watchdog: %s", e)

    def clock_synced(self):
        return self._synced

    async def sync_clock(self, timeout_ms):
        """SNTP over UDP with a deadline; sets the RTC (needed before TLS verification)."""
        try:
            addr = socket.getaddrinfo("pool.ntp.org", 123)[0][-1]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setblocking(False)
                query = bytearray(48)
                query[0] = 0x1B
                s.sendto(query, addr)
                deadline = ticks.add(ticks.ms(), timeout_ms)
                while ticks.diff(deadline, ticks.ms()) > 0:
                    try:
                        msg = s.recv(48)
                        break
                    except OSError:
                        await asyncio.sleep_ms(50)
                else:
                    return False
            finally:
                s.close()
            # Mode 4 (server), a real stratum (0 is a kiss-of-death), a synchronised leap
            # indicator and a plausible time; anything else is not a time to set.
            if len(msg) < 48 or msg[0] & 7 != 4 or not 1 <= msg[1] <= 15 or msg[0] >> 6 == 3:
                _log.warn("clock sync: ignoring an unusable NTP reply")
                return False
            unix = struct.unpack("!I", msg[40:44])[0] - NTP_DELTA
            if unix < clock.PLAUSIBLE_AFTER:
                _log.warn("clock sync: NTP time %d is not plausible", unix)
                return False
            tm = time.gmtime(unix - clock.EPOCH_OFFSET)
            machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
            self._synced = True
            return True
        except Exception as e:  # noqa: BLE001 - a bad reply must never stop the app
            _log.warn("clock sync failed: %r", e)
            return False

    def paths(self, config):
        return [_WifiPath(config.get("wifi", {}), config.get("_secrets", {}).get("wifi_password", ""))]

    def storage_free(self):
        st = os.statvfs("/")
        return st[0] * st[3]

    def free_heap(self):
        return gc.mem_free()


class _AnalogIn:
    def __init__(self, gpio):
        self._adc = machine.ADC(machine.Pin(gpio), atten=machine.ADC.ATTN_11DB)

    def read_raw(self):
        return self._adc.read_u16() >> 4  # 0..4095 like the 12-bit reading the thresholds use

    def read_mv(self):
        return self._adc.read_uv() // 1000


class _WifiPath(link.Path):
    name = "wifi"

    def __init__(self, wifi_config, password):
        super().__init__()
        self._ssid = wifi_config.get("ssid", "")
        self._password = password
        self._wlan = None

    def _if(self):
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
            # ifname (for SO_BINDTODEVICE) is set only once a second path exists: with one
            # interface the default route is already right.
        return self._wlan

    def is_up(self):
        return self._if().isconnected()

    async def bring_up(self, timeout_ms):
        if not self._ssid:
            return False
        wlan = self._if()
        try:
            wlan.disconnect()
        except OSError:
            pass
        wlan.connect(self._ssid, self._password)
        deadline = ticks.add(ticks.ms(), timeout_ms)
        while ticks.diff(deadline, ticks.ms()) > 0:
            if wlan.isconnected():
                return True
            await asyncio.sleep_ms(200)
        _log.warn("wifi: no connection to %s within %d ms (status %s)", self._ssid, timeout_ms, wlan.status())
        return False

    def signal_dbm(self):
        try:
            return self._if().status("rssi")
        except OSError:
            return None
