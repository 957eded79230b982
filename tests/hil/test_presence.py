"""Whether the centre knows the device is there: the retained `online` birth on every
(re)connect, the broker's last will `offline` when the device dies, and the centre's own
supervision raising "device lost" within the supervision time and "back" when it returns."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from firelink.centre.devices import Supervision
from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut
from tests.hil.link_proxy import LinkProxy
from tests.host.mqtt_peer import Peer, wait_until

HEARTBEAT_S = 5  # the shortest the configuration allows
SUPERVISION_S = 8.0  # one heartbeat interval, its jitter, and margin
WILL_S = 3.0  # a dead process's socket closes at once: the broker publishes its will promptly


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    return {**dut_config, "heartbeat_s": HEARTBEAT_S}


@pytest.fixture
def centre_supervision() -> Supervision:
    return Supervision(fixed_s=SUPERVISION_S)


def _retained_status(site: BrokerFixture, device: str) -> dict[str, Any]:
    """What the broker would tell a newcomer about the device (its retained status)."""
    peer = Peer(site.host, site.port, site.centre_user, site.centre_pass)
    assert not peer.connect().is_failure
    try:
        topic = f"firelink/{device}/status"
        peer.subscribe(topic)
        wait_until(lambda: peer.messages(topic), 5)
        return json.loads(peer.messages(topic)[-1])
    finally:
        peer.close()


@pytest.mark.needs("link", "reset", "power")
def test_online_on_every_connect_and_offline_will_when_killed(centre: Centre, dut: Dut, site: BrokerFixture,
                                                              link: LinkProxy) -> None:
    dev = dut.device_id

    def live(n: int, state: str, timeout_s: float, what: str) -> dict[str, Any]:
        def nth() -> Any:
            got = [r for r in centre.messages(dev, "status") if not r.retained]
            return got[n] if len(got) > n else None
        r = centre.wait(nth, timeout_s, what)
        assert r.doc["state"] == state, f"status #{n}: {r.doc} (wanted {state}: {what})"
        return r.doc

    first = live(0, "online", 15, "online at power-on")
    assert first["reset"] == "power_on" and first["fw"]
    # Reconnect 1: the link drops (the proxy resets the connection and refuses new ones) and returns.
    mark = dut.log_position()
    link.cut()
    dut.wait_for_log(r"INFO mqtt: reconnecting in \d+ ms", timeout_s=5, since=mark)
    live(1, "offline", WILL_S, "last will after the link dropped the connection")
    link.restore()
    live(2, "online", 10, "online after the link returned")
    # Reconnect 2: the reset button.
    dut.restart()
    live(3, "offline", WILL_S, "last will after the reset")
    again = live(4, "online", 15, "online after the reset")
    assert again["reset"] == "hard"
    # Killed (SIGKILL, nothing flushed): only the broker can say it, with the will.
    dut.power_cut()
    will = live(5, "offline", WILL_S, "last will after SIGKILL")
    assert will["reset"] == "hard" and will["fw"] == first["fw"]
    assert centre.live_statuses(dev) == ["online", "offline", "online", "offline", "online", "offline"]
    # The centre shows an `offline` after its hold (offline_hold_s: was it the broker going down?).
    centre.wait(lambda: [c.change for c in centre.changes_of(dev)][-6:] == [
        "online", "offline", "online", "offline", "online", "offline"], 5, "each offline shown")
    assert _retained_status(site, dev)["state"] == "offline"


@pytest.mark.needs("path")
def test_device_lost_and_back_within_the_supervision_time(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 15)
    # A heartbeat interval first: silence shorter than the supervision time is no loss.
    hb = centre.wait(lambda: len(centre.messages(dev, "heartbeat")) >= 2 and centre.messages(dev, "heartbeat"),
                     2 * HEARTBEAT_S + 3, "two heartbeats")
    assert "lost" not in [c.change for c in centre.changes_of(dev)]
    assert all(b.at - a.at < SUPERVISION_S for a, b in zip(hb, hb[1:]))
    n = len(centre.changes_of(dev))

    dut.set_link("wifi", False)
    cut = time.time()
    lost = centre.wait_change(dev, "lost", SUPERVISION_S + 3, since=n)
    assert lost.last_heard is not None and lost.last_heard <= cut
    # Raised when the supervision time ran out after the last message heard: not before, and
    # within the monitor's half-second tick after.
    assert SUPERVISION_S <= lost.at - lost.last_heard <= SUPERVISION_S + 1.0
    assert lost.supervision_s == SUPERVISION_S

    dut.set_link("wifi", True)
    back_from = time.time()
    back = centre.wait_change(dev, "back", 10, since=n)
    assert back.at - back_from <= 5.0
    assert centre.live_statuses(dev)[-1] == "online"
    assert [c.change for c in centre.changes_of(dev)][n:] == ["offline", "lost", "back"]
