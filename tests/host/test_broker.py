"""The site broker: generated config, passwords, revocation, TLS — against real mosquitto."""
from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import json
import time

from firelink import cli
from firelink.site.broker import AccountError, Broker, BrokerError, acl_text, free_port, password_hash
from tests.conftest import BrokerFixture

# paho reports MQTT 3.1.1 CONNACK 5 ("not authorised", mosquitto's answer to a bad password)
# with the MQTT 5 reason code 135.
NOT_AUTHORISED = 135


def _connect(port: int, user: str, password: str, tls: dict | None = None, timeout_s: float = 5.0) -> int | str:
    """Returns the CONNACK reason code (0 = accepted) or the exception text."""
    done = threading.Event()
    result: list[int | str] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{port}", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    if tls:
        c.tls_set(**tls)

    def on_connect(client, userdata, flags, reason_code, properties):
        result.append(reason_code.value)
        done.set()

    c.on_connect = on_connect
    try:
        c.connect("127.0.0.1", port, keepalive=10)
    except (OSError, ssl.SSLError) as e:
        return str(e)
    c.loop_start()
    done.wait(timeout_s)
    c.disconnect()  # before loop_stop(), which would otherwise wait out paho's 1 s select
    c.loop_stop()
    return result[0] if result else "no CONNACK"


