"""A link that flaps: Wi-Fi goes down and up every few hundred ms. Each change closes every
socket on the path and the connection is rebuilt; a fire raised in the middle of it is on
flash within 1 s, and reaches the centre once the link stays up."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.netfaults import FLASH_LIMIT_S, fire_to_flash_s

FLAP_S = 0.3


@pytest.fixture
def flapping(dut: Dut) -> Iterator[threading.Event]:
    stop = threading.Event()

    def flap() -> None:
        up = True
        while not stop.is_set():
            up = not up
            dut.set_link("wifi", up)
            stop.wait(FLAP_S)
        dut.set_link("wifi", True)

    t = threading.Thread(target=flap, name="flap", daemon=True)
    t.start()
    yield stop
    stop.set()
    t.join(5)


@pytest.mark.needs("inputs", "path")
def test_fire_is_on_flash_at_once_while_the_link_flaps(centre: Centre, dut: Dut,
                                                      flapping: threading.Event) -> None:
    centre.wait_event(dut.device_id, code="305", timeout_s=15)  # booted and was connected once
    dut.wait_for_log(r"WARN link: wifi went down", timeout_s=5)
    dut.wait_for_log(r"INFO link: wifi is up", timeout_s=5)
    dut.wait_for_log(r"WARN link: wifi went down", timeout_s=5)
    took = fire_to_flash_s(dut)
    assert took <= FLASH_LIMIT_S, f"fire on flash after {took:.2f} s while the link flapped"
    for _ in range(2):  # a few more flaps with the fire queued
        dut.wait_for_log(r"WARN link: wifi went down", timeout_s=5)
    flapping.set()
    alarm = centre.wait_event(dut.device_id, code="110", q="new", timeout_s=30)
    assert alarm.cls == "fire"
