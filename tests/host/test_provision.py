"""`firelink provision` end to end: the real firmware as a virtual device on a pseudo-terminal,
talked to through device.py (mpremote's real transport), a mosquitto of this module's own (so
that revoking does not disturb the session broker) and a monitoring centre (firelink.centre.monitor)
that acknowledges events.

The boards start as `firelink flash` leaves them: the app and board.json, no config.json. One
board is provisioned once for the module and then used, still working, by the cases that must
leave it untouched; the cases that change it for good get a fresh board each.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import paho.mqtt.client as mqtt
import pytest

from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig
from firelink.centre.store import MonitorStore
from firelink.commands import devices as devices_cmd, provision as provision_cmd
from firelink.progress import RecordingReporter
from firelink.provision import report
from firelink.provision.commission import ProvisionError, Timeouts, provision
from firelink.provision.settings import SettingsError, check
from firelink.site import devices
from firelink.site.broker import Broker, free_port
from firelink.site.inventory import Inventory
from firelink.virtual import device as virtual
from firelink.virtual.device import VirtualDevice

SITE = "Kho A, 12 Lê Lợi, Q1"
SSID = "KhoA-Office"
WIFI_PW = "correct horse 42"
BOARD_FILES = ("config.json", "secrets.json", "ca.der", "device.der", "device.key.der")
FAST = Timeouts(broker_s=3.0, online_s=15.0, heartbeat_s=10.0, command_s=10.0, ack_s=10.0)


@dataclass
class Site:
    root: Path
    broker: Broker
    monitor_password: str
    centre: Monitor
    store: MonitorStore
    inventory: Inventory
    reports: Path

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.broker.tls_port}"

    def provision(self, board: VirtualDevice, reporter: RecordingReporter | None = None, **kw: Any) -> Any:
        args: dict[str, Any] = dict(site=SITE, wifi_ssid=SSID, wifi_password=WIFI_PW, broker_url=self.url,
                                    broker=self.broker, inventory=self.inventory,
                                    monitor_password=self.monitor_password, apn="v-internet",
                                    installer="test-installer", reports_dir=self.reports, timeouts=FAST,
                                    reporter=reporter or RecordingReporter())
        args.update(kw)
        return provision(board.tty(), **args)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    broker = Broker(root / "broker", port=free_port(), tls_port=free_port())
    monitor = broker.add_monitor()
    broker.start()
    store = MonitorStore(root / "centre.db")
    centre = Monitor(store, MonitorConfig(MqttSettings(host=broker.bind, port=broker.port, password=monitor.password,
                                                       client_id="test-provision-centre")))
    centre.start()
    inventory = Inventory(root / "inventory.db")
    yield Site(root, broker, monitor.password, centre, store, inventory, root / "reports")
    centre.stop()
    store.close()
    inventory.close()
    broker.stop()


def flashed_board(directory: Path) -> VirtualDevice:
    """A board as `firelink flash` leaves it (app and board.json, no configuration), running."""
    virtual.create(directory, {})
    (directory / "config.json").unlink()
    dev = VirtualDevice(directory)
    dev.start()
    dev.wait_for_log(r"INFO app: inputs: \{", timeout_s=15)
    return dev


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualDevice]:
    dev = flashed_board(tmp_path_factory.mktemp("board") / "dev")
    yield dev
    dev.kill()


@pytest.fixture
def fresh_board(tmp_path: Path) -> Iterator[VirtualDevice]:
    dev = flashed_board(tmp_path / "dev")
    yield dev
    dev.kill()


@dataclass
class Provisioned:
    result: report.CommissioningResult
    reporter: RecordingReporter
    seconds: float


@pytest.fixture(scope="module")
def provisioned(site: Site, board: VirtualDevice) -> Provisioned:
    rec = RecordingReporter()
    t0 = time.monotonic()
    result = site.provision(board, rec)
    return Provisioned(result, rec, time.monotonic() - t0)


def snapshot(board: VirtualDevice) -> dict[str, bytes]:
    return {name: (board.dir / name).read_bytes() for name in BOARD_FILES if (board.dir / name).exists()}


def tmp_files(board: VirtualDevice) -> list[str]:
    return sorted(p.name for p in board.dir.glob("*.tmp"))


def wait_for(predicate: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def assert_untouched(board: VirtualDevice, before: dict[str, bytes], mark: int) -> None:
    """Byte-identical files, and main.py never interrupted since `mark`."""
    assert snapshot(board) == before
    assert tmp_files(board) == []
    assert "stopping (Ctrl-C)" not in board.log_text(mark)
    assert board.state()["mode"] == "main"


# --- the whole way ---

def test_a_site_without_wifi_is_commissioned_over_4g_alone(site: Site, fresh_board: VirtualDevice) -> None:
    r = site.provision(fresh_board, wifi_ssid=None, wifi_password="")
    assert r.passed, r.checks
    cfg = json.loads((fresh_board.dir / "config.json").read_text())
    assert "wifi" not in cfg and cfg["paths"] == ["cellular"] and cfg["cellular"] == {"enabled": True,
                                                                                    "apn": "v-internet"}
    assert "wifi_password" not in json.loads((fresh_board.dir / "secrets.json").read_text())
    # Online, heartbeat, the test alarm and its ack: all over 4G.
    assert re.search(rf"connected to 127\.0\.0\.1:{site.broker.tls_port} over cellular with TLS", fresh_board.log_text())
    assert " over wifi" not in fresh_board.log_text()
    assert (r.link_path, r.faults, r.cell_paths) == ("cellular", {}, {"cellular": "up"})
    assert r.test_alarm is not None
    doc = next(json.loads(m.payload) for m in site.store.messages(device=str(r.device_id), kind="event")
               if json.loads(m.payload).get("id") == r.test_alarm.event_id)
    assert doc["path"] == "cellular", doc
    md = Path(str(r.report_md)).read_text()
    assert "| Wi-Fi network | none: 4G alone |" in md and "Viettel LTE B3" in md


def test_no_wifi_needs_4g_and_the_cli_says_which_option() -> None:
    with pytest.raises(SettingsError) as e:
        check(SITE, None, "", "mqtts://h:8883")
    assert e.value.problems == ["--no-wifi: a site without Wi-Fi needs 4G: give --apn APN (or --4g for the APN "
                                "the SIM's operator implies)"]
    assert check(SITE, None, "", "mqtts://h:8883", cellular=True).cellular
    assert check(SITE, SSID, WIFI_PW, "mqtts://h:8883", "v-internet").cellular




def test_a_flashed_board_is_commissioned_end_to_end(site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    r = provisioned.result
    assert r.passed, r.checks
    assert [c.status for c in r.checks] == ["pass"] * len(report.CHECKS)
    # Most of it is the 4G check: the simulated modem's boot, registration and dial (≈7 s) and the
    # backup test's heartbeat over 4G after it; the Wi-Fi part took ≈2 s of it.
    assert provisioned.seconds < 40
    steps = provisioned.reporter.steps()
    for step in ("check the settings", "check the 'monitor' account and connect to the broker", f"open the board on {board.tty()}",
                 "check config.json with the firmware's validator", "write secrets and certificates",
                 "put the files in place", "register with the broker and the inventory", "restart the board",
                 "wait for the first heartbeat", "send a test alarm (601) and wait for the centre's ack",
                 "write the report"):
        assert step in steps
    assert steps.index("put the files in place") < steps.index("register with the broker and the inventory") \
        < steps.index("restart the board")
    # Identity: the MAC the firmware's HAL reports, as the device id.
    mac = re.search(r"FireLink \S+ on sim as (fl-[0-9a-f]{12})", board.log_text()).group(1)  # type: ignore[union-attr]
    assert r.device_id == mac and r.mac == ":".join(re.findall("..", mac[3:]))
    assert (r.firmware, r.platform) == ("0.1.0", "linux")

    # What the board holds.
    cfg = json.loads((board.dir / "config.json").read_text())
    assert cfg["device_id"] == r.device_id and cfg["site"] == SITE
    assert cfg["broker"] == {"host": "127.0.0.1", "port": site.broker.tls_port, "tls": True}
    assert cfg["wifi"] == {"ssid": SSID} and cfg["cellular"] == {"enabled": True, "apn": "v-internet"}
    sec = json.loads((board.dir / "secrets.json").read_text())
    assert sec["mqtt_username"] == r.device_id and sec["wifi_password"] == WIFI_PW
    password = sec["mqtt_password"]
    assert len(password) >= 24
    assert (board.dir / "ca.der").read_bytes() == site.broker.ca().cert_der
    device_der = (board.dir / "device.der").read_bytes()
    assert hashlib.sha256(device_der).hexdigest() == r.cert_fingerprint
    assert tmp_files(board) == []

    # The broker knows it, the board uses it over mutual TLS, the centre saw and acknowledged it.
    assert r.device_id in site.broker.usernames()
    assert re.search(rf"connected to 127\.0\.0\.1:{site.broker.tls_port} over wifi with TLS", board.log_text())
    seen = site.centre.device(str(r.device_id))
    assert seen is not None and seen.state == "online"
    alarm = r.test_alarm
    assert alarm is not None
    ev = site.store.event(str(r.device_id), alarm.event_id)
    assert ev is not None and (ev.code, ev.q, ev.cls) == ("601", "new", "status")
    assert wait_for(lambda: (site.store.event(str(r.device_id), alarm.event_id) or ev).acked_at, 5)
    assert 0 < alarm.round_trip_ms < 10_000
    assert alarm.round_trip_ms >= alarm.record_ms
    assert "recorded on request prov-" in board.log_text()

    # Live states from the first heartbeat, link and signal.
    assert r.input_states == {"panel_fire": "normal", "panel_fault": "normal", "smoke": "normal",
                              "tamper": "normal", "mains": "normal", "battery": "normal"}
    assert sorted(e["name"] for e in r.inputs) == sorted(r.input_states)
    assert (r.link_path, r.signal_dbm, r.faults) == ("wifi", -60, {})

    # The report, for a person and for tools; no secret in it.
    md = Path(str(r.report_md)).read_text()
    assert Path(str(r.report_md)).name.startswith(f"{r.device_id}-") and Path(str(r.report_md)).parent == site.reports
    for text in (str(r.device_id), str(r.mac), SITE, "FireLink 0.1.0", site.url, "PASS", "test-installer",
                 alarm.event_id, "panel_fire", "wifi, -60 dBm (good)", str(r.cert_fingerprint)):
        assert text in md, text
    assert md.count("**PASS**") == len(report.CHECKS)
    doc = json.loads(Path(str(r.report_json)).read_text())
    assert doc["passed"] is True and doc["device_id"] == r.device_id

    # 4G (--apn): a heartbeat over it reached the broker (the backup path's test at boot), and
    # the modem's health as the simulated A7670 gives it, in the report.
    assert "wait for a heartbeat over 4G and read the modem's health" in steps
    assert r.check("4g").detail.startswith("a heartbeat over 4G reached the broker"), r.check("4g")
    assert {k: r.cell.get(k) for k in ("op", "act", "band", "apn", "iccid", "imei", "fw", "reg", "state")} == {
        "op": "Viettel", "act": "LTE", "band": "B3", "apn": "v-internet", "iccid": "8984048000000000001",
        "imei": "861234567890123", "fw": "A011B07A7670M7_F", "reg": 1, "state": "data"}, r.cell
    assert r.cell_paths == {"wifi": "up", "cellular": "up"}
    for text in ("Viettel LTE B3; -73 dBm, RSRP -95 dBm, RSRQ -10 dB, SINR 15 dB (good); registered (home)",
                 "APN v-internet; ICCID 8984048000000000001; IMEI 861234567890123; modem firmware A011B07A7670M7_F"):
        assert text in md, text
    assert doc["cell"]["rsrp"] == -95
    assert doc["test_alarm"]["round_trip_ms"] == pytest.approx(alarm.round_trip_ms)
    for secret in (password, WIFI_PW, site.monitor_password):
        assert secret not in md and secret not in Path(str(r.report_json)).read_text()
        assert secret not in board.log_text()  # the console never shows what goes over the raw REPL
        assert all(secret not in str(c) for c in provisioned.reporter.calls)

    # The inventory.
    rec = site.inventory.get(str(r.device_id))
    assert (rec.mac, rec.site, rec.state, rec.firmware) == (r.mac, SITE, "active", "0.1.0")
    assert rec.cert_fingerprint == r.cert_fingerprint and rec.provisioned_by == "test-installer"
    assert rec.broker_url == site.url and rec.last_result == "pass" and rec.last_report == r.report_md
    assert rec.inputs == r.inputs
    assert [h.action for h in site.inventory.history(str(r.device_id))][-2:] == ["provisioned", "commissioned"]


def test_provisioning_again_replaces_the_credential_and_keeps_the_board_s_tuning(
        site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    device_id = str(provisioned.result.device_id)
    before = site.inventory.get(device_id)
    old_password = json.loads((board.dir / "secrets.json").read_text())["mqtt_password"]
    cfg = json.loads((board.dir / "config.json").read_text())  # tuned on site since: read at the next boot
    cfg["heartbeat_s"] = 30
    cfg["broker"]["keepalive_s"] = 90
    virtual.write_json_atomic(board.dir / "config.json", cfg)
    rec = RecordingReporter()
    r = site.provision(board, rec)  # the board is running and connected: Ctrl-C, its `offline`, then the REPL
    assert r.passed and r.device_id == device_id
    assert any("kept from the board's previous config.json: heartbeat_s, broker.keepalive_s" in m
               for m in rec.messages("info"))
    new = json.loads((board.dir / "config.json").read_text())
    assert (new["heartbeat_s"], new["broker"]["keepalive_s"], new["site"]) == (30, 90, SITE)
    assert json.loads((board.dir / "secrets.json").read_text())["mqtt_password"] != old_password
    after = site.inventory.get(device_id)
    assert after.cert_fingerprint == r.cert_fingerprint != before.cert_fingerprint
    assert f"replaces cert {before.cert_fingerprint[:16]} (active)" in site.inventory.history(device_id)[-2].detail
    # The old password is gone from the broker: only the board's new one opens it.
    assert _login_refused(site, "test-old-password", device_id, old_password)


# --- refused before the board is touched ---

@pytest.mark.parametrize("change, expected", [
    ({"wifi_ssid": "x" * 33}, "--wifi-ssid: 33 bytes, at most 32"),
    ({"wifi_ssid": "Phòng-họp-tầng-2-Kho-Lê-Lợi"}, "--wifi-ssid: 35 bytes, at most 32 (UTF-8"),
    ({"wifi_ssid": ""}, "--wifi-ssid: empty"),
    ({"wifi_password": "short"}, "--wifi-password: 5 characters, WPA2 needs 8..63"),
    ({"wifi_password": "mật khẩu dài"}, "--wifi-password: WPA2 passphrases are printable ASCII only"),
    ({"broker_url": "http://127.0.0.1:8883"}, "--broker: 'http://127.0.0.1:8883' is not mqtt://HOST:PORT"),
    ({"broker_url": "mqtts://127.0.0.1:70000"}, "--broker: port 70000 is out of range 1..65535"),
    ({"broker_url": "mqtts://:8883"}, "--broker: 'mqtts://:8883' has no host"),
    ({"broker_url": "mqtts://user:pw@host:8883"}, "--broker: credentials do not go in the URL"),
    ({"apn": "v_internet"}, "--apn: 'v_internet' has '_'"),
    ({"apn": "a" * 63}, "--apn: 63 characters, at most 62"),
    ({"apn": "v-internet."}, "each dot-separated part must be non-empty"),
    ({"site": ""}, "--site: empty"),
    ({"site": "Kho\x07A"}, "--site: control characters (U+0007)"),
    ({"site": "K" * 65}, "--site: 65 characters, at most 64"),
    ({"inputs": {"name": "x"}}, "--inputs: expected a non-empty JSON list"),
    ({"monitor_password": ""}, "--monitor-password: needed"),
])
def test_invalid_settings_are_refused_before_the_board_is_touched(site: Site, board: VirtualDevice,
                                                                  provisioned: Provisioned, change: dict[str, Any],
                                                                  expected: str) -> None:
    before, mark = snapshot(board), board.log_position()
    with pytest.raises(ProvisionError) as info:
        site.provision(board, **change)
    e = info.value
    assert any(expected in p for p in e.problems), e.problems
    assert e.result.check("settings").status == "fail"
    assert all(c.status == "skipped" for c in e.result.checks[1:])
    assert "the board was not touched" in str(e)
    assert e.result.report_md is None
    assert_untouched(board, before, mark)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        check("", "x" * 40, "1234", "mqtt://h:0", "bad apn!")
    assert len(info.value.problems) == 5
    s = check(SITE, SSID, "", "mqtt://broker.local", "m3-world")
    assert (s.broker.host, s.broker.port, s.broker.tls) == ("broker.local", 1883, False)
    assert any("open network" in w for w in s.warnings) and any("not encrypted" in w for w in s.warnings)
    s = check(SITE, SSID, "a" * 64, "mqtts://[::1]", "my.private-apn")
    assert (s.broker.host, s.broker.port, str(s.broker)) == ("::1", 8883, "mqtts://[::1]:8883")
    assert any("not a Vietnamese carrier" in w for w in s.warnings)


def test_an_unknown_port_is_refused(site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    before, mark = snapshot(board), board.log_position()
    with pytest.raises(ProvisionError) as info:
        provision("/dev/ttyFIRELINK-NOPE", SITE, SSID, WIFI_PW, site.url, broker=site.broker,
                  inventory=site.inventory, monitor_password=site.monitor_password, timeouts=FAST)
    assert any(p.startswith("--port: no such port /dev/ttyFIRELINK-NOPE; plugged in?") for p in info.value.problems)
    assert_untouched(board, before, mark)


def test_a_wrong_monitor_password_is_refused_before_the_board_is_touched(
        site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    before, mark = snapshot(board), board.log_position()
    with pytest.raises(ProvisionError) as info:
        site.provision(board, monitor_password="not-the-password")
    r = info.value.result
    assert r.failed() is not None and r.failed().name == "broker"  # type: ignore[union-attr]
    assert "the broker's 'monitor' account refuses this password: check --monitor-password" in str(info.value)
    assert r.check("settings").status == "pass" and r.check("board").status == "skipped"
    assert_untouched(board, before, mark)


def test_an_unreachable_broker_is_a_bounded_wait_and_a_clear_error(site: Site, board: VirtualDevice,
                                                                    provisioned: Provisioned) -> None:
    before, mark = snapshot(board), board.log_position()
    closed = f"mqtts://127.0.0.1:{free_port()}"
    with pytest.raises(ProvisionError, match=r"broker: cannot reach the broker at 127\.0\.0\.1:\d+: Connection "
                                             r"refused.*\(the board was not touched\)"):
        site.provision(board, broker_url=closed)
    # A broker that takes the connection and never answers: the wait ends at its deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        t0 = time.monotonic()
        with pytest.raises(ProvisionError, match=r"did not answer within 1 s"):
            site.provision(board, broker_url=f"mqtts://127.0.0.1:{silent.getsockname()[1]}",
                           timeouts=Timeouts(broker_s=1.0))
        assert time.monotonic() - t0 < 4
    assert_untouched(board, before, mark)


# --- refused by the firmware, or cut short: the previous files stay ---

def test_the_firmware_validator_refuses_bad_inputs_and_the_board_keeps_its_files(
        site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    before = snapshot(board)
    mark = board.log_position()
    bad = [{"name": "panel_fire", "kind": "fir", "channel": "in1"}, {"name": "smoke", "kind": "smoke", "channel": "in9"}]
    with pytest.raises(ProvisionError) as info:
        site.provision(board, inputs=bad)
    r = info.value.result
    assert r.failed().name == "configuration"  # type: ignore[union-attr]
    assert 'inputs[0].kind: expected one of "fire"' in str(info.value)
    assert "inputs[1].channel" in str(info.value)
    assert "nothing was changed on the board" in str(info.value)
    assert snapshot(board) == before and tmp_files(board) == []
    # Rebooted into its app with the previous configuration, which still works.
    board.wait_for_log(rf"connected to 127\.0\.0\.1:{site.broker.tls_port}", timeout_s=15, since=mark)
    assert Path(str(r.report_md)).exists() and "**FAIL**" in Path(str(r.report_md)).read_text()
    assert site.inventory.get(str(r.device_id)).last_result == "pass"  # the commissioned state stands
    assert site.inventory.history(str(r.device_id))[-1].action == "failed"


def _interrupt_at(step: str, after_bytes: int, action: Callable[[], None]) -> RecordingReporter:
    def hook(current: str, done: int) -> None:
        if current == step and done >= after_bytes:
            action()
    return RecordingReporter(on_advance=hook)


def test_ctrl_c_while_writing_leaves_the_previous_configuration_in_force(
        site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    before = snapshot(board)
    fingerprint = site.inventory.get(str(provisioned.result.device_id)).cert_fingerprint
    mark = board.log_position()

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        site.provision(board, _interrupt_at("write secrets and certificates", 1, ctrl_c), site="Somewhere else")
    assert snapshot(board) == before
    assert tmp_files(board) == []  # the staged files were removed
    board.wait_for_log(rf"connected to 127\.0\.0\.1:{site.broker.tls_port}", timeout_s=15, since=mark)
    rec = site.inventory.get(str(provisioned.result.device_id))
    assert (rec.cert_fingerprint, rec.site) == (fingerprint, SITE)  # the broker and inventory never changed
    assert rec.device_id in site.broker.usernames()
    last = site.inventory.history(rec.device_id)[-1]
    assert last.action == "failed" and "files: interrupted" in last.detail


def test_a_power_cut_while_writing_leaves_the_previous_configuration_in_force(
        site: Site, board: VirtualDevice, provisioned: Provisioned) -> None:
    before = snapshot(board)
    with pytest.raises(ProvisionError) as info:
        site.provision(board, _interrupt_at("write secrets and certificates", 1, board.kill))
    assert info.value.result.failed().name == "files"  # type: ignore[union-attr]
    assert "nothing was changed on the board" in str(info.value)
    assert snapshot(board) == before  # maybe a *.tmp beside them: never read
    mark = board.log_position()
    board.start()
    board.wait_for_log(rf"connected to 127\.0\.0\.1:{site.broker.tls_port}", timeout_s=15, since=mark)
    assert "config.json" not in board.log_text(mark).split("connected to")[0]  # no config problem at boot


# --- refused by the broker after the change; revoked ---

class _At(RecordingReporter):
    """Runs `action` when the named step starts."""

    def __init__(self, step: str, action: Callable[[], None]) -> None:
        super().__init__()
        self._at, self._action = step, action

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        super().start(step, total, unit)
        if step == self._at:
            self._action()


def test_a_board_the_broker_refuses_fails_the_online_check_and_the_report_says_why(
        site: Site, fresh_board: VirtualDevice) -> None:
    def lose_account() -> None:  # the broker loses the account between registration and reboot
        cfg_id = "fl-" + _mac(fresh_board)
        site.broker.revoke(cfg_id)

    with pytest.raises(ProvisionError) as info:
        site.provision(fresh_board, _At("restart the board", lose_account),
                       timeouts=Timeouts(broker_s=3.0, online_s=4.0))
    r = info.value.result
    assert r.failed().name == "online"  # type: ignore[union-attr]
    assert "no `online`" in str(info.value) and "the board now has the new configuration" in str(info.value)
    # Over TLS the revoked certificate is refused at the handshake (the site's CRL).
    assert any(re.search(r"ERROR mqtt: connection to \S+ failed", line) for line in r.console), r.console
    md = Path(str(r.report_md)).read_text()
    assert "| online |" in md and "ERROR mqtt: connection to" in md
    assert site.inventory.get(str(r.device_id)).last_result.startswith("fail: online: ")  # type: ignore[union-attr]


def _mac(board: VirtualDevice) -> str:
    """The MAC in hex, as the firmware printed it in its default device id on its first boot
    (at the step where this is needed, provisioning holds the board's REPL)."""
    return re.search(r"on sim as fl-([0-9a-f]{12})", board.log_text()).group(1)  # type: ignore[union-attr]


def _cli(module: Any, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_provisions_then_revoke_locks_the_board_out(site: Site, fresh_board: VirtualDevice,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FL_MONITOR_PASS", site.monitor_password)
    inputs = site.root / "inputs.json"
    inputs.write_text(json.dumps([{"name": "panel_fire", "kind": "fire", "channel": "in1", "zone": 1},
                                  {"name": "tamper", "kind": "tamper", "channel": "in4", "contact": "nc", "zone": 90},
                                  {"name": "smoke_store", "kind": "smoke", "channel": "in3", "zone": 3}]))
    t0 = time.monotonic()
    assert _cli(provision_cmd, ["provision", "--port", fresh_board.tty(), "--site", "Kho B", "--wifi-ssid", SSID,
                                "--wifi-password", WIFI_PW, "--broker", site.url,
                                "--broker-dir", str(site.broker.dir), "--inventory", str(site.inventory.path),
                                "--reports", str(site.reports), "--inputs", str(inputs),
                                "--installer", "Nguyễn Văn A"]) == 0
    seconds = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "commissioned" in out and "Commissioning report" in out
    device_id = re.search(r"commissioned (fl-[0-9a-f]{12}) in", out).group(1)  # type: ignore[union-attr]
    rec = site.inventory.get(device_id)
    assert rec.provisioned_by == "Nguyễn Văn A"
    assert [(e["name"], e["zone"]) for e in rec.inputs] == [("panel_fire", 1), ("tamper", 90), ("smoke_store", 3)]
    print(f"provision via the CLI: {seconds:.1f} s")

    assert _cli(devices_cmd, ["devices", "list", "--inventory", str(site.inventory.path)]) == 0
    assert device_id in capsys.readouterr().out
    assert _cli(devices_cmd, ["devices", "show", device_id, "--inventory", str(site.inventory.path)]) == 0
    shown = capsys.readouterr().out
    assert "Kho B" in shown and "provisioned" in shown and "commissioned" in shown

    # Revoke: the running broker drops the board's session and refuses it from then on.
    mark, log_mark = fresh_board.log_position(), site.broker.log_file.stat().st_size
    assert _cli(devices_cmd, ["devices", "revoke", device_id, "--yes", "--inventory", str(site.inventory.path),
                              "--broker-dir", str(site.broker.dir), "--installer", "supervisor"]) == 0
    assert "the broker refuses it from now on" in capsys.readouterr().out
    # Over TLS its certificate is on the site's CRL now: refused at the handshake.
    fresh_board.wait_for_log(r"ERROR mqtt: connection to \S+ failed", timeout_s=15, since=mark)
    broker_log = site.broker.log_file.read_text()[log_mark:]
    assert f"Client {device_id} disconnected" in broker_log and "certificate verify failed" in broker_log
    rec = site.inventory.get(device_id)
    assert (rec.state, rec.revoked_by) == ("revoked", "supervisor")
    assert device_id not in site.broker.usernames()
    assert not (site.broker.pki_dir / "devices" / f"{device_id}.crt").exists()
    # The credentials the board holds no longer open the broker.
    secrets = json.loads((fresh_board.dir / "secrets.json").read_text())
    assert _login_refused(site, "test-revoked", secrets["mqtt_username"], secrets["mqtt_password"])
    # And revoking again is harmless.
    outcome = devices.revoke(site.inventory, site.broker, device_id, "supervisor")
    assert outcome.was_revoked and not outcome.had_account


def test_cli_refuses_invalid_settings_with_status_2(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    from firelink.errors import FireLinkError

    with pytest.raises(FireLinkError) as info:
        _cli(provision_cmd, ["provision", "--port", "/dev/ttyFIRELINK-NOPE", "--site", "S", "--wifi-ssid", "x" * 33,
                             "--wifi-password", "short", "--broker", "mqtts://h:99999", "--monitor-password", "x",
                             "--broker-dir", str(site.broker.dir), "--inventory", str(site.inventory.path)])
    assert info.value.exit_code == 2
    text = str(info.value)
    for part in ("--wifi-ssid: 33 bytes, at most 32", "--wifi-password: 5 characters", "--broker: port 99999",
                 "--port: no such port"):
        assert part in text


def test_report_files_are_never_overwritten_and_tables_stay_tables(tmp_path: Path) -> None:
    r = report.CommissioningResult(site="Kho | A", broker_url="mqtts://h:8883", wifi_ssid="x", installer="an",
                                   started_utc="2026-11-20T10:15:30Z", port="/dev/ttyUSB0", device_id="fl-0200000000a1")
    r.finished_utc = r.started_utc
    first, second = report.save(r, tmp_path), report.save(r, tmp_path)
    assert first.name == "fl-0200000000a1-20261120T101530Z.md" and second.name == "fl-0200000000a1-20261120T101530Z-2.md"
    assert (tmp_path / "fl-0200000000a1-20261120T101530Z-2.json").exists()
    md = first.read_text()
    assert "| Site | Kho \\| A |" in md and "| Result | FAIL (incomplete) |" in md
    assert report.signal_quality("wifi", -80) == "poor" and report.signal_quality("cellular", -95) == "fair"


def _login_refused(site: Any, client_id: str, username: str, password: str) -> bool:
    """True when the site's broker answers this login with a refusal (within 5 s)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(username, password)
    codes: list[Any] = []
    c.on_connect = lambda client, userdata, flags, rc, props: codes.append(rc)
    c.connect(site.broker.bind, site.broker.port, keepalive=10)
    c.loop_start()
    try:
        return bool(wait_for(lambda: codes, 5)) and codes[0].is_failure
    finally:
        c.disconnect()  # before loop_stop(), which would otherwise wait out paho's 1 s select
        c.loop_stop()
