"""The device under test for the HIL suite: one interface over a virtual device or a board.

A scenario talks to `Dut` only, so the same test runs with `--dut virtual` (the firmware
under the unix port, firelink.virtual.device) and, later, `--dut /dev/ttyUSB0` (an ESP32 on a test
jig). Nothing here assumes the device is a local process or a directory:

  power       start() / stop() (clean: ^C, offline) / power_cut() / power_cycle() / restart()
  the world   set_input(name, state | raw=) / set_inputs({name: state}) / set_link(path, up) / set_rssi /
              set_battery_mv / set_clock_synced
  console     log_position() / wait_for_log(pattern, timeout_s, since=) / log_text(since=)
  files       read_file / write_file / exec_ on the device through firelink.board.device (mpremote)

What a device under test can do depends on the rig: `capabilities` names it (see CAPABILITIES),
a scenario declares what it needs with `@pytest.mark.needs(...)` and is skipped where that is
missing (tests/hil/conftest.py); using a missing capability raises MissingCapability, which
fails the test (it forgot to declare it). A board on the test jig (`JigDut`, issue 13) gets
inputs, EOL lines, power and reset from the jig (tests/hil/jig.py); link faults come from the
suite's TCP proxy (tests/hil/link_proxy.py) on any rig.

Entering the raw REPL interrupts the firmware, exactly as on a board; `repl()` soft-reboots
it afterwards (^D) unless told not to, and waits until main.py is running again.
"""
from __future__ import annotations

import abc
import json
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


from firelink.board.device import Device
from firelink.virtual import device as virtual
from tests.hil.jig import Jig

SOFT_REBOOT = r"MPY: soft reboot"
FIRMWARE_UP = r"INFO app: FireLink \S+ on .* reset cause"  # the app's first line (fl/app.py)
# What a scenario may need (`@pytest.mark.needs(...)`), and what provides it.
CAPABILITIES = {
    "inputs": "drive dry-contact inputs (the virtual device, or a jig's opto-MOSFETs)",
    "eol": "drive EOL lines to normal/active/open/short (the virtual device, or a jig's resistor networks)",
    "power": "cut and restore the device's supply (the virtual device, or a jig's power switch)",
    "reset": "press the reset button (the virtual device, or a jig on EN)",
    "indicators": "read the LEDs and the buzzer (the virtual device, or a jig's sense lines)",
    "link": "link faults between the device and the broker (the suite's TCP proxy, any rig)",
    "path": "take the device's own network path (Wi-Fi, cellular) down: the virtual device only",
    "clock": "control the device's clock synchronisation: the virtual device only",
    "signal": "set the radio signal strength the device reads: the virtual device only",
    "battery": "set the battery voltage the device reads: the virtual device only",
    "raw": "set an input to a raw level or ADC count: the virtual device only",
    "flash": "reach the device's flash as files on this host: the virtual device only",
    "ticks": "start the device's tick counter near its wrap ($FL_TICKS_START): the virtual device only",
    "dns": "give the device the suite's DNS server, as its network's DHCP would: the virtual device only",
}
# Why a board, even on the jig, cannot do what only the virtual device does.
BOARD_LIMITS = {
    "path": "a board's Wi-Fi or cellular path goes down only with the access point or the network, which "
            "the suite does not control; broker link faults come from the proxy (needs('link'))",
    "clock": "a board's clock follows its NTP server, which the suite does not control",
    "signal": "a board's radio signal is the air's, not the suite's",
    "battery": "the jig has no adjustable supply on the battery input",
    "raw": "the jig drives inputs through switches and resistors (states), not raw levels",
    "flash": "a board's flash is reached through its REPL, not as files on this host",
    "ticks": "a board's tick counter starts where its ROM starts it",
    "dns": "a board's DNS server is the one its network's DHCP gives",
}
# A booting ESP32's ROM line, or the virtual device's supervisor starting the firmware.
BOOT_LINE = r"rst:0x|\[virtual\] booting"


