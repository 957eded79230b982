"""Simulated board for the unix port: the device's directory is its flash, and the outside
world (contacts, ADC lines, links, signal, clock) is driven through `sim/control.json`.

control.json (written atomically by the host tools or tests; every key optional):
  {"inputs": {"in1": 0, "in6": 2100},   raw level for digital channels, raw ADC for analogue
   "battery_mv": 3900, "links": {"wifi": true}, "rssi": -58, "clock_synced": true,
   "dns": ["127.0.0.1:5353"], "dhcp_ntp": "127.0.0.1:1123"}
The clock is the host's. While `clock_synced` is true (the default) the RTC counts as set and
sync_clock asks no server; once it is false, sync_clock runs the firmware's real SNTP client
(fl.sntp, names through fl.dns) against the configured servers, and an answer sets it. `dns`
is what the path's DHCP would give (default: the host's /etc/resolv.conf), `dhcp_ntp` the NTP
server it would offer (default none).
Outputs (LEDs, buzzer) are mirrored to `sim/outputs.json`, and so is the Wi-Fi power-save
setting (`wifi_power_save`, which the ESP32 turns off while on mains). The reset cause comes from
$FL_RESET_CAUSE; a reset ends the process with a status the supervisor understands
(3 watchdog, 4 software) so that it can start it again like a board would reboot.

Flash is modelled: every block write the firmware makes (fl/store.py counts them) stalls the
interpreter for the time a 4 KB littlefs block rewrite takes on the reference SPI NOR flash,
as the ESP32's CPU stalls while its flash is busy. $FL_FLASH_MODEL picks it: `typical`
(default: 50 ms, a ≈45 ms sector erase plus programming), `worst` (450 ms: a 400 ms erase),
`off`, or a number of ms. The count since boot and the model are in `sim/flash.json`
(`{"block_writes": n, "stall_ms": ms}`), rewritten within FLASH_STATS_MS of a change; the
sim's own files (control, outputs, stats) are not the device's flash and cost nothing.
"""
import asyncio
import gc
import json
import os
import sys
import time

from fl import link, netio, store, ticks
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
FLASH = "sim/flash.json"
FLASH_MODELS = {"off": 0, "typical": 50, "worst": 450}
FLASH_STATS_MS = 200


def flash_model_ms(spec):
    """ms per block write for an $FL_FLASH_MODEL value; ValueError names what is allowed."""
    spec = (spec or "typical").strip().lower()
    if spec in FLASH_MODELS:
        return FLASH_MODELS[spec]
    try:
        ms = int(spec)
    except ValueError:
        ms = -1
    if not 0 <= ms <= 5000:
        raise ValueError("FL_FLASH_MODEL %r: want off, typical, worst or 0..5000 ms" % spec)
    return ms


def _write_sim_file(path, data):
    # The sim's own files are the test rig's, not the device's flash: not charged.
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
EXIT_STATUS = {"watchdog": 3, "software": 4}
_NONE = {}  # read-only: a missing section, without a new dict per read


def _find_board_json():
    for path in (os.getenv("FL_BOARD"), "board.json"):
        if path and store.exists(path):
            return path
    # Running from the source tree: firmware/fl/hal/sim.py -> the default board (host_tools firelink.board.boards)
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    return here + "/../../../hardware/boards/reference.json"


class Board:
    name = "sim"

    def __init__(self):
        self._info = None
        self._control_raw = None
        self.control = {}
        self._last_poll = ticks.add(ticks.ms(), -POLL_MS)
        self._outputs = {}
        # The simulated hardware: a task reads control.json every POLL_MS and raises an "edge"
        # on a change, as the ESP32's pin interrupts do; the scan waits on it the same way.
        self._edges = EdgeWait()
        self._poller = None
        self._mains = True
        self._seq_file = None
        self._seq = bytearray(8)
        self._seq_seen = bytearray(8)
        self._rtc_set = False
        store.ensure_dir("sim")
        try:
            store.stall_ms = flash_model_ms(os.getenv("FL_FLASH_MODEL"))
        except ValueError as e:
            _log.error("%s: using typical", e)
            store.stall_ms = FLASH_MODELS["typical"]
        self._flash_seen = -1
        self._flash_at = ticks.ms()
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
        now = ticks.ms()
        if not force and ticks.diff(now, self._last_poll) < POLL_MS:
            return False
        self._last_poll = now
        # recent(): after days without a write, the last stamp is old, not (wrapped) in the future.
        if store.block_writes != self._flash_seen and not ticks.recent(self._flash_at, FLASH_STATS_MS):
            self._flash_seen = store.block_writes
            self._flash_at = now
            _write_sim_file(FLASH, b'{"block_writes":%d,"stall_ms":%d}' % (store.block_writes, store.stall_ms))
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
            _write_sim_file(OUTPUTS, json.dumps(self._outputs).encode())

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
        return self._rtc_set or self.control.get("clock_synced", True)

    async def sync_clock(self, path, servers, timeout_ms):
        if self.clock_synced():
            return True
        from fl import sntp  # loaded only when a clock must be set: RAM for the rest otherwise

        utc_ms = await sntp.fetch(servers, path, timeout_ms)
        if utc_ms is None:
            return False
        _log.info("clock set by SNTP (host clock %+d ms)", utc_ms - int(time.time() * 1000))
        self._rtc_set = True
        return True

    def paths(self, config):
        """Wi-Fi, and 4G when configured (the modem is the simulator on the `modem` pty), in
        the configured order."""
        paths = {"wifi": _SimPath(self, "wifi")}
        cell = config.get("cellular") or _NONE
        if cell.get("enabled"):
            from fl.modem import CellPath, Modem  # loaded only with a modem: RAM otherwise

            hw = _SimModemHw(self, self.board_info()["modem"])
            paths["cellular"] = CellPath(Modem(hw, cell, config.get("_secrets")))
        return [paths[n] for n in config.get("paths", ("wifi", "cellular")) if n in paths]

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
        self._fed = ticks.ms()

    def feed(self):
        self._fed = ticks.ms()

    def expired(self):
        return ticks.diff(ticks.ms(), self._fed) > self._timeout_ms

    def check(self):
        if self.expired():
            self._board.reset("watchdog")


