"""`firelink monitor` as a script sees it: JSON lines, exits, errors; plus TLS and bursts."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig, MonitorError
from firelink.centre.store import Device, MonitorStore
from firelink.centre.view import LineSink, LiveView
from firelink.site import pki
from tests.host.monitor_fixtures import devices, peers, start_monitor  # noqa: F401 (fixtures)
from tests.host.mqtt_peer import event_payload, unique, wait_until

CLI = "import sys; from firelink import cli; sys.exit(cli.main(sys.argv[1:]))"

EVENT_KEYS = ["type", "at", "device", "id", "seq", "class", "q", "code", "meaning", "zone", "input", "detail", "ts",
              "tsync", "latency_s", "late", "suspect", "retained", "test"]


def cli(broker, tmp_path, *args: str, password: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, FL_MONITOR_PASS=password or broker.monitor_pass)
    return subprocess.Popen([sys.executable, "-c", CLI, "monitor", "--host", broker.host, "--port", str(broker.port),
                             "--db", str(tmp_path / "cli.db"), "--client-id", unique("cli-monitor"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_lines_mode_end_to_end(broker, tmp_path, devices, peers):
    dev = devices()
    proc = cli(broker, tmp_path, "--lines", "--exit-after-events", "2")
    try:
        assert "monitoring" in proc.stderr.readline()  # connected and subscribed
        peer = peers(dev)
        peer.publish(dev.topic("event"), event_payload(1, "00000001-cli", code="115", input="call_point"))
        peer.publish(dev.topic("event"), event_payload(2, "00000002-cli", code="115", q="restore",
                                                       input="call_point"))
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    mine = [r for r in lines if r.get("device") == dev.id]
    assert [r["type"] for r in mine] == ["device_online", "alarm", "restore"]
    alarm = mine[1]
    assert list(alarm) == EVENT_KEYS
    assert (alarm["id"], alarm["seq"], alarm["code"], alarm["meaning"], alarm["class"]) == (
        "00000001-cli", 1, "115", "manual call point", "fire")
    assert "2 events" in err
    with MonitorStore(tmp_path / "cli.db", readonly=True) as s:
        assert [e.id for e in s.events(dev.id)] == ["00000001-cli", "00000002-cli"]


def test_exit_after_seconds_and_refused_credentials(broker, tmp_path):
    t0 = time.monotonic()
    proc = cli(broker, tmp_path, "--lines", "--exit-after-s", "0.5")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 5
    proc = cli(broker, tmp_path, "--lines", "--connect-timeout-s", "3", password="wrong")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "refused" in err and "Not authorized" in err


def test_line_sink_format():
    buf = io.StringIO()
    sink = LineSink(buf)
    d = Device("fl-a", "lost", 1000.0, 12.0, last_heard=988.0)
    sink.on_device(d, "lost")
    sink.on_device(d, None)  # plain updates are not lines
    sink.on_gap("fl-a", 4, 6, 1001.0)
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert records == [
        {"type": "device_lost", "at": 1000.0, "device": "fl-a", "state": "lost", "last_heard": 988.0,
         "supervision_s": 12.0},
        {"type": "seq_gap", "at": 1001.0, "device": "fl-a", "first": 4, "last": 6}]


def test_line_sink_and_live_view_tell_losses_floods_and_the_brokers_outage():
    from rich.console import Console

    buf = io.StringIO()
    sink, view = LineSink(buf), LiveView()
    for s in (sink, view):
        s.on_loss("fl-a", 4, 9, 1002.0, "0000000d-aa")
        s.on_flood("fl-b", True, {"since": 1003.0, "last": 1003.0, "events": 101, "fire": 101}, 1003.0)
        s.on_flood("fl-b", False, {"since": 1003.0, "last": 1004.0, "events": 900, "fire": 880, "quarantined": 20},
                   1006.0)
        s.on_broker(False, 1007.0, "connection lost")
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert records == [
        {"type": "seq_lost", "at": 1002.0, "device": "fl-a", "first": 4, "last": 9, "event": "0000000d-aa"},
        {"type": "flood", "at": 1003.0, "device": "fl-b", "since": 1003.0, "events": 101, "fire": 101, "fault": 0,
         "status": 0, "quarantined": 0},
        {"type": "flood_end", "at": 1006.0, "device": "fl-b", "since": 1003.0, "events": 900, "fire": 880,
         "fault": 0, "status": 0, "quarantined": 20},
        {"type": "broker_down", "at": 1007.0, "detail": "connection lost"}]
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(view.renderable())
    text = out.getvalue()
    assert "BROKER UNREACHABLE (connection lost)" in text
    assert "EVENTS LOST on the device: seq 4..9" in text and "FLOOD" in text and "880 fire" in text
    view.on_broker(True, 1010.0, "back after 3.0 s")
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(view.renderable())
    assert "UNREACHABLE" not in out.getvalue() and "back after 3.0 s" in out.getvalue()


def test_live_view_renders(devices, peers, start_monitor):
    from rich.console import Console

    run = start_monitor()
    view = LiveView(missing=run.monitor.missing_seqs)
    run.monitor.sinks.append(view)
    dev = devices()
    peer = peers(dev)
    peer.publish(dev.topic("heartbeat"), json.dumps({"link": {"path": "4g", "signal_dbm": -83},
                                                     "outbox": {"depth": 5}, "faults": {"mains": "lost"}}).encode())
    peer.publish(dev.topic("event"), event_payload(3, code="110"))
    peer.publish(dev.topic("event"), event_payload(5, code="301", cls="fault", input="mains"))
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2)
    assert run.monitor.wait_idle(5)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(view.renderable())
    text = console.export_text()
    row = next(line for line in text.splitlines() if dev.id in line and "online" in line)
    assert "4g" in row and "-83 dBm" in row and "mains" in row and row.rstrip(" │").endswith("1")
    assert "FIRE" in text and "fire alarm" in text and "mains loss" in text


def test_monitor_over_mutual_tls(broker, tmp_path, devices, peers):
    ca = broker.broker.ca()
    cred = pki.make_client(ca, "monitor")
    pki.save(cred, tmp_path, "monitor")
    config = MonitorConfig(MqttSettings(host=broker.host, port=broker.broker.tls_port, username=broker.monitor_user,
                                        password=broker.monitor_pass, client_id=unique("tls-monitor"), tls=True,
                                        ca=broker.broker.pki_dir / "ca.crt", cert=tmp_path / "monitor.crt",
                                        key=tmp_path / "monitor.key"))
    with MonitorStore(tmp_path / "tls.db") as store:
        monitor = Monitor(store, config)
        monitor.start(timeout_s=5)
        try:
            dev = devices()
            peers(dev).publish(dev.topic("event"), event_payload(1))
            wait_until(lambda: store.event(dev.id, "00000001-test"))
        finally:
            monitor.stop()
    # Without a client certificate the site's TLS listener refuses the monitor.
    with MonitorStore(tmp_path / "tls2.db") as store:
        config.mqtt.cert = config.mqtt.key = None
        with pytest.raises(MonitorError):
            Monitor(store, config).start(timeout_s=3)


@pytest.mark.parametrize("n", [1000])
def test_burst_after_an_outage_is_taken_in_seconds(devices, peers, start_monitor, n):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    t0 = time.monotonic()
    infos = [peer.client.publish(dev.topic("event"), event_payload(seq, code="373" if seq % 10 else "110",
                                                                   cls="fault" if seq % 10 else "fire"), qos=1)
             for seq in range(1, n + 1)]
    for info in infos:
        info.wait_for_publish(10)
    published = time.monotonic() - t0
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == n, timeout_s=20)
    shown = time.monotonic() - t0
    wait_until(lambda: len(peer.messages(dev.topic("ack"))) == n, timeout_s=20)
    acked = time.monotonic() - t0
    stats = run.monitor.stats
    print(f"\nburst of {n} events: published in {published:.2f} s, all stored and shown in {shown:.2f} s, "
          f"all acks at the device in {acked:.2f} s; {stats.batches} batches")
    assert acked < 10
    assert len(run.store.events(dev.id)) == n
