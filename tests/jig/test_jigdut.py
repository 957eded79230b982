"""JigDut's mapping from a scenario's words (input names, states) to the jig's channels, and
the capabilities a jig's wiring gives: through the simulated jig on a pty, into a virtual
device's control file (no firmware needs to run for this)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from firelink.virtual import device as virtual
from tests.hil.dut import JigDut, MissingCapability, SerialDut, VirtualDut
from tests.hil.jig import JIG_WIRING, Jig, SimJig

CONFIG = {"device_id": "fl-jigdut", "broker": {"host": "127.0.0.1", "port": 1},
          "inputs": [{"name": "panel_fire", "kind": "fire", "channel": "in1", "zone": 1},
                     {"name": "tamper", "kind": "tamper", "channel": "in4", "contact": "nc", "zone": 4},
                     {"name": "zone6", "kind": "fire", "channel": "in6", "eol": True, "zone": 6},
                     {"name": "valve", "kind": "supervisory", "channel": "in7", "zone": 7},
                     {"name": "battery", "kind": "battery", "channel": "battery", "zone": 8}]}


def rig(tmp_path: Path, wiring: dict[str, Any]) -> Iterator[tuple[JigDut, Path]]:
    d = tmp_path / "dev"
    inner = VirtualDut.create(d, CONFIG)
    path = tmp_path / "jig.json"
    path.write_text(json.dumps(wiring))
    with SimJig(d, tmp_path / "jig.log", wiring=path) as sim:
        jig = Jig.open(sim.path)
        try:
            yield JigDut(inner, jig, d), d
        finally:
            jig.close()


@pytest.fixture
def full(tmp_path: Path) -> Iterator[tuple[JigDut, Path]]:
    yield from rig(tmp_path, json.loads(JIG_WIRING.read_text()))


@pytest.fixture
def partial(tmp_path: Path) -> Iterator[tuple[JigDut, Path]]:
    w = json.loads(JIG_WIRING.read_text())
    del w["power"], w["sense"], w["eol"]["in7"], w["contacts"]["in4"]
    yield from rig(tmp_path, w)


def inputs(d: Path) -> dict[str, int]:
    return virtual.read_control(d)["inputs"]


def test_names_and_states_become_the_jigs_switches(full: tuple[JigDut, Path]) -> None:
    dut, d = full
    assert dut.capabilities == {"inputs", "eol", "power", "reset", "indicators"}
    dut.set_input("panel_fire", "active")
    assert inputs(d)["in1"] == 0 and dut.edge_time is not None
    dut.set_input("tamper", "normal")  # normally closed: normal is a closed contact
    assert inputs(d)["in4"] == 0
    dut.set_input("tamper", "active")
    assert inputs(d)["in4"] == 1
    bands = virtual.board_info(d)["eol"]
    for state in ("normal", "active", "open", "short"):
        dut.set_input("zone6", state)
        spec = virtual.find_input(d, "zone6")
        assert virtual.state_of(spec, inputs(d)["in6"], virtual.board_info(d)) == state, (state, bands)
    # A plain contact on a line the jig drives with resistors: closed is the short, open the open.
    dut.set_input("valve", "active")
    assert inputs(d)["in7"] < bands["short_max"]
    dut.set_inputs({"valve": "normal", "panel_fire": "normal"})
    assert inputs(d)["in7"] == 4095 and inputs(d)["in1"] == 1
    with pytest.raises(virtual.WorldError, match="only active or normal"):
        dut.set_input("panel_fire", "short")
    with pytest.raises(MissingCapability, match="raw levels"):
        dut.set_input("panel_fire", raw=0)
    with pytest.raises(MissingCapability, match=r"needs\('path'\)"):
        dut.set_link("wifi", False)
    with pytest.raises(MissingCapability, match="battery"):
        dut.set_input("battery", "active")


def test_a_jig_lacking_a_part_lacks_its_capability(partial: tuple[JigDut, Path]) -> None:
    dut, d = partial
    assert dut.capabilities == {"inputs", "eol", "reset"}
    with pytest.raises(MissingCapability, match=r"cannot cut and restore the device's supply: the jig on .* is not "
                                                r"wired for it.*@pytest.mark.needs\('power'\)"):
        dut.power_cut()
    with pytest.raises(MissingCapability, match="nothing on in4"):
        dut.set_input("tamper", "active")
    with pytest.raises(MissingCapability, match="nothing on in7"):
        dut.set_input("valve", "active")
    with pytest.raises(MissingCapability, match="indicators"):
        dut.read_indicators()
    dut.set_input("panel_fire", "active")  # what it has still works
    assert inputs(d)["in1"] == 0


def test_the_virtual_device_and_a_bare_board_say_what_they_lack(tmp_path: Path) -> None:
    v = VirtualDut.create(tmp_path / "v", CONFIG)
    assert {"inputs", "power", "path", "clock", "battery"} <= v.capabilities and "link" not in v.capabilities
    board = SerialDut("/dev/null-board")
    assert board.capabilities == frozenset()
    with pytest.raises(MissingCapability, match="needs the test jig"):
        board.set_input("panel_fire", "active")
    with pytest.raises(MissingCapability, match="NTP server"):
        board.set_clock_synced(False)