class _SimModemHw:
    """The modem's side of the simulated board: its UART is the pty the modem simulator
    (host_tools/firelink/virtual/modemsim.py) serves at `modem`; PWRKEY and RESET are outputs this
    writes to `sim/pins.json` (line levels, with the board's polarity), which the simulator
    watches and times like the module's pins. There is no PPP on this Linux: after CONNECT
    the simulator names, in one line (`~SIMPPP 127.0.0.1:port`, where PPP's IPCP would give an
    address), the loopback route this path's sockets take: its fault proxy to the broker."""

    ifname = None
    ppp_owns_uart = False  # the simulator's data path is a socket: the pty stays the AT channel's
    PINS = "sim/pins.json"

    def __init__(self, board, info):
        self._board = board
        self.pwrkey_on_ms = info["pwrkey"]["on_ms"]
        self.pwrkey_off_ms = info["pwrkey"]["off_ms"]
        self.reset_ms = info["reset"]["pulse_ms"]
        self._active = {"pwrkey": 0 if info["pwrkey"].get("active_low", True) else 1,
                        "reset": 0 if info["reset"].get("active_low", True) else 1}
        self._levels = {k: 1 - v for k, v in self._active.items()}
        self._write_pins()
        self._route = None
        self._offered = None

    def _write_pins(self):
        _write_sim_file(self.PINS, json.dumps(self._levels).encode())

    def open(self):
        import termios

        f = open("modem", "r+b")
        # Reads must return what is there (VMIN 0, VTIME 0), as a UART's non-blocking read.
        a = termios.tcgetattr(f.fileno())
        a[6][6] = 0
        a[6][5] = 0
        termios.tcsetattr(f.fileno(), termios.TCSANOW, a)
        return asyncio.StreamReader(f)

    async def pulse(self, line, ms):
        self._levels[line] = self._active[line]
        self._write_pins()
        try:
            await asyncio.sleep_ms(ms)
        finally:
            self._levels[line] = 1 - self._active[line]
            self._write_pins()

    def urc(self, line):
        if line.startswith("~SIMPPP "):
            self._offered = line[8:].strip()
        elif line == "NO CARRIER":
            self._route = None

    async def data_start(self, timeout_ms):
        deadline = ticks.after(timeout_ms)
        while not ticks.due(deadline):
            if self._offered:
                host, port = self._offered.split(":")
                self._route = netio.sockaddr(host, int(port))
                self._offered = None
                return True
            await asyncio.sleep_ms(50)
        return False

    def data_up(self):
        return self._route is not None

    async def data_stop(self):
        self._route = None

    def route(self, addr):
        return self._route if self._route is not None else addr

    def dns_servers(self):
        return _resolv_conf()


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

    def dns_servers(self):
        v = self._board.control.get("dns")
        if v is not None:
            return (v,) if type(v) is str else v
        return _resolv_conf()

    def dhcp_ntp(self):
        return self._board.control.get("dhcp_ntp")

    def route(self, addr):
        # The simulated world's fault proxy for this path, when it runs one.
        r = self._board.control.get("routes", _NONE).get(self.name)
        if not r:
            return addr
        host, port = r.split(":")
        return netio.sockaddr(host, int(port))


_resolv = None


def _resolv_conf():
    """The host's DNS servers: what DHCP gave the machine the virtual device runs on."""
    global _resolv
    if _resolv is None:
        found = []
        try:
            with open("/etc/resolv.conf") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0] == "nameserver" and "." in parts[1]:
                        found.append(parts[1])
        except OSError:
            pass
        _resolv = tuple(found)
    return _resolv
