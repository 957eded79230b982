"""`firelink virtual`: the unix port on a real pseudo-terminal, driven by real mpremote.

Most cases run a small stand-in main.py (prints lines in a loop, exits with a status when
told) so that they test the runner, not the firmware; the last ones run the real firmware
against the session's mosquitto.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from mpremote.transport_serial import SerialTransport

from firelink.commands import virtual as virtual_cmd
from firelink.virtual import device as virtual
from firelink.virtual.device import VirtualDevice

STAND_IN = """\
import os, sys, time
print("boot cause", os.getenv("FL_RESET_CAUSE"))
n = 0
while True:
    print("tick", n)
    n += 1
    try:
        with open("exit_status") as f:
            status = int(f.read())
        os.remove("exit_status")
        sys.exit(status)
    except OSError:
        pass
    time.sleep(0.05)
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "main.py").write_text(STAND_IN)
    return fw


@pytest.fixture
def device(tmp_path: Path, stand_in: Path) -> Iterator[VirtualDevice]:
    dev = VirtualDevice(tmp_path / "dev", firmware=stand_in)
    yield dev
    dev.kill()


def _alive(pid: int) -> bool:
    return virtual._alive(pid)


def _transport(dev: VirtualDevice) -> SerialTransport:
    return SerialTransport(dev.tty(), timeout=2)


# --- the runner ---

def test_start_streams_the_console_on_a_pty(device: VirtualDevice) -> None:
    tty = device.start()
    assert tty.startswith("/dev/pts/") and os.readlink(device.tty_link) == tty
    device.wait_for_log(r"boot cause power_on", timeout_s=5)
    device.wait_for_log(r"tick 3\n", timeout_s=5)
    st = device.state()
    assert st["running"] and st["boots"] == 1 and _alive(st["firmware_pid"])
    # What the console prints is on the port too, as on a board's USB serial.
    port = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    try:
        seen = b""
        deadline = time.monotonic() + 5
        while b"tick" not in seen and time.monotonic() < deadline:
            seen += os.read(port, 256)
        assert b"tick" in seen
    finally:
        os.close(port)


def test_ctrl_c_drops_to_the_repl_and_mpremote_resume_exec_works(device: VirtualDevice) -> None:
    tty = device.start()
    device.wait_for_log(r"tick 1\n")
    port = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(port, b"\x03")
        device.wait_for_log(r"KeyboardInterrupt")
        device.wait_for_log(r">>> $", timeout_s=5)
    finally:
        os.close(port)
    st = device.state()
    assert st["running"] and st["mode"] == "repl" and st["boots"] == 1  # at the REPL, not ended
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", tty, "resume", "exec", "print(6*7)"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"


def test_mpremote_transport_reads_and_writes_the_device_directory(device: VirtualDevice) -> None:
    device.start()
    device.wait_for_log(r"tick 1\n")
    (device.dir / "from_host.txt").write_text("hello device")
    t = _transport(device)
    try:
        t.enter_raw_repl(soft_reset=False)  # interrupts main.py, as on a board
        t.fs_writefile("written.bin", bytes(range(256)) * 3)
        t.fs_mkdir("logs")
        assert t.fs_readfile("from_host.txt") == b"hello device"
        assert t.exec("import os; print(os.getcwd())").decode().strip() == str(device.dir)
        t.exit_raw_repl()
        mark = device.log_position()
        t.serial.write(b"\x04")  # Ctrl-D at the REPL: a soft reboot, main.py runs again
    finally:
        t.close()
    assert (device.dir / "written.bin").read_bytes() == bytes(range(256)) * 3
    assert (device.dir / "logs").is_dir()
    device.wait_for_log(r"MPY: soft reboot", since=mark)
    device.wait_for_log(r"boot cause power_on\n", timeout_s=5)  # a soft reboot keeps the cause
    assert device.state()["boots"] == 2


