"""A whole site on this PC: a site broker, the monitoring centre and one virtual device, started
and stopped together. Used by `firelink demo` and by `make bench` (tests/bench/run.py).

    site = LocalSite(Path("run/demo"), "fl-demo")
    try:
        site.start_broker(); site.start_monitor(); site.start_device()
        site.wait_online(30)
        t = site.set_input("panel_fire", "active")   # host time of the control-file write
        ev = site.wait_event(lambda e: e.code == "110" and e.q == "new", 10)
        site.wait_acked(ev, 10)
    finally:
        site.close()                                  # device offline, monitor, broker: all stopped

Every wait takes a bound and raises a `SiteError` subclass whose message says what to do
(mosquitto missing: the apt-get line; the device never online: its last console lines).
`close()` stops whatever was started, in order (device first, so that it can still say
`offline` through the broker), and cannot itself be interrupted by a second Ctrl-C.
"""
from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from firelink.centre.devices import WENT_OFFLINE, WENT_ONLINE
from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig, MonitorError, MonitorWarning, Sink
from firelink.centre.store import Device, Event, MonitorStore, StoreError
from firelink.errors import FireLinkError
from firelink.site.broker import Account, Broker, BrokerError, free_port
from firelink.virtual import device as virtual
from firelink.virtual.device import VirtualDevice, VirtualError

CONSOLE_TAIL_LINES = 15


class SiteError(FireLinkError, RuntimeError):
    """The local site could not do what was asked; the message says why and what to do."""


class BrokerFailed(SiteError):
    pass


class MonitorFailed(SiteError):
    pass


class DeviceFailed(SiteError):
    pass


class NeverOnline(DeviceFailed):
    pass


class NotReceived(SiteError):
    pass


class NotAcked(SiteError):
    pass


@dataclass
class Seen:
    """What the monitor has told the site, kept for waiting on (filled from its worker thread)."""

    events: list[Event] = field(default_factory=list)
    changes: list[tuple[str, str, float]] = field(default_factory=list)  # (device, change, at)
    warnings: list[MonitorWarning] = field(default_factory=list)


