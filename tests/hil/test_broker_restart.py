"""A backlog of 200 events delivered through a broker restart: every event reaches the centre,
each once after de-duplication by id, fire first, then the rest oldest first.

The broker is this test's own mosquitto (not the session's), restarted in the middle of the
delivery: the device and the centre both lose their connections, reconnect, resume their
persistent sessions, and whatever was in flight is sent again."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import BrokerFixture, own_site
from tests.hil.backlog import FAST_INPUTS, as_expected, expected_events, make_backlog
from tests.hil.centre import Centre
from tests.hil.dut import Dut

FAULT_WRITES = 47  # x 4 fault-class events = 188
FIRE_EVERY = 7  # a smoke alarm and its restore after every 7th: 6 x 2 = 12 fire events
BACKLOG = FAULT_WRITES * 4 + (FAULT_WRITES // FIRE_EVERY) * 2  # 200
# Backlog events at the centre when the broker goes down. The device sends ~1000 events/s
# here and the centre stores them in batches a little behind: at 10, the device has most of
# the backlog still to send (measured: the drop came after 40-50 sent).
RESTART_AFTER = 10


@pytest.fixture
def site(tmp_path: Path) -> Iterator[BrokerFixture]:
    with own_site(tmp_path / "broker") as s:  # this scenario stops its broker
        yield s


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    return {**dut_config, "inputs": FAST_INPUTS, "broker": {**dut_config["broker"], "backoff_max_s": 1}}


@pytest.mark.needs("inputs", "path")
def test_backlog_of_200_survives_a_broker_restart_each_once_fire_first(site: BrokerFixture, centre: Centre,
                                                                       dut: Dut) -> None:
    dev = dut.device_id
    boot = centre.wait_event(dev, code="305", timeout_s=15)
    dut.set_link("wifi", False)
    dut.wait_for_log(r"WARN link: wifi went down", timeout_s=5)
    since = dut.log_position()
    assert make_backlog(dut, FAULT_WRITES, FIRE_EVERY, since) == BACKLOG == 200
    expected = expected_events(dut, since, boot.seq + 1)
    assert len([e for e in expected if e.cls == "fire"]) == 12

    # Restart the broker as soon as the first of the backlog has reached the centre.
    restarted = threading.Event()
    at_restart: list[int] = []
    mark = centre.mark()

    def restart_midway() -> None:
        centre.wait(lambda: len(centre.events_of(dev, since=mark)) >= RESTART_AFTER, 30, f"{RESTART_AFTER} events")
        at_restart.append(len(centre.events_of(dev, since=mark)))
        site.broker.restart()
        restarted.set()

    restarter = threading.Thread(target=restart_midway, daemon=True)
    restarter.start()
    t0 = time.time()
    link_up = dut.log_position()
    dut.set_link("wifi", True)
    restarter.join(40)
    assert restarted.is_set(), "the broker was not restarted"
    restart_done = time.time()
    centre.wait(lambda: len(centre.events_of(dev, since=mark)) >= BACKLOG, 60, f"all {BACKLOG} events")
    delivered_s = time.time() - t0
    assert at_restart[0] < BACKLOG, "the whole backlog was delivered before the restart: nothing tested"

    # Every event recorded, each once, with its own code, class, zone, input and sequence number.
    held = [e for e in centre.store.events(dev) if e.seq > boot.seq]
    assert as_expected(held) == expected
    # First arrivals: fire first, then the faults, oldest first.
    arrived = as_expected(centre.events_of(dev, since=mark))
    assert arrived == sorted(expected, key=lambda e: e.key)
    # Messages that were sent again after the restart are held once (and acknowledged again).
    ids = [m.doc["id"] for m in centre.messages(dev, "event") if m.doc.get("seq", 0) > boot.seq]
    assert set(ids) == {e.id for e in held} and len(set(ids)) == BACKLOG
    # The device lost its connection once it had started delivering, and resumed its session.
    dut.wait_for_log(r"INFO mqtt: connected to .* \(session resumed\)", timeout_s=1, since=link_up)
    dut.wait_for_log(r"(ERROR|WARN) mqtt: .*\n(.*\n)*?.*INFO mqtt: reconnecting in", timeout_s=1)
    dut.wait_for_log(r"INFO mqtt: connected to .* \(session resumed\)", timeout_s=1)
    # The device said `online` again on its reconnect.
    centre.wait_message(dev, "status", lambda r: not r.retained and r.at > restart_done - 1
                        and r.doc["state"] == "online", 10, "online after the broker restart")
    print(f"\n{BACKLOG} events delivered in {delivered_s:.1f} s through a broker restart after "
          f"{at_restart[0]}; {len(ids) - BACKLOG} sent twice")
