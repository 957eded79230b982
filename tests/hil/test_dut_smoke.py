"""The `dut` fixture itself: the device starts, boots the firmware, talks, and stops."""
from __future__ import annotations

from tests.hil.dut import Dut


def test_dut_starts_runs_the_firmware_and_stops(dut: Dut) -> None:
    dut.wait_for_log(r"INFO app: FireLink \S+ on \w+ as " + dut.device_id, timeout_s=15)
    dut.wait_for_log(r"INFO app: inputs: ", timeout_s=15)
    assert "ok" in dut.exec_("print('ok')")  # the REPL through mpremote, then a soft reboot
    dut.wait_for_log(r"INFO app: FireLink .* reset cause", timeout_s=15)
    dut.write_file("note.txt", b"from the host\n")  # atomic, hash-checked, then a soft reboot
    assert dut.read_file("note.txt") == b"from the host\n"
