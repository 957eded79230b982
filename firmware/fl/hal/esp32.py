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
from fl.edgewait import EdgeWait
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
# ESP32 errata 3.11: GPIO 36 and 39 are pulled low for ~80 ns whenever an RTC peripheral (Wi-Fi,
# the ADC) powers up, so an interrupt there fires on edges that never happened. A digital input
# on them is read by the scan (every IDLE_MS at worst) without an interrupt; boardcheck refuses
# boards that put one there.
_NO_IRQ = (36, 39)


class Board:
    name = "esp32"

    def __init__(self):
        self._info = None
        self._edges = EdgeWait()
        # Bound once here so the IRQ handler allocates nothing when it runs.
        self._irq_handler = self._on_edge
        self._synced = False
        self._outputs = {}  # name -> (Pin, active_high)
        self._battery = None  # (ADC, divider)
        self._wifi = None
        self._mains = True

    def _on_edge(self, pin):
        self._edges.flag.set()

    def board_info(self):
        if self._info is None:
            with open("board.json") as f:
                self._info = json.load(f)
        return self._info

    def release_info(self):
        """Boot is over: make what the rest of the run needs from board.json (output pins, the
        battery ADC), then drop the parsed file (≈6 KB of heap on the ESP32). board_info()
        reads it again if anything asks later."""
        info = self.board_info()
        for name in info["outputs"]:
            self._output(name)
        self._battery_adc()
        self._info = None

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
        if spec["gpio"] not in _NO_IRQ:
            pin.irq(handler=self._irq_handler, trigger=machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)
        return pin

    def analog_input(self, channel):
        return _AnalogIn(self._gpio(channel)["gpio"])

    def _battery_adc(self):
        if self._battery is None:
            spec = self.board_info()["battery"]
            self._battery = (_AnalogIn(spec["gpio"]), spec["divider"])
        return self._battery

    def battery_mv(self):
        adc, divider = self._battery_adc()
        return int(adc.read_mv() * divider)

    def wait_inputs(self, timeout_ms):
        """Awaitable (not a coroutine: nothing allocated per scan): ends after timeout_ms or on
        an input edge."""
        return self._edges.wait(timeout_ms)

    def _output(self, name):
        out = self._outputs.get(name)
        if out is None:
            spec = self.board_info()["outputs"][name]
            out = self._outputs[name] = (machine.Pin(spec["gpio"], machine.Pin.OUT), spec.get("active_high", True))
        return out

    def output(self, name, on):
        pin, active_high = self._output(name)
        pin.value(1 if bool(on) == active_high else 0)

    def on_mains(self, present):
        """Wi-Fi power save off while on mains: modem sleep holds received packets for up to a
        beacon interval (100-300 ms per round trip, an ack included); on battery it saves
        tens of mA, so it comes back on."""
        self._mains = present
        if self._wifi is not None:
            self._wifi.power_save(not present)

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
        self._wifi = _WifiPath(config.get("wifi", {}), config.get("_secrets", {}).get("wifi_password", ""),
                               power_save=not self._mains)
        return [self._wifi]

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

    def __init__(self, wifi_config, password, power_save=False):
        super().__init__()
        self._ssid = wifi_config.get("ssid", "")
        self._password = password
        self._wlan = None
        self._power_save = power_save

    def _if(self):
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
            self._apply_power_save()
            # ifname (for SO_BINDTODEVICE) is set only once a second path exists: with one
            # interface the default route is already right.
        return self._wlan

    def power_save(self, on):
        self._power_save = on
        if self._wlan is not None:
            self._apply_power_save()

    def _apply_power_save(self):
        wlan = self._wlan
        try:
            wlan.config(pm=wlan.PM_PERFORMANCE if self._power_save else wlan.PM_NONE)
        except (OSError, ValueError, AttributeError) as e:  # firmware without pm: leave it as it is
            _log.warn("wifi: cannot set power save: %r", e)

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
