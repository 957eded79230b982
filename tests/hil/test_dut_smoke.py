"""The `dut` fixture itself: the device starts, boots the firmware, talks, and stops."""
from __future__ import annotations

import time

import pytest

from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.link_proxy import LinkProxy


def test_dut_starts_runs_the_firmware_and_stops(dut: Dut) -> None:
    dut.wait_for_log(r"INFO app: FireLink \S+ on \w+ as " + dut.device_id, timeout_s=15)
    dut.wait_for_log(r"INFO app: inputs: ", timeout_s=15)
    assert "ok" in dut.exec_("print('ok')")  # the REPL through mpremote, then a soft reboot
    dut.wait_for_log(r"INFO app: FireLink .* reset cause", timeout_s=15)
    dut.write_file("note.txt", b"from the host\n")  # atomic, hash-checked, then a soft reboot
    assert dut.read_file("note.txt") == b"from the host\n"


# fl/app.py's clean stop waits this long for the offline message's PUBACK before it gives up.
STOP_WAIT_S = 2.0


@pytest.mark.needs("link")
def test_the_raw_repl_is_reached_while_the_clean_stop_waits_on_a_stalled_broker(centre: Centre, dut: Dut,
                                                                                link: LinkProxy) -> None:
    """mpremote's break-in is ^C, then ^A once the port is drained (firelink.board.device): the bytes
    after ^C belong to the REPL, not to the diagnostics console (docs/diag.md, "Breaking in").
    The console is read every 500 ms; with the broker stalled the clean stop waits its whole
    2 s for the offline PUBACK, so the console's reader runs during it (before the fix it took
    the ^A every time). Needs nothing of a jig: runs on a bare board too."""
    centre.wait_event(dut.device_id, code="305", timeout_s=15)  # booted and delivering
    link.set_mode("stall")
    mark = centre.mark()
    asked = time.monotonic()
    with dut.repl() as dev:
        # The REPL runs once main.py has ended, i.e. after the stop's wait: a lower bound, so a
        # busy machine cannot break it. (On a board the stop's log lines went to mpremote.)
        entered_after_s = time.monotonic() - asked
        assert "ok" in dev.run("print('ok')")
    assert entered_after_s >= STOP_WAIT_S, f"the raw REPL came {entered_after_s:.2f} s after ^C: the stop did not wait"
    link.restore()
    centre.wait_event(dut.device_id, code="305", since=mark, timeout_s=30)  # and the app is back at work
