"""`make bench`: FireLink's performance figures on this PC, printed as tables (nothing is asserted).

    python -m tests.bench.run [--dir run/bench] [--changes 200] [--backlog 1000] [--heapsize 256k] [--no-micro]

One site on loopback (tests/bench is a client of firelink.site.local): mosquitto from
`firelink.site.broker`, the real monitor in this process, and the virtual device (the real firmware
under the MicroPython unix port, its heap capped with `-X heapsize`). The scenario, in order:

1. latency: `panel_fire` alternately active and normal, one change at a time; each is timed
   from just before the host writes the sim control file to the moment the monitor's MQTT client
   receives the event (both on the host's clock), with 20-60 ms of random idle between changes
   so that the firmware's 10 ms control-file poll is not always hit at the same phase.
2. backlog: the device's Wi-Fi is cut, a supervisory input with debounce 0 is toggled through the
   control file until it has recorded the events (each toggle waits until the console shows it
   was taken), the link is restored, and the time until the monitor holds every event recorded
   during the outage is measured from the moment the link came back.
3. heartbeat: the payloads the monitor stored, their size, and the MQTT wire cost per
   heartbeat and per day at the default 60 s interval (the bench itself runs heartbeats every
   5 s, the shortest allowed, to sample the heap often).
4. heap: the heartbeat's `heap_peak` (the most heap in use right after a collection, sampled at
   each heartbeat), with the console checked for MemoryError and the supervisor for restarts.
5. the micro-benchmarks tests/bench/bench_outbox.py and bench_mqtt.py under the unix port.
6. the flash model (tests/bench/bench_flash.py): latency, backlog, block writes per event and per
   idle day with typical and worst-case flash write times, each on a site of its own.
7. the centre (tests/bench/bench_monitor.py): another device's fire during a 10,000-event flood,
   and the monitor's reconnect after a broker outage.
8. heap (tests/bench/bench_heap.py): the smallest heap the alarm scenario passes in, import cost
   per module, garbage per idle input scan.
9. tests/bench/bench_wire.py (its own site, `--wire-minutes`): supervision bytes per device per
   month at default settings over TLS, counted at a proxy, and the time to report a dead device.

The exit status is 0 when every part ran, whatever the figures; 1 when one could not run.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from firelink.board import build
from firelink.centre.devices import WENT_ONLINE
from firelink.centre.store import Event
from firelink.site.local import LocalSite, SiteError
from firelink.virtual import device as virtual
from tests.bench import bench_cell, bench_diag, bench_flash, bench_heap, bench_jig, bench_monitor, bench_wire
from tests.tooling import ROOT, firmware_env, micropython_binary

DEVICE_ID = "fl-02000000be01"  # as long as a default id ("fl-" + the MAC in hex): the topic's real size
FIRE = "panel_fire"
TOGGLE = "bench_toggle"
HEARTBEAT_S = 5  # the shortest config.md allows: heap_peak is sampled at each heartbeat
TARGET_ABOVE_DEBOUNCE_MS = 100
# Firmware defaults (docs/config.md) for the wire-cost figures (bench_wire.py measures them over TLS).
DEFAULT_HEARTBEAT_S = 3600
DEFAULT_KEEPALIVE_S = 100
DEFAULT_PING_S = 95  # fl/mqtt.py pings after keepalive less 5 % without sending
# TCP/IP assumption: IPv4 (20 B) + TCP without options (20 B; lwIP sends no timestamps) per segment;
# each MQTT packet in a segment of its own (one write per packet, TCP_NODELAY), and the reply
# (PUBACK, PINGRESP) answered by a bare ACK.
TCPIP_SEGMENT_B = 40
SEGMENTS_PER_EXCHANGE = 3
# TLS 1.2 with AES-GCM: 5 B record header + 8 B explicit nonce + 16 B tag per MQTT packet.
TLS_RECORD_B = 29
DAY_S = 86400


class BenchError(RuntimeError):
    pass


# --- figures ---

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


@dataclass(frozen=True)
class WireCost:
    """Bytes on the device's link for its heartbeats and keepalive pings (peers.md's formula)."""

    topic_b: int
    payload_b: int
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    ping_s: int = DEFAULT_PING_S

    @property
    def publish_b(self) -> int:
        rest = 2 + self.topic_b + 2 + self.payload_b  # topic length, topic, packet id, payload
        return 1 + varint_len(rest) + rest

    @property
    def per_heartbeat_b(self) -> int:
        return self.publish_b + 4  # + PUBACK

    @property
    def heartbeats_per_day(self) -> int:
        return DAY_S // self.heartbeat_s

    @property
    def pings_per_day(self) -> int:
        return DAY_S // self.ping_s

    @property
    def mqtt_per_day_b(self) -> int:
        return self.heartbeats_per_day * self.per_heartbeat_b + self.pings_per_day * 4

    @property
    def tcpip_per_day_b(self) -> int:
        exchanges = self.heartbeats_per_day + self.pings_per_day
        return exchanges * SEGMENTS_PER_EXCHANGE * TCPIP_SEGMENT_B

    @property
    def tls_per_day_b(self) -> int:
        return (self.heartbeats_per_day + self.pings_per_day) * 2 * TLS_RECORD_B


@dataclass
class Latency:
    debounce_ms: int
    seconds: list[float] = field(default_factory=list)  # input change -> the monitor received it
    ack_seconds: list[float] = field(default_factory=list)  # received -> the broker accepted the monitor's ack

    def ms(self, p: float) -> float:
        return percentile(self.seconds, p) * 1000

    @property
    def target_ms(self) -> float:
        return self.debounce_ms + TARGET_ABOVE_DEBOUNCE_MS

    @property
    def met(self) -> bool:
        return self.ms(99) <= self.target_ms


@dataclass
class Backlog:
    events: int = 0  # recorded during the outage
    toggles: int = 0
    other: int = 0  # outbox level reports and the like, recorded during the outage
    fill_s: float = 0.0
    online_s: float | None = None  # link restored -> device online at the monitor
    first_s: float = 0.0  # link restored -> first outage event at the monitor
    all_s: float = 0.0  # link restored -> the monitor holds every outage event
    duplicates: int = 0
    gaps: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        span = self.all_s - self.first_s
        return self.events / span if span > 0 else float("inf")


@dataclass
class Heap:
    cap: str
    peak_b: int | None
    min_free_b: int | None
    samples: int
    memory_errors: int
    tracebacks: int
    boots: int


@dataclass
class Micro:
    name: str
    seconds: float
    status: int
    output: str


# --- the scenario ---

class ConsoleFollower:
    """Counts console lines matching a pattern as the device prints them."""

    def __init__(self, path: Path, pattern: str) -> None:
        self.path = path
        self.rx = re.compile(pattern)
        self.offset = path.stat().st_size if path.exists() else 0
        self.count = 0
        self._partial = b""

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.count += sum(1 for line in lines if self.rx.search(line.decode("utf-8", "replace")))
        return self.count


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def measure_latency(site: LocalSite, changes: int, console: Console) -> Latency:
    lat = Latency(debounce_ms=site.debounce_ms(FIRE) or 0)
    state = "normal"
    received: list[Event] = []
    with _progress(console) as bar:
        task = bar.add_task(f"latency: {FIRE} changes", total=changes)
        for i in range(changes):
            state = "active" if state == "normal" else "normal"
            q = "new" if state == "active" else "restore"
            mark = len(site.watch.events())
            changed = site.set_input(FIRE, state)
            ev = site.wait_event(lambda e, q=q: e.input == FIRE and e.q == q, 10.0, after=mark,
                                 what=f"change {i + 1} ({FIRE} {state})")
            lat.seconds.append(ev.received_at - changed)
            received.append(ev)
            bar.advance(task)
            time.sleep(random.uniform(0.02, 0.06))
    for ev in received:
        acked_at = site.wait_acked(ev, 10.0)
        lat.ack_seconds.append(acked_at - ev.received_at)
    return lat


def measure_backlog(site: LocalSite, n: int, console: Console) -> Backlog:
    assert site.monitor is not None and site.store is not None
    base = max((e.seq for e in site.watch.events() if e.device == site.device_id), default=0)
    out = Backlog()
    dup_before = site.monitor.stats.duplicates
    toggles = ConsoleFollower(site.console_log, rf" app: input {TOGGLE}: ")
    levels = ConsoleFollower(site.console_log, r" recorder: outbox level 62\d new")
    cut = ConsoleFollower(site.console_log, r" link: wifi went down")
    virtual.set_link(site.device_dir, "wifi", False)
    _until(lambda: cut.poll() > 0, 10.0, "the device did not notice the link going down", site)
    t0 = time.monotonic()
    state = "normal"
    with _progress(console) as bar:
        task = bar.add_task("backlog: events recorded while the link is down", total=n)
        for i in range(n):
            state = "active" if state == "normal" else "normal"
            virtual.set_input(site.device_dir, TOGGLE, state)
            _until(lambda i=i: toggles.poll() > i, 5.0, f"toggle {i + 1} was not taken by the device", site,
                   step_s=0.001)
            bar.advance(task)
    out.fill_s = time.monotonic() - t0
    time.sleep(0.2)  # level events are recorded right after the event that crossed the level
    out.toggles, out.other = toggles.poll(), levels.poll()
    out.events = out.toggles + out.other
    wanted = set(range(base + 1, base + out.events + 1))
    mark = len(site.watch.seen.changes)

    restored = time.time()
    virtual.set_link(site.device_dir, "wifi", True)

    def held() -> tuple[int, float | None, float | None]:
        evs = [e for e in site.watch.events() if e.device == site.device_id and e.seq in wanted]
        if not evs:
            return 0, None, None
        return len(evs), min(e.received_at for e in evs), max(e.received_at for e in evs)

    with _progress(console) as bar:
        task = bar.add_task("backlog: delivered to the monitor after the link came back", total=out.events)
        deadline = time.monotonic() + 180
        while True:
            count, first, last = held()
            bar.update(task, completed=count)
            if count >= out.events and first is not None and last is not None:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {count} of the {out.events} events recorded during the outage reached the "
                                 f"monitor within 180 s; console ends with:\n{site.console_tail()}")
            site.check_device()
            time.sleep(0.05)
    out.first_s, out.all_s = first - restored, last - restored
    online = [at for d, c, at in site.watch.seen.changes[mark:] if d == site.device_id and c == WENT_ONLINE]
    out.online_s = online[0] - restored if online else None
    toggled = sum(1 for e in site.watch.events() if e.device == site.device_id and e.seq in wanted
                  and e.input == TOGGLE)
    if toggled != out.toggles:
        raise BenchError(f"{out.toggles} toggles recorded but {toggled} of them among seq {base + 1}..{max(wanted)}")
    out.duplicates = site.monitor.stats.duplicates - dup_before
    out.gaps = site.store.seq_gaps(site.device_id)
    return out


def _until(cond: Any, timeout_s: float, what: str, site: LocalSite, step_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} within {timeout_s:g} s; console ends with:\n{site.console_tail()}")
        time.sleep(step_s)


def heartbeats(site: LocalSite) -> list[tuple[float, bytes]]:
    assert site.store is not None
    return [(m.received_at, m.payload) for m in site.store.messages(site.device_id, "heartbeat")]


def wait_for_heartbeat_after(site: LocalSite, t: float, timeout_s: float) -> None:
    _until(lambda: any(at > t for at, _ in heartbeats(site)), timeout_s, "no heartbeat", site, step_s=0.1)


def as_default_device(payload: bytes) -> tuple[int, int]:
    """(size, size with compact separators) of a heartbeat payload without the bench's extra input,
    i.e. as a device with the board's default inputs sends it. Python's json.dumps writes the same
    ", " and ": " separators as MicroPython's, and key order does not change the length."""
    doc = json.loads(payload)
    if isinstance(doc.get("inputs"), dict):
        doc["inputs"].pop(TOGGLE, None)
    return len(json.dumps(doc).encode()), len(json.dumps(doc, separators=(",", ":")).encode())


