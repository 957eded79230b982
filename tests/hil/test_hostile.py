"""Hostile devices (issue 10 §6): a box stolen from one site is an attacker with valid
credentials. A site with the monitor, device B (the real firmware, the `dut`) and device A's
credentials (password, certificate and key, as read from its flash) in the hands of a test
client. Each probe is replayed and the test asserts what matters to the centre: the monitor
stays up and connected, B's fire reaches it within the normal alarm latency, nothing of B's is
lost, and A gains nothing beyond its own topics. docs/threat-model.md says who can do what.
"""
from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest

from firelink.site.broker import Broker, free_port
from tests.conftest import BrokerFixture
from tests.hil.centre import Centre
from tests.hil.dut import Dut

DEV_A = "fl-deva"  # the stolen box: its credentials only, no firmware
DEV_B = "fl-devb"  # the honest device, the real firmware
ALARM_S = 3.0  # the alarm path's promise (tests/hil/test_alarm_path.py, standards.md)
BURST = 10_000


@dataclass(frozen=True)
class Stolen:
    """What A's flash gave the attacker."""

    password: str
    cert: Path  # PEM copies: the broker's own files go when A is revoked
    key: Path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerFixture, Stolen]]:
    b = Broker(tmp_path_factory.mktemp("hostile"), port=free_port(), tls_port=free_port())
    dev_b, _ = b.add_device(DEV_B)
    dev_a, cred_a = b.add_device(DEV_A)
    monitor = b.add_monitor()
    loot = tmp_path_factory.mktemp("stolen")
    (loot / "a.crt").write_bytes(cred_a.cert_pem)
    (loot / "a.key").write_bytes(cred_a.key_pem)
    b.start()
    try:
        yield (BrokerFixture(b, dev_b.username, dev_b.password, monitor.username, monitor.password,
                             wrong_ca_der=Path("/nonexistent")), Stolen(dev_a.password, loot / "a.crt", loot / "a.key"))
    finally:
        b.stop()


@pytest.fixture
def site(hostile: tuple[BrokerFixture, Stolen]) -> BrokerFixture:
    return hostile[0]


@pytest.fixture
def stolen(hostile: tuple[BrokerFixture, Stolen]) -> Stolen:
    return hostile[1]


# --- the attacker's client ---

class Attacker:
    """Device A's credentials in a paho client; records its CONNACK, SUBACKs and messages."""

    def __init__(self, site: BrokerFixture, username: str, password: str | None, client_id: str,
                 clean_session: bool = True, tls: Stolen | None = None, inflight: int = 20) -> None:
        self.site = site
        self.tls = tls
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                  clean_session=clean_session)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        if tls is not None:
            self.client.tls_set(ca_certs=str(site.broker.pki_dir / "ca.crt"), certfile=str(tls.cert),
                                keyfile=str(tls.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._cond = threading.Condition()
        self.connack: Any = None
        self.subacks: list[Any] = []
        self.received: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self._note(self.received, (m.topic, bytes(m.payload)))

    def _note(self, where: list[Any], what: Any) -> None:
        with self._cond:
            where.append(what)
            self._cond.notify_all()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            self.connack = rc
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[Any], props: Any) -> None:
        self._note(self.subacks, rcs)

    def connect(self, timeout_s: float = 5.0) -> Any:
        port = self.site.broker.tls_port if self.tls is not None else self.site.port
        self.client.connect(self.site.host, port, keepalive=30)
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self.connack is not None, timeout_s)
        return self.connack

    def subscribe(self, topic: str, timeout_s: float = 5.0) -> Any:
        n = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        with self._cond:
            self._cond.wait_for(lambda: len(self.subacks) > n, timeout_s)
        return self.subacks[n][0] if len(self.subacks) > n else None

    def close(self) -> None:
        self.client.disconnect()  # before loop_stop(), which would otherwise wait out paho's 1 s select
        self.client.loop_stop()


def broker_log(site: BrokerFixture, since: int = 0) -> str:
    return site.broker.log_file.read_bytes()[since:].decode(errors="replace")


def fire_latency(centre: Centre, dut: Dut) -> float:
    """B's fire and restore through the centre; the fire's delivery time in seconds."""
    since = centre.mark()
    t0 = time.time()
    dut.set_input("panel_fire", "active")
    fire = centre.wait_event(DEV_B, code="110", q="new", since=since, timeout_s=20)
    dut.set_input("panel_fire", "normal")
    centre.wait_event(DEV_B, code="110", q="restore", since=since, timeout_s=20)
    return fire.received_at - t0


def ready(centre: Centre, dut: Dut) -> None:
    centre.wait_change(DEV_B, "online", 20)
    centre.wait_event(DEV_B, code="305", timeout_s=20)  # booted and heard


def assert_monitor_held(site: BrokerFixture, log_mark: int) -> None:
    """The monitor's connection and B's were never taken over or dropped by the broker."""
    log = broker_log(site, log_mark)
    for victim in ("monitor", DEV_B):
        assert f"Client {victim} already connected" not in log, f"{victim}'s client id was taken over"
        assert f"Client {victim} disconnected" not in log, f"{victim} was disconnected:\n{log[-3000:]}"
        assert f"Client {victim} closed its connection" not in log


