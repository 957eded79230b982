"""On a board the HIL suite clears what the firmware kept on flash before each scenario
(tests/hil/dut.py SerialDut.STATE_FILES). That list must name every file the firmware writes:
run the firmware on a virtual device through a boot, an input event and a clean stop, and
check that whatever it left beside its provisioning is in the list."""
from __future__ import annotations

from pathlib import Path

from firelink.virtual import device as virtual
from tests.hil.dut import SerialDut

# What provisioning and the virtual device's simulation put there, not the firmware's state.
PROVISIONED = {"config.json", "secrets.json", "board.json", "console.log", "sim", "tty"}


def test_every_file_the_firmware_keeps_is_cleared_between_scenarios(tmp_path: Path) -> None:
    d = virtual.create(tmp_path / "dev", {"device_id": "fl-state", "broker": {"host": "127.0.0.1", "port": 9}},
                       {"mqtt_username": "fl-state", "mqtt_password": "x" * 16})
    dev = virtual.VirtualDevice(d, source=True)
    try:
        dev.start()
        dev.wait_for_log(r"INFO app: inputs: ", 30)
        virtual.set_input(d, "panel_fire", "active")
        dev.wait_for_log(r"INFO recorder: fire 110 new", 10)
        dev.stop()
    finally:
        dev.kill()
    left = {p.name for p in d.iterdir()} - PROVISIONED
    assert left, "the firmware kept nothing: the check proves nothing"
    assert left <= set(SerialDut.STATE_FILES), f"not cleared between scenarios on a board: {left - set(SerialDut.STATE_FILES)}"
