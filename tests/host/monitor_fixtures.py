"""Fixtures for the monitor tests: fresh device accounts on the session broker, and monitors
with their own store, client id and recording sink, stopped (and their broker session
forgotten) at the end of each test. Imported by the test modules that need them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig
from firelink.centre.store import MonitorStore
from tests.host.mqtt_peer import Peer, RecordingSink, unique, wait_until


@dataclass
class DeviceAccount:
    id: str
    password: str

    def topic(self, kind: str) -> str:
        return f"firelink/{self.id}/{kind}"


def new_device(broker: Any, prefix: str = "fl-mon", timeout_s: float = 5.0) -> DeviceAccount:
    """A new device account; waits until mosquitto (reloaded by SIGHUP) accepts it."""
    name = unique(prefix)
    account, _ = broker.broker.add_device(name)

    def accepted() -> bool:
        peer = Peer(broker.host, broker.port, name, account.password)
        ok = not peer.connect().is_failure
        peer.close()
        return ok

    wait_until(accepted, timeout_s, interval_s=0.05)
    return DeviceAccount(name, account.password)


def device_peer(broker: Any, dev: DeviceAccount, **kw: Any) -> Peer:
    peer = Peer(broker.host, broker.port, dev.id, dev.password, **kw)
    assert not peer.connect().is_failure
    return peer


@dataclass
class Running:
    monitor: Monitor
    sink: RecordingSink
    store: MonitorStore
    client_id: str


@pytest.fixture
def devices(broker: Any) -> Iterator[Callable[..., DeviceAccount]]:
    yield lambda prefix="fl-mon": new_device(broker, prefix)


@pytest.fixture
def peers(broker: Any) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(dev: DeviceAccount, **kw: Any) -> Peer:
        peer = device_peer(broker, dev, **kw)
        made.append(peer)
        return peer

    yield make
    for p in made:
        p.close()


@pytest.fixture
def start_monitor(broker: Any, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(db: Path | None = None, client_id: str | None = None, **config: Any) -> Running:
        store = MonitorStore(db or tmp_path / "monitor.db")
        sink = RecordingSink()
        cid = client_id or unique("monitor-test")
        cfg = MonitorConfig(MqttSettings(host=broker.host, port=broker.port, username=broker.monitor_user,
                                         password=broker.monitor_pass, client_id=cid), **config)
        monitor = Monitor(store, cfg, [sink])
        monitor.start(timeout_s=5)
        run = Running(monitor, sink, store, cid)
        started.append(run)
        return run

    yield start
    for run in started:
        run.monitor.stop()
        run.store.close()
    for cid in {run.client_id for run in started}:
        # Drop the persistent session, or the broker queues every later test's messages for it.
        peer = Peer(broker.host, broker.port, broker.monitor_user, broker.monitor_pass, client_id=cid)
        peer.connect()
        peer.close()