# --- client ids and accounts ---

@pytest.mark.needs("inputs")
def test_a_stolen_password_cannot_displace_the_monitor_or_another_device(
        site: BrokerFixture, stolen: Stolen, centre: Centre, dut: Dut) -> None:
    ready(centre, dut)
    log_mark = site.broker.log_file.stat().st_size
    # A's password under another account's name: refused outright.
    for user in ("monitor", DEV_B, "centre-test", "firelink-admin"):
        a = Attacker(site, user, stolen.password, client_id=user)
        try:
            rc = a.connect()
            assert rc is not None and rc.is_failure, f"A's password opened {user!r}"
        finally:
            a.close()
    # A's own account asking for the monitor's or B's client id, persistent and clean sessions,
    # over and over while B raises a fire: the broker names every one of them fl-deva.
    stop = threading.Event()
    connects: list[Any] = []

    def hammer() -> None:
        while not stop.is_set():
            for cid in ("firelink-monitor", "monitor", DEV_B):
                for clean in (True, False):
                    a = Attacker(site, DEV_A, stolen.password, client_id=cid, clean_session=clean)
                    try:
                        connects.append(a.connect())
                    finally:
                        a.close()

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        latencies = [fire_latency(centre, dut) for _ in range(3)]
    finally:
        stop.set()
        t.join(30)
    assert len(connects) >= 6 and all(rc is not None and not rc.is_failure for rc in connects)
    assert max(latencies) <= ALARM_S, f"B's fire took {latencies} s during the takeover attempts"
    log = broker_log(site, log_mark)
    assert f"as {DEV_A} " in log  # every attempt was given A's own id
    assert_monitor_held(site, log_mark)
    assert not [c for c in centre.changes_of(DEV_B) if c.change in ("offline", "lost")]


@pytest.mark.needs("inputs")
def test_a_stolen_certificate_opens_only_its_own_account_and_only_with_its_password(
        site: BrokerFixture, stolen: Stolen, centre: Centre, dut: Dut) -> None:
    """On the TLS listener a login needs the certificate whose CN is the username and that
    account's password (mosquitto_plugin/fl_certbind.c + the password file): A's certificate with
    B's or the monitor's username and password is refused at CONNECT, as is A's certificate with
    A's name and a wrong password; with A's own name and password it is A, and no more."""
    ready(centre, dut)
    log_mark = site.broker.log_file.stat().st_size
    since = centre.mark()
    refused = ((DEV_B, site.device_pass), ("monitor", site.monitor_pass), (DEV_A, site.device_pass),
               (DEV_A, stolen.password + "x"))
    for user, password in refused:
        a = Attacker(site, user, password, client_id=user, tls=stolen)
        try:
            rc = a.connect()
            assert rc is not None and rc.is_failure and rc.value == 135, \
                f"A's certificate as {user!r} got {rc} (want CONNACK not authorised)"
        finally:
            a.close()
    log = broker_log(site, log_mark)
    for user in (DEV_B, "monitor"):
        assert f"fl_certbind: refused 127.0.0.1: username '{user}' is not its certificate's CN '{DEV_A}'" in log
    for user in (DEV_B, "monitor", DEV_A):  # none of them got in under any name
        assert f"u'{user}'" not in log, log[-3000:]
    own = Attacker(site, DEV_A, stolen.password, client_id="monitor", tls=stolen)
    try:
        rc = own.connect()
        assert rc is not None and not rc.is_failure
        # Not the centre: it reads nothing of B's (mosquitto grants a denied subscription in
        # its SUBACK and then delivers nothing), sends no acks and no commands.
        own.subscribe("firelink/#")
        own.subscribe(f"firelink/{DEV_B}/ack")
        forged = json.dumps({"id": "forged-by-a", "seq": 1, "ts": int(time.time()), "tsync": True,
                             "code": "110", "q": "new", "zone": 1, "input": "panel_fire", "class": "fire"})
        own.client.publish(f"firelink/{DEV_B}/event", forged, qos=1).wait_for_publish(5)
        own.client.publish(f"firelink/{DEV_B}/cmd", b'{"cmd": "test", "id": "x"}', qos=1).wait_for_publish(5)
        own.client.publish(f"firelink/{DEV_B}/ack", b'{"id": "x"}', qos=1).wait_for_publish(5)
        assert fire_latency(centre, dut) <= ALARM_S  # B's fire, its ack and restore pass meanwhile
        assert not own.received, f"A's certificate read {own.received[:3]}"
    finally:
        own.close()
    assert not [e for e in centre.events_of(DEV_B, since) if e.id == "forged-by-a"]
    log = broker_log(site, log_mark)
    assert f"as {DEV_A} " in log and f"u'{DEV_A}'" in log  # the one login was A's, under A's id
    assert_monitor_held(site, log_mark)


# --- what A sends ---

