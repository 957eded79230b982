# fl.dns and fl.sntp against real UDP servers on the loopback (written here, in MicroPython):
# answers are parsed and checked, and a server that never answers, refuses or lies costs a
# bounded wait on the event loop, never a stall of it (a 10 ms ticker keeps ticking).
import asyncio
import json
import os
import socket
import struct
import time

from fwtest import eq, ok, write

from fl import dns, sntp, store, ticks

TIMEOUT_S = 60
NTP_DELTA = 2208988800
# A blocking wait would stall the loop for a whole try (>= 1 s); a busy machine may pause the
# process for a few hundred ms on its own.
STALL_MS = 700


class UdpServer:
    """A UDP server on 127.0.0.1: handler(request) -> reply bytes, or None to swallow it."""

    def __init__(self, handler):
        self.handler = handler
        self.requests = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while True:
            r = os.urandom(2)
            self.port = 20000 + (r[0] << 8 | r[1]) % 40000
            try:
                self.sock.bind(socket.getaddrinfo("127.0.0.1", self.port)[0][-1])
                break
            except OSError:
                pass
        self.sock.setblocking(False)
        self.task = asyncio.create_task(self._serve())

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    async def _serve(self):
        while True:
            try:
                req, peer = self.sock.recvfrom(512)
            except OSError:
                await asyncio.sleep_ms(2)
                continue
            self.requests.append(req)
            reply = self.handler(req)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def close(self):
        self.task.cancel()
        self.sock.close()


def closed_port():
    s = UdpServer(lambda q: None)
    s.close()
    return s.addr


class Ticker:
    """Measures the longest gap between its 10 ms ticks: how long the event loop stalled."""

    def __init__(self):
        self.worst = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        last = ticks.ms()
        while True:
            await asyncio.sleep_ms(10)
            now = ticks.ms()
            self.worst = max(self.worst, ticks.diff(now, last))
            last = now

    def stop(self):
        self.task.cancel()
        return self.worst


def name_bytes(name):
    out = b""
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def answer(req, records, rcode=0):
    """A DNS response to req: records are (type, rdata); the owner name is a pointer to the question."""
    head = req[:2] + bytes([0x81, 0x80 | rcode]) + b"\x00\x01" + struct.pack("!H", len(records)) + b"\x00\x00\x00\x00"
    body = req[12:]
    for rtype, rdata in records:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata
    return head + body


class FakePath:
    ifname = None

    def __init__(self, dns_servers=(), ntp=None):
        self._dns = dns_servers
        self._ntp = ntp

    def dns_servers(self):
        return self._dns

    def dhcp_ntp(self):
        return self._ntp