class MissingCapability(NotImplementedError):
    """The test used something this device under test cannot do, without declaring it."""

    def __init__(self, capability: str, reason: str) -> None:
        super().__init__(f"this device under test cannot {CAPABILITIES[capability].split(' (')[0]}: {reason}. "
                         f"A scenario that needs it declares @pytest.mark.needs({capability!r}) and is then "
                         f"skipped here instead of failing.")
        self.capability = capability


class Dut(abc.ABC):
    """One device under test."""

    device_id: str
    _cursor = 0  # where wait_for_log() searches from by default
    REBOOTED = SOFT_REBOOT  # what repl() waits for after its soft reboot
    capabilities: frozenset[str] = frozenset()
    # When the last input change happened, on the host's clock (time.time()): taken from the
    # jig's own stamp of the edge it drove, or just after the virtual device's control file
    # changed. Input-to-centre latency is measured from it.
    edge_time: float | None = None

    def missing_reason(self, capability: str) -> str:
        return "it has no way to do that"

    def _need(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise MissingCapability(capability, self.missing_reason(capability))

    def read_indicators(self) -> dict[str, int]:
        """The LEDs and the buzzer: {"led_status": 1, ...}."""
        self._need("indicators")
        raise NotImplementedError

    # --- power ---
    @abc.abstractmethod
    def start(self) -> None:
        """Power on; returns once the firmware runs."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Clean stop: ^C, the firmware publishes `offline` and disconnects."""

    @abc.abstractmethod
    def power_cut(self) -> None:
        """Power removed at once: nothing is flushed (events must survive this)."""

    def power_cycle(self) -> None:
        """Power cut, then power on (reset cause power_on)."""
        self.power_cut()
        self.start()

    @abc.abstractmethod
    def restart(self) -> None:
        """The reset button (reset cause hard); returns once the firmware runs again."""

    # --- the outside world ---
    @abc.abstractmethod
    def set_input(self, name: str, state: str | None = None, raw: int | None = None) -> None:
        """An input to active | normal | open | short, or a raw level/ADC count."""

    def set_inputs(self, states: dict[str, str]) -> None:
        """Several inputs at once (as one wiring change where the device can do it)."""
        for name, state in states.items():
            self.set_input(name, state)

    @abc.abstractmethod
    def set_link(self, path: str, up: bool) -> None:
        """Takes a network path (wifi, cellular) down or up."""

    def set_rssi(self, dbm: int) -> None:
        self._need("signal")

    def set_battery_mv(self, mv: int) -> None:
        self._need("battery")

    def set_clock_synced(self, synced: bool) -> None:
        self._need("clock")

    # --- console ---
    @abc.abstractmethod
    def log_text(self, since: int = 0) -> str:
        """Everything the device printed since `since` (a log_position())."""

    @abc.abstractmethod
    def log_position(self) -> int:
        """A mark for wait_for_log(since=...)."""

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout_s: float = 10.0,
                     since: int | None = None) -> re.Match[str]:
        """Waits for `pattern` in the console from `since`, by default from the end of the
        previous match. Raises TimeoutError with the console's tail."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        start = self._cursor if since is None else since
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_text(start)
            m = rx.search(text)
            if m:
                self._cursor = start + len(text[:m.end()].encode("utf-8", "replace"))
                return m
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{rx.pattern!r} not printed within {timeout_s} s; console ends with:\n"
                                   f"{text[-1500:]}")
            time.sleep(0.02)

    # --- the REPL and files, through mpremote ---
    @property
    @abc.abstractmethod
    def port(self) -> str:
        """The serial port's device path."""

    def _release_port(self) -> None:
        """Lets mpremote open the port (a board's console reader must let go)."""

    def _reclaim_port(self) -> None:
        pass

    @contextmanager
    def repl(self, reboot: bool = True, timeout_s: float = 30.0) -> Iterator[Device]:
        """The raw REPL through firelink.board.device (the firmware is interrupted), then a soft
        reboot back to main.py."""
        self._release_port()
        try:
            dev = Device.open(self.port, timeout_s=timeout_s)
            mark = self.log_position()
            try:
                yield dev
            except BaseException:
                dev.close()
                raise
            if reboot:
                dev.reboot()  # closes the session
            else:
                dev.close()
        finally:
            self._reclaim_port()
        if reboot:
            # "MPY: soft reboot" comes before main.py starts: the firmware runs once it says
            # so itself. Returning earlier, the next repl()'s ^C would reach a firmware still
            # importing (or none at all, and be dropped with the reboot's stale input). On a
            # board's port the soft reboot line may be lost (REBOOTED): then the banner is it.
            m = self.wait_for_log(self.REBOOTED, timeout_s, since=mark)
            if re.search(FIRMWARE_UP, m.group(0)):
                self._cursor -= len(m.group(0).encode("utf-8", "replace"))  # the caller may wait for it too
            else:
                after_reboot = self._cursor
                self.wait_for_log(FIRMWARE_UP, timeout_s)
                self._cursor = after_reboot  # the caller may wait for the boot line too

    def read_file(self, path: str) -> bytes:
        with self.repl() as dev:
            return dev.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        with self.repl() as dev:
            dev.write_file(path, data)

    def exec_(self, code: str, reboot: bool = True) -> str:
        """Runs code at the device's REPL; returns what it printed."""
        with self.repl(reboot=reboot) as dev:
            return dev.run(code)


