"""The inventory (SQLite), `firelink devices` and revocation against a mosquitto of this module's
own, and finding a running broker to reload. The end-to-end lock-out of a real board is in
test_provision.py."""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest

from firelink.commands import devices as devices_cmd
from firelink.errors import FireLinkError
from firelink.site import devices
from firelink.site.broker import Broker, free_port
from firelink.site.broker import broker_pids
from firelink.site.inventory import Inventory, InventoryError, UnknownDevice, installer_name

INPUTS = [{"name": "panel_fire", "kind": "fire", "channel": "in1", "contact": "no", "zone": 1, "eol": False,
           "debounce_ms": 50}]
FP = "ab" * 32


@pytest.fixture
def inv(tmp_path: Path) -> Iterator[Inventory]:
    with Inventory(tmp_path / "run" / "inventory.db") as i:
        yield i


def add(inv: Inventory, device_id: str = "fl-0200000000a1", site: str = "Kho A", fp: str = FP,
        by: str = "an") -> Any:
    return inv.record_provisioned(device_id, "02:00:00:00:00:a1", site, INPUTS, "0.1.0", fp, by,
                                  "mqtts://127.0.0.1:8883")


def test_a_provisioned_device_is_recorded_with_everything_but_secrets(inv: Inventory) -> None:
    rec = add(inv)
    assert (rec.device_id, rec.mac, rec.site, rec.firmware, rec.state) == (
        "fl-0200000000a1", "02:00:00:00:00:a1", "Kho A", "0.1.0", "active")
    assert rec.inputs == INPUTS and rec.cert_fingerprint == FP and rec.provisioned_by == "an"
    assert rec.provisioned_at.endswith("Z") and rec.broker_url == "mqtts://127.0.0.1:8883"
    assert rec.last_result is None
    # Another process reads the same file; no column could hold a secret.
    with sqlite3.connect(inv.path) as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(devices)")]
        assert not [c for c in cols if "pass" in c or "key" in c or "secret" in c]
        assert json.loads(db.execute("SELECT inputs FROM devices").fetchone()[0]) == INPUTS


def test_results_revocation_and_reprovisioning_are_kept_in_the_history(inv: Inventory, tmp_path: Path) -> None:
    add(inv)
    inv.record_result("fl-0200000000a1", True, "pass", "an", report=tmp_path / "r.md")
    rec = inv.get("fl-0200000000a1")
    assert (rec.last_result, rec.last_report) == ("pass", str(tmp_path / "r.md"))
    # A failed attempt that left the board as it was does not change what the row says.
    inv.record_result("fl-0200000000a1", False, "broker: refused", "bao", history_only=True)
    assert inv.get("fl-0200000000a1").last_result == "pass"
    inv.mark_revoked("fl-0200000000a1", "chi", "broker account removed")
    rec = inv.get("fl-0200000000a1")
    assert (rec.state, rec.revoked_by) == ("revoked", "chi") and rec.revoked_at
    assert inv.devices(state="revoked") == [rec] and inv.devices(state="active") == []
    # Provisioned again: a new credential, active again, the old one named in the history.
    rec = add(inv, fp="cd" * 32, site="Kho A2", by="dung")
    assert (rec.state, rec.site, rec.cert_fingerprint, rec.revoked_at, rec.last_result) == (
        "active", "Kho A2", "cd" * 32, None, None)
    hist = inv.history("fl-0200000000a1")
    assert [h.action for h in hist] == ["provisioned", "commissioned", "failed", "revoked", "provisioned"]
    assert [h.by for h in hist] == ["an", "an", "bao", "chi", "dung"]
    assert f"replaces cert {FP[:16]} (revoked)" in hist[-1].detail
    assert "fail: broker: refused" in hist[2].detail