def test_password_hash_has_mosquitto_format():
    h = password_hash("secret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert len(h.split("$")[-1]) == 88  # 64-byte SHA-512 digest in base64


def test_acl_names_each_account_and_reserves_ack_for_the_centre():
    text = acl_text(["fl-a", "monitor", "centre-console"])
    assert "%u" not in text  # a pattern would also grant a revoked certificate's CN
    dev = text.split("user fl-a\n")[1].split("\n\n")[0]
    assert "topic write firelink/fl-a/event" in dev and "topic read firelink/fl-a/ack" in dev
    assert "ack" not in dev.replace("topic read firelink/fl-a/ack", "")
    for centre in ("monitor", "centre-console"):
        rules = text.split(f"user {centre}\n")[1].split("\n\n")[0]
        assert "topic write firelink/+/ack" in rules and "topic read firelink/#" in rules


def test_device_password_accepted_wrong_password_refused(broker: BrokerFixture):
    assert _connect(broker.port, broker.device_user, broker.device_pass) == 0
    assert _connect(broker.port, broker.device_user, "wrong") == NOT_AUTHORISED


def test_tls_listener_needs_the_site_ca_and_a_client_certificate(broker: BrokerFixture, tmp_path: Path):
    pk = broker.broker.pki_dir
    good = {"ca_certs": str(pk / "ca.crt"), "certfile": str(pk / "devices/fl-test1.crt"),
            "keyfile": str(pk / "devices/fl-test1.key")}
    assert _connect(broker.broker.tls_port, broker.device_user, broker.device_pass, good) == 0
    wrong_ca = tmp_path / "wrong.crt"
    from firelink.site import pki
    wrong_ca.write_bytes(pki.make_ca("someone else").cert_pem)
    res = _connect(broker.broker.tls_port, broker.device_user, broker.device_pass, {**good, "ca_certs": str(wrong_ca)})
    assert isinstance(res, str) and "certificate verify failed" in res


def _cert_of(b: Broker, device_id: str) -> dict:
    pk = b.pki_dir
    return {"ca_certs": str(pk / "ca.crt"), "certfile": str(pk / "devices" / f"{device_id}.crt"),
            "keyfile": str(pk / "devices" / f"{device_id}.key")}


def test_tls_login_needs_the_certificate_named_by_the_username_and_its_password(tmp_path: Path):
    """Two factors on the TLS listener (mosquitto_plugin/fl_certbind.c + the password file): A's
    certificate logs in only as A, and only with A's password. The plain listener is unchanged."""
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    dev_a, _ = b.add_device("fl-a")
    dev_b, _ = b.add_device("fl-b")
    monitor = b.add_monitor()
    b.start()
    try:
        for when in ("at start", "after a reload"):  # a reload re-registers the password file's check
            tls, cert_a = b.tls_port, _cert_of(b, "fl-a")
            assert _connect(tls, "fl-a", dev_a.password, cert_a) == 0, when
            assert _connect(tls, "fl-b", dev_b.password, cert_a) == NOT_AUTHORISED, when
            assert _connect(tls, "fl-a", "wrong", cert_a) == NOT_AUTHORISED, when
            assert _connect(tls, "fl-a", dev_b.password, cert_a) == NOT_AUTHORISED, when
            assert _connect(tls, "monitor", monitor.password, cert_a) == NOT_AUTHORISED, when
            assert _connect(tls, None, None, cert_a) == NOT_AUTHORISED, when  # type: ignore[arg-type]
            assert _connect(tls, "fl-b", dev_b.password, _cert_of(b, "fl-b")) == 0, when
            # The plain listener has no certificate: the password file alone decides, as before.
            assert _connect(b.port, "fl-a", dev_a.password) == 0, when
            assert _connect(b.port, "monitor", monitor.password) == 0, when
            assert _connect(b.port, "fl-b", dev_a.password) == NOT_AUTHORISED, when
            if when == "at start":
                mark = b.log_file.stat().st_size
                assert b.reload().reloaded
                wait = time.monotonic() + 10
                while "Reloading config" not in b.log_file.read_bytes()[mark:].decode() and time.monotonic() < wait:
                    time.sleep(0.05)
        log = b.log_file.read_text()
        assert "fl_certbind: refused 127.0.0.1: username 'fl-b' is not its certificate's CN 'fl-a'" in log
        assert "username 'monitor' is not its certificate's CN 'fl-a'" in log
    finally:
        b.stop()


def test_the_broker_says_how_to_build_a_missing_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FL_CERTBIND_PLUGIN", str(tmp_path / "nowhere" / "fl_certbind.so"))
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    with pytest.raises(BrokerError, match=r"fl_certbind.so is missing: build it with `make plugin`"):
        b.start()
    assert b.proc is None


def test_revoked_device_can_no_longer_connect(tmp_path: Path):
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    account, _ = b.add_device("fl-gone")
    b.start()
    try:
        assert _connect(b.port, "fl-gone", account.password) == 0
        assert b.revoke("fl-gone")
        assert _connect(b.port, "fl-gone", account.password) == NOT_AUTHORISED
        assert not (b.pki_dir / "devices" / "fl-gone.crt.der").exists()
        assert not b.revoke("fl-gone")
    finally:
        b.stop()


def test_revoke_drops_the_device_s_live_tls_connection(tmp_path: Path):
    """Its TLS login is re-checked at the reload like a password login: the account is gone, so
    is the connection (no need to wait for its next handshake and the CRL)."""
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    account, _ = b.add_device("fl-gone")
    b.start()
    connected, dropped = threading.Event(), threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fl-gone", protocol=mqtt.MQTTv311)
    c.username_pw_set("fl-gone", account.password)
    c.tls_set(**_cert_of(b, "fl-gone"))
    c.on_connect = lambda client, userdata, flags, rc, props: connected.set() if not rc.is_failure else None
    c.on_disconnect = lambda *args: dropped.set()
    c.reconnect_delay_set(60, 60)  # one connection: a reconnect would be refused at the handshake anyway
    try:
        c.connect("127.0.0.1", b.tls_port, keepalive=60)
        c.loop_start()
        assert connected.wait(5)
        assert b.revoke("fl-gone")
        assert dropped.wait(10), "the revoked device's TLS connection stayed up"
        assert "dropped by the reload" in b.last_kick
    finally:
        c.disconnect()
        c.loop_stop()
        b.stop()


def test_state_survives_a_restart(tmp_path: Path):
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    account, _ = b.add_device("fl-keep")
    b.start()
    b.restart()
    try:
        assert _connect(b.port, "fl-keep", account.password) == 0
    finally:
        b.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path, broker: BrokerFixture, capsys: pytest.CaptureFixture[str]):
    b = Broker(tmp_path / "site", port=broker.port, tls_port=free_port())
    with pytest.raises(BrokerError, match=f"port {broker.port} on 127.0.0.1 is taken by another program"):
        b.start(timeout_s=3)
    assert b.proc is None
    assert cli.main(["broker", "--dir", str(tmp_path / "cli"), "--port", str(free_port()),
                     "--tls-port", str(broker.broker.tls_port)]) != 0
    out, err = capsys.readouterr()
    assert "listening" not in out and f"port {broker.broker.tls_port} on 127.0.0.1 is taken" in out + err