class VirtualDut(Dut):
    """The real firmware under the unix port (firelink.virtual.device), in its own directory: by
    default the shipped .mpy build (virtual.app_dir), or the directory given as `firmware`."""

    capabilities = frozenset(CAPABILITIES) - {"link"}

    def __init__(self, directory: Path, firmware: Path | None = None, heapsize: str | None = None) -> None:
        self.dev = virtual.VirtualDevice(directory, firmware=firmware)
        self.dir = self.dev.dir
        self.heapsize = heapsize
        cfg = json.loads((self.dir / "config.json").read_text()) if (self.dir / "config.json").exists() else {}
        self.device_id = str(cfg.get("device_id", ""))

    @classmethod
    def create(cls, directory: Path, config: dict[str, Any], secrets: dict[str, Any] | None = None,
               certs: dict[str, bytes] | None = None, **kwargs: Any) -> VirtualDut:
        virtual.create(directory, config, secrets, certs)
        return cls(directory, **kwargs)

    def start(self) -> None:
        mark = self.log_position()
        self.dev.start(heapsize=self.heapsize)
        self._cursor = mark

    def stop(self) -> None:
        self.dev.stop(clean=True)

    def power_cut(self) -> None:
        self.dev.kill()

    def restart(self) -> None:
        self.dev.reset()

    def set_input(self, name: str, state: str | None = None, raw: int | None = None) -> None:
        virtual.set_input(self.dir, name, state=state, raw=raw)
        self.edge_time = time.time()

    def read_indicators(self) -> dict[str, int]:
        outputs = virtual.read_json(self.dir / "sim" / "outputs.json") or {}
        return {name: int(bool(outputs.get(name))) for name in ("led_status", "led_fault", "buzzer")}

    def set_inputs(self, states: dict[str, str]) -> None:
        info = virtual.board_info(self.dir)
        raws = {}
        for name, state in states.items():
            spec = virtual.find_input(self.dir, name)
            if spec.channel == "battery":
                raise virtual.WorldError("set the battery with set_battery_mv()")
            raws[spec.channel] = virtual.raw_for(spec, state, info)
        virtual.write_control(self.dir, {"inputs": raws})  # one atomic change of control.json
        self.edge_time = time.time()

    def set_link(self, path: str, up: bool) -> None:
        virtual.set_link(self.dir, path, up)

    def set_rssi(self, dbm: int) -> None:
        virtual.set_rssi(self.dir, dbm)

    def set_battery_mv(self, mv: int) -> None:
        virtual.set_battery_mv(self.dir, mv)

    def set_clock_synced(self, synced: bool) -> None:
        virtual.set_clock_synced(self.dir, synced)

    def log_text(self, since: int = 0) -> str:
        return self.dev.log_text(since)

    def log_position(self) -> int:
        return self.dev.log_position()

    @property
    def port(self) -> str:
        return self.dev.tty()


