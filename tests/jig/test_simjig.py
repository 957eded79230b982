"""The jig firmware under the unix port on a pseudo-terminal, spoken to as a real jig is
(tests/hil/jig.py over pyserial): its answers, its clock, and line noise on the port."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import serial

from firelink.virtual import device as virtual
from tests.hil.jig import Jig, JigError, SimJig


@pytest.fixture
def device(tmp_path: Path) -> Path:
    d = tmp_path / "dev"
    virtual.create(d, {"device_id": "fl-jigtest", "broker": {"host": "127.0.0.1", "port": 1}})
    return d


@pytest.fixture
def sim(device: Path, tmp_path: Path) -> Iterator[SimJig]:
    with SimJig(device, tmp_path / "jig.log") as s:
        yield s


def control(d: Path) -> dict:
    return json.loads((d / "sim" / "control.json").read_text())


def test_the_jig_drives_the_virtual_devices_control_file_and_stamps_edges(sim: SimJig, device: Path) -> None:
    jig = Jig.open(sim.path)
    try:
        assert jig.version["wiring"] == "firelink-jig-v1" and jig.version["dut"] == "firelink-ref-v2"
        assert set(jig.contacts) == {"in1", "in2", "in3", "in4", "in5"} and set(jig.eol) == {"in6", "in7"}
        c = control(device)
        assert c["power"] is False and c["inputs"]["in4"] == 1  # safe state: off, every contact open
        before = time.time()
        edge = jig.set({"in1": "closed", "in6": "active"})
        after = time.time()
        assert before - 0.05 <= edge <= after + 0.05  # the jig's clock mapped onto ours
        c = control(device)
        assert c["inputs"]["in1"] == 0 and 250 <= c["inputs"]["in6"] < 1300
        with pytest.raises(JigError, match="in1 is a dry contact"):
            jig.set({"in1": "short"})
        with pytest.raises(JigError, match="rail is at 0 mV"):
            jig.power(True)  # no device running: its rail never comes up
        assert jig.read() == {"buzzer": 0, "led_fault": 0, "led_status": 0, "rail_mv": 0}
    finally:
        jig.close()


def test_line_noise_gets_errors_and_the_jig_answers_on(sim: SimJig) -> None:
    port = serial.Serial(sim.path, 115200, timeout=2)
    try:
        port.write(b"\x00\xff\xfe garbage \x03\x03\r\n" + b"A" * 1000 + b"\nFROB\nVERSION\n")
        lines = [port.readline().decode("ascii", "replace").strip() for _ in range(5)]
    finally:
        port.close()
    assert lines[0].startswith("READY jig")
    assert lines[1:4] == ["ERR not printable ASCII text", "ERR line too long (max 200 bytes)",
                          lines[3]] and lines[3].startswith("ERR unknown command 'FROB'")
    assert lines[4].startswith("OK VERSION jig=")
    # The port can be closed and opened again (the next suite run): the jig is still there.
    jig = Jig.open(sim.path)
    try:
        assert jig.command("STATE").text.startswith("STATE in1=open")
    finally:
        jig.close()