@pytest.mark.parametrize("argv, says", [
    (["--add-device", "monitor"], "reserved"),
    (["--add-device", "centre-x"], "reserved"),
    (["--add-device", "firelink-monitor"], "reserved"),
    (["--add-device", "x#"], "is not valid"),
    (["--add-device", "a/b"], "is not valid"),
    (["--add-device", "Bad ID!"], "is not valid"),
    (["--add-device", "x" * 40], "is not valid"),
    (["--add-device", "fl-there"], "already has an account"),
    (["--monitor-password", "a-strong-enough-passphrase"], "already has an account"),
    (["--monitor-password", "monpw", "--rotate"], "too weak"),
    (["--revoke", "monitor"], "not a device"),
])
def test_refused_account_changes_exit_non_zero_with_one_line_and_change_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str],
        says: str):
    monkeypatch.setenv("COLUMNS", "300")  # one line, not wrapped by the terminal width
    d = tmp_path / "site"
    b = Broker(d)
    b.add_device("fl-there")
    b.add_monitor()
    before = {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    assert cli.main(["broker", "--dir", str(d), *argv]) != 0
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], lines
    assert "Traceback" not in out + err
    assert {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before


def test_rotate_replaces_a_credential_and_says_the_old_one_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    d = tmp_path / "site"
    first, _ = Broker(d).add_device("fl-rot")
    assert cli.main(["broker", "--dir", str(d), "--add-device", "fl-rot", "--rotate"]) == 0
    out = capsys.readouterr().out
    assert "the old password and certificate stop working" in out
    b = Broker(d)
    assert not b.check_password("fl-rot", first.password)


def test_the_centre_password_must_be_strong(tmp_path: Path):
    b = Broker(tmp_path / "site")
    with pytest.raises(AccountError, match="too weak"):
        b.add_monitor("monpw")
    with pytest.raises(AccountError, match="too weak"):
        b.add_monitor("a" * 30)
    assert not (tmp_path / "site" / "accounts.json").exists()
    generated = b.add_monitor()
    assert len(generated.password) >= 24 and b.check_password("monitor", generated.password)


def test_secret_files_are_private_and_mosquitto_does_not_run_as_root(broker: BrokerFixture):
    d = broker.broker.dir
    for name in ("accounts.json", "passwd", "acl", "admin.json", "pki/ca.key", "pki/server.key",
                 "pki/devices/fl-test1.key.der"):
        if (d / name).exists() or name != "admin.json":
            assert (d / name).stat().st_mode & 0o077 == 0, name
    assert broker.broker.proc is not None
    uid = int([line for line in Path(f"/proc/{broker.broker.proc.pid}/status").read_text().splitlines()
               if line.startswith("Uid:")][0].split()[2])
    assert uid != 0
    conf = broker.broker.conf_file.read_text()
    assert f"listener {broker.port} 127.0.0.1" in conf  # the plain listener stays on loopback


def test_revoke_marks_the_retained_status_revoked(tmp_path: Path):
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    account, _ = b.add_device("fl-rev")
    monitor = b.add_monitor()
    b.start()
    try:
        dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fl-rev", protocol=mqtt.MQTTv311)
        dev.username_pw_set("fl-rev", account.password)
        dev.will_set("firelink/fl-rev/status", b'{"state": "offline"}', qos=1, retain=True)
        dev.connect("127.0.0.1", b.port, keepalive=10)
        dev.loop_start()
        dev.publish("firelink/fl-rev/status", b'{"state": "online"}', qos=1, retain=True).wait_for_publish(5)
        assert b.revoke("fl-rev")
        assert "set to" in b.last_revoke_marker
        got: list[bytes] = []
        mon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv311)
        mon.username_pw_set("monitor", monitor.password)
        mon.on_message = lambda c, u, m: got.append(m.payload)
        mon.on_connect = lambda c, u, f, rc, p: c.subscribe("firelink/fl-rev/status", qos=1)
        mon.connect("127.0.0.1", b.port, keepalive=10)
        mon.loop_start()
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        mon.disconnect()
        mon.loop_stop()
        dev.loop_stop()
        assert got and json.loads(got[-1])["state"] == "revoked"
    finally:
        b.stop()


