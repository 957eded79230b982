"""`make bench` part: what supervision costs on the wire at default settings, and how soon a dead
device is reported (issue 9 §5: ≤ 10 MB per device per month with TLS and TCP/IP, dead within 3 min).

    python -m tests.bench.bench_wire [--minutes 10] [--dir run/bench/wire] [--heapsize 256k]

One site on loopback (firelink.site.local: mosquitto, the real monitor, the virtual device running
the application as it ships) with the device at its **default** configuration, except that it
reaches the broker's mutual-TLS listener through a counting TCP proxy in this process. The proxy
counts every byte each way and splits the stream into TLS records (5-byte headers), so each
record's size and time are known.

1. Steady state: from a few seconds after the device's first heartbeat, for `--minutes`, every
   byte through the proxy (what flows: keepalive pings, and heartbeats if the window reaches one).
2. Per heartbeat: the TLS record whose size matches the heartbeat the monitor stored (its PUBLISH)
   and the PUBACK record after it.
3. Per connect: the TLS handshake and the CONNECT/CONNACK/SUBSCRIBE/birth exchange, from the first
   byte to the first heartbeat.
4. The month (30 days) = steady rate × 30 days + heartbeats at the device's own `next_s` + one
   reconnect a day (an assumption: a 4G session rarely lasts longer). TCP/IP: each TLS record
   travels in ceil(size / 1448) segments of 52 B headers each (IPv4 20 + TCP 20 + timestamps 12),
   and each data segment is answered by a bare 52 B ACK (no piggy-backing): an upper bound.
5. Dead device: right after the device's next packet (the worst phase: the broker's keepalive
   clock has just been reset), the proxy stops forwarding without closing anything (a powered-off
   board or a dead 4G link sends no FIN) and the virtual device is killed with SIGKILL; the time
   until the monitor shows the device offline or lost is measured.
"""
from __future__ import annotations

import argparse
import json
import math
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from firelink.board import build
from firelink.centre.devices import WENT_LOST, WENT_OFFLINE
from firelink.site.local import LocalSite, SiteError
from tests.tooling import ROOT

DEVICE_ID = "fl-02000000be02"  # as long as a default id: the topic's real size
MSS_B = 1448  # Ethernet MTU 1500 - IPv4 20 - TCP 20 - timestamps 12
SEGMENT_HEADERS_B = 52
PER_SEGMENT_B = 2 * SEGMENT_HEADERS_B  # the data segment's headers + a bare ACK for it
TLS_GCM_OVERHEAD_B = 8 + 16  # TLS 1.2 AES-GCM: explicit nonce + tag inside each record
DAY_S = 86400
MONTH_S = 30 * DAY_S
RECONNECTS_PER_DAY = 1
DEAD_REPORT_TARGET_S = 180.0
BUDGET_MONTH_B = 10 * 1000 * 1000


class BenchError(RuntimeError):
    pass


# --- the counting proxy ---

@dataclass
class Record:
    t: float
    up: bool  # device -> broker
    content_type: int  # 22 handshake, 20 change cipher spec, 23 application data, 21 alert
    size: int  # on the wire, header included

    @property
    def segments(self) -> int:
        return max(1, math.ceil(self.size / MSS_B))


class _Stream:
    """One direction of one connection: bytes counted, split into TLS records."""

    def __init__(self, proxy: CountingProxy, up: bool) -> None:
        self.proxy, self.up = proxy, up
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 5:
            size = 5 + int.from_bytes(self.buf[3:5], "big")
            if len(self.buf) < size:
                break
            self.proxy.records.append(Record(time.time(), self.up, self.buf[0], size))
            self.buf = self.buf[size:]