def test_watchdog_exit_restarts_with_the_reset_cause(device: VirtualDevice) -> None:
    device.start()
    device.wait_for_log(r"boot cause power_on")
    first_pid = device.firmware_pid()
    (device.dir / "exit_status").write_text("3")
    device.wait_for_log(r"exited with status 3: rebooting, reset cause watchdog")
    device.wait_for_log(r"boot cause watchdog\n")
    (device.dir / "exit_status").write_text("4")
    device.wait_for_log(r"boot cause software\n")
    st = device.state()
    assert st["boots"] == 3 and st["reset_cause"] == "software" and st["last_exit"] == 4
    assert first_pid is not None and not _alive(first_pid)
    mark = device.log_position()
    device.reset()
    device.wait_for_log(r"boot cause hard\n", since=mark)


def test_no_restart_powers_off_on_a_reset(device: VirtualDevice) -> None:
    device.start(restart=False)
    device.wait_for_log(r"tick 0")
    (device.dir / "exit_status").write_text("3")
    device.wait_for_log(r"status 3: device off")
    deadline = time.monotonic() + 5
    while device.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not device.running()
    assert device.state()["last_exit"] == 3
    assert not device.tty_link.exists()


def test_stop_interrupts_then_ends_and_cleans_up(device: VirtualDevice) -> None:
    device.start()
    device.wait_for_log(r"tick 1\n")
    st = device.state()
    assert device.stop() == 130  # ^C: the stand-in does not catch KeyboardInterrupt
    log = device.log_text()
    assert "KeyboardInterrupt" in log and ">>> " not in log  # stopping: no REPL after main.py
    assert not device.running()
    assert not _alive(st["pid"]) and not _alive(st["firmware_pid"])
    assert not device.tty_link.exists() and device.state()["state"] == "stopped"
    device.start()  # and it powers on again in the same directory
    device.wait_for_log(r"boot cause power_on")


def test_kill_leaves_no_orphan_processes(device: VirtualDevice) -> None:
    device.start()
    device.wait_for_log(r"tick 0")
    st = device.state()
    t0 = time.monotonic()
    device.kill()
    assert time.monotonic() - t0 < 2
    assert not _alive(st["pid"]) and not _alive(st["firmware_pid"])
    assert not device.running() and not device.tty_link.exists()
    assert "KeyboardInterrupt" not in device.log_text()  # nothing ran after the power cut


