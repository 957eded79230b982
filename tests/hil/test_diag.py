"""Issue 12 on the device under test: the diagnostics console attached (`firelink diag`) and
remote commands from the centre (`firelink cmd`), against the real monitor and mosquitto.

- with the console attached and the live view's question asked every second, a fire still
  reaches the centre, and the console shows the input change (the figures: `make bench`,
  tests/bench/bench_diag.py, with and without the console);
- walk test: 607 new, an alarm during it flagged `"test": true`, 607 restore when it ends by itself;
- a broker port that cannot work, set from the centre: the device rolls back by itself and is
  online again;
- a crash induced in a task is in `firelink diag report` after the reset that follows;
- random bytes on the serial line meanwhile: the console still answers and nothing is lost.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from firelink import cli
from firelink.board import diag
from firelink.board.diag import DiagError, DiagLink
from firelink.centre import remote as centre_cmd
from firelink.commands.diag import REFRESH_S, render
from firelink.provision.settings import BrokerURL
from tests.hil.centre import Centre
from tests.hil.dut import Dut, SerialDut

pytestmark = pytest.mark.needs("inputs")


@pytest.fixture
def dut_heapsize() -> str:
    """The reference board (WROVER: PSRAM) has room for the console's answers (fl/diag_ask.py,
    ≈13 KB on this 64-bit port) beside the app; the suite's 256k leaves too little at times. The
    lean board runs without the console (hardware/boards/lean.json, docs/diag.md)."""
    return "384k"


@pytest.fixture
def console(dut: Dut) -> Iterator[DiagLink]:
    dut._release_port()  # a board's console reader lets go (a JigDut's board too; the virtual device has none)
    link = DiagLink(dut.port)
    try:
        link.hello(10)
        yield link
    finally:
        link.close()
        dut._reclaim_port()


def _state(link: DiagLink, name: str) -> str:
    return {i["name"]: i["state"] for i in link.ask("inputs")["inputs"]}[name]


def test_fire_reaches_the_centre_with_the_console_attached_and_the_view_shows_it(centre: Centre, dut: Dut,
                                                                                   console: DiagLink) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 20)
    stop = threading.Event()
    seen: list[tuple[float, str]] = []

    def live_view() -> None:  # what `firelink diag` does: the whole picture twice a second
        while not stop.is_set():
            snap = diag.snapshot(console)
            render(snap)
            seen.append((time.time(), {i["name"]: i["state"] for i in snap["inputs"]}["panel_fire"]))
            stop.wait(REFRESH_S)

    viewer = threading.Thread(target=live_view, daemon=True)
    viewer.start()
    try:
        stop.wait(1.5)
        mark = centre.mark()
        dut.set_input("panel_fire", "active")
        edge = dut.edge_time
        assert edge is not None
        event = centre.wait_event(dev, code="110", q="new", since=mark, timeout_s=10)
        deadline = time.monotonic() + 10
        while not any(at > edge and s == "active" for at, s in seen):
            assert time.monotonic() < deadline, f"the live view never showed panel_fire active: {seen[-3:]}"
            time.sleep(0.05)
        shown = min(at for at, s in seen if at > edge and s == "active")
        print(f"\nwith the console attached: fire to centre {1000 * (event.received_at - edge):.0f} ms, "
              f"live view (0.5 s refresh) {1000 * (shown - edge):.0f} ms")
        mark = centre.mark()
        dut.set_input("panel_fire", "normal")
        centre.wait_event(dev, code="110", q="restore", since=mark, timeout_s=10)
    finally:
        stop.set()
        viewer.join(5)


def test_walk_test_607_alarm_flagged_test_and_timed_exit(centre: Centre, dut: Dut, console: DiagLink) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 20)
    mark = centre.mark()
    assert console.ask("walk on 12s")["walk"]["on"]
    centre.wait_event(dev, code="607", q="new", since=mark, timeout_s=10)
    dut.set_input("panel_fire", "active")
    fire = centre.wait_event(dev, code="110", q="new", since=mark, timeout_s=10)
    dut.set_input("panel_fire", "normal")
    centre.wait_event(dev, code="110", q="restore", since=mark, timeout_s=10)
    flagged = [m.doc for m in centre.messages(dev, "event") if m.doc.get("id") == fire.id]
    assert flagged and flagged[0].get("test") is True, flagged
    assert fire.test is True  # the monitor stored it as a test, not a real alarm
    centre.wait_event(dev, code="607", q="restore", since=mark, timeout_s=40)  # ends by itself
    assert console.ask("walk")["walk"]["on"] is False
    mark = centre.mark()
    dut.set_input("panel_fire", "active")
    after = centre.wait_event(dev, code="110", q="new", since=mark, timeout_s=10)
    assert [m.doc.get("test") for m in centre.messages(dev, "event") if m.doc.get("id") == after.id] == [None]
    assert after.test is False
    dut.set_input("panel_fire", "normal")


def test_guided_walktest_shows_code_test_flag_and_latency_to_the_centre(centre: Centre, dut: Dut,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`firelink diag walktest --centre`: 607 on, the technician's activation seen on the console with
    its code, followed to the centre (flagged test, the monitor's ack and the latency), 607 off."""
    dev, site = dut.device_id, centre.site
    centre.wait_change(dev, "online", 20)
    dut._release_port()
    mark = centre.mark()
    out: list[int] = []
    argv = ["diag", "walktest", "--port", dut.port, "--input", "panel_fire", "--wait", "60",
            "--centre", f"mqtt://{site.host}:{site.port}", "--centre-user", site.centre_user,
            f"--centre-password={site.centre_pass}"]  # one word: a generated password may start with "-"
    tool = threading.Thread(target=lambda: out.append(cli.main(argv)), daemon=True)
    tool.start()
    try:
        centre.wait_event(dev, code="607", q="new", since=mark, timeout_s=20)
        time.sleep(1.0)  # the technician reads the prompt (the tool subscribed before 607 went on)
        dut.set_input("panel_fire", "active")
        centre.wait_event(dev, code="110", q="new", since=mark, timeout_s=10)
        time.sleep(1.0)  # the tool follows the alarm to the centre, then asks for the restore
        dut.set_input("panel_fire", "normal")
        centre.wait_event(dev, code="607", q="restore", since=mark, timeout_s=30)
        tool.join(30)
        assert not tool.is_alive() and out == [0], out
    finally:
        dut._reclaim_port()
    text = " ".join(capsys.readouterr().out.split())
    print(text)
    assert "walk test on" in text and "walk test off" in text, text
    assert "panel_fire: normal → active" in text and "code 110" in text and "flagged test" in text, text
    m = re.search(r"latency to the centre (-?\d+) ms \(the device's stamp → the monitor's ack\)", text)
    assert m and 0 < int(m.group(1)) < 5000, text