def test_the_ca_key_can_be_protected_or_kept_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]):
    from firelink.site import pki

    d = tmp_path / "site"
    b = Broker(d)
    b.add_device("fl-one")
    monkeypatch.setenv(pki.PASSPHRASE_ENV, "correct horse battery")
    assert cli.main(["broker", "--dir", str(d), "--protect-ca"]) == 0
    assert b"ENCRYPTED" in (d / "pki" / "ca.key").read_bytes()
    assert (d / "pki" / "ca.key").stat().st_mode & 0o077 == 0
    b.add_device("fl-two")  # signs with the passphrase from the environment
    b.write_config()  # the first start makes the server certificate and the CRL: the key is needed once
    monkeypatch.delenv(pki.PASSPHRASE_ENV)
    with pytest.raises(BrokerError, match="protected: set \\$FL_CA_PASSPHRASE"):
        b.add_device("fl-three")
    (d / "pki" / "ca.key").rename(tmp_path / "offline.key")
    with pytest.raises(BrokerError, match="not in .* \\(kept offline\\?\\)"):
        b.add_device("fl-three")
    assert "fl-three" not in b.usernames()
    # The broker itself runs without the CA key.
    b2 = Broker(d, port=free_port(), tls_port=free_port())
    b2.start()
    try:
        assert _connect(b2.port, "fl-one", "wrong") == NOT_AUTHORISED
    finally:
        b2.stop()


def test_a_centre_certificate_logs_in_as_its_account_on_tls(broker: BrokerFixture, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["broker", "--dir", str(broker.broker.dir), "--centre-cert", "centre-test"]) == 0
    pk = broker.broker.pki_dir
    tls = {"ca_certs": str(pk / "ca.crt"), "certfile": str(pk / "centres/centre-test.crt"),
           "keyfile": str(pk / "centres/centre-test.key")}
    assert _connect(broker.broker.tls_port, broker.centre_user, broker.centre_pass, tls) == 0
    # Its certificate with another name, or without its password, is refused.
    assert _connect(broker.broker.tls_port, broker.monitor_user, broker.monitor_pass, tls) == NOT_AUTHORISED
    assert _connect(broker.broker.tls_port, broker.centre_user, "ignored", tls) == NOT_AUTHORISED
    assert (pk / "centres/centre-test.key").stat().st_mode & 0o077 == 0
    assert cli.main(["broker", "--dir", str(broker.broker.dir), "--centre-cert", "centre-nobody"]) != 0
    assert "no centre account 'centre-nobody'" in capsys.readouterr().err


def test_a_write_failure_half_way_leaves_the_accounts_as_they_were(tmp_path: Path):
    d = tmp_path / "site"
    b = Broker(d)
    b.add_device("fl-there")
    accounts, passwd = (d / "accounts.json").read_bytes(), (d / "passwd").read_bytes()
    (d / "acl").unlink()
    (d / "acl").mkdir()  # the ACL cannot be replaced: a disk error after the password file
    with pytest.raises(OSError):
        b.add_device("fl-new")
    assert (d / "accounts.json").read_bytes() == accounts
    assert (d / "passwd").read_bytes() == passwd
