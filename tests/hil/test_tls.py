"""TLS: the device connects to the broker's mutual-TLS listener with its own DER certificate and
key, verifying the broker against the site CA; given the wrong CA it refuses the broker and
says so plainly on the console, and keeps watching its inputs."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut


@pytest.fixture
def ca() -> str:
    """Which CA the device trusts: the site's, or (parametrized) another one."""
    return "site"


@pytest.fixture
def dut_config(dut_config: dict[str, Any], site: BrokerFixture) -> dict[str, Any]:
    return {**dut_config, "broker": {"host": site.host, "port": site.broker.tls_port, "tls": True,
                                     "backoff_max_s": 2}}


@pytest.fixture
def dut_secrets(dut_secrets: dict[str, Any]) -> dict[str, Any]:
    return {**dut_secrets, "tls_ca": "ca.der", "tls_cert": "device.der", "tls_key": "device.key.der"}


@pytest.fixture
def dut_certs(site: BrokerFixture, ca: str) -> dict[str, bytes]:
    pk = site.broker.pki_dir
    trusted = site.wrong_ca_der if ca == "wrong" else pk / "ca.crt.der"
    return {"ca.der": trusted.read_bytes(),
            "device.der": (pk / "devices" / f"{site.device_user}.crt.der").read_bytes(),
            "device.key.der": (pk / "devices" / f"{site.device_user}.key.der").read_bytes()}


@pytest.mark.needs("inputs")
def test_device_connects_over_tls_with_its_der_certificate(centre: Centre, dut: Dut, site: BrokerFixture) -> None:
    dut.wait_for_log(rf"INFO mqtt: connected to {site.host}:{site.broker.tls_port} over wifi with TLS", timeout_s=15)
    dut.set_input("panel_fire", "active")
    alarm = centre.wait_event(dut.device_id, code="110", timeout_s=10)
    assert (alarm.q, alarm.cls, alarm.input) == ("new", "fire", "panel_fire")
    assert "ERROR" not in dut.log_text()


@pytest.mark.needs("inputs")
@pytest.mark.parametrize("ca", ["wrong"])
def test_wrong_ca_is_refused_with_a_clear_error_and_inputs_still_watched(centre: Centre, dut: Dut,
                                                                         site: BrokerFixture) -> None:
    where = f"{site.host}:{site.broker.tls_port}"
    dut.wait_for_log(rf"ERROR mqtt: TLS certificate verification failed with {where}: .+", timeout_s=15)
    dut.wait_for_log(r"INFO mqtt: reconnecting in \d+ ms", timeout_s=2)
    # It tries again (the CA may be replaced), and fails the same way.
    dut.wait_for_log(rf"ERROR mqtt: TLS certificate verification failed with {where}", timeout_s=5)
    dut.set_input("panel_fire", "active")
    dut.wait_for_log(r"INFO recorder: fire 110 new zone 1 seq \d+", timeout_s=5, since=0)
    assert "INFO mqtt: connected" not in dut.log_text(0)
    assert not [r for r in centre.messages(dut.device_id, "status") if not r.retained]
    assert not centre.events_of(dut.device_id)