def test_remote_commands_and_a_broker_port_that_cannot_work_is_rolled_back(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    site = centre.site
    centre.wait_change(dev, "online", 20)
    target = centre_cmd.Target(BrokerURL("mqtt", site.host, site.port), site.centre_user, site.centre_pass)
    status = centre_cmd.send(target, dev, {"cmd": "status"}, 15)
    assert status["ok"] and "inputs" in status["status"]
    time.sleep(1.1)  # one command a second
    port = centre_cmd.send(target, dev, centre_cmd.build("config get", ["broker.port"]), 15)["value"]
    time.sleep(1.1)
    online_before = len(centre.changes_of(dev))
    done = centre_cmd.send(target, dev, centre_cmd.build("config set", ["broker.port", "1"], rollback_s=20), 15)
    assert done["ok"] and done["value"] == 1
    centre.wait_change(dev, "online", 120, since=online_before)  # back by itself, on the old port
    time.sleep(1.1)
    assert centre_cmd.send(target, dev, centre_cmd.build("config get", ["broker.port"]), 15)["value"] == port
    details = [e.detail or "" for e in centre.events_of(dev) if e.code == "306"]
    assert any("broker.port" in d for d in details) and any("rolled back" in d for d in details), details
    kinds = {m.doc.get("cmd") for m in centre.messages(dev, "cmd")}
    assert {"status", "config set"} <= kinds, kinds  # the monitor recorded the commands
    assert any(m.doc.get("cmd") == "config set" and m.doc.get("ok") for m in centre.messages(dev, "cmd_result"))


def test_firelink_cmd_waits_for_the_result_with_its_id_and_times_out_clearly(centre: Centre, dut: Dut,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    dev, site = dut.device_id, centre.site
    centre.wait_change(dev, "online", 20)
    base = ["--port", str(site.port), "--username", site.centre_user, f"--password={site.centre_pass}"]
    assert cli.main(["cmd", dev, "silence", *base, "--timeout", "15"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["cmd"] == "silence" and result["id"].startswith("c"), result
    time.sleep(1.1)  # one command a second
    t0 = time.monotonic()
    assert cli.main(["cmd", "fl-nobody-here", "status", *base, "--timeout", "2"]) == 3
    took = time.monotonic() - t0
    err = " ".join(capsys.readouterr().err.split())
    assert "no result from fl-nobody-here within 2 s" in err and took < 10, (err, took)
    assert cli.main(["cmd", dev, "reboot", "now", *base]) == 1  # bad words: refused before sending
    assert "takes no arguments" in capsys.readouterr().err
    rec = [m.doc for m in centre.messages(dev, "cmd_result") if m.doc.get("id") == result["id"]]
    assert rec and rec[0]["ok"], "the monitor recorded the result"
    assert any(e.code == "306" and "silence by centre" in (e.detail or "") for e in centre.events_of(dev))


def test_diag_reboot_records_a_306_and_the_device_comes_back(centre: Centre, dut: Dut) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 20)
    mark, changes = centre.mark(), len(centre.changes_of(dev))
    dut._release_port()
    try:
        assert cli.main(["diag", "reboot", "--port", dut.port]) == 0
    finally:
        dut._reclaim_port()
    centre.wait_change(dev, "online", 60, since=changes)
    ev = centre.wait_event(dev, code="306", q="new", since=mark, timeout_s=30)
    assert "reboot by console" in (ev.detail or ""), ev
    centre.wait_event(dev, code="305", q="new", detail="software", since=mark, timeout_s=30)  # the boot it caused


@pytest.mark.needs("flash")  # reads the device's files (secrets, supervisor state) on this host
def test_a_crash_in_a_task_is_in_the_report_after_the_reset(dut: Dut, tmp_path: Path) -> None:
    if isinstance(dut, SerialDut):
        pytest.skip("the crash is induced through the simulated board's selftest")
    with DiagLink(dut.port) as link:
        link.hello(10)
        with pytest.raises(DiagError):
            link.ask("selftest crash", 2)
        assert link.ask("id")["id"]["id"] == dut.device_id  # the console task was restarted
    boots = dut.dev.state().get("boots", 0)
    dut.restart()
    dut.dev.wait_for_boot(boots + 1, 20)
    out = tmp_path / "report"
    deadline = time.monotonic() + 20
    while cli.main(["diag", "report", "--port", dut.port, "--out", str(out)]) != 0:
        assert time.monotonic() < deadline, "no report after the reset"
        time.sleep(0.5)
    rep = json.loads(next(out.glob("*.json")).read_text())
    assert "induced crash" in rep["crash"]["traceback"] and rep["crash"]["part"] == "indicators"
    assert rep["crash"]["reset_after"] and rep["crash"]["boot_after"] > rep["crash"]["boot"]
    md = next(out.glob("*.md")).read_text()
    assert "induced crash" in md and dut.device_id in md
    secret = json.loads((dut.dev.dir / "secrets.json").read_text())["mqtt_password"]
    assert secret not in md and secret not in json.dumps(rep)


@pytest.mark.needs("flash")  # reads the device's files (secrets, supervisor state) on this host
def test_random_bytes_on_the_console_lose_nothing(centre: Centre, dut: Dut, console: DiagLink) -> None:
    dev = dut.device_id
    centre.wait_change(dev, "online", 20)
    rnd = random.Random(12)
    mark = centre.mark()
    for i in range(300):
        line = bytes(rnd.randrange(256) for _ in range(rnd.randrange(200))).replace(b"\x03", b"")
        console._ser.write(line + b"\n")
        if i == 150:
            dut.set_input("panel_fire", "active")
    centre.wait_event(dev, code="110", q="new", since=mark, timeout_s=15)
    assert console.ask("id", 60)["id"]["id"] == dev  # answered once the noise before it is read
    dut.set_input("panel_fire", "normal")
    centre.wait_event(dev, code="110", q="restore", since=mark, timeout_s=15)
    secret = json.loads((dut.dev.dir / "secrets.json").read_text())["mqtt_password"] \
        if not isinstance(dut, SerialDut) else None
    if secret:
        assert secret not in "\n".join(console.other) + "\n".join(console.log)


def test_diag_on_a_board_built_without_the_console_says_so(request: pytest.FixtureRequest, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The lean board (diag_console false) has no console: `firelink diag` says exactly that, at
    once, and the firmware runs on (docs/diag.md). Its shipped build (fl/ in ROMFS) in the board's heap (LEAN_CAP)."""
    if request.config.getoption("--dut") != "virtual":
        pytest.skip("the lean board's build runs here on the virtual device")
    from firelink.board import boards
    from firelink.virtual import device as virtual
    from firelink.virtual.world import create
    from tests.hil.heapfit import LEAN_CAP
    d = tmp_path / "lean"
    create(d, {"device_id": "fl-lean-diag", "broker": {"host": "127.0.0.1", "port": 9}},
           {"mqtt_username": "fl-lean-diag", "mqtt_password": "pw-lean-diag-123"},
           board=boards.load(boards.LEAN))
    dev = virtual.VirtualDevice(d, firmware=virtual.shipped_rom_app(tmp_path / "app"))
    dev.start(heapsize=LEAN_CAP)  # the board's own heap (FIT_CAP is the alarm scenario's tripwire)
    try:
        t0 = time.monotonic()
        assert cli.main(["diag", "--port", str(d), "--once"]) == 2
        took = time.monotonic() - t0
        err = capsys.readouterr().err
        assert "built without the diagnostics console" in " ".join(err.split()), err
        assert took < diag.ANSWER_TIMEOUT_S, f"the answer waited for the timeout ({took:.1f} s)"
        with pytest.raises(diag.NoConsole):  # again: a second technician is told too
            with DiagLink(str(d)) as link:
                link.hello(10)
        assert dev.running()
        log = dev.console_log.read_text(errors="replace")
        assert "MemoryError" not in log, log
    finally:
        dev.stop()