class SerialDut(Dut):
    """An ESP32 on a serial port: the console and the REPL. `start()` clears what the firmware
    kept on flash from the last scenario (STATE_FILES) and provisions it with the files of
    `image` (a directory as virtual.create() writes it: config.json, secrets.json,
    certificates) where they differ from what it holds, through the REPL, so that each
    scenario meets a fresh device with its configuration; then the soft reboot starts it.
    Everything in the outside world needs the test jig (JigDut wraps this class)."""

    IMAGE_FILES = ("config.json", "secrets.json")
    # The port is closed between mpremote and our reader, and a UART drops what it sends then:
    # "MPY: soft reboot" may be lost, the firmware's banner just after it comes to us.
    REBOOTED = SOFT_REBOOT + "|" + FIRMWARE_UP
    # What the firmware keeps on flash between boots (fl/outbox.py, fl/reported.py's two
    # checkpoint slots, fl/events.py Sequencer, fl/bootguard.py, fl/diag.py's boot count and
    # fl/crash.py's last crash): removed at start(), so that each
    # scenario meets a device as fresh as the virtual device's new directory. Kept in step with
    # the firmware by tests/jig/test_state_files.py (reported.json: its older name).
    STATE_FILES = ("outbox", "reported0.json", "reported1.json", "reported.json", "seq.dat", "seq.dat.bak",
                   "boot.dat", "boots.dat", "crash.json")

    def __init__(self, port: str, baudrate: int = 115200, image: Path | None = None) -> None:
        import serial

        self._port = port
        self._serial_mod = serial
        self._baudrate = baudrate
        self._log = bytearray()
        self._lock = threading.Lock()
        self._ser: Any = None
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
        self.device_id = ""
        self.image = Path(image) if image is not None else None

    def missing_reason(self, capability: str) -> str:
        if capability in BOARD_LIMITS:
            return BOARD_LIMITS[capability]
        return "a board needs the test jig for it (--jig PORT)"

    @property
    def port(self) -> str:
        return self._port

    def _open(self) -> None:
        self._ser = self._serial_mod.Serial(self._port, self._baudrate, timeout=0.1, dsrdtr=False, rtscts=False)
        self._stop_reader.clear()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        while not self._stop_reader.is_set():
            data = self._ser.read(4096)
            if data:
                with self._lock:
                    self._log += data

    def _release_port(self) -> None:
        self._stop_reader.set()
        if self._reader is not None:
            self._reader.join()
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def _reclaim_port(self) -> None:
        self._open()

    def start(self) -> None:
        """Takes the console, provisions the scenario's files, and starts the firmware afresh
        (a soft reboot through the REPL: no reset line needed)."""
        if self._ser is None:
            self._open()
        mark = self.log_position()
        with self.repl() as dev:
            dev.run(_WIPE % (self.STATE_FILES,))
            for name in self._image_files():
                data = (self.image / name).read_bytes()  # type: ignore[operator]
                try:
                    held = dev.read_file(name)
                except Exception:  # noqa: BLE001 - missing on the device: write it
                    held = None
                data = _keep_site(name, data, held)
                if held != data:
                    dev.write_file(name, data)
            if not self.device_id:
                self.device_id = json.loads(dev.read_file("config.json")).get("device_id", "")
        self._cursor = mark

    def _image_files(self) -> list[str]:
        if self.image is None:
            return []
        return [p.name for p in sorted(self.image.iterdir()) if p.is_file() and
                (p.name in self.IMAGE_FILES or p.suffix == ".der")]

    def stop(self) -> None:
        if self._ser is not None:
            self._ser.write(b"\x03")
            time.sleep(2)
        self._release_port()

    def power_cut(self) -> None:
        self._need("power")

    def restart(self) -> None:
        self._need("reset")

    def set_input(self, name: str, state: str | None = None, raw: int | None = None) -> None:
        self._need("raw" if raw is not None else "inputs")

    def set_link(self, path: str, up: bool) -> None:
        self._need("path")

    def log_text(self, since: int = 0) -> str:
        with self._lock:
            return bytes(self._log[since:]).decode("utf-8", "replace")

    def log_position(self) -> int:
        with self._lock:
            return len(self._log)


