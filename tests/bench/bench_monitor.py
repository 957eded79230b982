"""The monitoring centre under a hostile device and through a broker outage (host side only).

    python -m tests.bench.bench_monitor [--flood 10000] [--outage-s 5]

Its own mosquitto (firelink.site.broker) in a temporary directory, the real monitor in this process,
devices as paho clients:

1. flood: device A publishes --flood fire events as fast as it can (mosquitto_pub -l, QoS 1, its
   own process); device B publishes one fire once the monitor has taken a tenth of them. Measured: B's fire from its publish to the
   monitor's sink, how many of A's events the monitor had taken before it, the time until all of
   A's are stored, and whether the monitor reported one flood.
2. outage: the broker is stopped for --outage-s and started again; measured: from the moment its
   port accepts again to the monitor's `broker_up`.
Nothing is asserted; `make bench` prints the figures (tests/bench/run.py).
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firelink.centre.intake import MqttSettings
from firelink.centre.monitor import Monitor, MonitorConfig, Sink
from firelink.centre.store import MonitorStore
from firelink.site.broker import Broker, free_port
from tests.host.mqtt_peer import Peer, RecordingSink, event_payload


@dataclass
class Figures:
    flood: int
    published_s: float
    other_fire_s: float
    taken_before: int
    all_stored_s: float
    floods: int
    reconnect_s: float | None
    outage_s: float

    def row(self) -> tuple[str, str, str]:
        back = "-" if self.reconnect_s is None else f"{self.reconnect_s:.2f} s"
        return (f"centre: another device's fire during a {self.flood}-event flood",
                f"{self.other_fire_s * 1000:.0f} ms ({self.taken_before} of the flood before it; all stored in "
                f"{self.all_stored_s:.1f} s, {self.floods} flood fault)",
                f"monitor back {back} after a {self.outage_s:g} s broker outage (target ≤ 1 s)")


class _Link(Sink):
    def __init__(self) -> None:
        self.ups: list[float] = []

    def on_broker(self, up: bool, at: float, detail: str) -> None:
        if up:
            self.ups.append(time.time())


def measure(flood: int = 10000, outage_s: float = 5.0) -> Figures:
    with tempfile.TemporaryDirectory(prefix="fl-bench-monitor-") as tmp:
        d = Path(tmp)
        d.chmod(0o711)  # mosquitto drops root: it must pass through to its directory
        broker = Broker(d / "broker", port=free_port(), tls_port=free_port())
        a, _ = broker.add_device("fl-bench-flood")
        b, _ = broker.add_device("fl-bench-calm")
        mon = broker.add_monitor()
        broker.start()
        peers: list[Peer] = []
        store = MonitorStore(d / "monitor.db")
        sink, link = RecordingSink(), _Link()
        monitor = Monitor(store, MonitorConfig(MqttSettings(host=broker.bind, port=broker.port, username=mon.username,
                                                            password=mon.password, client_id="bench-monitor")),
                          [sink, link])
        try:
            monitor.start(10)
            pb = Peer(broker.bind, broker.port, b.username, b.password)
            peers.append(pb)
            pb.connect()
            # The flood from another process (mosquitto_pub -l: one message per stdin line, QoS 1),
            # as a device on the network would: it does not share this process's interpreter.
            lines = b"".join(event_payload(i) + b"\n" for i in range(1, flood + 1))
            t0 = time.monotonic()
            flooder = subprocess.Popen(["mosquitto_pub", "-h", broker.bind, "-p", str(broker.port), "-u", a.username,
                                        "-P", a.password, "-i", a.username, "-q", "1", "-l",
                                        "-t", f"firelink/{a.username}/event"], stdin=subprocess.PIPE)
            assert flooder.stdin is not None
            flooder.stdin.write(lines)
            flooder.stdin.close()
            sink.wait(lambda s: len(s.events_of(a.username)) >= flood // 10, timeout_s=60)  # well into it
            tb = time.monotonic()
            pb.publish(f"firelink/{b.username}/event", event_payload(1, "calm-fire"))
            sink.wait(lambda s: s.events_of(b.username), timeout_s=60)
            other = time.monotonic() - tb
            before = len(sink.events_of(a.username))
            flooder.wait(60)
            published = time.monotonic() - t0
            sink.wait(lambda s: len(s.events_of(a.username)) == flood, timeout_s=120)
            stored = time.monotonic() - t0
            floods = getattr(monitor.stats, "floods", 0)

            reconnect: Any = None
            broker.stop()
            time.sleep(outage_s)  # the outage itself
            broker.start()
            back = time.time()
            deadline = time.monotonic() + 10
            while not link.ups and time.monotonic() < deadline:
                time.sleep(0.01)
            if link.ups:
                reconnect = link.ups[-1] - back
            return Figures(flood, published, other, before, stored, floods, reconnect, outage_s)
        finally:
            for p in peers:
                p.close()
            monitor.stop()
            store.close()
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.bench_monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flood", type=int, default=10000)
    p.add_argument("--outage-s", type=float, default=5.0)
    args = p.parse_args(argv)
    f = measure(args.flood, args.outage_s)
    print(f"flood of {f.flood} published in {f.published_s:.2f} s; another device's fire reached the monitor in "
          f"{f.other_fire_s * 1000:.0f} ms with {f.taken_before} of the flood taken before it; all stored in "
          f"{f.all_stored_s:.2f} s; {f.floods} flood fault(s)")
    print("monitor back " + ("never" if f.reconnect_s is None else f"{f.reconnect_s:.2f} s")
          + f" after a {f.outage_s:g} s broker outage")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
