"""The 4G path against the modem simulator (host_tools/firelink/modemsim.py): this Linux has no
PPP, so the modem's AT side is a pty and its data session a loopback route through a fault
proxy of its own (the Wi-Fi path has another). Real mosquitto, the real firmware build."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from firelink import modemsim
from tests.hil.centre import Centre
from tests.hil.dut import Dut, VirtualDut

DELAY_S = 5


@pytest.fixture
def dut_config(dut_config: dict[str, Any]) -> dict[str, Any]:
    # A 10 s keepalive: the ping that finds a silent stall comes after ~9.5 s of quiet.
    return {**dut_config, "path_fault_delay_s": DELAY_S, "heartbeat_s": 10,
            "broker": {**dut_config["broker"], "keepalive_s": 10},
            "cellular": {"enabled": True, "failback_stable_s": 10, "backup_test_s": 300}}


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


def test_cold_boot_dials_in_order(dut: Dut) -> None:
    d = world(dut)
    dut.wait_for_log(r"INFO modem: 4G data up", timeout_s=60)
    s = state(d)["modem"]
    # The module was off: one PWRKEY press of the board's on time (reference: 100 ms, active low).
    assert [p["line"] for p in s["pulses"]] == ["pwrkey"], s["pulses"]
    # (The simulator sees the pin file change every few ms: widths are within ~10 ms.)
    assert 85 <= s["pulses"][0]["ms"] < 600, s["pulses"]
    cmds = [c for c in s["commands"] if c != "AT"]
    want = ["ATE0", "AT+CMEE=1", "AT+CGEREP=2,1", "AT+CPIN?", "AT+CICCID", "AT+CGSN", "AT+CIMI", "AT+CNMP=38",
            'AT+CGDCONT=1,"IP","v-internet"', "AT+CEREG?", "AT+CSQ", "AT+COPS?", "ATD*99#"]
    assert cmds == want, cmds
    assert s["data"] and s["dials"] == 1


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
    dut.wait_for_log(r"backup test over cellular: ok", timeout_s=30)
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