def test_query_is_an_rfc1035_a_question():
    q = dns.query("broker.example.org", 0x1234)
    eq(bytes(q[:12]), b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", "header")
    eq(bytes(q[12:]), name_bytes("broker.example.org") + b"\x00\x01\x00\x01", "question")


def test_parse_follows_a_cname_to_the_address_and_rejects_strangers():
    q = dns.query("mqtt.example.org", 7)
    cname = name_bytes("real.example.org")
    reply = answer(q, [(5, cname), (1, b"\x0a\x00\x00\x05")])
    eq(dns.parse(reply, 7), "10.0.0.5", "address after the CNAME")
    eq(dns.parse(reply, 8), None, "another query's answer is not ours")
    eq(dns.parse(q, 7), None, "a question is not an answer")
    e = None
    try:
        dns.parse(answer(q, [], rcode=3), 7)
    except dns.DNSError as x:
        e = x
    ok(e is not None and "no such name" in str(e), "NXDOMAIN: %r" % e)
    try:
        dns.parse(answer(q, [])[:20], 7)
        ok(False, "a truncated answer was accepted")
    except dns.DNSError:
        pass


def test_literals_and_localhost_need_no_server():
    async def go():
        eq(await dns.resolve("192.0.2.7", (), 100), "192.0.2.7", "literal")
        eq(await dns.resolve("localhost", (), 100), "127.0.0.1", "localhost")
    asyncio.run(go())
    ok(not dns.is_ip("1.2.3"), "three parts")
    ok(not dns.is_ip("1.2.3.256"), "256")


async def test_resolve_asks_the_server_and_retries_a_lost_answer():
    seen = []

    def handler(req):
        seen.append(req)
        if len(seen) == 1:
            return None  # the first answer is lost
        return answer(req, [(1, b"\xc0\x00\x02\x09")])

    srv = UdpServer(handler)
    try:
        t0 = ticks.ms()
        eq(await dns.resolve("broker.example.org", [srv.addr], 5000), "192.0.2.9", "address")
        took = ticks.diff(ticks.ms(), t0)
        eq(len(seen), 2, "asked again after the first wait")
        ok(900 <= took < 4000, "answered after one retry: %d ms" % took)
    finally:
        srv.close()


async def test_a_resolver_that_never_answers_costs_its_deadline_not_a_stall():
    srv = UdpServer(lambda q: None)
    tick = Ticker()
    try:
        t0 = ticks.ms()
        try:
            await dns.resolve("broker.example.org", [srv.addr, closed_port()], 2500)
            ok(False, "resolved")
        except OSError as e:
            ok("no answer" in str(e), str(e))
        took = ticks.diff(ticks.ms(), t0)
        ok(2400 <= took < 4500, "gave up after %d ms" % took)
        ok(len(srv.requests) >= 2, "asked more than once: %d" % len(srv.requests))
        worst = tick.stop()
        ok(worst < STALL_MS, "the event loop stalled %d ms" % worst)
    finally:
        srv.close()


def ntp_reply(req, unix_ms, stratum=2, leap=0, mode=4, echo=True):
    r = bytearray(48)
    r[0] = leap << 6 | 4 << 3 | mode
    r[1] = stratum
    secs = unix_ms // 1000 + NTP_DELTA
    frac = (unix_ms % 1000 << 32) // 1000
    r[24:32] = req[40:48] if echo else b"\x01" * 8
    r[40:48] = struct.pack("!II", secs, frac)
    return bytes(r)


async def test_sntp_takes_the_servers_time_from_a_valid_answer():
    want = 1760000000123
    srv = UdpServer(lambda q: ntp_reply(q, want))
    try:
        got = await sntp.fetch([srv.addr], FakePath(), 3000)
        ok(got is not None and 0 <= got - want < 50, "utc ms %r" % got)
        eq(srv.requests[0][0] & 7, 3, "client mode")
    finally:
        srv.close()


async def test_sntp_ignores_forged_and_unusable_answers_and_tries_the_next_server():
    forged = UdpServer(lambda q: ntp_reply(q, 1760000000000, echo=False))
    kod = UdpServer(lambda q: ntp_reply(q, 1760000000000, stratum=0))
    unsynced = UdpServer(lambda q: ntp_reply(q, 1760000000000, leap=3))
    old = UdpServer(lambda q: ntp_reply(q, 946684800000))
    good = UdpServer(lambda q: ntp_reply(q, 1770000000000))
    try:
        t0 = ticks.ms()
        got = await sntp.fetch([forged.addr, kod.addr, unsynced.addr, old.addr, "dhcp"],
                               FakePath(ntp=good.addr), 5000)
        ok(got is not None and 0 <= got - 1770000000000 < 50, "time from the DHCP server: %r" % got)
        took = ticks.diff(ticks.ms(), t0)
        ok(took < sntp.SERVER_MS + 2000, "the forged answers cost one server's share: %d ms" % took)
    finally:
        for s in (forged, kod, unsynced, old, good):
            s.close()


async def test_sntp_blackholed_and_dns_down_is_bounded_and_never_stalls():
    hole = UdpServer(lambda q: None)
    tick = Ticker()
    try:
        t0 = ticks.ms()
        got = await sntp.fetch(["pool.ntp.org", hole.addr], FakePath([hole.addr]), 3000)
        eq(got, None, "no time")
        took = ticks.diff(ticks.ms(), t0)
        ok(took < 4500, "bounded: %d ms" % took)
        ok(tick.stop() < STALL_MS, "the event loop stalled %d ms" % tick.worst)
    finally:
        hole.close()


async def test_clock_wait_before_tls_yields_even_when_every_attempt_fails_at_once():
    # The unsynchronised clock with TLS on: the app gives the first connection up to 30 s to
    # sync the clock. With no DNS server every attempt fails at once, without awaiting anything;
    # the inputs must still be read and a fire recorded at once (was: 27 s late).
    from fl.app import App
    from fl.hal.sim import Board

    write("config.json", json.dumps({"device_id": "fl-clock", "ntp_servers": ["pool.ntp.org"],
                                     "broker": {"host": "127.0.0.1", "port": 9, "tls": True}}))
    write("secrets.json", json.dumps({"mqtt_username": "fl-clock", "mqtt_password": "x"}))
    write("ca.der", b"0")
    store.ensure_dir("sim")
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0}, "clock_synced": False, "dns": []}))
    app = App(Board())
    tick = Ticker()
    parts = [asyncio.create_task(app._supervise(n, p)) for n, p in
             (("inputs", app.inputs), ("links", app.links), ("mqtt", app.mqtt))]
    try:
        await asyncio.sleep_ms(1500)
        t0 = time.ticks_ms()
        write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0, "in1": 0}, "clock_synced": False,
                                              "dns": []}))
        for _ in range(200):
            if app.inputs.states()["panel_fire"] == "active":
                break
            await asyncio.sleep_ms(5)
        took = time.ticks_diff(time.ticks_ms(), t0)
        eq(app.inputs.states()["panel_fire"], "active", "fire seen")
        ok(took < 1000, "fire seen after %d ms" % took)
        ok(tick.stop() < STALL_MS, "the event loop stalled %d ms" % tick.worst)
        ok(app.mqtt.attempts == 0, "still waiting for the clock, not connecting")
    finally:
        for t in parts:
            t.cancel()


def test_ntp_servers_config():
    from fl import config
    from fl.hal.sim import Board

    info = Board().board_info()
    cfg, problems = config.validate({}, info)
    eq(cfg["ntp_servers"], ["pool.ntp.org", "dhcp"], "default: a pool name, then the path's own")
    eq(problems, [], "no problem")
    cfg, problems = config.validate({"ntp_servers": ["10.0.0.1", "ntp.site.lan"]}, info)
    eq(cfg["ntp_servers"], ["10.0.0.1", "ntp.site.lan"], "configured")
    for bad in ([], "pool.ntp.org", ["a b"], ["a", "b", "c", "d", "e"], [1]):
        cfg, problems = config.validate({"ntp_servers": bad}, info)
        eq(cfg["ntp_servers"], ["pool.ntp.org", "dhcp"], "default for %r" % (bad,))
        eq(len(problems), 1, "one problem for %r" % (bad,))
        ok(problems[0].startswith("config.json: ntp_servers: expected a list of 1..4"), problems[0])
