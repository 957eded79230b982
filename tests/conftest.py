"""Fixtures shared by the firmware, host and HIL suites."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from firelink.site import pki
from firelink.site.broker import Broker, free_port

TEST_DEVICE = "fl-test1"
# The simulated flash's write stall (fl/hal/sim.py) is off for the suites so that they stay fast
# (a new virtual device pre-allocates its outbox: 65 block writes, 3 s at the typical 50 ms);
# `make bench` measures with it, and FL_FLASH_MODEL=typical (or worst) runs the suites with it.
os.environ.setdefault("FL_FLASH_MODEL", "off")


def pytest_addoption(parser: pytest.Parser) -> None:
    # Options live here, at the tests' root: pytest reads options only from start-up conftests.
    parser.addoption("--dut", default="virtual",
                     help="HIL device under test: 'virtual' (the firmware under the unix port) or a serial port")
    parser.addoption("--jig", default=None,
                     help="HIL test jig: 'sim' (the jig firmware under the unix port, driving the virtual device) "
                          "or the jig's serial port; without it a board's scenarios needing the jig are skipped")
    parser.addoption("--broker-host", default=None,
                     help="HIL: the address the device reaches the suite's broker at (the link proxy listens "
                          "there); a board needs this PC's address on its network. Default 127.0.0.1")
    parser.addoption("--port", default=None, help="serial port of a real ESP32 for tests marked hardware")
    parser.addoption("--firmware", default=None, help="MicroPython .bin that the hardware tests flash")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # As root, our own base directory under /tmp: pytest's shared /tmp/pytest-of-root is reset
    # to 0700 by every pytest session on the machine, and mosquitto's user must pass (below).
    if os.geteuid() == 0 and not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="firelink-pytest-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run across pytest-xdist workers (`make test`), the tests marked `slow` go out first, then
    the HIL scenarios: each takes seconds to minutes (the 4G ones up to 90 s), so they start
    early, side by side, and the short firmware, host and jig tests fill in around them instead
    of a long one ending the run alone. A scenario of minutes should be marked `slow`. Each
    worker collects the same order; a run in one process keeps the files' order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                     not item.nodeid.startswith("tests/hil/")))  # stable


@pytest.fixture(scope="session", autouse=True)
def _passable_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run as root (CI, this machine), mosquitto drops to its own user and re-reads its files from
    the broker directory on every reload: the 0700 temporary directories must let it pass
    (o+x: not listable, files inside keep their own modes), as /var/lib would in the field."""
    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist each worker's base is <the run's base>/gwN: mosquitto must pass both.
    for d in (base, base.parent) if os.environ.get("PYTEST_XDIST_WORKER") else (base,):
        d.chmod(d.stat().st_mode | 0o001)
    made = tmp_path_factory.mktemp

    def mktemp(basename: str, numbered: bool = True) -> Path:
        path = made(basename, numbered)
        path.chmod(path.stat().st_mode | 0o001)
        return path

    tmp_path_factory.mktemp = mktemp  # type: ignore[method-assign]


@dataclass
class BrokerFixture:
    """A running mosquitto with one test device, the monitor account and a second centre account.

    The broker binds each client id to its account, so only one client at a time can be the
    monitor: a test's own client acting as the centre next to a running monitor uses the
    `centre_*` account (same rights, its own client id)."""

    broker: Broker
    device_user: str
    device_pass: str
    monitor_user: str
    monitor_pass: str
    wrong_ca_der: Path
    centre_user: str = ""
    centre_pass: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.broker.bind

    @property
    def port(self) -> int:
        return self.broker.port


