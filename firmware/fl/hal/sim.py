"""Simulated board for the unix port: the device's directory is its flash, and the outside
world (contacts, ADC lines, links, signal, clock) is driven through `sim/control.json`.

control.json (written atomically by the host tools or tests; every key optional):
  {"inputs": {"in1": 0, "in6": 2100},   raw level for digital channels, raw ADC for analogue
   "battery_mv": 3900, "links": {"wifi": true}, "rssi": -58, "clock_synced": true}
Outputs (LEDs, buzzer) are mirrored to `sim/outputs.json`, and so is the Wi-Fi power-save
setting (`wifi_power_save`, which the ESP32 turns off while on mains). The reset cause comes from
$FL_RESET_CAUSE; a reset ends the process with a status the supervisor understands
(3 watchdog, 4 software) so that it can start it again like a board would reboot.
"""
import asyncio
import gc
import json
import os
import sys
import time

from fl import link, store
from fl.edgewait import EdgeWait
from fl.log import Logger

_log = Logger("sim")
CONTROL = "sim/control.json"
# The host tools bump an 8-byte counter here, in place, after each change of control.json: the
# poll re-reads it through a file kept open, which allocates nothing (reading control.json
# every 10 ms would churn the heap as no ESP32 does). Without it (a test writing control.json
# itself) the poll reads control.json.
CONTROL_SEQ = "sim/control.seq"
OUTPUTS = "sim/outputs.json"
POLL_MS = 10
EXIT_STATUS = {"watchdog": 3, "software": 4}
_NONE = {}  # read-only: a missing section, without a new dict per read


def _find_board_json():
    for path in (os.getenv("FL_BOARD"), "board.json"):
        if path and store.exists(path):
            return path
    # Running from the source tree: firmware/fl/hal/sim.py -> the default board (host_tools firelink.boards)
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    return here + "/../../../hardware/boards/reference.json"