class Watch(Sink):
    """A monitor sink that lets the caller wait for events and device changes."""

    def __init__(self) -> None:
        self.seen = Seen()
        self._cond = threading.Condition()

    def on_event(self, event: Event) -> None:
        with self._cond:
            self.seen.events.append(event)
            self._cond.notify_all()

    def on_device(self, device: Device, change: str | None) -> None:
        if change:
            with self._cond:
                self.seen.changes.append((device.device, change, device.state_since))
                self._cond.notify_all()

    def on_warning(self, warning: MonitorWarning) -> None:
        with self._cond:
            self.seen.warnings.append(warning)

    def wait(self, predicate: Callable[[Seen], Any], timeout_s: float,
             alive: Callable[[], None] | None = None) -> Any:
        """predicate(seen) under the lock until it returns something truthy (returned), or None
        after timeout_s. `alive()` runs between looks and may raise to give up early."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = predicate(self.seen)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))
                if alive is not None:
                    self._cond.release()
                    try:
                        alive()
                    finally:
                        self._cond.acquire()

    def count(self, predicate: Callable[[Event], bool]) -> int:
        with self._cond:
            return sum(1 for e in self.seen.events if predicate(e))

    def events(self) -> list[Event]:
        with self._cond:
            return list(self.seen.events)


class LocalSite:
    """One broker, one monitor and one virtual device under `directory`:
    `broker/` (mosquitto's state and log), `monitor.db`, `devices/<device_id>/` (the device's flash
    and console.log)."""

    def __init__(self, directory: Path, device_id: str, device_config: dict[str, Any] | None = None,
                 heapsize: str | None = None, sinks: list[Sink] | None = None,
                 monitor_client_id: str = "firelink-local-monitor", firmware: Path | None = None,
                 board: dict[str, Any] | None = None) -> None:
        """`heapsize`, `firmware` (a directory with main.py or a build) and `board` (a definition,
        firelink.board.boards): None for firelink.virtual.device's defaults."""
        self.dir = Path(directory)
        self.firmware = firmware
        self.device_id = device_id
        self.device_config = dict(device_config or {})
        self.heapsize = heapsize
        self.board = board
        self.watch = Watch()
        self.sinks: list[Sink] = [self.watch, *(sinks or [])]
        self.monitor_client_id = monitor_client_id
        self.broker: Broker | None = None
        self.device_account: Account | None = None
        self.monitor_account: Account | None = None
        self.store: MonitorStore | None = None
        self.monitor: Monitor | None = None
        self.device: VirtualDevice | None = None
        self.offline_seen = False

    # --- where things are ---
    @property
    def broker_dir(self) -> Path:
        return self.dir / "broker"

    @property
    def db_path(self) -> Path:
        return self.dir / "monitor.db"

    @property
    def device_dir(self) -> Path:
        return self.dir / "devices" / self.device_id

    @property
    def console_log(self) -> Path:
        return self.device_dir / "console.log"

    def wipe(self) -> None:
        """Removes what an earlier run left (broker state, store, device flash) so that this run
        starts from nothing; refuses while a device still runs there."""
        if VirtualDevice(self.device_dir).running():
            raise DeviceFailed(f"a virtual device is still running in {self.device_dir}: "
                               f"`firelink virtual stop --dir {self.device_dir}` first")
        for path in (self.broker_dir, self.device_dir):
            if path.exists():
                shutil.rmtree(path)
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)

    # --- starting ---
    def start_broker(self, timeout_s: float = 10.0) -> Broker:
        b = Broker(self.broker_dir, port=free_port(), tls_port=free_port())
        # This run's own credentials, whatever an earlier run left in the directory.
        self.device_account, _ = b.add_device(self.device_id, rotate=True)
        self.monitor_account = b.add_monitor(rotate=True)
        self.broker = b
        try:
            b.start(timeout_s)
        except BrokerError as e:
            self.broker = None
            raise BrokerFailed(str(e)) from e
        return b

    def start_monitor(self, timeout_s: float = 10.0) -> Monitor:
        if self.broker is None or self.monitor_account is None:
            raise MonitorFailed("start the broker first")
        try:
            self.store = MonitorStore(self.db_path)
        except StoreError as e:
            raise MonitorFailed(str(e)) from e
        config = MonitorConfig(MqttSettings(host=self.broker.bind, port=self.broker.port,
                                            username=self.monitor_account.username,
                                            password=self.monitor_account.password, client_id=self.monitor_client_id))
        monitor = Monitor(self.store, config, self.sinks)
        try:
            monitor.start(timeout_s)
        except MonitorError as e:
            self.store.close()
            self.store = None
            raise MonitorFailed(f"{e}; broker log: {self.broker.log_file}") from e
        self.monitor = monitor
        return monitor

    def start_device(self, timeout_s: float = virtual.START_TIMEOUT_S) -> str:
        """Provisions the device for this broker and powers it on; returns its serial port."""
        if self.broker is None or self.device_account is None:
            raise DeviceFailed("start the broker first")
        config = {"device_id": self.device_id, "site": "FireLink on this PC",
                  "broker": {"host": self.broker.bind, "port": self.broker.port}, **self.device_config}
        secrets = {"mqtt_username": self.device_account.username, "mqtt_password": self.device_account.password}
        virtual.create(self.device_dir, config, secrets, board=self.board)
        # Held before it starts, so that close() stops it even if Ctrl-C lands inside start().
        self.device = VirtualDevice(self.device_dir, firmware=self.firmware)
        try:
            return self.device.start(timeout_s=timeout_s, heapsize=self.heapsize)
        except VirtualError as e:
            raise DeviceFailed(str(e)) from e

    # --- waiting ---
    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        text = self.device.log_text() if self.device else ""
        return "\n".join(text.splitlines()[-lines:]) or "(the device printed nothing)"

    def check_device(self) -> None:
        """Raises DeviceFailed, with the console's last lines, if the firmware no longer runs main.py."""
        if self.device is None:
            raise DeviceFailed("no device started")
        st = self.device.state()
        if not st["running"]:
            raise DeviceFailed(f"the virtual device stopped (last exit {st.get('last_exit')}); its console "
                               f"({self.console_log}) ends with:\n{self.console_tail()}")
        if st.get("mode") != "main":
            raise DeviceFailed(f"the firmware ended and the device is at its REPL; its console "
                               f"({self.console_log}) ends with:\n{self.console_tail()}")
        if self.monitor is not None and self.monitor.failure is not None:
            raise MonitorFailed(f"the monitor stopped: {self.monitor.failure}")

    def wait_online(self, timeout_s: float) -> float:
        """Waits until the monitor hears the device say `online`; returns when (host time)."""
        def online(seen: Seen) -> float | None:
            for name, change, at in seen.changes:
                if name == self.device_id and change == WENT_ONLINE:
                    return at
            return None

        at = self.watch.wait(online, timeout_s, self.check_device)
        if at is None:
            raise NeverOnline(f"{self.device_id} did not come online within {timeout_s:g} s; its console "
                              f"({self.console_log}) ends with:\n{self.console_tail()}")
        return float(at)

    def debounce_ms(self, name: str) -> int | None:
        """An input's debounce as the device's firmware has it configured; None for an input it
        does not have."""
        try:
            return virtual.find_input(self.device_dir, name).debounce_ms
        except virtual.WorldError:
            return None

    def set_input(self, name: str, state: str) -> float:
        """Drives an input through the sim control file; returns the host time just before the write."""
        t = time.time()
        virtual.set_input(self.device_dir, name, state)
        return t

    def wait_event(self, predicate: Callable[[Event], bool], timeout_s: float, after: int = 0,
                   what: str = "the event") -> Event:
        """The first event from this device (from the `after`-th on) that matches, once the monitor holds it."""
        def find(seen: Seen) -> Event | None:
            for e in seen.events[after:]:
                if e.device == self.device_id and predicate(e):
                    return e
            return None

        ev = self.watch.wait(find, timeout_s, self.check_device)
        if ev is None:
            raise NotReceived(f"{what} did not reach the monitor within {timeout_s:g} s; the device's console "
                              f"({self.console_log}) ends with:\n{self.console_tail()}")
        return ev

    def wait_acked(self, event: Event, timeout_s: float) -> float:
        """Waits until the broker has accepted the monitor's ack for `event`; returns when."""
        assert self.store is not None
        deadline = time.monotonic() + timeout_s
        while True:
            held = self.store.event(event.device, event.id)
            if held is not None and held.acked_at is not None:
                return held.acked_at
            if time.monotonic() >= deadline:
                raise NotAcked(f"the monitor's ack for event {event.id} (seq {event.seq}) was not confirmed by "
                               f"the broker within {timeout_s:g} s; broker log: {self.broker_dir / 'mosquitto.log'}")
            time.sleep(0.01)

    # --- stopping ---
    def stop_device(self, offline_timeout_s: float = 5.0) -> bool:
        """Clean stop (^C: the firmware publishes `offline`); returns whether the monitor heard it."""
        if self.device is None:
            return False
        mark = len(self.watch.seen.changes)
        was_online = any(n == self.device_id and c == WENT_ONLINE for n, c, _ in self.watch.seen.changes)
        dev, self.device = self.device, None
        try:
            dev.stop(clean=True)
        except VirtualError:
            dev.kill()
            raise
        if self.monitor is None or self.broker is None or not self.broker.running() or not was_online:
            return False  # nobody to say it to (Ctrl-C reaches mosquitto too: it shares our terminal)

        def offline(seen: Seen) -> bool:
            return any(n == self.device_id and c == WENT_OFFLINE for n, c, _ in seen.changes[mark:])

        self.offline_seen = bool(self.watch.wait(offline, offline_timeout_s))
        return self.offline_seen

    def stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def close(self) -> None:
        """Stops everything still running: device (clean, else killed), monitor, broker."""
        previous = _shield_sigint()
        try:
            if self.device is not None:
                try:
                    self.stop_device()
                except (VirtualError, OSError):
                    pass
            self.stop_monitor()
            if self.broker is not None:
                self.broker.stop()
                self.broker = None
        finally:
            _restore_sigint(previous)

    def __enter__(self) -> LocalSite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shield_sigint() -> Any:
    # A second Ctrl-C while stopping would leave mosquitto or the device running.
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