@pytest.mark.needs("inputs")
def test_a_2_64_heartbeat_and_a_1_mb_event_leave_the_monitor_running(
        site: BrokerFixture, stolen: Stolen, centre: Centre, dut: Dut) -> None:
    ready(centre, dut)
    log_mark = site.broker.log_file.stat().st_size
    a = Attacker(site, DEV_A, stolen.password, client_id=DEV_A)
    assert not a.connect().is_failure
    try:
        hb = {"ts": int(time.time()), "tsync": True, "uptime_s": 5, "signal_dbm": 2**64,
              "outbox_depth": 2**63, "next_s": 300}
        a.client.publish(f"firelink/{DEV_A}/heartbeat", json.dumps(hb), qos=1).wait_for_publish(5)
    finally:
        a.close()
    # 1 MB: over the broker's packet limit, so the broker drops A, not the monitor.
    big = Attacker(site, DEV_A, stolen.password, client_id=DEV_A)
    assert not big.connect().is_failure
    try:
        event = {"id": "huge", "seq": 2, "ts": int(time.time()), "tsync": True, "code": "110", "q": "new",
                 "zone": 1, "input": "x" * 1_000_000, "class": "fire"}
        big.client.publish(f"firelink/{DEV_A}/event", json.dumps(event), qos=1)
        wait = time.monotonic() + 10
        while "disconnected" not in broker_log(site, log_mark) and time.monotonic() < wait:
            time.sleep(0.05)
    finally:
        big.close()
    assert fire_latency(centre, dut) <= ALARM_S
    assert centre.monitor.wait_idle(10)
    assert not [w for w in centre.warnings if w.reason.startswith("monitor stopped")]
    assert not centre.store.messages(device=DEV_A, kind="event")  # never reached the centre
    assert_monitor_held(site, log_mark)


@pytest.mark.needs("inputs")
def test_a_10000_event_burst_is_stored_and_b_keeps_its_latency(
        site: BrokerFixture, stolen: Stolen, centre: Centre, dut: Dut) -> None:
    ready(centre, dut)
    log_mark = site.broker.log_file.stat().st_size
    a = Attacker(site, DEV_A, stolen.password, client_id=DEV_A, inflight=1000)
    assert not a.connect().is_failure
    sender = threading.Thread(target=_burst, args=(a,), daemon=True)
    try:
        sender.start()
        # B's fire while A's burst is in flight at the centre.
        wait_for_first = time.monotonic() + 20
        while not centre.events_of(DEV_A) and time.monotonic() < wait_for_first:
            time.sleep(0.02)
        latency = fire_latency(centre, dut)
        sender.join(120)
        assert not sender.is_alive(), "A's burst did not finish within 120 s"
    finally:
        a.close()
    assert latency <= ALARM_S, f"B's fire took {latency:.2f} s behind A's burst"
    # Nothing of A's is lost either: every event stored once.
    deadline = time.monotonic() + 120
    while len(centre.store.events(DEV_A)) < BURST and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(centre.store.events(DEV_A)) == BURST
    assert centre.monitor.stats.floods >= 1  # A's burst reported as a flood, B's fire as a fire
    assert not [w for w in centre.warnings if w.reason.startswith("monitor stopped")]
    assert_monitor_held(site, log_mark)


def _burst(a: Attacker) -> None:
    now = int(time.time())
    last = None
    for seq in range(1, BURST + 1):
        doc = {"id": f"burst-{seq:05d}", "seq": 1000 + seq, "ts": now, "tsync": True, "code": "110", "q": "new",
               "zone": 1, "input": "panel_fire", "class": "fire"}
        last = a.client.publish(f"firelink/{DEV_A}/event", json.dumps(doc), qos=1)
    if last is not None:
        last.wait_for_publish(110)


# --- revocation (last: A is gone afterwards) ---

@pytest.mark.needs("inputs")
def test_revoking_the_stolen_box_locks_it_out_and_the_centre_shows_it_revoked(
        site: BrokerFixture, stolen: Stolen, centre: Centre, dut: Dut) -> None:
    ready(centre, dut)
    a = Attacker(site, DEV_A, stolen.password, client_id=DEV_A)
    assert not a.connect().is_failure
    a.client.publish(f"firelink/{DEV_A}/status", b'{"state": "online"}', qos=1, retain=True).wait_for_publish(5)
    a.close()
    assert site.broker.revoke(DEV_A)
    assert "revoked" in site.broker.last_revoke_marker, site.broker.last_revoke_marker
    centre.wait_change(DEV_A, "revoked", 15)
    # Neither the password nor the certificate (now on the site's CRL) opens the broker.
    again = Attacker(site, DEV_A, stolen.password, client_id=DEV_A)
    try:
        rc = again.connect()
        assert rc is not None and rc.is_failure
    finally:
        again.close()
    since = centre.mark()
    cert = Attacker(site, DEV_A, None, client_id=DEV_A, tls=stolen)
    try:
        try:
            rc = cert.connect()
        except (ssl.SSLError, OSError):
            rc = None  # refused at the handshake
        assert rc is None or rc.is_failure, "A's revoked certificate still logs in"
    finally:
        cert.close()
    assert fire_latency(centre, dut) <= ALARM_S  # B unaffected
    assert "on the CRL" in site.broker.last_withdrawn
