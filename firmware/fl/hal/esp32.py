"""ESP32 board: the only module that imports machine, network and esp32.

Creates nothing at import time; each hardware object is made when first asked for, from
the pin map in board.json (deployed beside the application by `firelink flash`).
"""
import asyncio
import gc
import json
import os
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

    async def sync_clock(self, path, servers, timeout_ms):
        """SNTP over `path` (fl.sntp: asyncio, bounded by timeout_ms); sets the RTC, which TLS
        verification needs. Returns whether it did."""
        try:
            from fl import sntp  # loaded at the first sync (≈3.7 KB with fl.dns on a 32-bit port)

            utc_ms = await sntp.fetch(servers, path, timeout_ms)
            if utc_ms is None:
                return False
            tm = time.gmtime(utc_ms // 1000 - clock.EPOCH_OFFSET)
            # The last field is microseconds on the esp32 port (machine_rtc.c).
            machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], utc_ms % 1000 * 1000))
            self._synced = True
            return True
        except Exception as e:  # noqa: BLE001 - a bad reply must never stop the app
            _log.warn("clock sync failed: %r", e)
            return False

    def paths(self, config):
        self._wifi = _WifiPath(config.get("wifi", {}), config.get("_secrets", {}).get("wifi_password", ""),
                               power_save=not self._mains)
        paths = {"wifi": self._wifi}
        cell = config.get("cellular") or {}
        if cell.get("enabled"):
            from fl.hal.esp32_modem import ModemHw  # loaded only with 4G
            from fl.modem import CellPath, Modem

            paths["cellular"] = CellPath(Modem(ModemHw(self.board_info()), cell, config.get("_secrets")))
            # Two interfaces: each path's sockets are bound to its own (cellular.md).
            self._wifi.ifname = "st1"
        return [paths[n] for n in config.get("paths", ("wifi", "cellular")) if n in paths]

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

    def _ifconfig(self, i):
        try:
            a = self._if().ifconfig()[i]
        except OSError:
            return None
        return None if a == "0.0.0.0" else a

    def dns_servers(self):
        # The DNS server DHCP gave (ESP_NETIF_DNS_MAIN, network_common.c); fl.dns asks it.
        a = self._ifconfig(3)
        return (a,) if a else ()

    def dhcp_ntp(self):
        # The esp32 port exposes neither DHCP option 42 nor the DHCP server's address: the
        # gateway is the DHCP server on a typical site LAN, and most routers answer NTP.
        return self._ifconfig(2)
