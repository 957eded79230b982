"""The HIL suite's device under test: `--dut virtual` (default) or `--dut /dev/ttyUSB0`.

Scenarios take the `dut` fixture, connected to the session's mosquitto (tests/conftest.py)
as the test device. A module can change the virtual device's configuration by overriding
`dut_config`, e.g. to shorten the heartbeat:

    @pytest.fixture
    def dut_config(dut_config): return {**dut_config, "heartbeat_s": 5}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture
from tests.hil.dut import Dut, VirtualDut, make_dut



def _dut_spec(config: pytest.Config) -> str:
    return str(config.getoption("--dut"))  # declared in tests/conftest.py


@pytest.fixture
def dut_config(broker: BrokerFixture) -> dict[str, Any]:
    return {"device_id": broker.device_user, "broker": {"host": broker.host, "port": broker.port}}


@pytest.fixture
def dut_secrets(broker: BrokerFixture) -> dict[str, Any]:
    return {"mqtt_username": broker.device_user, "mqtt_password": broker.device_pass}


@pytest.fixture
def dut(request: pytest.FixtureRequest, tmp_path: Path, dut_config: dict[str, Any],
        dut_secrets: dict[str, Any]) -> Iterator[Dut]:
    d = make_dut(_dut_spec(request.config), tmp_path / "device", dut_config, dut_secrets)
    d.start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            if isinstance(d, VirtualDut):
                d.dev.kill()  # a virtual device must not outlive its test, whatever happened
