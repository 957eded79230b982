"""The site broker: generated config, passwords, revocation, TLS — against real mosquitto."""
from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firelink.broker import Broker, BrokerError, acl_text, free_port, password_hash
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
    c.loop_stop()
    c.disconnect()
    return result[0] if result else "no CONNACK"


def test_password_hash_has_mosquitto_format():
    h = password_hash("secret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert len(h.split("$")[-1]) == 88  # 64-byte SHA-512 digest in base64


def test_acl_confines_devices_and_reserves_ack_for_monitor():
    text = acl_text()
    assert "pattern write firelink/%u/event" in text
    assert "pattern read firelink/%u/ack" in text
    assert "pattern write firelink/%u/ack" not in text
    assert "topic write firelink/+/ack" in text.split("pattern")[0]


def test_device_password_accepted_wrong_password_refused(broker: BrokerFixture):
    assert _connect(broker.port, broker.device_user, broker.device_pass) == 0
    assert _connect(broker.port, broker.device_user, "wrong") == NOT_AUTHORISED


def test_tls_listener_needs_the_site_ca_and_a_client_certificate(broker: BrokerFixture, tmp_path: Path):
    pk = broker.broker.pki_dir
    good = {"ca_certs": str(pk / "ca.crt"), "certfile": str(pk / "devices/fl-test1.crt"),
            "keyfile": str(pk / "devices/fl-test1.key")}
    assert _connect(broker.broker.tls_port, broker.device_user, broker.device_pass, good) == 0
    wrong_ca = tmp_path / "wrong.crt"
    from firelink import pki
    wrong_ca.write_bytes(pki.make_ca("someone else").cert_pem)
    res = _connect(broker.broker.tls_port, broker.device_user, broker.device_pass, {**good, "ca_certs": str(wrong_ca)})
    assert isinstance(res, str) and "certificate verify failed" in res


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


def test_state_survives_a_restart(tmp_path: Path):
    b = Broker(tmp_path / "site", port=free_port(), tls_port=free_port())
    account, _ = b.add_device("fl-keep")
    b.start()
    b.restart()
    try:
        assert _connect(b.port, "fl-keep", account.password) == 0
    finally:
        b.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path, broker: BrokerFixture):
    b = Broker(tmp_path / "site", port=broker.port, tls_port=free_port())
    with pytest.raises(BrokerError, match="mosquitto"):
        b.start(timeout_s=3)