def heap_figures(site: LocalSite, cap: str) -> Heap:
    beats = [json.loads(p) for _, p in heartbeats(site)]
    peaks = [b["heap_peak"] for b in beats if isinstance(b.get("heap_peak"), int)]
    frees = [b["heap_free"] for b in beats if isinstance(b.get("heap_free"), int)]
    console = site.device.log_text() if site.device else ""
    st = site.device.state() if site.device else {}
    return Heap(cap=cap, peak_b=max(peaks) if peaks else None, min_free_b=min(frees) if frees else None,
                samples=len(peaks), memory_errors=console.count("MemoryError"),
                tracebacks=console.count("Traceback"), boots=int(st.get("boots", 0)))


def run_micro(script: str, env_extra: dict[str, str], heapsize: str) -> Micro:
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as cwd:
        env = {**firmware_env(), **env_extra}
        t0 = time.monotonic()
        r = subprocess.run([micropython_binary(), "-X", f"heapsize={heapsize}", str(ROOT / "tests" / "bench" / script)],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return Micro(script, time.monotonic() - t0, r.returncode, (r.stdout + r.stderr).strip())


# --- printing ---

def kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def latency_table(lat: Latency) -> Table:
    t = Table(title=f"Fire latency: input change → receipt at the monitor ({len(lat.seconds)} changes of {FIRE}, "
                    f"alternating active/normal)", title_justify="left")
    for col in ("", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="right" if col else "left")
    ps = (50, 95, 99, 100)
    t.add_row("total", *(f"{lat.ms(p):.1f} ms" for p in ps))
    t.add_row("configured debounce", *(f"{lat.debounce_ms} ms" for _ in ps))
    t.add_row("above the debounce", *(f"{lat.ms(p) - lat.debounce_ms:.1f} ms" for p in ps))
    t.add_row("receipt → ack accepted by the broker", *(f"{percentile(lat.ack_seconds, p) * 1000:.1f} ms" for p in ps))
    return t


def wire_table(cost: WireCost, sizes: list[int], compact_b: int) -> Table:
    t = Table(title=f"Heartbeat on the wire: payload measured from the device ({len(sizes)} heartbeats: "
                    f"{min(sizes)}..{max(sizes)} B), the largest without the bench's extra input = "
                    f"{cost.payload_b} B; default interval {cost.heartbeat_s} s, keepalive {DEFAULT_KEEPALIVE_S} s "
                    f"with a ping every {cost.ping_s} s", title_justify="left")
    t.add_column("")
    t.add_column("per heartbeat", justify="right")
    t.add_column("per day", justify="right")
    n_hb, n_ping = cost.heartbeats_per_day, cost.pings_per_day
    t.add_row(f"PUBLISH (QoS 1, topic {cost.topic_b} B, payload {cost.payload_b} B) + PUBACK 4 B",
              f"{cost.per_heartbeat_b} B", f"{n_hb} × = {kb(n_hb * cost.per_heartbeat_b)}")
    pings_per_hb = cost.heartbeat_s // cost.ping_s
    t.add_row("PINGREQ + PINGRESP (4 B)", f"{pings_per_hb * 4} B", f"{n_ping} × = {kb(n_ping * 4)}")
    t.add_row("[bold]MQTT total[/]", f"[bold]{cost.per_heartbeat_b + pings_per_hb * 4} B[/]",
              f"[bold]{kb(cost.mqtt_per_day_b)}[/]")
    per_hb_tcp = (1 + pings_per_hb) * SEGMENTS_PER_EXCHANGE * TCPIP_SEGMENT_B
    t.add_row(f"+ TCP/IPv4 headers ({SEGMENTS_PER_EXCHANGE} segments × {TCPIP_SEGMENT_B} B per exchange)",
              f"{per_hb_tcp} B", kb(cost.tcpip_per_day_b))
    t.add_row("[bold]with TCP/IP[/]", f"[bold]{cost.per_heartbeat_b + pings_per_hb * 4 + per_hb_tcp} B[/]",
              f"[bold]{kb(cost.mqtt_per_day_b + cost.tcpip_per_day_b)}[/]")
    per_hb_tls = (1 + pings_per_hb) * 2 * TLS_RECORD_B
    t.add_row(f"+ TLS 1.2 AES-GCM records ({TLS_RECORD_B} B per MQTT packet)", f"{per_hb_tls} B",
              kb(cost.tls_per_day_b))
    t.add_row("[bold]with TCP/IP and TLS[/]",
              f"[bold]{cost.per_heartbeat_b + pings_per_hb * 4 + per_hb_tcp + per_hb_tls} B[/]",
              f"[bold]{kb(cost.mqtt_per_day_b + cost.tcpip_per_day_b + cost.tls_per_day_b)}[/]")
    saved = cost.payload_b - compact_b
    t.add_row("(JSON without the spaces after , and : would save)", f"{saved} B",
              kb(saved * cost.heartbeats_per_day))
    return t


def backlog_table(b: Backlog) -> Table:
    t = Table(title=f"Backlog: {b.events} events recorded with the link down ({b.toggles} from a supervisory input "
                    f"with debounce 0 toggled through the control file, {b.other} outbox level reports), "
                    "then the link restored", title_justify="left")
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("recording them (link down)", f"{b.fill_s:.1f} s")
    t.add_row("link restored → device online at the monitor",
              "-" if b.online_s is None else f"{b.online_s * 1000:.0f} ms")
    t.add_row("link restored → first of them at the monitor", f"{b.first_s * 1000:.0f} ms")
    t.add_row("[bold]link restored → the monitor holds all of them[/]", f"[bold]{b.all_s:.2f} s[/]")
    t.add_row("delivery rate", f"{b.rate:.0f} events/s")
    t.add_row("duplicates received / seq gaps at the monitor", f"{b.duplicates} / {len(b.gaps)}")
    return t


def heap_table(h: Heap) -> Table:
    t = Table(title=f"Firmware heap (unix port, -X heapsize={h.cap})", title_justify="left")
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("peak in use after a collection (heap_peak, sampled at each of "
              f"{h.samples} heartbeats, every {HEARTBEAT_S} s)", "-" if h.peak_b is None else kb(h.peak_b))
    t.add_row("lowest heap_free reported (before collection: includes garbage)",
              "-" if h.min_free_b is None else kb(h.min_free_b))
    t.add_row("MemoryError / tracebacks in the console", f"{h.memory_errors} / {h.tracebacks}")
    t.add_row("boots (1 = it never restarted)", str(h.boots))
    return t


_MQTT_SEQ = re.compile(r"sequential: (\d+) QoS 1 msgs in \d+ ms = (\d+) msgs/s; publish->PUBACK p50 ([\d.]+) ms "
                       r"p99 ([\d.]+) ms")
_MQTT_SUB = re.compile(r"publish->subscriber: \d+ msgs, p50 ([\d.]+) ms p99 ([\d.]+) ms")
_OUTBOX = re.compile(r"^\s+(put|peek after remove \(scan \+ read\)|remove)\s+(\d+) us/op", re.M)


def micro_summary(m: Micro) -> str:
    if m.status != 0:
        return f"failed (status {m.status})"
    if m.name == "bench_mqtt.py":
        s, sub = _MQTT_SEQ.search(m.output), _MQTT_SUB.search(m.output)
        parts = []
        if s:
            parts.append(f"{s.group(2)} msgs/s sequential, PUBACK p99 {s.group(4)} ms")
        if sub:
            parts.append(f"publish→subscriber p99 {sub.group(2)} ms")
        return "; ".join(parts) or "see above"
    ops = dict((k.split(" ")[0], v) for k, v in _OUTBOX.findall(m.output))
    return ", ".join(f"{k} {v} µs" for k, v in ops.items()) or "see above"


# --- main ---

def device_config() -> dict[str, Any]:
    inputs = [dict(e) for e in json.loads(virtual.board_json_path().read_text())["default_inputs"]]
    inputs.append({"name": TOGGLE, "kind": "supervisory", "channel": "in6", "debounce_ms": 0, "zone": 60})
    return {"heartbeat_s": HEARTBEAT_S, "inputs": inputs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=ROOT / "run" / "bench", help="(default: %(default)s)")
    p.add_argument("--changes", type=int, default=200, help="fire input changes timed (default: %(default)s)")
    p.add_argument("--backlog", type=int, default=1000, help="events made while the link is down (default: %(default)s)")
    p.add_argument("--heapsize", default="256k", help="the device's MicroPython heap (default: %(default)s)")
    p.add_argument("--no-micro", action="store_true", help="skip bench_outbox.py and bench_mqtt.py")
    p.add_argument("--no-flash", action="store_true", help="skip the flash-model runs (bench_flash.py)")
    p.add_argument("--flash-changes", type=int, default=100, help="fire changes per flash model (default: %(default)s; "
                   "a quarter for the worst case)")
    p.add_argument("--flash-backlog", type=int, default=300, help="backlog events per flash model (default: "
                   "%(default)s; a fifth for the worst case)")
    p.add_argument("--flash-idle-s", type=float, default=60.0, help="idle spell per flash model (default: %(default)s)")
    p.add_argument("--wire-minutes", type=float, default=10.0,
                   help="bench_wire.py's steady-state window at default settings over TLS; 0 skips it (default: %(default)s)")
    p.add_argument("--no-heap", action="store_true", help="skip bench_heap.py (smallest heap, import costs, idle scan)")
    args = p.parse_args(argv)

    console = Console()
    started = time.monotonic()
    try:
        # What ships: the bytecode-only .mpy build `firelink flash` deploys to an ESP32 (it imports on
        # the unix port too). Built in the bench's own directory so that a test run elsewhere never
        # rebuilds it underneath the device.
        with console.status("building the application (.mpy) as it ships"):
            app = build.build_app(build.arch_for_chip("ESP32"), build_root=args.dir / "build").directory
    except build.BuildError as e:
        console.print(f"[bold red]bench not run:[/] {e}")
        return 1
    site = LocalSite(args.dir, DEVICE_ID, device_config(), heapsize=args.heapsize,
                     monitor_client_id="firelink-bench-monitor", firmware=app)
    summary: list[tuple[str, str, str]] = []
    micro: list[Micro] = []
    failed: str | None = None
    try:
        site.wipe()
        with console.status("starting mosquitto, the monitor and the virtual device"):
            broker = site.start_broker()
            site.start_monitor()
            site.start_device()
            site.wait_online(45.0)
        st = site.device.state() if site.device else {}
        console.print(f"site in {args.dir}: mosquitto on 127.0.0.1:{broker.port}, device {DEVICE_ID} running "
                      f"{st.get('firmware')} with -X heapsize={args.heapsize}, heartbeat every {HEARTBEAT_S} s")

        lat = measure_latency(site, args.changes, console)
        console.print(latency_table(lat))
        summary.append(("fire latency p50 / p95 / p99",
                        f"{lat.ms(50):.0f} / {lat.ms(95):.0f} / {lat.ms(99):.0f} ms "
                        f"(debounce {lat.debounce_ms} ms + {lat.ms(99) - lat.debounce_ms:.0f} ms at p99)",
                        f"p99 ≤ {lat.target_ms:.0f} ms: {'[green]met[/]' if lat.met else '[red]NOT met[/]'}"))

        backlog = measure_backlog(site, args.backlog, console)
        console.print(backlog_table(backlog))
        summary.append((f"{backlog.events}-event backlog after the link returns", f"{backlog.all_s:.2f} s",
                        f"{backlog.rate:.0f} events/s; {backlog.duplicates} duplicates, {len(backlog.gaps)} gaps"))

        with console.status("waiting for a heartbeat after the backlog"):
            wait_for_heartbeat_after(site, time.time(), HEARTBEAT_S * 3)
        beats = heartbeats(site)
        sizes = [len(payload) for _, payload in beats]
        largest = max(beats, key=lambda b: len(b[1]))[1]
        default_b, compact_b = as_default_device(largest)
        cost = WireCost(topic_b=len(f"firelink/{DEVICE_ID}/heartbeat"), payload_b=default_b)
        console.print(wire_table(cost, sizes, compact_b))
        summary.append((f"heartbeat on the wire ({DEFAULT_HEARTBEAT_S} s, MQTT QoS 1)",
                        f"payload {cost.payload_b} B: {cost.per_heartbeat_b} B + pings "
                        f"{cost.heartbeat_s // cost.ping_s * 4} B; {kb(cost.mqtt_per_day_b)}/day",
                        f"{kb(cost.mqtt_per_day_b + cost.tcpip_per_day_b)}/day with TCP/IPv4 headers"))

        heap = heap_figures(site, args.heapsize)
        console.print(heap_table(heap))
        clean = heap.memory_errors == 0 and heap.boots == 1
        summary.append(("peak firmware heap (live, sampled)",
                        "-" if heap.peak_b is None else f"{kb(heap.peak_b)} (heap capped at {args.heapsize})",
                        "no MemoryError, never restarted" if clean else
                        f"[red]{heap.memory_errors} MemoryError, {heap.boots} boots[/]"))
        if not clean:
            failed = "the device hit MemoryError or restarted during the scenario"

        jig_lat = bench_jig.measure(site, min(args.changes, 100), console)  # last: it power-cycles the device
        console.print(bench_jig.table(jig_lat, percentile))
        summary.append(("fire latency via the jig p50 / p95 / p99",
                        " / ".join(f"{percentile(jig_lat.seconds, p) * 1000:.0f}" for p in (50, 95, 99)) + " ms",
                        "from the jig's edge stamp (simulated jig on a pty)"))

        if not args.no_micro:
            account, _ = broker.add_device("fl-mqttbench", rotate=True)  # bench_mqtt.py publishes as its own device
            time.sleep(0.3)  # mosquitto re-reads its password file on the SIGHUP add_device sends
            site.stop_device()
            site.stop_monitor()  # it would take bench_mqtt's 150-byte test payloads for malformed events
            assert site.monitor_account is not None
            env = {"FL_BROKER_HOST": broker.bind, "FL_BROKER_PORT": str(broker.port), "FL_DEVICE_ID": "fl-mqttbench",
                   "FL_DEVICE_USER": account.username, "FL_DEVICE_PASS": account.password,
                   "FL_MONITOR_USER": site.monitor_account.username,
                   "FL_MONITOR_PASS": site.monitor_account.password}
            for script, extra in (("bench_outbox.py", {}), ("bench_mqtt.py", env)):
                with console.status(f"{script} (unix port, -X heapsize={args.heapsize})"):
                    m = run_micro(script, extra, args.heapsize)
                micro.append(m)
                console.rule(f"{script}: {m.seconds:.1f} s, exit status {m.status}")
                console.print(m.output, markup=False, highlight=False)
                summary.append((f"micro: {script}", micro_summary(m), f"{m.seconds:.1f} s"))
                if m.status != 0:
                    failed = f"{script} failed"
        with console.status("the centre under a flood and a broker outage (bench_monitor.py)"):
            summary.append(bench_monitor.measure().row())
    except (SiteError, BenchError) as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        site.close()
    if args.wire_minutes > 0 and failed != "interrupted":
        rows, wire_failed = bench_wire.run(args.dir / "wire", args.wire_minutes, args.heapsize, app, console)
        summary += rows
        failed = failed or wire_failed
    if not args.no_heap and failed != "interrupted":
        failed = bench_heap.run_part(args.dir / "heap", console, summary) or failed
    failed = failed if failed == "interrupted" else bench_cell.run_part(args.dir / "cell", app, console, summary) or failed
    failed = failed if failed == "interrupted" else bench_diag.run_part(args.dir / "diag", app, console, summary) or failed

    if not failed and not args.no_flash:
        try:
            summary += bench_flash.run(args, app, console)
        except (SiteError, BenchError, RuntimeError) as e:
            failed = f"flash bench: {e}"
        except KeyboardInterrupt:
            failed = "interrupted"
    t = Table(title=f"FireLink bench summary ({time.monotonic() - started:.0f} s; device on loopback, "
                    f"-X heapsize={args.heapsize})", title_justify="left")
    t.add_column("figure")
    t.add_column("measured")
    t.add_column("target / notes")
    for row in summary:
        t.add_row(*row)
    console.print(t)
    console.print(f"logs: {site.console_log}, {site.broker_dir / 'mosquitto.log'}; store {site.db_path}")
    if failed:
        console.print(f"[bold red]bench incomplete:[/] {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