def test_queries_and_unknown_devices(inv: Inventory) -> None:
    add(inv, "fl-0200000000b2", site="Kho B")
    add(inv, "fl-0200000000a1", site="Kho A")
    assert [r.device_id for r in inv.devices()] == ["fl-0200000000a1", "fl-0200000000b2"]  # by site
    assert [r.device_id for r in inv.devices(site="Kho B")] == ["fl-0200000000b2"]
    assert len(inv.by_mac("02:00:00:00:00:a1")) == 2
    assert inv.find("fl-nope") is None
    with pytest.raises(UnknownDevice, match="no device 'fl-nope' in the inventory"):
        inv.get("fl-nope")
    with pytest.raises(UnknownDevice):
        inv.mark_revoked("fl-nope", "x")


def test_a_newer_schema_or_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "inv.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(InventoryError, match="newer firelink"):
        Inventory(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(InventoryError, match="cannot open the inventory"):
        Inventory(junk)


def test_installer_name_defaults_to_the_os_user() -> None:
    assert installer_name("Lan") == "Lan"
    assert installer_name(None) and installer_name("") == installer_name(None)


# --- revocation against a real broker ---

@pytest.fixture(scope="module")
def site_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"), port=free_port(), tls_port=free_port())
    b.add_monitor("mon-pass-strong-enough-2026")
    b.start()
    yield b
    b.stop()


def _connects(b: Broker, user: str, password: str) -> Any:
    codes: list[Any] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-inv-{user}-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.on_connect = lambda client, userdata, flags, rc, props: codes.append(rc)
    c.connect(b.bind, b.port, keepalive=10)
    c.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.02)
        return codes[0] if codes else None
    finally:
        c.disconnect()  # before loop_stop(), which would otherwise wait out paho's 1 s select
        c.loop_stop()


def test_revoke_removes_the_account_reloads_mosquitto_and_is_safe_to_repeat(site_broker: Broker,
                                                                           inv: Inventory) -> None:
    account, cred = site_broker.add_device("fl-0200000000c3")
    add(inv, "fl-0200000000c3")
    assert not _connects(site_broker, account.username, account.password).is_failure
    other = Broker(site_broker.dir)  # as `firelink devices revoke` sees it: a broker it did not start
    outcome = devices.revoke(inv, other, "fl-0200000000c3", "lan")
    assert outcome.had_account and not outcome.was_revoked and outcome.locked_out
    assert site_broker.proc is not None and outcome.reload.signalled == [site_broker.proc.pid]
    assert "fl-0200000000c3" not in site_broker.usernames()
    assert not (site_broker.pki_dir / "devices" / "fl-0200000000c3.crt.der").exists()
    rc = _connects(site_broker, account.username, account.password)
    assert rc is not None and rc.is_failure and "authorized" in str(rc).lower()
    assert inv.get("fl-0200000000c3").state == "revoked"
    assert "broker account removed; mosquitto reloaded" in inv.history("fl-0200000000c3")[-1].detail
    again = devices.revoke(inv, other, "fl-0200000000c3", "lan")
    assert again.was_revoked and not again.had_account
    with pytest.raises(UnknownDevice):
        devices.revoke(inv, other, "fl-nope", "lan")


def test_the_running_broker_is_found_by_its_exact_config_file(site_broker: Broker, tmp_path: Path) -> None:
    assert site_broker.proc is not None
    assert broker_pids(site_broker.conf_file) == [site_broker.proc.pid]
    assert broker_pids(tmp_path / "mosquitto.conf") == []  # another site: left alone
    # Not mosquitto at all, even with the same arguments: left alone.
    decoy = subprocess.Popen(["sleep", "30", "-c", str(site_broker.conf_file)])
    try:
        assert broker_pids(site_broker.conf_file) == [site_broker.proc.pid]
    finally:
        decoy.kill()
        decoy.wait()
    nobody = Broker(tmp_path / "no-broker").reload()
    assert nobody.signalled == [] and not nobody.reloaded


# --- the CLI ---