def test_device_goes_when_the_process_that_started_it_dies(tmp_path: Path, stand_in: Path) -> None:
    d = tmp_path / "dev"
    code = (f"from firelink.virtual.device import VirtualDevice; import json, os\n"
            f"dev = VirtualDevice({str(d)!r}, firmware={str(stand_in)!r}); dev.start()\n"
            f"print(json.dumps(dev.state()), flush=True); os._exit(0)")
    r = subprocess.run([sys.executable, "-c", code], check=True, timeout=30, capture_output=True, text=True)
    st = json.loads(r.stdout)
    assert st["running"] and st["firmware_pid"]
    deadline = time.monotonic() + 10
    while (_alive(st["pid"]) or _alive(st["firmware_pid"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(st["pid"]) and not _alive(st["firmware_pid"])


def test_a_second_start_is_refused(device: VirtualDevice) -> None:
    device.start()
    with pytest.raises(virtual.AlreadyRunning):
        VirtualDevice(device.dir, firmware=device._firmware).start()


# --- the simulated world ---

CONFIG_INPUTS = [
    {"name": "fire_no", "kind": "fire", "channel": "in3", "contact": "no"},
    {"name": "tamper_nc", "kind": "tamper", "channel": "in4", "contact": "nc"},
    {"name": "zone_eol", "kind": "fire", "channel": "in6", "contact": "no", "eol": True},
]


def test_set_input_writes_raw_values_for_no_nc_and_eol(tmp_path: Path) -> None:
    d = virtual.create(tmp_path / "dev", {"device_id": "dev", "inputs": CONFIG_INPUTS})
    nominal = virtual.board_info(d)["eol"]["nominal"]
    cases = [("fire_no", "active", 0), ("fire_no", "normal", 1), ("tamper_nc", "active", 1),
             ("tamper_nc", "normal", 0), ("zone_eol", "active", nominal["active"]),
             ("zone_eol", "normal", nominal["normal"]), ("zone_eol", "open", nominal["open"]),
             ("zone_eol", "short", nominal["short"])]
    channel = {e["name"]: e["channel"] for e in CONFIG_INPUTS}
    for name, state, raw in cases:
        assert virtual.set_input(d, name, state) == raw
        assert virtual.read_control(d)["inputs"][channel[name]] == raw, (name, state)
    assert virtual.set_input(d, "in7", raw=1234) == 1234  # a channel, a raw value
    virtual.set_link(d, "wifi", False)
    virtual.set_rssi(d, -81)
    virtual.set_battery_mv(d, 3300)
    virtual.set_clock_synced(d, False)
    control = virtual.read_control(d)
    assert control["inputs"]["in7"] == 1234 and control["inputs"]["in4"] == 0  # merged, not replaced
    assert control["links"] == {"wifi": False} and control["rssi"] == -81
    assert control["battery_mv"] == 3300 and control["clock_synced"] is False
    with pytest.raises(virtual.WorldError, match="no end-of-line"):
        virtual.set_input(d, "fire_no", "open")
    with pytest.raises(virtual.UnknownInput, match="fire_no"):
        virtual.set_input(d, "nonesuch", "active")
    assert not list((d / "sim").glob("*.tmp"))


def test_inputs_come_from_the_board_when_config_is_missing_or_invalid(tmp_path: Path) -> None:
    d = virtual.create(tmp_path / "dev", {"device_id": "dev"})
    # A new device is wired normal: the normally closed tamper and mains contacts read closed.
    assert virtual.read_control(d)["inputs"] == {"in1": 1, "in2": 1, "in3": 1, "in4": 0, "in5": 0}
    (d / "config.json").write_text("{not json")
    spec = virtual.find_input(d, "mains")
    assert (spec.channel, spec.contact, spec.eol) == ("in5", "nc", False)
    assert virtual.set_input(d, "mains", "active") == 1
    assert virtual.set_input(d, "panel_fire", "active") == 0


def test_cli_runs_a_background_device(tmp_path: Path, stand_in: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    virtual_cmd.register(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("FL_FIRMWARE", str(stand_in))
    d = tmp_path / "dev1"

    def cli(*argv: str) -> int:
        args = parser.parse_args(["virtual", *argv, "--dir", str(d)])
        return args.func(args)

    try:
        assert cli("start", "--broker", "127.0.0.1:18830", "--password", "pw") == 0
        config = json.loads((d / "config.json").read_text())
        assert config["device_id"] == "dev1" and config["broker"] == {"host": "127.0.0.1", "port": 18830}
        assert json.loads((d / "secrets.json").read_text()) == {"mqtt_username": "dev1", "mqtt_password": "pw"}
        assert (d / "secrets.json").stat().st_mode & 0o777 == 0o600
        dev = VirtualDevice(d)
        assert dev.running()
        assert os.readlink(d / "tty") in capsys.readouterr().out
        assert cli("input", "panel_fire", "active") == 0
        assert virtual.read_control(d)["inputs"]["in1"] == 0
        assert cli("link", "wifi", "down") == 0
        assert cli("status") == 0
        out = capsys.readouterr().out
        assert "running" in out and "panel_fire" in out and "wifi down" in out
        assert cli("stop") == 0
        assert not dev.running()
    finally:
        VirtualDevice(d).kill()


# --- the real firmware ---

def _subscribe(broker, topic: str):  # type: ignore[no-untyped-def]
    import paho.mqtt.client as mqtt

    got: list[tuple[str, bytes]] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-virtual-{os.getpid()}", protocol=mqtt.MQTTv311)
    c.username_pw_set(broker.centre_user, broker.centre_pass)
    c.on_message = lambda client, userdata, msg: got.append((msg.topic, msg.payload))
    c.on_connect = lambda client, userdata, flags, rc, props: client.subscribe(topic, qos=1)
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    return c, got


def _wait_for(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_real_firmware_runs_drives_inputs_and_says_offline_on_stop(tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    if not (virtual.firmware_dir() / "fl" / "app.py").exists():
        pytest.skip("firmware app not present")
    d = virtual.create(tmp_path / "dev", {"device_id": broker.device_user,
                                          "broker": {"host": broker.host, "port": broker.port}},
                       {"mqtt_username": broker.device_user, "mqtt_password": broker.device_pass})
    client, got = _subscribe(broker, f"firelink/{broker.device_user}/status")
    dev = VirtualDevice(d)
    try:
        dev.start()
        dev.wait_for_log(r"INFO app: inputs: \{", timeout_s=15)
        assert dev.reported_inputs().get("panel_fire") == "normal"
        assert _wait_for(lambda: any(b'"online"' in p for _, p in got), 15), dev.log_text()[-2000:]
        virtual.set_input(d, "panel_fire", "active")
        dev.wait_for_log(r"input panel_fire: normal -> active", timeout_s=10)
        assert dev.reported_inputs()["panel_fire"] == "active"
        got.clear()
        dev.stop()
        # Well before the broker's keepalive would send the will: the firmware said it itself.
        assert _wait_for(lambda: any(b'"offline"' in p for _, p in got), 5), dev.log_text()[-2000:]
        assert "stopping (Ctrl-C)" in dev.log_text()
    finally:
        dev.kill()
        client.disconnect()
        client.loop_stop()


def test_inputs_are_the_ones_the_firmware_watches(tmp_path: Path) -> None:
    # An entry fl.config drops (bad kind) is not offered; the fire channel it then keeps
    # watching by the board's default is; debounce is the firmware's value for the kind.
    d = tmp_path / "dev"
    virtual.create(d, {"device_id": "fl-specs", "inputs": [
        {"name": "pump", "kind": "fier", "channel": "in1"},
        {"name": "store_smoke", "kind": "smoke", "channel": "in3", "debounce_ms": 80}]})
    specs = {s.name: (s.channel, s.kind, s.debounce_ms) for s in virtual.input_specs(d)}
    assert specs == {"store_smoke": ("in3", "smoke", 80), "panel_fire": ("in1", "fire", 50)}
    with pytest.raises(virtual.UnknownInput):
        virtual.find_input(d, "pump")


@pytest.mark.parametrize("argv, says", [
    (["rssi", "50"], "rssi 50: a signal strength is -127..0 dBm"),
    (["battery", "-5"], "battery -5 mV: the board measures 0..6600 mV"),
    (["input", "panel_fire", "--raw", "99999"], "--raw 99999: in1 is digital: 0 or 1"),
    (["input", "in6", "--raw", "4096"], "--raw 4096: in6 is an ADC line: 0..4095"),
    (["input", "battery", "--raw", "99999"], "battery 99999 mV"),
    (["link", "4g", "down"], "link 4g: this device has no 4G (set cellular.enabled in its config.json)"),
    (["link", "lora", "down"], "link 'lora': the simulated board has wifi and 4g"),
    (["modem", "sim-missing"], "modem: this device has no 4G"),
    (["start", "--heapsize", "banana"], "--heapsize 'banana': expected a number of bytes"),
    (["start", "--heapsize", "1k"], "--heapsize '1k': MicroPython refuses it"),
])
def test_cli_refuses_out_of_range_values_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                       says: str) -> None:
    from firelink import cli

    monkeypatch.setenv("COLUMNS", "300")
    d = tmp_path / "dev1"
    virtual.prepare(d, {"device_id": "dev1"})
    control = (d / "sim" / "control.json").read_bytes()
    assert cli.main(["virtual", *argv, "--dir", str(d)]) != 0
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], lines
    assert (d / "sim" / "control.json").read_bytes() == control
    assert not VirtualDevice(d).running()


def test_cli_without_a_device_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firelink import cli

    for argv in (["status"], ["rssi", "-70"], ["input", "panel_fire", "active"], ["stop"]):
        assert cli.main(["virtual", *argv, "--dir", str(tmp_path / "nope")]) != 0
        out, err = capsys.readouterr()
        assert "no virtual device directory" in out + err and "Traceback" not in out + err
