"""The HIL suite's fixtures: the device under test, the site it reports to, and the centre.

`dut` is the device under test (`--dut virtual`, the default, or a serial port), provisioned
from `dut_config`, `dut_secrets` and `dut_certs` (file name -> bytes) and connected to `site`:
the session's mosquitto (tests/conftest.py) unless a module overrides `site`. A module can
change the virtual device's configuration by overriding `dut_config`, e.g. to shorten the
heartbeat:

    @pytest.fixture
    def dut_config(dut_config): return {**dut_config, "heartbeat_s": 5}

The rig, from the options (tests/conftest.py): `--dut virtual|PORT`, `--jig sim|PORT` (the test
jig, issue 13; `sim` runs the jig firmware under the unix port against the virtual device) and
`--broker-host` (where the device finds the suite's broker). The device always reaches the
broker through `link`, the suite's TCP proxy (tests/hil/link_proxy.py), which makes the link
faults. A scenario declares what it needs of the rig, `@pytest.mark.needs("inputs", "power")`
(names: tests/hil/dut.py CAPABILITIES); where the rig lacks one it is skipped with the reason.
Scenarios needing something a jig provides are also marked `jig`: `-m jig` selects them.

`centre` is the receiving centre: the real monitor (tests/hil/centre.py), started before
the device when a test asks for it first (`def test_x(centre, dut)`), so it sees the
device's first `online`. `centre_supervision` sets its supervision times.

What a virtual device runs, from the environment:
  FL_DUT_FIRMWARE  `build` (default): the application as it ships, the .mpy files of
                   firelink.board.build.build_app("xtensawin"), built once per session into a
                   temporary directory; `source`: the firmware/ sources; or a directory.
  FL_HEAPSIZE      the unix port's heap, `256k` by default: the whole suite runs within it
                   (objects are 64-bit here, so an ESP32 needs less); `none` lifts the cap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from firelink.centre.devices import Supervision
from firelink.virtual import device as virtual
from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import CAPABILITIES, Dut, JigDut, VirtualDut, make_dut
from tests.hil.jig import Jig, SimJig
from tests.hil.link_proxy import LinkProxy

DEFAULT_HEAPSIZE = "256k"
# What a jig gives a scenario; `-m jig` runs the scenarios needing any of it (the CI's jig pass).
JIG_CAPABILITIES = {"inputs", "eol", "power", "reset", "indicators"}


def _dut_spec(config: pytest.Config) -> str:
    return str(config.getoption("--dut"))  # declared in tests/conftest.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*capabilities): what the scenario needs of the rig "
                                       "(tests/hil/dut.py CAPABILITIES); skipped where it is missing")
    config.addinivalue_line("markers", "jig: the scenario needs something a test jig provides (set from `needs`)")


def _needs(item: pytest.Item) -> set[str]:
    out: set[str] = set()
    for m in item.iter_markers("needs"):
        out.update(m.args)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs = _needs(item)
        unknown = needs - set(CAPABILITIES)
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown capability {', '.join(sorted(unknown))} in "
                                    f"@pytest.mark.needs (known: {', '.join(CAPABILITIES)})")
        if needs & JIG_CAPABILITIES:
            item.add_marker(pytest.mark.jig)


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
def link(request: pytest.FixtureRequest, site: BrokerFixture) -> Iterator[LinkProxy]:
    """The device's way to the broker: pass, delay, stall, reset, refuse (link_proxy.py)."""
    host = request.config.getoption("--broker-host") or "127.0.0.1"
    with LinkProxy(site.host, site.port, host=host).start() as proxy:
        yield proxy


@pytest.fixture
def dut_config(site: BrokerFixture, link: LinkProxy) -> dict[str, Any]:
    return {"device_id": site.device_user, "broker": {"host": link.host, "port": link.port}}


@pytest.fixture
def dut_secrets(site: BrokerFixture) -> dict[str, Any]:
    return {"mqtt_username": site.device_user, "mqtt_password": site.device_pass}


@pytest.fixture
def dut_certs() -> dict[str, bytes]:
    return {}


@pytest.fixture
def dut(request: pytest.FixtureRequest, tmp_path: Path, dut_config: dict[str, Any], dut_secrets: dict[str, Any],
        dut_certs: dict[str, bytes], dut_firmware: Path, dut_heapsize: str | None) -> Iterator[Dut]:
    spec, jig_port = _dut_spec(request.config), request.config.getoption("--jig")
    if jig_port == "sim" and spec != "virtual":
        raise pytest.UsageError("--jig sim drives the virtual device only: give a real jig's port with --dut PORT")
    if jig_port not in (None, "sim") and spec == "virtual":
        raise pytest.UsageError("a real jig (--jig PORT) needs a board (--dut PORT), not the virtual device")
    d = make_dut(spec, tmp_path / "device", dut_config, dut_secrets, dut_certs,
                 firmware=dut_firmware, heapsize=dut_heapsize)
    sim_jig: SimJig | None = None
    jig: Jig | None = None
    try:
        if jig_port is not None:
            if jig_port == "sim":
                assert isinstance(d, VirtualDut)
                sim_jig = SimJig(d.dir, tmp_path / "jig.log")
                jig_port = sim_jig.start()
            jig = Jig.open(jig_port)
            d = JigDut(d, jig, tmp_path / "device")
        available = d.capabilities | {"link"}  # the proxy is on every rig
        missing = sorted(_needs(request.node) - available)
        if missing:
            pytest.skip("; ".join(f"needs {cap}: {d.missing_reason(cap)}" for cap in missing))
        d.start()
        try:
            yield d
        finally:
            d.stop()
    finally:
        inner = d.inner if isinstance(d, JigDut) else d
        if isinstance(inner, VirtualDut):
            inner.dev.kill()  # a virtual device must not outlive its test, whatever happened
        if jig is not None:
            jig.close()
        if sim_jig is not None:
            sim_jig.stop()


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
