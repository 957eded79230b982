"""Fixtures shared by the firmware, host and HIL suites."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from firelink import pki
from firelink.broker import Broker, free_port

TEST_DEVICE = "fl-test1"


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


@dataclass
class BrokerFixture:
    """A running mosquitto with one test device and the monitor account."""

    broker: Broker
    device_user: str
    device_pass: str
    monitor_user: str
    monitor_pass: str
    wrong_ca_der: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.broker.bind

    @property
    def port(self) -> int:
        return self.broker.port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFixture]:
    state = tmp_path_factory.mktemp("broker")
    b = Broker(state, port=free_port(), tls_port=free_port())
    device, _ = b.add_device(TEST_DEVICE)
    monitor = b.add_monitor()
    wrong = pki.make_ca("Not the site CA")
    wrong_path = state / "wrong-ca.crt.der"
    wrong_path.write_bytes(wrong.cert_der)
    b.start()
    pk = b.pki_dir
    fx = BrokerFixture(b, device.username, device.password, monitor.username, monitor.password, wrong_path)
    fx.env = {
        "FL_BROKER_HOST": b.bind,
        "FL_BROKER_PORT": str(b.port),
        "FL_BROKER_TLS_PORT": str(b.tls_port),
        "FL_DEVICE_ID": TEST_DEVICE,
        "FL_DEVICE_USER": device.username,
        "FL_DEVICE_PASS": device.password,
        "FL_MONITOR_USER": monitor.username,
        "FL_MONITOR_PASS": monitor.password,
        "FL_CA_DER": str(pk / "ca.crt.der"),
        "FL_DEVICE_CERT_DER": str(pk / "devices" / f"{TEST_DEVICE}.crt.der"),
        "FL_DEVICE_KEY_DER": str(pk / "devices" / f"{TEST_DEVICE}.key.der"),
        "FL_WRONG_CA_DER": str(wrong_path),
    }
    yield fx
    b.stop()
