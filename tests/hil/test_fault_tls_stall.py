"""A broker that stalls mid-TLS-handshake: the TCP connection is accepted, the device's
ClientHello is never answered. The handshake waits on the event loop within the connect
timeout; a fire raised meanwhile is on flash within 1 s, and reaches the centre once the
broker answers again (the stalled connection times out and the next one gets through)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.netfaults import FLASH_LIMIT_S, TcpGate, fire_to_flash_s

CONNECT_TIMEOUT_MS = 4000


@pytest.fixture
def gate(request: pytest.FixtureRequest, site: BrokerFixture) -> Iterator[TcpGate]:
    # Where a board can reach this PC (--broker-host), like the suite's link proxy.
    with TcpGate(site.host, site.broker.tls_port, host=request.config.getoption("--broker-host") or "127.0.0.1") as g:
        yield g


@pytest.fixture
def dut_config(dut_config: dict[str, Any], gate: TcpGate) -> dict[str, Any]:
    return {**dut_config, "broker": {"host": gate.host, "port": gate.port, "tls": True, "backoff_max_s": 2,
                                     "connect_timeout_ms": CONNECT_TIMEOUT_MS}}


@pytest.fixture
def dut_secrets(dut_secrets: dict[str, Any]) -> dict[str, Any]:
    return {**dut_secrets, "tls_ca": "ca.der", "tls_cert": "device.der", "tls_key": "device.key.der"}


@pytest.fixture
def dut_certs(site: BrokerFixture) -> dict[str, bytes]:
    pk = site.broker.pki_dir
    return {"ca.der": (pk / "ca.crt.der").read_bytes(),
            "device.der": (pk / "devices" / f"{site.device_user}.crt.der").read_bytes(),
            "device.key.der": (pk / "devices" / f"{site.device_user}.key.der").read_bytes()}


@pytest.mark.needs("inputs")
def test_fire_is_on_flash_at_once_while_the_broker_stalls_the_tls_handshake(centre: Centre, dut: Dut,
                                                                           gate: TcpGate) -> None:
    dut.wait_for_log(r"ERROR mqtt: connect timed out after \d+ ms in the TLS handshake", timeout_s=20, since=0)
    n = gate.accepted
    gate.wait_accepted(n + 1, timeout_s=10)  # a handshake is hanging right now
    took = fire_to_flash_s(dut)
    assert took <= FLASH_LIMIT_S, f"fire on flash after {took:.2f} s while the TLS handshake stalled"
    gate.stall = False
    alarm = centre.wait_event(dut.device_id, code="110", q="new", timeout_s=30)
    assert alarm.cls == "fire"
