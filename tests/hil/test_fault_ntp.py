"""NTP blackholed while the clock is unset and the broker needs TLS (certificate dates need a
set clock): the device asks its NTP server, which swallows every request, for a bounded time
before each connection. A fire raised while it waits is on flash within 1 s; once the server
answers, the clock is set, TLS connects and the alarm reaches the centre."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.netfaults import FLASH_LIMIT_S, UdpServer, fire_to_flash_s, ntp_answer, start_virtual


@pytest.fixture
def ntp() -> Iterator[UdpServer]:
    with UdpServer(ntp_answer, answering=False) as s:
        yield s


@pytest.fixture
def dut_config(dut_config: dict[str, Any], site: BrokerFixture, ntp: UdpServer) -> dict[str, Any]:
    return {**dut_config, "ntp_servers": [ntp.addr],
            "broker": {"host": site.host, "port": site.broker.tls_port, "tls": True, "backoff_max_s": 2}}


@pytest.fixture
def dut_secrets(dut_secrets: dict[str, Any]) -> dict[str, Any]:
    return {**dut_secrets, "tls_ca": "ca.der", "tls_cert": "device.der", "tls_key": "device.key.der"}


@pytest.fixture
def dut_certs(site: BrokerFixture) -> dict[str, bytes]:
    pk = site.broker.pki_dir
    return {"ca.der": (pk / "ca.crt.der").read_bytes(),
            "device.der": (pk / "devices" / f"{site.device_user}.crt.der").read_bytes(),
            "device.key.der": (pk / "devices" / f"{site.device_user}.key.der").read_bytes()}


@pytest.fixture
def dut(request: pytest.FixtureRequest, tmp_path: Path, dut_config: dict[str, Any], dut_secrets: dict[str, Any],
        dut_certs: dict[str, bytes], dut_firmware: Path, dut_heapsize: str | None) -> Iterator[Dut]:
    # The RTC is unset at power-up (the sim's host clock is right, but the board does not know it).
    yield from start_virtual(request, tmp_path / "device", dut_config, dut_secrets, dut_certs, dut_firmware,
                             dut_heapsize, {"clock_synced": False, "dns": []})


@pytest.mark.needs("inputs", "clock")
def test_fire_is_on_flash_at_once_while_ntp_is_blackholed(centre: Centre, dut: Dut, ntp: UdpServer) -> None:
    dut.wait_for_log(rf"WARN sntp: clock sync failed: {ntp.addr}: no answer", timeout_s=20, since=0)
    n = ntp.requests
    ntp.wait_requests(n + 1, timeout_s=10)  # an exchange is waiting for its answer right now
    took = fire_to_flash_s(dut)
    assert took <= FLASH_LIMIT_S, f"fire on flash after {took:.2f} s while NTP was blackholed"
    assert "INFO mqtt: connected" not in dut.log_text(0), "connected without a clock: the wait was skipped"
    ntp.answering = True
    dut.wait_for_log(r"INFO sim: clock set by SNTP", timeout_s=10, since=0)
    alarm = centre.wait_event(dut.device_id, code="110", q="new", timeout_s=30)
    assert alarm.cls == "fire"
