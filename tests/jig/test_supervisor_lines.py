"""The virtual device's supervisor follows the supply, EN and BOOT lines a jig drives through
sim/control.json (firelink.virtual.supervisor): off is off at once, the port stays, and the
next boot's reset cause says why it booted."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from firelink.virtual import device as virtual


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[virtual.VirtualDevice]:
    d = virtual.create(tmp_path / "dev", {"device_id": "fl-lines", "broker": {"host": "127.0.0.1", "port": 9}})
    virtual.write_control(d, {"power": False})  # the jig's safe state: the device unpowered
    v = virtual.VirtualDevice(d, source=True)
    try:
        yield v
    finally:
        v.kill()


def until_state(v: virtual.VirtualDevice, state: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while v.state().get("state") != state:
        assert time.monotonic() < deadline, f"state {v.state().get('state')}, wanted {state}"
        time.sleep(0.01)


def test_supply_en_and_boot_lines(dev: virtual.VirtualDevice) -> None:
    d = dev.dir
    tty = dev.start()  # the supervisor runs, the firmware does not: no supply
    until_state(dev, "unpowered")
    assert dev.tty() == tty and dev.firmware_pid() is None
    virtual.write_control(d, {"power": True})
    dev.wait_for_log(r"INFO app: FireLink .* reset cause power_on", 20)
    virtual.write_control(d, {"power": False})
    until_state(dev, "unpowered")
    assert dev.state()["firmware_pid"] is None and dev.tty() == tty  # the port outlives the supply
    dev.wait_for_log(r"\[virtual\] supply off", 2)
    virtual.write_control(d, {"power": True})
    dev.wait_for_log(r"INFO app: FireLink .* reset cause power_on", 20)
    virtual.write_control(d, {"en": False})
    until_state(dev, "reset")
    virtual.write_control(d, {"en": True})
    dev.wait_for_log(r"INFO app: FireLink .* reset cause hard", 20)
    # BOOT low at the release of EN: the ROM's download mode, no firmware, until the next reset.
    virtual.write_control(d, {"boot": False, "en": False})
    until_state(dev, "reset")
    virtual.write_control(d, {"en": True})
    dev.wait_for_log(r"BOOT low at reset: download mode", 5)
    until_state(dev, "download")
    assert dev.firmware_pid() is None
    virtual.write_control(d, {"boot": True, "en": False})
    until_state(dev, "reset")  # seen held: a pulse shorter than the supervisor's 50 ms look could be missed
    virtual.write_control(d, {"en": True})
    dev.wait_for_log(r"INFO app: FireLink .* reset cause hard", 20)
    assert dev.state()["boots"] == 4
