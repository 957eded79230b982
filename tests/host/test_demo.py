"""`firelink demo`: the whole chain on this PC (mosquitto, the real firmware on the unix port, the
monitor), run end to end as a function and as a command, and its failures reported and cleaned up."""
from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

import pytest

from firelink.board import build
from firelink.centre.store import MonitorStore
from firelink.commands import demo as demo_cmd
from firelink.progress import RecordingReporter
from firelink.site import local as localsite
from firelink.site.broker import Broker, BrokerError
from firelink.site.demo import DemoConfig, DemoError, run_demo
from firelink.virtual.device import VirtualDevice


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The application as it ships, built in a directory of this module's own so that a concurrent
    run never rebuilds it underneath the device."""
    return build.build_app(build.arch_for_chip("ESP32"), build_root=tmp_path_factory.mktemp("build")).directory


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_alarm_and_restore_arrive_acknowledged_then_everything_stops(tmp_path: Path, app: Path) -> None:
    rec = RecordingReporter()
    result = run_demo(DemoConfig(directory=tmp_path / "demo", firmware=app), rec)

    assert result.ok
    assert [(s.what, s.event.code, s.event.q, s.event.cls, s.event.input) for s in result.steps] == [
        ("alarm", "110", "new", "fire", "panel_fire"), ("restore", "110", "restore", "fire", "panel_fire")]
    for s in result.steps:
        # The debounce alone is 50 ms; the bound only catches a wrong clock or a wrong pairing.
        assert 0.05 <= s.latency_s < 10, s
        assert s.acked_at >= s.event.received_at
    assert result.steps[0].event.seq < result.steps[1].event.seq
    assert result.debounce_ms == 50
    assert result.offline_seen, "the device said offline itself at stop"
    assert result.stats is not None and result.stats.events == 3  # the reset report, the alarm, the restore

    # Everything stopped: no broker on its port, no device process.
    assert not _port_open(result.broker_port)
    assert not VirtualDevice(tmp_path / "demo" / "devices" / "fl-demo").running()

    # What it says it left behind is there, with the events stored and acknowledged.
    assert "input panel_fire: active -> normal" in result.console_log.read_text()
    assert result.broker_log.exists()
    with MonitorStore(result.db, readonly=True) as store:
        held = {e.id: e for e in store.events("fl-demo")}
    for s in result.steps:
        assert held[s.event.id].acked_at is not None
    assert rec.steps()[0] == "site broker (mosquitto)" and rec.steps()[-1].startswith("stopping")


@pytest.mark.slow
def test_cli_exits_0_and_prints_the_summary(tmp_path: Path, app: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at 80 columns when not on a terminal
    monkeypatch.setenv("FL_FIRMWARE", str(app))
    parser = argparse.ArgumentParser()
    demo_cmd.register(parser.add_subparsers(dest="command"))
    d = tmp_path / "cli-demo"
    args = parser.parse_args(["demo", "--dir", str(d), "--hold-s", "0.2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "demo passed" in out
    assert "fire alarm" in out and "fire restore" in out and "ms input change" in out
    assert str(d / "monitor.db") in out


def test_a_device_that_never_comes_online_is_reported_with_its_console(tmp_path: Path, app: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = localsite.virtual.create

    def wrong_password(directory: Path, config: dict[str, Any], secrets: dict[str, Any] | None = None,
                       *a: Any, **k: Any) -> Path:
        return real_create(directory, config, {**(secrets or {}), "mqtt_password": "not-the-password"}, *a, **k)

    monkeypatch.setattr(localsite.virtual, "create", wrong_password)
    with pytest.raises(DemoError) as err:
        run_demo(DemoConfig(directory=tmp_path / "demo", online_timeout_s=4, firmware=app))
    text = str(err.value)
    assert "did not come online within 4 s" in text
    assert "INFO app: FireLink" in text  # the console's last lines come with it
    assert not VirtualDevice(tmp_path / "demo" / "devices" / "fl-demo").running()


def test_broker_start_failure_is_a_demo_error_with_the_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_mosquitto(self: Broker, timeout_s: float = 10.0) -> None:
        raise BrokerError("mosquitto is not installed: `sudo apt-get install mosquitto`")

    monkeypatch.setattr(Broker, "start", no_mosquitto)
    rec = RecordingReporter()
    with pytest.raises(DemoError, match="sudo apt-get install mosquitto"):
        run_demo(DemoConfig(directory=tmp_path / "demo"), rec)
    assert rec.steps() == ["site broker (mosquitto)"]