class CountingProxy:
    """127.0.0.1:<port> → upstream, in one thread; `blackhole()` stops forwarding but keeps every
    socket open (and takes new connections without forwarding them), as a dead link would."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.records: list[Record] = []
        self.bytes_up = self.bytes_down = 0
        self.accepts: list[float] = []
        self._sel = selectors.DefaultSelector()
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._listen.setblocking(False)
        self.port = self._listen.getsockname()[1]
        self._sel.register(self._listen, selectors.EVENT_READ, None)
        self._socks: list[socket.socket] = [self._listen]
        self._blackholed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def blackhole(self) -> None:
        self._blackholed.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()
        self._sel.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._blackholed.is_set():
                for key in list(self._sel.get_map().values()):
                    if key.fileobj is not self._listen:
                        self._sel.unregister(key.fileobj)
            for key, _ in self._sel.select(0.1):
                if key.fileobj is self._listen:
                    self._accept()
                elif not self._blackholed.is_set():
                    self._pump(key)

    def _accept(self) -> None:
        try:
            client, _ = self._listen.accept()
        except BlockingIOError:
            return
        self.accepts.append(time.time())
        self._socks.append(client)
        if self._blackholed.is_set():
            return  # held open, never answered
        upstream = socket.create_connection(self.upstream, timeout=5)
        self._socks.append(upstream)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        self._sel.register(client, selectors.EVENT_READ, (upstream, _Stream(self, True)))
        self._sel.register(upstream, selectors.EVENT_READ, (client, _Stream(self, False)))

    def _pump(self, key: selectors.SelectorKey) -> None:
        src: socket.socket = key.fileobj  # type: ignore[assignment]
        dst, stream = key.data
        try:
            data = src.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            for s in (src, dst):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            return
        if stream.up:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        stream.feed(data)
        dst.setblocking(True)  # loopback: the broker or the device takes it at once
        try:
            dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.setblocking(False)


# --- figures ---

@dataclass
class Window:
    records: list[Record]
    seconds: float

    @property
    def tls_b(self) -> int:
        return sum(r.size for r in self.records)

    @property
    def tcpip_b(self) -> int:
        return sum(r.segments for r in self.records) * PER_SEGMENT_B

    @property
    def wire_b(self) -> int:
        return self.tls_b + self.tcpip_b

    @property
    def rate_bps(self) -> float:
        return self.wire_b / self.seconds if self.seconds > 0 else 0.0


@dataclass
class WireFigures:
    minutes: float
    steady: Window
    pings_up: int  # records the device sent in the steady window
    heartbeat_payload_b: int
    heartbeat_wire_b: int  # its PUBLISH and PUBACK records with their TCP/IP
    heartbeat_matched: bool  # found by its exact record size
    next_s: int
    heartbeats_in_window: int
    connect_wire_b: int
    keepalive_s: int | None
    dead_report_s: float | None = None  # the first of offline (the will) and lost (supervision)
    dead_change: str | None = None
    will_s: float | None = None  # the broker's will (`offline`): keepalive's doing
    notes: list[str] = field(default_factory=list)

    @property
    def steady_pings_month_b(self) -> float:
        """The keepalive traffic: bytes per exchange (the device's packet, the broker's answer)
        at the spacing the device kept, so a window holding 6.3 pings' worth of time is not
        counted as 6; heartbeats in the window are taken out (they are counted on their own)."""
        pings_b = max(0.0, self.steady.wire_b - self.heartbeats_in_window * self.heartbeat_wire_b)
        ups = [r.t for r in self.steady.records if r.up]
        exchanges = len(ups) - self.heartbeats_in_window
        if exchanges >= 2 and ups[-1] > ups[0]:
            spacing = (ups[-1] - ups[0]) / (len(ups) - 1)
            return pings_b / exchanges * MONTH_S / spacing
        return pings_b / self.steady.seconds * MONTH_S

    @property
    def heartbeats_month_b(self) -> float:
        return self.heartbeat_wire_b * MONTH_S / self.next_s

    @property
    def connects_month_b(self) -> float:
        return self.connect_wire_b * RECONNECTS_PER_DAY * MONTH_S / DAY_S

    @property
    def month_b(self) -> float:
        return self.steady_pings_month_b + self.heartbeats_month_b + self.connects_month_b


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def kb(n: float) -> str:
    return f"{n / 1e3:.1f} kB"


def _mqtt_publish_len(topic: str, payload_b: int) -> int:
    rest = 2 + len(topic) + 2 + payload_b
    size = 1
    while rest >= 128 ** size:
        size += 1
    return 1 + size + rest


def _heartbeat_exchange(records: list[Record], topic: str, payload_b: int, after: float) -> tuple[int, bool]:
    """(wire bytes of the heartbeat's PUBLISH + PUBACK records with TCP/IP, found exactly)."""
    want = 5 + _mqtt_publish_len(topic, payload_b) + TLS_GCM_OVERHEAD_B
    ups = [r for r in records if r.up and r.content_type == 23 and r.t >= after - 1]
    pub = next((r for r in ups if r.size == want), None)
    matched = pub is not None
    if pub is None:  # a TLS stack with other record overhead: the largest record the device sent
        pub = max(ups, key=lambda r: r.size)
    ack = next((r for r in records if not r.up and r.t >= pub.t and r.content_type == 23), None)
    total = pub.size + pub.segments * PER_SEGMENT_B
    if ack is not None:
        total += ack.size + ack.segments * PER_SEGMENT_B
    return total, matched


def _heartbeats(site: LocalSite) -> list[tuple[float, bytes]]:
    assert site.store is not None
    return [(m.received_at, m.payload) for m in site.store.messages(site.device_id, "heartbeat")]


def _until(cond: Any, timeout_s: float, what: str, site: LocalSite, step_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise BenchError(f"{what} within {timeout_s:g} s; console ends with:\n{site.console_tail()}")
        time.sleep(step_s)


def device_tls(site: LocalSite, host: str, port: int) -> dict[str, Any]:
    """The way to the broker over TLS at host:port: the site's CA and the device's certificate
    and key (DER) put in the device's directory; returns the config's `broker` section."""
    assert site.broker is not None
    pk = site.broker.pki_dir
    site.device_dir.mkdir(parents=True, exist_ok=True)
    for name, src in (("ca.der", pk / "ca.crt.der"), ("device.der", pk / "devices" / f"{site.device_id}.crt.der"),
                      ("device.key.der", pk / "devices" / f"{site.device_id}.key.der")):
        (site.device_dir / name).write_bytes(src.read_bytes())
    return {"host": host, "port": port, "tls": True}


def measure(directory: Path, minutes: float, heapsize: str, firmware: Path, console: Console) -> WireFigures:
    site = LocalSite(directory, DEVICE_ID, {}, heapsize=heapsize, monitor_client_id="firelink-wire-monitor",
                     firmware=firmware)
    proxy: CountingProxy | None = None
    try:
        site.wipe()
        with console.status("wire: mosquitto (TLS listener behind a counting proxy), the monitor, the device"):
            broker = site.start_broker()
            proxy = CountingProxy(broker.bind, broker.tls_port).start()
            # Default settings but for the way to the broker: TLS, through the proxy.
            site.device_config = {"broker": device_tls(site, "127.0.0.1", proxy.port)}
            site.start_monitor()
            site.start_device()
            online_at = site.wait_online(60.0)
            first = _until(lambda: _heartbeats(site), 30.0, "no heartbeat", site)[0]
        cfg = json.loads((site.device_dir / "config.json").read_text())
        keepalive = (cfg.get("broker") or {}).get("keepalive_s")  # None: the firmware's default
        hb = json.loads(first[1])
        next_s = hb.get("next_s")
        if not isinstance(next_s, int) or next_s <= 0:
            raise BenchError(f"the heartbeat has no usable next_s: {first[1][:200]!r}")
        topic = f"firelink/{DEVICE_ID}/heartbeat"
        time.sleep(3.0)  # its PUBACK and anything else of the connect are through
        connect_records = list(proxy.records)
        hb_wire, matched = _heartbeat_exchange(connect_records, topic, len(first[1]), first[0])
        connect_b = Window(connect_records, 1).wire_b - hb_wire

        start, mark = time.time(), len(proxy.records)
        total_s = minutes * 60
        with Progress(TextColumn("wire: steady state at default settings"), BarColumn(), TextColumn("{task.fields[kb]}"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("", total=total_s, kb="")
            while (elapsed := time.time() - start) < total_s:
                site.check_device()
                w = Window(proxy.records[mark:], max(elapsed, 1e-3))
                progress.update(task, completed=elapsed, kb=kb(w.wire_b))
                time.sleep(min(1.0, total_s - elapsed))
        end = time.time()
        steady = Window([r for r in proxy.records[mark:] if r.t <= end], end - start)
        in_window = sum(1 for at, _ in _heartbeats(site) if start <= at <= end)
        early_lost = [at for name, change, at in site.watch.seen.changes
                      if name == DEVICE_ID and change == WENT_LOST and at >= online_at]
        fig = WireFigures(minutes=minutes, steady=steady, pings_up=sum(1 for r in steady.records if r.up),
                          heartbeat_payload_b=len(first[1]), heartbeat_wire_b=hb_wire, heartbeat_matched=matched,
                          next_s=next_s, heartbeats_in_window=in_window, connect_wire_b=connect_b,
                          keepalive_s=keepalive)
        if early_lost:
            fig.notes.append(f"the monitor showed the live device lost {len(early_lost)} time(s) in the window: it "
                             f"does not read the heartbeat's next_s yet (the will is the figure to trust)")

        # Dead device: cut right after its next packet, the worst phase for the broker's keepalive clock.
        with console.status("wire: waiting for the device's next packet, then cutting it dead"):
            n = len(proxy.records)
            _until(lambda: any(r.up for r in proxy.records[n:]), 300.0, "the device sent nothing", site, 0.005)
            proxy.blackhole()
            cut = time.time()
            assert site.device is not None
            dev, site.device = site.device, None
            dev.kill()
            mark_changes = len(site.watch.seen.changes)

            def reported(changes: tuple[str, ...]) -> Any:
                def find(seen: Any) -> str | None:
                    for name, change, _ in seen.changes[mark_changes:]:
                        if name == DEVICE_ID and change in changes:
                            return change
                    return None
                return find

            change = site.watch.wait(reported((WENT_OFFLINE, WENT_LOST)), 400.0)
            if change:
                fig.dead_report_s, fig.dead_change = time.time() - cut, change
            # The will itself, as the monitor stored it (a device already shown lost stays lost).
            def will() -> float | None:
                assert site.store is not None
                for m in site.store.messages(DEVICE_ID, "status"):
                    if m.received_at >= cut and b'"offline"' in m.payload:
                        return m.received_at - cut
                return None
            try:
                fig.will_s = _until(will, max(1.0, 400.0 - (time.time() - cut)), "no will", site, 0.2)
            except BenchError:
                pass
        return fig
    finally:
        site.close()
        if proxy is not None:
            proxy.close()


def table(f: WireFigures) -> Table:
    t = Table(title=f"Supervision on the wire at default settings, over TLS, measured at a counting proxy "
                    f"({f.minutes:g} min steady state; keepalive {f.keepalive_s or 'default'}, "
                    f"heartbeat next_s {f.next_s} s)", title_justify="left")
    t.add_column("")
    t.add_column("measured", justify="right")
    t.add_column("per day", justify="right")
    t.add_column("per month (30 d)", justify="right")
    s = f.steady
    if f.pings_up < 3:
        f.notes.append(f"only {f.pings_up} device records in the steady window: run longer (--minutes) for a "
                       f"figure that means something")
    per_day = f.steady_pings_month_b / 30
    ups = [r.t for r in s.records if r.up]
    spacing = f", one every {(ups[-1] - ups[0]) / (len(ups) - 1):.1f} s" if len(ups) >= 2 else ""
    t.add_row(f"steady state: {len(s.records)} TLS records ({f.pings_up} from the device{spacing}), {kb(s.tls_b)} "
              f"TLS + {kb(s.tcpip_b)} TCP/IP in {s.seconds:.0f} s", kb(s.wire_b), mb(per_day),
              mb(f.steady_pings_month_b))
    how = "its record found by size" if f.heartbeat_matched else "largest device record (size not matched)"
    t.add_row(f"heartbeat: payload {f.heartbeat_payload_b} B, PUBLISH + PUBACK with TCP/IP ({how}); "
              f"one per next_s = {f.next_s} s", f"{f.heartbeat_wire_b} B", mb(f.heartbeats_month_b / 30),
              mb(f.heartbeats_month_b))
    t.add_row(f"connect: TLS handshake, CONNECT, SUBSCRIBE, birth; assumed {RECONNECTS_PER_DAY} a day",
              kb(f.connect_wire_b), mb(f.connects_month_b / 30), mb(f.connects_month_b))
    ok = f.month_b <= BUDGET_MONTH_B
    t.add_row("[bold]total per device[/]", "", f"[bold]{mb(f.month_b / 30)}[/]",
              f"[bold {'green' if ok else 'red'}]{mb(f.month_b)}[/] (budget {mb(BUDGET_MONTH_B)})")
    t.caption = (f"TCP/IP: each TLS record in ceil(size/{MSS_B}) segments of {SEGMENT_HEADERS_B} B headers "
                 f"(IPv4 20 + TCP 20 + timestamps 12), each answered by a bare {SEGMENT_HEADERS_B} B ACK: an upper "
                 f"bound (lwIP sends no timestamps, and replies carry ACKs). Ethernet/4G framing not counted.")
    return t


def summary_rows(f: WireFigures) -> list[tuple[str, str, str]]:
    rows = [("supervision on the wire (defaults, TLS + TCP/IP)", f"{mb(f.month_b)}/month, {mb(f.month_b / 30)}/day",
             f"≤ {mb(BUDGET_MONTH_B)}/month: {'[green]met[/]' if f.month_b <= BUDGET_MONTH_B else '[red]NOT met[/]'}")]
    if f.will_s is None:
        rows.append(("dead device reported (the will `offline`)", "[red]never (400 s)[/]",
                     f"≤ {DEAD_REPORT_TARGET_S:.0f} s: [red]NOT met[/]"))
    else:
        met = f.will_s <= DEAD_REPORT_TARGET_S
        rows.append(("dead device reported (cut + SIGKILL right after its last packet; the will `offline` at the "
                     "monitor)", f"{f.will_s:.1f} s",
                     f"≤ {DEAD_REPORT_TARGET_S:.0f} s: {'[green]met[/]' if met else '[red]NOT met[/]'}"))
    state = "no change within 400 s" if f.dead_report_s is None else f"{f.dead_change} after {f.dead_report_s:.1f} s"
    rows.append(("dead device: the monitor's device state", state, "offline at the will, or lost (supervision)"))
    return rows


def run(directory: Path, minutes: float, heapsize: str, firmware: Path, console: Console) -> tuple[list[tuple[str, str, str]], str | None]:
    """The bench part for tests/bench/run.py: (summary rows, failure or None)."""
    try:
        f = measure(directory, minutes, heapsize, firmware, console)
    except (SiteError, BenchError, OSError) as e:
        return [("supervision on the wire", "[red]not measured[/]", str(e).splitlines()[0])], f"wire: {e}"
    console.print(table(f))
    for note in f.notes:
        console.print(f"[yellow]note:[/] {note}")
    rows = summary_rows(f)
    for row in rows:
        console.print(f"{row[0]}: {row[1]} ({row[2]})")
    return rows, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.bench_wire", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="steady-state window (default: %(default)s)")
    p.add_argument("--dir", type=Path, default=ROOT / "run" / "bench" / "wire", help="(default: %(default)s)")
    p.add_argument("--heapsize", default="256k", help="the device's MicroPython heap (default: %(default)s)")
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be > 0")
    console = Console()
    try:
        app = build.build_app(build.arch_for_chip("ESP32"), build_root=args.dir / "build").directory
    except build.BuildError as e:
        console.print(f"[bold red]bench not run:[/] {e}")
        return 1
    _, failed = run(args.dir, args.minutes, args.heapsize, app, console)
    if failed:
        console.print(f"[bold red]bench incomplete:[/] {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