@contextmanager
def own_site(directory: Path) -> Iterator[BrokerFixture]:
    """A broker of the test's own, with the device's and the monitor's accounts: for a scenario
    that stops and restarts it, which the session's broker must never be."""
    b = Broker(directory, port=free_port(), tls_port=free_port())
    device, _ = b.add_device(TEST_DEVICE)
    monitor = b.add_monitor()
    b.start()
    try:
        yield BrokerFixture(b, device.username, device.password, monitor.username, monitor.password,
                            wrong_ca_der=Path("/nonexistent"))
    finally:
        b.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFixture]:
    state = tmp_path_factory.mktemp("broker")
    b = Broker(state, port=free_port(), tls_port=free_port())
    device, _ = b.add_device(TEST_DEVICE)
    monitor = b.add_monitor()
    centre = b.add_centre("centre-test")
    wrong = pki.make_ca("Not the site CA")
    wrong_path = state / "wrong-ca.crt.der"
    wrong_path.write_bytes(wrong.cert_der)
    b.start()
    pk = b.pki_dir
    fx = BrokerFixture(b, device.username, device.password, monitor.username, monitor.password, wrong_path,
                       centre.username, centre.password)
    fx.env = {
        "FL_BROKER_HOST": b.bind,
        "FL_BROKER_PORT": str(b.port),
        "FL_BROKER_TLS_PORT": str(b.tls_port),
        "FL_DEVICE_ID": TEST_DEVICE,
        "FL_DEVICE_USER": device.username,
        "FL_DEVICE_PASS": device.password,
        "FL_MONITOR_USER": monitor.username,
        "FL_MONITOR_PASS": monitor.password,
        "FL_CENTRE_USER": centre.username,
        "FL_CENTRE_PASS": centre.password,
        "FL_CA_DER": str(pk / "ca.crt.der"),
        "FL_DEVICE_CERT_DER": str(pk / "devices" / f"{TEST_DEVICE}.crt.der"),
        "FL_DEVICE_KEY_DER": str(pk / "devices" / f"{TEST_DEVICE}.key.der"),
        "FL_WRONG_CA_DER": str(wrong_path),
    }
    yield fx
    b.stop()


@dataclass
class FreshAccounts:
    env: dict[str, str]


def wait_accepted(host: str, port: int, username: str, password: str, timeout_s: float = 10.0) -> None:
    """Until the broker (reloading its password file after a SIGHUP) accepts this account."""
    import time

    import paho.mqtt.client as mqtt

    deadline = time.monotonic() + timeout_s
    while True:
        codes: list[object] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
        c.username_pw_set(username, password)
        c.on_connect = lambda client, userdata, flags, rc, props: codes.append(rc)
        c.connect(host, port, keepalive=10)
        c.loop_start()
        while not codes and time.monotonic() < deadline:
            time.sleep(0.02)
        # Disconnect first: it wakes the network thread, which then ends at once; loop_stop()
        # alone waits out the thread's 1 s select (4 s per test with fresh_accounts).
        c.disconnect()
        c.loop_stop()
        if codes and not codes[0].is_failure:  # type: ignore[attr-defined]
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the broker did not accept {username!r} within {timeout_s} s")
        time.sleep(0.05)


def clear_retained(host: str, port: int, username: str, password: str, topic: str, timeout_s: float = 5.0) -> None:
    """An empty retained message on `topic`: the broker forgets what it held there."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
    c.username_pw_set(username, password)
    c.connect(host, port, keepalive=10)
    c.loop_start()
    try:
        c.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout_s)
    finally:
        c.disconnect()  # first, as in wait_accepted
        c.loop_stop()


@pytest.fixture
def fresh_accounts(broker: BrokerFixture) -> Iterator[FreshAccounts]:
    """A device account and two centre accounts of this test's own. The broker binds client ids to
    accounts, so sessions (and what they queued) are per account: fresh ones keep a test from
    receiving what an earlier test left queued, and let it run two centre clients at once."""
    import secrets as _secrets

    tag = _secrets.token_hex(4)
    device, _ = broker.broker.add_device(f"fl-t{tag}")
    first = broker.broker.add_centre(f"centre-t{tag}-1")
    second = broker.broker.add_centre(f"centre-t{tag}-2")
    for account in (device, first, second):
        wait_accepted(broker.host, broker.port, account.username, account.password)
    pk = broker.broker.pki_dir / "devices"
    yield FreshAccounts({
        "FL_DEVICE_ID": device.username, "FL_DEVICE_USER": device.username, "FL_DEVICE_PASS": device.password,
        "FL_MONITOR_USER": first.username, "FL_MONITOR_PASS": first.password,
        "FL_CENTRE_USER": second.username, "FL_CENTRE_PASS": second.password,
        "FL_DEVICE_CERT_DER": str(pk / f"{device.username}.crt.der"),
        "FL_DEVICE_KEY_DER": str(pk / f"{device.username}.key.der"),
    })
    # The test's births and wills (not JSON) would be replayed to every later monitor as retained.
    clear_retained(broker.host, broker.port, device.username, device.password, f"firelink/{device.username}/status")
