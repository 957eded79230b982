"""A resolver that never answers: the broker is known by name and the site's DNS server (the
one DHCP gives) swallows every query. The device keeps looking it up, bounded and on its
event loop; a fire raised while a lookup waits is on flash within 1 s, and reaches the
centre once the resolver answers again."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.netfaults import FLASH_LIMIT_S, UdpServer, dns_answer, fire_to_flash_s, start_virtual

BROKER_NAME = "broker.firelink.test"


@pytest.fixture
def resolver(site: BrokerFixture) -> Iterator[UdpServer]:
    with UdpServer(dns_answer(site.host), answering=False) as s:
        yield s


@pytest.fixture
def dut_config(dut_config: dict[str, Any], site: BrokerFixture) -> dict[str, Any]:
    return {**dut_config, "broker": {"host": BROKER_NAME, "port": site.port, "backoff_max_s": 2}}


@pytest.fixture
def dut(request: pytest.FixtureRequest, tmp_path: Path, dut_config: dict[str, Any], dut_secrets: dict[str, Any],
        dut_certs: dict[str, bytes], dut_firmware: Path, dut_heapsize: str | None,
        resolver: UdpServer) -> Iterator[Dut]:
    yield from start_virtual(request, tmp_path / "device", dut_config, dut_secrets, dut_certs, dut_firmware,
                             dut_heapsize, {"dns": [resolver.addr]})


@pytest.mark.needs("inputs", "dns")
def test_fire_is_on_flash_at_once_while_the_resolver_never_answers(centre: Centre, dut: Dut,
                                                                  resolver: UdpServer) -> None:
    dut.wait_for_log(rf"ERROR mqtt: connection to {BROKER_NAME}:\d+ failed: .*no answer for {BROKER_NAME}",
                     timeout_s=20, since=0)
    n = resolver.requests
    resolver.wait_requests(n + 1, timeout_s=20)  # a lookup is waiting for its answer right now
    took = fire_to_flash_s(dut)
    assert took <= FLASH_LIMIT_S, f"fire on flash after {took:.2f} s while DNS was silent"
    resolver.answering = True
    alarm = centre.wait_event(dut.device_id, code="110", q="new", timeout_s=40)
    assert alarm.cls == "fire"
