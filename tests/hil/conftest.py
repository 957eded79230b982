"""The HIL suite's fixtures: the device under test, the site it reports to, and the centre.

`dut` is the device under test (`--dut virtual`, the default, or a serial port), provisioned
from `dut_config`, `dut_secrets` and `dut_certs` (file name -> bytes) and connected to `site`:
the session's mosquitto (tests/conftest.py) unless a module overrides `site`. A module can
change the virtual device's configuration by overriding `dut_config`, e.g. to shorten the
heartbeat:

    @pytest.fixture
    def dut_config(dut_config): return {**dut_config, "heartbeat_s": 5}

`centre` is the receiving centre: the real monitor (tests/hil/centre.py), started before
the device when a test asks for it first (`def test_x(centre, dut)`), so it sees the
device's first `online`. `centre_supervision` sets its supervision times.

What a virtual device runs, from the environment:
  FL_DUT_FIRMWARE  `build` (default): the application as it ships, the .mpy files of
                   firelink.build.build_app("xtensawin"), built once per session into a
                   temporary directory; `source`: the firmware/ sources; or a directory.
  FL_HEAPSIZE      the unix port's heap, `256k` by default: the whole suite runs within it
                   (objects are 64-bit here, so an ESP32 needs less); `none` lifts the cap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from firelink import virtual
from firelink.monitor_devices import Supervision
from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut, VirtualDut, make_dut

DEFAULT_HEAPSIZE = "256k"


def _dut_spec(config: pytest.Config) -> str:
    return str(config.getoption("--dut"))  # declared in tests/conftest.py


@pytest.fixture(scope="session")
def dut_firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    choice = os.environ.get("FL_DUT_FIRMWARE", "build")
    if choice == "build":
        # Our own build directory: another run (or `firelink flash`) may be rebuilding build/.
        return virtual.shipped_app(tmp_path_factory.mktemp("app"))
    if choice == "source":
        return virtual.firmware_dir()
    return Path(choice)


@pytest.fixture(scope="session")
def dut_heapsize() -> str | None:
    value = os.environ.get("FL_HEAPSIZE", DEFAULT_HEAPSIZE)
    return None if value.lower() in ("", "none") else value


@pytest.fixture
def site(broker: BrokerFixture) -> BrokerFixture:
    """The broker the device and the centre use."""
    return broker


@pytest.fixture
def dut_config(site: BrokerFixture) -> dict[str, Any]:
    return {"device_id": site.device_user, "broker": {"host": site.host, "port": site.port}}


@pytest.fixture
def dut_secrets(site: BrokerFixture) -> dict[str, Any]:
    return {"mqtt_username": site.device_user, "mqtt_password": site.device_pass}


@pytest.fixture
def dut_certs() -> dict[str, bytes]:
    return {}


@pytest.fixture
def dut(request: pytest.FixtureRequest, tmp_path: Path, dut_config: dict[str, Any], dut_secrets: dict[str, Any],
        dut_certs: dict[str, bytes], dut_firmware: Path, dut_heapsize: str | None) -> Iterator[Dut]:
    d = make_dut(_dut_spec(request.config), tmp_path / "device", dut_config, dut_secrets, dut_certs,
                 firmware=dut_firmware, heapsize=dut_heapsize)
    d.start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            if isinstance(d, VirtualDut):
                d.dev.kill()  # a virtual device must not outlive its test, whatever happened


@pytest.fixture
def centre_supervision() -> Supervision:
    return Supervision()


@pytest.fixture
def centre(site: BrokerFixture, tmp_path: Path, centre_supervision: Supervision) -> Iterator[Centre]:
    c = Centre(site, tmp_path / "centre.db", centre_supervision).start()
    try:
        yield c
    finally:
        c.close()
