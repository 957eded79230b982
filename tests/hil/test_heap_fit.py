"""The lean board's heap: the application as `firelink flash` ships it (the .mpy build, with the
lean board's board.json, fl/ in ROMFS) runs the alarm scenario under the lean board's cap on a real virtual
device, mosquitto and the monitor: boot, online, fire alarm acknowledged, restore, three
heartbeats, no MemoryError, one boot (tests/hil/heapfit.py). `make bench` prints how far below
the cap the smallest passing heap is."""
from __future__ import annotations

from pathlib import Path

import pytest

from firelink.virtual import device as virtual
from tests.hil.heapfit import FIT_CAP, LEAN_CAP, alarm_at_heap, kbytes


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Always the lean board's shipped build, whatever FL_DUT_FIRMWARE says: the sources compile at
    # import and need heap a board never spends. fl/ is a ROMFS image that the virtual device maps
    # outside the heap and mounts at /rom, as the lean board's ROMFS partition (firelink.board.romfs).
    return virtual.shipped_rom_app(tmp_path_factory.mktemp("app"))


def test_alarm_scenario_fits_the_lean_board_heap(request: pytest.FixtureRequest, tmp_path: Path,
                                                 shipped: Path) -> None:
    if request.config.getoption("--dut") != "virtual":
        pytest.skip("a heap cap is set on the virtual device (the unix port's -X heapsize)")
    out = alarm_at_heap(tmp_path / "site", FIT_CAP, shipped)
    assert out.fits, (f"the alarm scenario no longer fits -X heapsize={FIT_CAP}: reached {out.reached!r}, "
                      f"{out.memory_errors} MemoryError, {out.boots} boots; {out.why}")
    assert (out.memory_errors, out.boots) == (0, 1)
    assert out.heap_peak_b is not None and out.heap_peak_b < kbytes(FIT_CAP)
    assert kbytes(FIT_CAP) <= kbytes(LEAN_CAP) == 160 * 1024  # the board's cap: only ever lowered
