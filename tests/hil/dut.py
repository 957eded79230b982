"""The device under test for the HIL suite: one interface over a virtual device or a board.

A scenario talks to `Dut` only, so the same test runs with `--dut virtual` (the firmware
under the unix port, firelink.virtual) and, later, `--dut /dev/ttyUSB0` (an ESP32 on a test
jig). Nothing here assumes the device is a local process or a directory:

  power       start() / stop() (clean: ^C, offline) / power_cut() / power_cycle() / restart()
  the world   set_input(name, state | raw=) / set_inputs({name: state}) / set_link(path, up) / set_rssi /
              set_battery_mv / set_clock_synced
  console     log_position() / wait_for_log(pattern, timeout_s, since=) / log_text(since=)
  files       read_file / write_file / exec_ on the device through firelink.device (mpremote)

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


from firelink import virtual
from firelink.device import Device

SOFT_REBOOT = r"MPY: soft reboot"
FIRMWARE_UP = r"INFO app: FireLink \S+ on .* reset cause"  # the app's first line (fl/app.py)


class Dut(abc.ABC):
    """One device under test."""

    device_id: str
    _cursor = 0  # where wait_for_log() searches from by default

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
        raise NotImplementedError(f"{type(self).__name__} cannot set the signal strength")

    def set_battery_mv(self, mv: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot set the battery voltage")

    def set_clock_synced(self, synced: bool) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot control clock synchronisation")

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
        """The raw REPL through firelink.device (the firmware is interrupted), then a soft
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
            # importing (or none at all, and be dropped with the reboot's stale input).
            self.wait_for_log(SOFT_REBOOT, timeout_s, since=mark)
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
    """The real firmware under the unix port (firelink.virtual), in its own directory: by
    default the shipped .mpy build (virtual.app_dir), or the directory given as `firmware`."""

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

    def set_inputs(self, states: dict[str, str]) -> None:
        info = virtual.board_info(self.dir)
        raws = {}
        for name, state in states.items():
            spec = virtual.find_input(self.dir, name)
            if spec.channel == "battery":
                raise virtual.WorldError("set the battery with set_battery_mv()")
            raws[spec.channel] = virtual.raw_for(spec, state, info)
        virtual.write_control(self.dir, {"inputs": raws})  # one atomic change of control.json

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
    """An ESP32 on a serial port. Not finished: driving inputs, links and power needs the test
    jig (relays on the contacts, a switched supply), which does not exist yet. What works
    without it: the console, the reset button (RTS on EN, as esptool wires it), the REPL."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
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
        if self._ser is None:
            self._open()
        self.restart()
        if not self.device_id:
            self.device_id = json.loads(self.read_file("config.json")).get("device_id", "")

    def stop(self) -> None:
        if self._ser is not None:
            self._ser.write(b"\x03")
            time.sleep(2)
        self._release_port()

    def power_cut(self) -> None:
        raise NotImplementedError("power cut needs the test jig's switched supply")

    def restart(self) -> None:
        mark = self.log_position()
        # EN low through RTS while DTR (GPIO0) stays high: a plain reset, not the bootloader.
        self._ser.dtr = False
        self._ser.rts = True
        time.sleep(0.1)
        self._ser.rts = False
        self.wait_for_log(r"rst:0x", 10, since=mark)

    def set_input(self, name: str, state: str | None = None, raw: int | None = None) -> None:
        raise NotImplementedError("driving inputs needs the test jig")

    def set_link(self, path: str, up: bool) -> None:
        raise NotImplementedError("taking links down needs the test jig (or the access point's API)")

    def log_text(self, since: int = 0) -> str:
        with self._lock:
            return bytes(self._log[since:]).decode("utf-8", "replace")

    def log_position(self) -> int:
        with self._lock:
            return len(self._log)


def make_dut(spec: str, directory: Path, config: dict[str, Any], secrets: dict[str, Any] | None = None,
             certs: dict[str, bytes] | None = None, firmware: Path | None = None,
             heapsize: str | None = None) -> Dut:
    """`virtual` (a new virtual device in `directory`, provisioned with config, secrets and
    certificate files, running `firmware` with the heap capped at `heapsize`) or a serial
    port path (a board provisioned beforehand: the rest is ignored)."""
    if spec == "virtual":
        return VirtualDut.create(directory, config, secrets, certs, firmware=firmware, heapsize=heapsize)
    return SerialDut(spec)
