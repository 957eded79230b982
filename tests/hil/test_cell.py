"""The 4G path against the modem simulator (host_tools/firelink/virtual/modemsim.py): this Linux has no
PPP, so the modem's AT side is a pty and its data session a loopback route through a fault
proxy of its own (the Wi-Fi path has another). Real mosquitto, the real firmware build."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from firelink.virtual import modemsim
from tests.hil.centre import Centre
from tests.hil.dut import Dut, VirtualDut
from tests.hil.heapfit import CELL_CAP

# Declared, so that a rig without the simulator skips these before the device is provisioned.
pytestmark = pytest.mark.needs("modem")
DELAY_S = 5


@pytest.fixture
def dut_config(request: pytest.FixtureRequest, dut_config: dict[str, Any]) -> dict[str, Any]:
    # A 10 s keepalive: the ping that finds a silent stall comes after ~9.5 s of quiet. A case
    # may add keys of its own (parametrize with indirect=True).
    return {**dut_config, "path_fault_delay_s": DELAY_S, "heartbeat_s": 10,
            "broker": {**dut_config["broker"], "keepalive_s": 10},
            "cellular": {"enabled": True, "failback_stable_s": 10, "backup_test_s": 300},
            **getattr(request, "param", {})}


# The 4G parts (fl.at, fl.modem, fl.pathmgr) take ≈32 KB more heap on this 64-bit port (≈22 KB
# on the board): the reference board (PSRAM) carries them, under tests/hil/heapfit.CELL_CAP; the
# lean board's cap is the single-path application's (tests/hil/test_heap_fit.py).
CELL_HEAP = CELL_CAP


@pytest.fixture
def dut_heapsize(dut_heapsize: str | None) -> str | None:
    return None if dut_heapsize is None else CELL_HEAP


@pytest.fixture
def dut_secrets(dut_secrets: dict[str, Any]) -> dict[str, Any]:
    # Wrong for the simulated SIM (1234): used only when a test locks the SIM with its PIN.
    return {**dut_secrets, "sim_pin": "0000"}


def world(dut: Dut) -> Path:
    if not isinstance(dut, VirtualDut):
        pytest.skip("the modem simulator drives the virtual device only")
    return dut.dir


def state(d: Path) -> dict[str, Any]:
    return modemsim.read_state(d)


def wait_state(d: Path, pred: Callable[[dict[str, Any]], Any], timeout_s: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = state(d)
        if s and pred(s):
            return s
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout_s} s; last state {json.dumps(state(d))[:1500]}")


def control(d: Path, **changes: Any) -> None:
    modemsim.update_control(d, changes)


def test_cold_boot_dials_in_order_and_tests_the_backup_with_a_heartbeat(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    s = wait_state(d, lambda s: s["modem"]["data"], 5, "data mode")["modem"]
    # The module was off: one PWRKEY press of the board's on time (reference: 100 ms, active low).
    assert [p["line"] for p in s["pulses"]] == ["pwrkey"], s["pulses"]
    # (The simulator sees the pin file change every few ms: widths are within ~10 ms.)
    assert 85 <= s["pulses"][0]["ms"] < 600, s["pulses"]
    cmds = [c for c in s["commands"] if c != "AT"]
    want = ["ATE0", "AT+CMEE=1", "AT+CGEREP=2,1", "AT+CPIN?", "AT+CICCID", "AT+CGSN", "AT+CGMR", "AT+CIMI",
            "AT+CNMP=38", 'AT+CGDCONT=1,"IP","v-internet"', "AT+CEREG?", "AT+CSQ", "AT+CPSI?", "AT+COPS?", "ATD*99#"]
    assert cmds == want, cmds
    assert s["data"] and s["dials"] == 1
    # The backup test at boot: the session moves to 4G, a heartbeat goes over it (with the
    # modem's full health: it is the first the centre gets with the modem's identity), and
    # the session returns to Wi-Fi, each move a clean DISCONNECT: the centre never sees offline.
    dut.wait_for_log(r"backup test over cellular: ok", timeout_s=60)
    hb = centre.wait_message(dev, "heartbeat", lambda r: r.doc.get("link", {}).get("path") == "cellular", 10,
                             "the backup test's heartbeat over 4G")
    # The first heartbeat after the modem said who it is carries all of it (the test's, unless
    # a scheduled one went over Wi-Fi in between).
    full = centre.wait_message(dev, "heartbeat", lambda r: (r.doc["link"].get("cell") or {}).get("iccid"), 10,
                               "a heartbeat with the modem's identity")
    cell = full.doc["link"]["cell"]
    assert {k: cell[k] for k in ("op", "act", "band", "apn", "iccid", "imei", "fw", "reg", "state")} == {
        "op": "Viettel", "act": "LTE", "band": "B3", "apn": "v-internet", "iccid": "8984048000000000001",
        "imei": "861234567890123", "fw": "A011B07A7670M7_F", "reg": 1, "state": "data"}, cell
    # The simulated module's CSQ 20: −73 dBm; its CPSI: RSRP −95 dBm, RSRQ −10 dB, SINR 15 dB.
    assert (cell["dbm"], cell["rsrp"], cell["rsrq"], cell["sinr"]) == (-73, -95, -10, 15), cell
    assert cell["resets"] == {"redial": 0, "cfun": 0, "pwrkey": 0, "reset": 0}, cell
    sent = hb.doc["link"]["bytes"]
    assert sent["cellular"][0] > 0 and sent["wifi"][0] > 0, sent
    back = centre.wait_message(dev, "heartbeat", lambda r: r.at > max(hb.at, full.at)
                               and r.doc["link"]["path"] == "wifi", 20, "a heartbeat over Wi-Fi again")
    # Later heartbeats carry what changes, not the identity (bytes on a metered path).
    assert "iccid" not in back.doc["link"]["cell"] and back.doc["link"]["tests"] == [1, 0], back.doc["link"]
    assert "offline" not in centre.live_statuses(dev), centre.live_statuses(dev)


def event_docs(centre: Centre, dev: str, **fields: Any) -> list[dict[str, Any]]:
    return [r.doc for r in centre.messages(dev, "event") if all(r.doc.get(k) == v for k, v in fields.items())]


def wait_event_doc(centre: Centre, dev: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
    return centre.wait(lambda: next(iter(event_docs(centre, dev, **fields)), None), timeout_s,
                       f"event {fields}")


def test_primary_stall_while_idle_faults_and_heartbeats_go_over_4g(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=15)
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    dut.wait_for_log(r"backup test over cellular: ok[\s\S]*connected to \S+ over wifi", timeout_s=30)
    mark = time.time()
    control(d, wifi="stall")
    # Nobody says Wi-Fi is dead: the MQTT ping finds it, the session moves to 4G, and the
    # primary-path fault (351) goes out over the backup after path_fault_delay_s.
    fault = wait_event_doc(centre, dev, 60, code="351", q="new")
    took = time.time() - mark
    assert fault["path"] == "cellular" and fault["input"] == "path_wifi", fault
    print(f"primary stall to 351 at the centre: {took:.1f} s")
    hb = centre.wait_message(dev, "heartbeat", lambda r: r.at > mark and r.doc.get("link", {}).get("path") == "cellular",
                             30, "a heartbeat over 4G")
    assert hb.doc["link"]["paths"]["wifi"] == "suspect", hb.doc["link"]
    assert state(d)["paths"]["cellular"]["up"] > 0


def test_fire_during_a_silent_primary_stall_goes_over_4g(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    centre.wait_event(dev, code="305", timeout_s=15)
    # After the backup test at boot (a heartbeat over 4G) has brought the session back to Wi-Fi:
    # the fire must take 4G because Wi-Fi fails, not because the test happened to be on it.
    dut.wait_for_log(r"backup test over cellular: ok[\s\S]*connected to \S+ over wifi", timeout_s=60)
    control(d, wifi="stall")
    t0 = time.time()
    dut.set_input("panel_fire", "active")
    # The fire's PUBLISH gets no PUBACK within 10 s over Wi-Fi: the session moves to 4G.
    fire = wait_event_doc(centre, dev, 40, code="110", q="new")
    print(f"fire during a silent Wi-Fi stall to the centre over 4G: {time.time() - t0:.1f} s")
    assert fire["path"] == "cellular", fire
    control(d, wifi="pass")
    # Failback once Wi-Fi has been stable for failback_stable_s (10 s here) and the broker
    # answers over it; later events say so.
    dut.wait_for_log(r"back to it", timeout_s=60)
    dut.set_input("panel_fire", "normal")
    restore = wait_event_doc(centre, dev, 30, code="110", q="restore")
    assert restore["path"] == "wifi", restore
    assert len(event_docs(centre, dev, code="110", q="new")) == 1, "fire delivered once"


def test_sim_missing_and_wrong_pin_are_faults_and_the_pin_is_tried_once(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    control(d, modem={"sim": "missing"})
    fault = wait_event_doc(centre, dev, 40, code="353", q="new", input="modem_sim")
    assert fault["detail"] == "SIM not inserted" and fault["path"] == "wifi", fault
    control(d, modem={"sim": "ready"})
    wait_event_doc(centre, dev, 60, code="353", q="restore", input="modem_sim")
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    # A SIM that asks for its PIN; the configured one is wrong: tried once, never again.
    control(d, modem={"sim": "pin"})
    fault = wait_event_doc(centre, dev, 40, code="353", q="new", input="modem_sim", detail="SIM PIN refused")
    dut.wait_for_log(r"modem given up until the config changes", timeout_s=10)
    n = wait_state(d, lambda s: s["modem"]["commands"][-1:] == ["AT+CPIN=0000"], 5,
                   "the PIN as the last command")["modem"]["command_count"]
    time.sleep(8)  # what is tested is that nothing more happens
    s = state(d)["modem"]
    assert [c for c in s["commands"] if c.startswith("AT+CPIN=")] == ["AT+CPIN=0000"]
    assert s["command_count"] == n, s["commands"][-5:]


def test_dead_modem_climbs_the_ladder_and_the_failing_backup_test_is_reported(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    # The module locks up so that only its RESET line brings it back; meanwhile its data path
    # stalls, so the backup test that follows each modem reset fails.
    control(d, cellular="stall", modem={"hang": "reset", "drops": 1})
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=120)
    pulses = [(p["line"], p["ms"]) for p in state(d)["modem"]["pulses"]]
    assert [p[0] for p in pulses] == ["pwrkey", "pwrkey", "pwrkey", "reset"], pulses
    # reference board: PWRKEY on 100 ms, off 2600 ms, RESET 2500 ms (hardware/boards/reference.json)
    assert 2550 <= pulses[1][1] < 3200 and 85 <= pulses[2][1] < 600 and 2450 <= pulses[3][1] < 3100, pulses
    # Failing backup test → 352 `backup_test`, reported over Wi-Fi.
    dut.wait_for_log(r"backup test over cellular: FAILED", timeout_s=30)
    fault = wait_event_doc(centre, dev, 20, code="352", q="new", input="backup_test")
    assert fault["path"] == "wifi", fault
    resets = [e["detail"] for e in event_docs(centre, dev, code="305", input="modem")]
    assert resets == ["pwrkey", "reset"] or centre.wait(
        lambda: [e["detail"] for e in event_docs(centre, dev, code="305", input="modem")] == ["pwrkey", "reset"],
        20, "the modem resets reported"), resets


def test_operator_drops_the_data_session_redial_nothing_lost(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    dut.set_link("wifi", False)  # 4G alone carries the session
    centre.wait_message(dev, "heartbeat", lambda r: r.doc.get("link", {}).get("path") == "cellular", 40,
                        "the session over 4G")
    control(d, modem={"drops": 1})
    dut.wait_for_log(r"data session ended by the network", timeout_s=10)
    dut.set_input("panel_fire", "active")  # while no path works: kept, sent after the redial
    fire = wait_event_doc(centre, dev, 60, code="110", q="new")
    assert fire["path"] == "cellular", fire
    s = wait_state(d, lambda s: s["modem"]["data"], 5, "data mode again")["modem"]
    assert s["dials"] == 2 and [p["line"] for p in s["pulses"]] == ["pwrkey"], s
    # Fire goes first: an event recorded before it (the path fault) may still be on its way.
    def contiguous() -> bool:
        seqs = sorted({e["seq"] for e in event_docs(centre, dev)})
        return seqs == list(range(seqs[0], seqs[-1] + 1))

    assert contiguous() or centre.wait(contiguous, 30, "every event, none missing"), \
        sorted(e["seq"] for e in event_docs(centre, dev))


def test_wifi_flapping_bounded_switches_no_duplicates(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    dut.wait_for_log(r"backup test over cellular: ok[\s\S]*connected to \S+ over wifi", timeout_s=60)
    pos = dut.log_position()
    control(d, wifi="flap")  # pass and reset alternately, 5 s each
    state_ = "normal"
    for _ in range(8):  # 40 s of flapping with a fire change every 5 s
        state_ = "active" if state_ == "normal" else "normal"
        dut.set_input("panel_fire", state_)
        time.sleep(5)  # the flapping itself is what is tested: changes spread over it
    control(d, wifi="pass")
    centre.wait(lambda: len([e for e in centre.events_of(dev) if e.code == "110"]) >= 8, 90, "all 8 fire changes")
    moves = len(re.findall(r"moving to cellular|back to it", dut.log_text(pos)))
    # The cap (6 per 10 min) holds back failbacks; moving off a failed path is never refused.
    assert moves <= 7, f"{moves} switches in under 10 minutes (cap 6 + the last failover)"
    fires = [e for e in centre.events_of(dev) if e.code == "110"]
    assert len(fires) == 8 and len({e.id for e in fires}) == 8, [(e.seq, e.q) for e in fires]
    assert [e.q for e in sorted(fires, key=lambda e: e.seq)] == ["new", "restore"] * 4


@pytest.mark.parametrize("dut_config", [{"paths": ["cellular"]}], indirect=True)
def test_a_site_without_wifi_runs_on_4g_alone(centre: Centre, dut: Dut) -> None:
    d = world(dut)
    dev = dut.device_id
    boot = wait_event_doc(centre, dev, 60, code="305", input="")
    assert boot["path"] == "cellular", boot
    dut.set_input("panel_fire", "active")
    fire = wait_event_doc(centre, dev, 30, code="110", q="new")
    assert fire["path"] == "cellular", fire
    hb = centre.wait_message(dev, "heartbeat", lambda r: (r.doc["link"].get("cell") or {}).get("iccid"), 30,
                             "a heartbeat with the modem's health")
    link = hb.doc["link"]
    assert (link["path"], link["paths"], link["cell"]["state"]) == ("cellular", {"cellular": "up"}, "data"), link
    assert not hb.doc["faults"], hb.doc["faults"]  # no Wi-Fi configured: no Wi-Fi fault
    assert "backup test" not in dut.log_text()  # 4G alone: its session is its test
    # The modem's faults are reported with 4G alone too: over 4G, once it is back.
    control(d, modem={"sim": "missing"})
    dut.wait_for_log(r"SIM not inserted", timeout_s=30)
    control(d, modem={"sim": "ready"})
    fault = wait_event_doc(centre, dev, 90, code="353", q="new", input="modem_sim")
    assert fault["path"] == "cellular", fault
    wait_event_doc(centre, dev, 30, code="353", q="restore", input="modem_sim")