class Board:
    name = "sim"

    def __init__(self):
        self._info = None
        self._control_raw = None
        self.control = {}
        self._last_poll = time.ticks_add(time.ticks_ms(), -POLL_MS)
        self._outputs = {}
        # The simulated hardware: a task reads control.json every POLL_MS and raises an "edge"
        # on a change, as the ESP32's pin interrupts do; the scan waits on it the same way.
        self._edges = EdgeWait()
        self._poller = None
        self._mains = True
        self._seq_file = None
        self._seq = bytearray(8)
        self._seq_seen = bytearray(8)
        store.ensure_dir("sim")
        self.refresh(force=True)

    # --- identity and boot ---
    def board_info(self):
        if self._info is None:
            with open(_find_board_json()) as f:
                self._info = json.load(f)
        return self._info

    def release_info(self):
        """Boot is over: the parsed board.json goes (board_info() reads it again if asked)."""
        self._info = None

    def unique_id(self):
        mac = os.getenv("FL_SIM_MAC")
        if mac:
            return bytes(int(x, 16) for x in mac.split(":"))
        # Stable per device directory, locally administered (0x02) like a real MAC.
        h = 0
        for c in os.getcwd():
            h = (h * 131 + ord(c)) & 0xFFFFFFFFFF
        return bytes([0x02]) + h.to_bytes(5, "big")

    def reset_cause(self):
        return os.getenv("FL_RESET_CAUSE") or "power_on"

    def reset(self, cause="software"):
        _log.warn("reset (%s)", cause)
        sys.exit(EXIT_STATUS.get(cause, 4))

    # --- the outside world ---
    def _seq_changed(self):
        """True when control.seq says control.json changed, or cannot tell (no seq file)."""
        f = self._seq_file
        if f is None:
            try:
                f = self._seq_file = open(CONTROL_SEQ, "rb")
            except OSError:
                return True
        f.seek(0)
        if f.readinto(self._seq) != 8:
            return True
        if self._seq == self._seq_seen:
            return False
        self._seq_seen[:] = self._seq
        return True

    def refresh(self, force=False):
        """Re-reads control.json at most every POLL_MS; returns True if it changed."""
        now = time.ticks_ms()
        if not force and time.ticks_diff(now, self._last_poll) < POLL_MS:
            return False
        self._last_poll = now
        if not self._seq_changed() and not force:
            return False
        raw = store.read_bytes(CONTROL)
        if raw == self._control_raw:
            return False
        self._control_raw = raw
        try:
            self.control = json.loads(raw) if raw else {}
        except ValueError:
            _log.warn("ignoring malformed %s", CONTROL)
            return False
        self._edges.flag.set()  # whoever read it first, the scan must look
        return True

    async def _poll(self):
        failing = False
        while True:
            await asyncio.sleep_ms(POLL_MS)
            try:
                self.refresh()
                failing = False
            except Exception as e:  # noqa: BLE001 - the simulated pins never stop (a full heap, a bad file)
                if not failing:
                    _log.warn("reading %s failed: %r", CONTROL, e)
                failing = True

    def wait_inputs(self, timeout_ms):
        """Awaitable (not a coroutine: nothing allocated per scan): ends after timeout_ms or
        when control.json changed."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())
        return self._edges.wait(timeout_ms)

    def _input_value(self, channel, default):
        v = self.control.get("inputs", _NONE).get(channel)
        return default if v is None else v

    def digital_input(self, channel):
        return _DigitalIn(self, channel)

    def analog_input(self, channel):
        return _AnalogIn(self, channel)

    def battery_mv(self):
        return self.control.get("battery_mv", 4000)

    def output(self, name, on):
        on = bool(on)
        if self._outputs.get(name) != on:
            self._outputs[name] = on
            store.write_atomic(OUTPUTS, json.dumps(self._outputs).encode())

    def on_mains(self, present):
        """As the ESP32: Wi-Fi power save off while on mains, on while on battery."""
        self._mains = present
        self.output("wifi_power_save", not present)

    # --- services ---
    def watchdog(self, timeout_ms):
        return _Watchdog(self, timeout_ms)

    def relax_watchdog(self, timeout_ms=0):
        pass  # the simulated watchdog is checked only by the app's own feeder, gone at the REPL

    def clock_synced(self):
        return self.control.get("clock_synced", True)

    async def sync_clock(self, timeout_ms):
        return self.clock_synced()

    def paths(self, config):
        return [_SimPath(self, "wifi")]

    def storage_free(self):
        st = os.statvfs(".")
        return st[0] * st[4]

    def free_heap(self):
        return gc.mem_free()


class _DigitalIn:
    def __init__(self, board, channel):
        self._board = board
        self.channel = channel

    def value(self):
        # Pull-up: an open contact reads 1.
        return 1 if self._board._input_value(self.channel, 1) else 0


class _AnalogIn:
    def __init__(self, board, channel):
        self._board = board
        self.channel = channel
        self._default = board.board_info()["eol"]["nominal"]["normal"]  # board.json is gone after boot

    def read_raw(self):
        return int(self._board._input_value(self.channel, self._default))

    def read_mv(self):
        return self.read_raw() * 3300 // 4095


class _Watchdog:
    """Emulates the hardware watchdog: if feeding stops for longer than the timeout, the
    next check resets the process. It cannot fire while the event loop itself is stuck,
    which on the unix port only a bug outside asyncio could cause."""

    def __init__(self, board, timeout_ms):
        self._board = board
        self._timeout_ms = timeout_ms
        self._fed = time.ticks_ms()

    def feed(self):
        self._fed = time.ticks_ms()

    def expired(self):
        return time.ticks_diff(time.ticks_ms(), self._fed) > self._timeout_ms

    def check(self):
        if self.expired():
            self._board.reset("watchdog")


class _SimPath(link.Path):
    def __init__(self, board, name):
        super().__init__()
        self._board = board
        self.name = name

    def is_up(self):
        self._board.refresh()
        return bool(self._board.control.get("links", {}).get(self.name, True))

    async def bring_up(self, timeout_ms):
        return self.is_up()

    def signal_dbm(self):
        return self._board.control.get("rssi", -60) if self.is_up() else None