# Removes files and directories (one level) at the device's REPL; missing ones are fine.
_WIPE = """import os
for p in %r:
    try:
        for f in os.listdir(p):
            os.remove(p + '/' + f)
        os.rmdir(p)
    except OSError:
        try:
            os.remove(p)
        except OSError:
            pass
"""

# What a board keeps from its own provisioning across the scenarios' files: its Wi-Fi (the
# scenario knows the suite's broker, not the bench's network).
SITE_KEYS = {"config.json": ("wifi",), "secrets.json": ("wifi_password",)}


def _keep_site(name: str, data: bytes, held: bytes | None) -> bytes:
    keys = SITE_KEYS.get(name)
    if not keys or held is None:
        return data
    try:
        new, old = json.loads(data), json.loads(held)
    except ValueError:
        return data
    if not isinstance(new, dict) or not isinstance(old, dict):
        return data
    kept = {k: old[k] for k in keys if k in old and k not in new}
    return json.dumps({**new, **kept}, indent=1).encode() + b"\n" if kept else data


class JigDut(Dut):
    """A device under test on the test jig: `inner` (a SerialDut, or a VirtualDut driven by the
    simulated jig) gives the console and the REPL; the jig drives its inputs, supply and reset
    line and reads its LEDs. `files` holds the device's config.json and board.json, from which
    an input's name maps to its channel and contact type (the firmware's own fl.config)."""

    def __init__(self, inner: Dut, jig: Jig, files: Path) -> None:
        self.inner = inner
        self.jig = jig
        self.files = Path(files)
        self._wired = False
        caps = set()
        if jig.contacts:
            caps.add("inputs")
        if jig.eol:
            caps.add("eol")
        for key, cap in (("power", "power"), ("en", "reset"), ("sense", "indicators")):
            if jig.map.get(key):
                caps.add(cap)
        self.capabilities = frozenset(caps)

    @property
    def device_id(self) -> str:  # type: ignore[override]
        return self.inner.device_id

    @property
    def REBOOTED(self) -> str:  # type: ignore[override]  # noqa: N802 - the inner device's port decides
        return self.inner.REBOOTED

    def missing_reason(self, capability: str) -> str:
        if capability in BOARD_LIMITS:
            return BOARD_LIMITS[capability]
        return f"the jig on {self.jig.port} ({self.jig.version.get('wiring')}) is not wired for it"

    # --- power ---
    def start(self) -> None:
        """Powers the device on; the first time, with every input the jig reaches normal (as
        wired on a site). Later (after a power cut) the inputs stay as the scenario left them."""
        mark = self.log_position()
        first = not self._wired
        if first:
            self._normal_inputs()
            self._wired = True
        if isinstance(self.inner, VirtualDut):
            if not self.inner.dev.running():
                self.inner.start()  # the bench supply and the USB bridge; the jig's switch decides
            self._power_on()
        else:
            self._power_on()
            if first:  # once: a later power-on (after a cut) must boot exactly as a board does
                self.inner.start()  # takes the console, provisions through the REPL, soft reboot
        self._cursor = mark

    def _power_on(self) -> None:
        if "power" in self.capabilities:
            self.jig.power(True)
        elif "reset" in self.capabilities:
            self.jig.pulse_en()

    def _normal_inputs(self) -> None:
        """Every input the jig reaches in its normal state, before the device boots."""
        states = {}
        for spec in virtual.input_specs(self.files):
            try:
                states.update(self._jig_states(spec.name, "normal"))
            except MissingCapability:
                continue
        if states:
            self.jig.set(states)

    def stop(self) -> None:
        self.inner.stop()

    def power_cut(self) -> None:
        self._need("power")
        self.jig.power(False)  # answered once the device's rail is down

    def restart(self) -> None:
        self._need("reset")
        mark = self.log_position()
        self.jig.pulse_en(100)
        self.wait_for_log(BOOT_LINE, 10, since=mark)

    # --- the outside world ---
    def _jig_states(self, name: str, state: str) -> dict[str, str]:
        spec = virtual.find_input(self.files, name)
        if spec.channel == "battery" or spec.kind == "battery":
            raise MissingCapability("battery", self.missing_reason("battery"))
        if state not in virtual.STATES:
            raise virtual.WorldError(f"unknown state {state!r}: expected one of {', '.join(virtual.STATES)}")
        if spec.eol:
            if spec.channel not in self.jig.eol:
                raise MissingCapability("eol", f"no EOL network on {spec.channel} ({name})")
            return {spec.channel: state}
        if state in ("open", "short"):
            raise virtual.WorldError(f"input {name} has no end-of-line supervision: it is only active or normal")
        closed = (state == "active") == (spec.contact == "no")
        if spec.channel in self.jig.contacts:
            return {spec.channel: "closed" if closed else "open"}
        if spec.channel in self.jig.eol:  # a plain contact on a line the jig drives with resistors
            return {spec.channel: "short" if closed else "open"}
        raise MissingCapability("inputs", f"nothing on {spec.channel} ({name})")

    def set_input(self, name: str, state: str | None = None, raw: int | None = None) -> None:
        if raw is not None or state is None:
            raise MissingCapability("raw", self.missing_reason("raw"))
        self.set_inputs({name: state})

    def set_inputs(self, states: dict[str, str]) -> None:
        channels: dict[str, str] = {}
        for name, state in states.items():
            channels.update(self._jig_states(name, state))
        self.edge_time = self.jig.set(channels)

    def set_link(self, path: str, up: bool) -> None:
        self._need("path")

    def read_indicators(self) -> dict[str, int]:
        self._need("indicators")
        return {k: v for k, v in self.jig.read().items() if k != "rail_mv"}

    # --- console and REPL: the inner device's ---
    def log_text(self, since: int = 0) -> str:
        return self.inner.log_text(since)

    def log_position(self) -> int:
        return self.inner.log_position()

    @property
    def port(self) -> str:
        return self.inner.port

    def _release_port(self) -> None:
        self.inner._release_port()

    def _reclaim_port(self) -> None:
        self.inner._reclaim_port()


def make_dut(spec: str, directory: Path, config: dict[str, Any], secrets: dict[str, Any] | None = None,
             certs: dict[str, bytes] | None = None, firmware: Path | None = None,
             heapsize: str | None = None) -> Dut:
    """`virtual` (a new virtual device in `directory`, provisioned with config, secrets and
    certificate files, running `firmware` with the heap capped at `heapsize`) or a serial
    port path (a board, provisioned at start() with what `directory` then holds: the same
    files, written here)."""
    if spec == "virtual":
        return VirtualDut.create(directory, config, secrets, certs, firmware=firmware, heapsize=heapsize)
    virtual.create(directory, config, secrets, certs)
    return SerialDut(spec, image=directory)