def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    devices_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_lists_shows_and_revokes(site_broker: Broker, inv: Inventory, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    site_broker.add_device("fl-0200000000d4")
    add(inv, "fl-0200000000d4", site="Kho D")
    inv.record_result("fl-0200000000d4", True, "pass", "an")
    db = ["--inventory", str(inv.path)]
    assert _cli(["devices", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "fl-0200000000d4" in out and "02:00:00:00:00:a1" in out and "1 device(s)" in out
    assert _cli(["devices", "list", "--json", *db]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert line["device_id"] == "fl-0200000000d4" and line["inputs"] == INPUTS
    assert _cli(["devices", "show", "fl-0200000000d4", *db]) == 0
    out = capsys.readouterr().out
    assert "Kho D" in out and "panel_fire" in out and "commissioned" in out
    with pytest.raises(FireLinkError, match="no device 'fl-nope'"):
        _cli(["devices", "show", "fl-nope", *db])
    # Revoking asks first; without a terminal it needs --yes.
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    with pytest.raises(FireLinkError, match="add --yes"):
        _cli(["devices", "revoke", "fl-0200000000d4", "--broker-dir", str(site_broker.dir), *db])
    assert inv.get("fl-0200000000d4").state == "active"
    with pytest.raises(FireLinkError, match="no site broker"):
        _cli(["devices", "revoke", "fl-0200000000d4", "--yes", "--broker-dir", str(inv.path.parent / "x"), *db])
    assert _cli(["devices", "revoke", "fl-0200000000d4", "--yes", "--installer", "lan",
                 "--broker-dir", str(site_broker.dir), *db]) == 0
    assert "the broker refuses it from now on" in capsys.readouterr().out
    assert _cli(["devices", "list", "--state", "revoked", *db]) == 0
    assert "fl-0200000000d4" in capsys.readouterr().out
    with pytest.raises(FireLinkError, match="no inventory at"):
        _cli(["devices", "list", "--inventory", str(inv.path.parent / "none.db")])


def test_certificate_end_dates_are_kept_and_renewals_listed_60_days_ahead(
        inv: Inventory, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=59)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=61)).strftime("%Y-%m-%dT%H:%M:%SZ")
    inv.record_provisioned("fl-soon", "02:00:00:00:00:b1", "Kho A", INPUTS, "0.1.0", FP, "an", "mqtts://h:8883",
                           cert_not_after=soon)
    inv.record_provisioned("fl-later", "02:00:00:00:00:b2", "Kho A", INPUTS, "0.1.0", FP, "an", "mqtts://h:8883",
                           cert_not_after=later)
    add(inv, "fl-unknown")  # provisioned before end dates were kept
    due = devices.renewals_due(inv)
    assert [(r.device_id, round(left)) for r, left in due] == [("fl-soon", 59)]
    monkeypatch.setenv("COLUMNS", "250")
    assert _cli(["devices", "list", "--inventory", str(inv.path)]) == 0
    out = capsys.readouterr().out
    assert "renew: fl-soon's certificate ends in 59 days" in out and "fl-later's" not in out
    assert later[:10] in out


def test_an_inventory_from_before_certificate_end_dates_opens_and_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        old_schema = SCHEMA_V1
        db.executescript(old_schema)
        db.execute("INSERT INTO devices VALUES ('fl-old','m','s','[]',NULL,'fp','t','b','u','active',NULL,NULL,NULL,"
                   "NULL,NULL)")
        db.execute("PRAGMA user_version = 1")
    with Inventory(path) as i:
        assert i.get("fl-old").cert_not_after is None
        i.record_provisioned("fl-new", "m", "s", [], None, "fp", "b", "u", cert_not_after="2030-01-01T00:00:00Z")
        assert i.get("fl-new").cert_not_after == "2030-01-01T00:00:00Z"


SCHEMA_V1 = """
CREATE TABLE devices (device_id TEXT PRIMARY KEY, mac TEXT NOT NULL, site TEXT NOT NULL, inputs TEXT NOT NULL,
    firmware TEXT, cert_fingerprint TEXT NOT NULL, provisioned_at TEXT NOT NULL, provisioned_by TEXT NOT NULL,
    broker_url TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('active', 'revoked')), revoked_at TEXT,
    revoked_by TEXT, last_result TEXT, last_result_at TEXT, last_report TEXT);
CREATE TABLE history (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, at TEXT NOT NULL, action TEXT NOT NULL,
    by TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""
