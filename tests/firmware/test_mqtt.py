# The MQTT client against real mosquitto, through a packet-aware TCP proxy (to cut, swallow
# and count packets) and against a fake broker (to send what mosquitto never would).
import asyncio
import json
import os
import time

from fwtest import env, eq, ok

from fl import mqtt, netio
from fl import mqtt_codec as codec
from fl.clock import Clock
from fl.events import Sequencer
from fl.hal.sim import Board
from fl.health import Health
from fl.link import LinkManager
from fl.mqtt import MQTTClient
from fl.outbox import Outbox
from fl.recorder import Recorder
from fl.sender import Sender
from mqtt_peers import (ACK, buggy_handler, DEVICE, EVENT, STATUS, Monitor, _Loopback, device, host, ms_since, port,
                        set_wifi, sim_links, start, token, until)

FIXTURES = ("broker", "fresh_accounts")  # fresh: the broker binds client ids (and sessions) to accounts
TIMEOUT_S = 120

async def _serve(handler):
    for _ in range(50):
        p = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
        try:
            return p, await asyncio.start_server(handler, "127.0.0.1", p)
        except OSError:
            pass
    raise OSError("no free port")


def _packets(buf):
    """Splits whole packets off the front of buf: (packets, rest)."""
    out = []
    while True:
        hdr = codec.parse_header(buf, 0, len(buf))
        if hdr is None or len(buf) < hdr[1] + hdr[2]:
            return out, buf
        n = hdr[1] + hdr[2]
        out.append(bytes(buf[:n]))
        buf = buf[n:]


def _close(*streams):
    for s in streams:
        try:
            s.s.close()
        except OSError:
            pass


class Proxy:
    """Client <-> proxy <-> mosquitto, packet by packet. Logs both directions with times and
    can swallow packet types from the broker, cut the connection instead of passing one on,
    or hold PUBACKs and release them together in reverse order."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.c2b = []  # (ticks_ms, packet) from the client
        self.b2c = []  # (ticks_ms, packet) from the broker, before any filtering
        self.accepts = []  # ticks_ms of each connection the client opened
        self.swallow = set()
        self.cut_on = None
        self.hold_pubacks = 0
        self.refuse = False  # close each connection at once, as a broker that is not there
        self._held = []
        self._conns = []

    async def start(self):
        self.port, self._server = await _serve(self._handle)
        return self

    async def _handle(self, cr, cw):
        self.accepts.append(time.ticks_ms())
        if self.refuse:
            _close(cw)
            return
        try:
            br, bw = await asyncio.open_connection(host(), self.up)
        except OSError:
            _close(cw)
            return
        conn = [cw, bw]
        self._conns.append(conn)
        asyncio.create_task(self._pump(br, cw, False, conn))
        await self._pump(cr, bw, True, conn)

    async def _pump(self, r, w, from_client, conn):
        buf = b""
        try:
            while True:
                data = await r.read(512)
                if not data:
                    break
                pkts, buf = _packets(buf + data)
                for pkt in pkts:
                    t = pkt[0] >> 4
                    (self.c2b if from_client else self.b2c).append((time.ticks_ms(), pkt))
                    if not from_client:
                        if t == self.cut_on:
                            self.cut(conn)
                            return
                        if t in self.swallow:
                            continue
                        if t == codec.PUBACK and self.hold_pubacks:
                            self._held.append(pkt)
                            if len(self._held) < self.hold_pubacks:
                                continue
                            pkt = b"".join(reversed(self._held))
                            self._held = []
                    w.write(pkt)
                    await w.drain()
        except OSError:
            pass
        self.cut(conn)

    def cut(self, conn=None):
        """Closes the connection (default: all) abruptly, as a dead path would."""
        for c in ([conn] if conn else list(self._conns)):
            _close(*c)
            if c in self._conns:
                self._conns.remove(c)

    def sent(self, ptype):
        return [p for _, p in self.c2b if p[0] >> 4 == ptype]


class FakeBroker:
    """Just enough broker for the client to connect (CONNACK, SUBACK, PUBACK, PINGRESP),
    so a test can then send it bytes that mosquitto never would."""

    def __init__(self, connack_rc=0, answer=True):
        self.connack_rc = connack_rc
        self.answer = answer
        self.refuse = set()  # topic filters whose SUBSCRIBE gets 0x80
        self.stall = False  # stop reading, as a broker whose process hangs
        self.writers = []
        self.got = []  # packets from the client
        self.on_birth = None  # async fn(writer, conn_index) run once the birth message is acked
        self.session_present = 0  # CONNACK's session present flag
        self.suback_codes = None  # at most this many SUBACK return codes (a broken broker)
        self.drop_publish = set()  # payloads whose PUBLISH is read and then the connection closed

    async def start(self):
        self.port, self._server = await _serve(self._handle)
        return self

    async def send(self, data, conn=-1):
        w = self.writers[conn]
        w.write(data)
        await w.drain()

    def pubacks(self):
        return [codec.decode_puback(p[0], p[2:]) for p in self.got if p[0] >> 4 == codec.PUBACK]

    async def _handle(self, r, w):
        self.writers.append(w)
        idx = len(self.writers) - 1
        buf = b""
        try:
            while True:
                if self.stall:
                    await asyncio.sleep(3600)
                data = await r.read(512)
                if not data:
                    break
                if not self.answer:
                    continue
                pkts, buf = _packets(buf + data)
                for pkt in pkts:
                    self.got.append(pkt)
                    t = pkt[0] >> 4
                    out = None
                    if t == codec.CONNECT:
                        out = bytes((0x20, 2, self.session_present if not self.connack_rc else 0, self.connack_rc))
                    elif t == codec.SUBSCRIBE:
                        codes, i = b"", 4  # after a 2-byte fixed header and the packet id
                        while i < len(pkt):
                            n = (pkt[i] << 8) | pkt[i + 1]
                            refused = pkt[i + 2:i + 2 + n].decode() in self.refuse
                            i += 2 + n
                            codes += bytes((0x80 if refused else pkt[i],))
                            i += 1
                        if self.suback_codes is not None:
                            codes = codes[:self.suback_codes]
                        out = bytes((0x90, 2 + len(codes), pkt[2], pkt[3])) + codes
                    elif t == codec.PUBLISH and pkt[0] & 0x06:
                        hl = codec.parse_header(pkt, 0, len(pkt))[2]
                        tl = (pkt[hl] << 8) | pkt[hl + 1]
                        if pkt[hl + 4 + tl:] in self.drop_publish:
                            self.drop_publish.discard(pkt[hl + 4 + tl:])
                            raise OSError("closing instead of acknowledging")  # ends this connection
                        out = bytes((0x40, 2)) + pkt[hl + 2 + tl:hl + 4 + tl]
                    elif t == codec.PINGREQ:
                        out = b"\xd0\x00"
                    if out:
                        w.write(out)
                        await w.drain()
                    if t == codec.PUBLISH and self.on_birth and pkt[0] & 0x01:
                        asyncio.create_task(self.on_birth(w, idx))
        except OSError:
            pass
        _close(w)


# --- against mosquitto ---

async def test_publish_qos1_is_acked_and_reaches_a_subscriber():
    links = sim_links()
    mon = await Monitor().start()
    c = device(links, host(), port())
    await start(c)
    eq(c.connected, True, "connected")
    tok = token().encode()
    eq(await c.publish(EVENT, b"fire " + tok, qos=1), True, "publish QoS 1 acked")
    eq(await c.publish(EVENT, b"qos0 " + tok, qos=0), True, "publish QoS 0 written")
    ok(await mon.wait_for(EVENT, b"fire " + tok), "subscriber got the QoS 1 message")
    ok(await mon.wait_for(EVENT, b"qos0 " + tok), "subscriber got the QoS 0 message")
    eq((c.connects, c.disconnects, c.resends, c.last_error), (1, 0, 0, ""), "counters")
    await c.disconnect()
    await mon.stop()


async def test_publish_when_not_connected_returns_false_at_once():
    links = sim_links()
    c = device(links, host(), port())
    t = time.ticks_ms()
    eq(await c.publish(EVENT, b"x"), False, "publish before run()")
    ok(ms_since(t) < 1000, "returned at once, not at a deadline")


async def test_several_publishes_in_flight_with_acks_out_of_order():
    links = sim_links()
    mon = await Monitor().start()
    proxy = await Proxy(port()).start()
    c = device(links, "127.0.0.1", proxy.port)
    await start(c)
    proxy.hold_pubacks = 5  # released together only once all five are out, last one first
    tok = token()
    t = time.ticks_ms()
    results = await asyncio.gather(*[c.publish(EVENT, "%s-%d" % (tok, i)) for i in range(5)])
    eq(results, [True] * 5, "all acked")
    ok(ms_since(t) < 2000, "no publish waited for its deadline")
    pids = [codec.decode_publish(p[0], p[2:])[5] for p in proxy.sent(codec.PUBLISH)[-5:]]
    eq(len(set(pids)), 5, "five distinct packet ids in flight")
    for i in range(5):
        ok(await mon.wait_for(EVENT, ("%s-%d" % (tok, i)).encode()), "message %d delivered" % i)
    eq(c.disconnects, 0, "no drop")
    await c.disconnect()
    await mon.stop()


async def test_qos1_resend_after_cut_between_publish_and_puback_carries_dup():
    links = sim_links()
    mon = await Monitor().start()
    proxy = await Proxy(port()).start()
    c = device(links, "127.0.0.1", proxy.port)
    await start(c)
    tok = token().encode()
    proxy.cut_on = codec.PUBACK  # the PUBLISH reaches mosquitto; its PUBACK never reaches us
    t = time.ticks_ms()
    eq(await c.publish(EVENT, tok), False, "first attempt not acked")
    ok(ms_since(t) < 1000, "the cut was noticed at once, not at the PUBACK deadline")
    eq(c.connected, False, "dropped")
    proxy.cut_on = None
    ok(await c.wait_connected(3000), "reconnected")
    eq(await c.publish(EVENT, tok, dup=True), True, "resend acked")
    first, resent = [p for p in proxy.sent(codec.PUBLISH) if p.endswith(tok)]
    eq(first[0], 0x32, "first PUBLISH: QoS 1, no DUP")
    eq(resent[0], 0x3A, "resent PUBLISH: QoS 1 with DUP")
    # mosquitto kept the session (persistent client id, CleanSession=0): the resend carries
    # the packet id mosquitto first saw it under (§4.4), so it arrives once per packet id.
    connacks = [p for _, p in proxy.b2c if p[0] >> 4 == codec.CONNACK]
    eq([codec.decode_connack(p[0], p[2:]) for p in connacks], [(False, 0), (True, 0)], "session resumed at mosquitto")
    eq(first[-len(tok) - 2:-len(tok)], resent[-len(tok) - 2:-len(tok)], "the same packet id")
    ok(await mon.wait_for(EVENT, tok, n=2), "delivered (twice: at least once)")
    eq((c.connects, c.disconnects, c.resends, len(proxy.accepts)), (2, 1, 1, 2), "connects, disconnects, resends, TCP")
    eq(c.last_error, "broker closed the connection", "last error")
    await c.disconnect()
    await mon.stop()


async def test_puback_timeout_drops_the_connection():
    links = sim_links()
    proxy = await Proxy(port()).start()
    c = device(links, "127.0.0.1", proxy.port)
    await start(c)
    proxy.swallow.add(codec.PUBACK)
    t = time.ticks_ms()
    eq(await c.publish(EVENT, b"lost ack", timeout_ms=300), False, "no PUBACK")
    # Never before its 300 ms; the bound above only tells it from the default deadline (a busy
    # machine may run it late).
    ok(250 <= ms_since(t) < 2000, "returned at its deadline (%d ms)" % ms_since(t))
    eq(c.connected, False, "dropped as dead")
    ok(c.last_error.startswith("no PUBACK for packet ") and c.last_error.endswith(" within 300 ms"), c.last_error)
    proxy.swallow.clear()
    ok(await c.wait_connected(3000), "reconnected")
    eq(await c.publish(EVENT, b"after"), True, "works again")
    await c.disconnect()


async def test_pings_only_when_nothing_was_sent_for_the_interval_and_answered():
    links = sim_links()
    proxy = await Proxy(port()).start()
    c = device(links, "127.0.0.1", proxy.port, keepalive_s=2, ping_interval_s=0.5)
    await start(c)
    # While messages go out the keepalive is kept by them: no ping is needed.
    t = time.ticks_ms()
    while ms_since(t) < 1500:
        eq(await c.publish(EVENT, b"busy"), True, "published")
        await asyncio.sleep_ms(100)
    eq([p for _, p in proxy.c2b if p == b"\xc0\x00"], [], "no PINGREQ while publishing every 100 ms")
    # Idle: one every 0.5 s (never sooner; a busy machine may run one late, but not as late as
    # the 2 s keepalive would put it).
    ok(await until(lambda: c.pongs >= 3, 5000), "three pings answered")
    last_publish = [ts for ts, p in proxy.c2b if p[0] >> 4 == codec.PUBLISH][-1]
    times = [ts for ts, p in proxy.c2b if p == b"\xc0\x00"][:3]
    gaps = [time.ticks_diff(b, a) for a, b in zip([last_publish] + times, times)]
    ok(all(400 <= g < 1500 for g in gaps), "ping gaps %r" % gaps)
    ok(len([p for _, p in proxy.b2c if p == b"\xd0\x00"]) >= 3, "PINGRESPs")
    ok(c.pongs <= c.pings <= c.pongs + 1, "every ping answered but one in flight: %d, %d" % (c.pings, c.pongs))
    eq(c.disconnects, 0, "no drop")
    await c.disconnect()


def test_default_ping_interval_is_the_keepalive_less_a_margin():
    c = MQTTClient(LinkManager([_Loopback()]), "x", "127.0.0.1", 1, keepalive_s=100)
    eq(c._ping_ms, 95000, "ping after 95 s of silence at keepalive 100 s")


async def test_swallowed_pingresp_is_a_dead_link_and_reconnects():
    links = sim_links()
    proxy = await Proxy(port()).start()
    c = device(links, "127.0.0.1", proxy.port, keepalive_s=2, ping_interval_s=0.5)
    await start(c)
    t = time.ticks_ms()
    proxy.swallow.add(codec.PINGRESP)
    ok(await until(lambda: not c.connected, 3000), "dead link detected")
    # First ping at 0.5 s, declared dead 0.5 s after it without an answer.
    ok(900 <= ms_since(t) <= 1300, "detected after %d ms" % ms_since(t))
    eq(c.last_error, "no PINGRESP within 500 ms: broker or path is dead", "last error")
    proxy.swallow.clear()
    ok(await c.wait_connected(3000), "reconnected")
    eq((c.connects, c.disconnects, len(proxy.accepts)), (2, 1, 2), "connects, disconnects, TCP")
    await c.disconnect()


async def test_birth_on_every_connect_and_will_on_abrupt_close():
    links = sim_links()
    mon = await Monitor().start()
    proxy = await Proxy(port()).start()
    tok = token().encode()
    online, offline = b"online " + tok, b"offline " + tok
    c = device(links, "127.0.0.1", proxy.port, will=(STATUS, offline, True, 1), birth=(STATUS, online))
    await start(c)
    ok(await mon.wait_for(STATUS, online), "birth message")
    proxy.cut()  # the client's socket dies without DISCONNECT
    ok(await mon.wait_for(STATUS, offline), "last will published by the broker")
    ok(await c.wait_connected(3000), "reconnected")
    ok(await mon.wait_for(STATUS, online, n=2), "birth message again on the reconnect")
    # Both are retained: a newcomer sees the current state, online.
    late = await Monitor().start()
    ok(await late.wait_for(STATUS, online, timeout_ms=2000), "retained online")
    eq(late.count(STATUS, offline), 0, "the will was replaced")
    await c.disconnect()
    await mon.stop()
    await late.stop()


async def test_clean_disconnect_publishes_offline_and_no_will():
    links = sim_links()
    mon = await Monitor().start()
    tok = token().encode()
    c = device(links, host(), port(), will=(STATUS, b"will " + tok, True, 1), birth=(STATUS, b"online " + tok))
    task = await start(c)
    await c.disconnect(b"offline " + tok)
    ok(await mon.wait_for(STATUS, b"offline " + tok), "offline published")
    ok(await until(lambda: task.done(), 1000), "run() returned")
    eq(c.connected, False, "not connected")
    await asyncio.sleep_ms(300)
    eq(mon.count(STATUS, b"will " + tok), 0, "DISCONNECT discarded the will")
    late = await Monitor().start()
    ok(await late.wait_for(STATUS, b"offline " + tok, timeout_ms=2000), "offline is retained")
    await mon.stop()
    await late.stop()


async def test_clean_disconnect_without_its_puback_still_sends_disconnect():
    links = sim_links()
    mon = await Monitor().start()
    proxy = await Proxy(port()).start()
    tok = token().encode()
    c = device(links, "127.0.0.1", proxy.port, will=(STATUS, b"will " + tok, True, 1),
               birth=(STATUS, b"online " + tok))
    task = await start(c)
    proxy.swallow.add(codec.PUBACK)  # as if nothing read the socket any more
    t = time.ticks_ms()
    await c.disconnect(b"offline " + tok, timeout_ms=300)
    ok(250 <= ms_since(t) < 2000, "bounded by timeout_ms (%d ms)" % ms_since(t))
    ok(await until(lambda: proxy.sent(codec.DISCONNECT), 1000), "DISCONNECT sent all the same")
    ok(await mon.wait_for(STATUS, b"offline " + tok), "offline published")
    ok(await until(lambda: task.done(), 1000), "run() returned")
    await asyncio.sleep_ms(300)
    eq(mon.count(STATUS, b"will " + tok), 0, "no will")
    await mon.stop()


async def test_persistent_session_keeps_acks_while_away():
    links = sim_links()
    mon = await Monitor().start()
    cid = DEVICE + "-" + token()
    got = []
    kw = {"username": env("FL_DEVICE_USER"), "password": env("FL_DEVICE_PASS"), "subscriptions": [(ACK, 1)],
          "on_message": lambda t, p: got.append((t, p))}
    c = MQTTClient(links, cid, host(), port(), **kw)
    await start(c)
    await c.disconnect()
    tok = token().encode()
    eq(await mon.client.publish(ACK, tok), True, "centre acks while the device is away")
    c2 = MQTTClient(links, cid, host(), port(), **kw)
    await start(c2)
    ok(await until(lambda: (ACK, tok) in got, 3000), "queued ack delivered on reconnect: %r" % got)
    await c2.disconnect()
    await mon.stop()


async def test_messages_reach_on_message_and_its_exceptions_are_survived():
    links = sim_links()
    mon = await Monitor().start()
    got = []
    on_message = buggy_handler(got)

    health = Health()
    c = device(links, host(), port(), subscriptions=[(ACK, 1)], on_message=on_message, health=health)
    await start(c)
    garbage = bytes(range(256))
    for p in (garbage, b"boom", b"after"):
        eq(await mon.client.publish(ACK, p), True, "centre published")
    ok(await until(lambda: len(got) == 3, 3000), "all three delivered: %r" % got)
    eq(got, [(ACK, garbage), (ACK, b"boom"), (ACK, b"after")], "in order, bytes intact")
    eq((c.callback_errors, health.counters.get("mqtt_callback_errors"), c.connected), (1, 1, True), "survived")
    await c.disconnect()
    await mon.stop()


async def test_tls_with_der_client_certificate():
    links = sim_links()
    mon = await Monitor().start()
    ssl_params = {"ca_der": open(env("FL_CA_DER"), "rb").read(),
                  "cert_der": open(env("FL_DEVICE_CERT_DER"), "rb").read(),
                  "key_der": open(env("FL_DEVICE_KEY_DER"), "rb").read(), "server_hostname": "localhost"}
    c = device(links, host(), int(env("FL_BROKER_TLS_PORT")), ssl_params=ssl_params)
    await start(c, 10000)
    tok = token().encode()
    eq(await c.publish(EVENT, b"tls " + tok), True, "published over TLS")
    ok(await mon.wait_for(EVENT, b"tls " + tok), "delivered")
    await c.disconnect()
    await mon.stop()


async def test_wrong_ca_is_a_clear_tls_error_and_retried():
    links = sim_links()
    health = Health()
    ssl_params = {"ca_der": open(env("FL_WRONG_CA_DER"), "rb").read(),
                  "cert_der": open(env("FL_DEVICE_CERT_DER"), "rb").read(),
                  "key_der": open(env("FL_DEVICE_KEY_DER"), "rb").read(), "server_hostname": "localhost"}
    tls_port = int(env("FL_BROKER_TLS_PORT"))
    c = device(links, host(), tls_port, ssl_params=ssl_params, health=health)
    asyncio.create_task(c.run())
    ok(await until(lambda: c.attempts >= 2, 4000), "retried")
    eq(c.connected, False, "never connected")
    want = "TLS certificate verification failed with %s:%d: " % (host(), tls_port)
    ok(c.last_error.startswith(want), "last error: %r" % c.last_error)
    eq(health.faults.get("mqtt_tls"), c.last_error, "health fault")
    await c.disconnect()


async def test_wrong_password_faults_and_backs_off():
    links = sim_links()
    health = Health()
    proxy = await Proxy(port()).start()  # counts the attempts
    c = device(links, "127.0.0.1", proxy.port, password="wrong", health=health, backoff_max_s=3)
    task = asyncio.create_task(c.run())
    ok(await until(lambda: len(proxy.accepts) >= 4, 10000), "kept retrying")
    # mosquitto answers a bad password with 5 under MQTT 3.1.1.
    eq(c.last_error, "broker refused connection: not authorized (code 5)", "last error")
    eq(health.faults.get("mqtt_auth"), c.last_error, "health fault")
    gaps = [time.ticks_diff(b, a) for a, b in zip(proxy.accepts, proxy.accepts[1:])]
    # 1 s, 2 s, then capped at 3 s, each +-25 %: never sooner; later by the attempt itself, or
    # more on a busy machine (so the cap is checked on the delays the client picks).
    for g, (lo, hi) in zip(gaps, ((750, 2000), (1500, 3300), (2250, 4500))):
        ok(lo <= g <= hi, "backoff gaps %r" % gaps)
    ok(gaps[1] > gaps[0], "backoff grows: %r" % gaps)
    ok(all(c._backoff_ms(n) <= 3750 for n in range(2, 12)), "capped at backoff_max_s (+25 %)")
    eq(c.connected, False, "not connected")
    await c.disconnect()
    ok(await until(lambda: task.done(), 200), "disconnect() ends run() during a backoff")


async def test_connack_refusal_names_the_reason_and_a_later_success_clears_the_fault():
    links = sim_links()
    fb = await FakeBroker(connack_rc=4).start()
    health = Health()
    c = device(links, "127.0.0.1", fb.port, health=health)
    asyncio.create_task(c.run())
    ok(await until(lambda: c.attempts >= 1 and c.last_error, 2000), "refused")
    eq(c.last_error, "broker refused connection: bad username or password (code 4)", "last error")
    eq(health.faults.get("mqtt_auth"), c.last_error, "fault")
    fb.connack_rc = 0
    ok(await c.wait_connected(3000), "connected once the broker accepts")
    eq(health.faults.get("mqtt_auth"), None, "fault cleared")
    eq(health.counters.get("fault_mqtt_auth"), 1, "counted once")
    await c.disconnect()


# --- against a fake broker ---

async def test_broker_sends_oversized_and_malformed_packets_which_are_ignored():
    links = sim_links()
    fb = await FakeBroker().start()
    got = []
    on_message = buggy_handler(got)

    c = device(links, "127.0.0.1", fb.port, max_packet=256, subscriptions=[(ACK, 1)], on_message=on_message,
               birth=(STATUS, b"online"))
    await start(c)
    big = codec.publish(ACK, bytes(1000), qos=1, pid=77)  # over max_packet: dropped, still acked
    await fb.send(big)
    ok(await until(lambda: 77 in fb.pubacks(), 2000), "oversized QoS 1 message acknowledged: %r" % fb.pubacks())
    await fb.send(b"\x30\x03\x00\x09\x74")  # topic length 9 in a 3-byte body
    await fb.send(b"\x40\x03\x00\x01\x00")  # PUBACK with 3 bytes
    await fb.send(b"\x20\x02\x00\x00")  # CONNACK again
    await fb.send(b"\x34\x06\x00\x01\x74\x00\x05\x78")  # QoS 2
    garbage = b"\x00\xff\xfe\x80garbage\x01"
    await fb.send(codec.publish(ACK, garbage, qos=1, pid=78))
    await fb.send(codec.publish(ACK, b"boom"))
    # A 5000-byte message arriving in pieces, with a good one right behind it in the same write.
    huge = codec.publish(ACK, bytes(5000)) + codec.publish(ACK, b"after huge")
    for i in range(0, len(huge), 700):
        await fb.send(huge[i:i + 700])
        await asyncio.sleep_ms(5)
    ok(await until(lambda: len(got) == 3, 2000), "delivered: %r" % got)
    eq(got, [(ACK, garbage), (ACK, b"boom"), (ACK, b"after huge")], "what reached on_message")
    ok(78 in fb.pubacks(), "QoS 1 garbage payload acknowledged")
    eq((c.oversized, c.bad_packets, c.callback_errors), (2, 4, 1), "oversized, malformed, callback errors")
    eq((c.connected, c.connects, c.disconnects, len(fb.writers)), (True, 1, 0, 1), "same connection throughout")
    await c.disconnect()


async def test_broker_breaks_framing_or_closes_and_the_client_reconnects():
    links = sim_links()
    fb = await FakeBroker().start()
    breakers = [b"\x30\xff\xff\xff\xff\x01", b"\xf0\x00", b"\x00\x00", None]
    errors = []

    async def after_birth(w, idx):
        await asyncio.sleep_ms(100)
        if idx < len(breakers):
            errors.append(len(errors))
            if breakers[idx] is None:
                _close(w)
            else:
                w.write(breakers[idx])
                await w.drain()

    fb.on_birth = after_birth
    c = device(links, "127.0.0.1", fb.port, birth=(STATUS, b"online"))
    asyncio.create_task(c.run())
    seen = []
    t = time.ticks_ms()
    while len(seen) < 4 and ms_since(t) < 12000:
        await until(lambda: c.disconnects > len(seen), 3000)
        if c.disconnects > len(seen):
            seen.append(c.last_error)
    eq(seen, ["framing lost, malformed packet from broker: remaining length over 4 bytes",
              "framing lost, malformed packet from broker: reserved packet type 15",
              "framing lost, malformed packet from broker: reserved packet type 0",
              "broker closed the connection"], "reasons")
    ok(await c.wait_connected(3000), "connected again after all of it")
    eq((c.connects, c.bad_packets), (5, 3), "connects, framing errors")
    await c.disconnect()


async def test_refused_subscription_is_a_fault_not_a_disconnect():
    # mosquitto 2.0 grants a subscription its ACL will never serve; other brokers answer 0x80.
    links = sim_links()
    fb = await FakeBroker().start()
    fb.refuse.add("firelink/someone-else/#")
    health = Health()
    c = device(links, "127.0.0.1", fb.port, subscriptions=[(ACK, 1), ("firelink/someone-else/#", 1)], health=health)
    await start(c)
    eq(health.faults.get("mqtt_subscribe"), "broker refused subscription to firelink/someone-else/#", "fault")
    eq(await c.publish(EVENT, b"still works"), True, "publishing unaffected")
    eq(c.disconnects, 0, "still connected")
    await c.disconnect()


async def test_silent_broker_connect_is_bounded():
    links = sim_links()
    fb = await FakeBroker(answer=False).start()
    c = device(links, "127.0.0.1", fb.port, connect_timeout_ms=400)
    t = time.ticks_ms()
    asyncio.create_task(c.run())
    ok(await until(lambda: c.last_error, 2000), "gave up")
    ok(350 <= ms_since(t) <= 800, "after %d ms" % ms_since(t))
    eq(c.last_error, "no CONNACK within 400 ms", "last error")
    ok(await until(lambda: len(fb.writers) >= 2, 3000), "retried")
    await c.disconnect()


async def test_silent_server_tls_handshake_is_bounded():
    links = sim_links()
    fb = await FakeBroker(answer=False).start()
    ssl_params = {"ca_der": open(env("FL_CA_DER"), "rb").read(), "server_hostname": "localhost"}
    health = Health()
    c = device(links, "127.0.0.1", fb.port, connect_timeout_ms=400, ssl_params=ssl_params, health=health)
    t = time.ticks_ms()
    asyncio.create_task(c.run())
    ok(await until(lambda: c.last_error, 2000), "gave up")
    ok(350 <= ms_since(t) <= 800, "after %d ms" % ms_since(t))
    eq(c.last_error, "connect timed out after 400 ms in the TLS handshake", "last error")
    await c.disconnect()


async def test_broker_that_stops_reading_hits_the_write_deadline():
    links = sim_links()
    fb = await FakeBroker().start()
    c = device(links, "127.0.0.1", fb.port, max_packet=8192, write_timeout_ms=300)
    await start(c)
    fb.stall = True
    await c.publish(EVENT, b"wake the broker's reader so it stalls", qos=0)
    n = 0
    t = time.ticks_ms()
    while n < 20000 and await c.publish(EVENT, bytes(8000), qos=0):
        n += 1
    ok(n < 20000, "the socket buffers never filled")
    eq(c.last_error, "PUBLISH not written: timed out", "last error after %d publishes" % n)
    eq(c.connected, False, "dropped")
    ok(ms_since(t) < 5000, "took %d ms" % ms_since(t))


# --- the link layer ---

async def test_link_down_drops_promptly_and_reconnects_when_back():
    links = sim_links()
    c = device(links, host(), port())
    await start(c)
    set_wifi(False)
    t = time.ticks_ms()
    ok(await until(lambda: not c.connected, 2000), "dropped, not left to the keepalive")
    eq(c.last_error, "path wifi went down", "last error")
    eq(await c.publish(EVENT, b"x"), False, "publish refused while down")
    attempts = c.attempts
    await asyncio.sleep_ms(1500)
    eq((c.connected, c.attempts), (False, attempts), "no attempts without a path")
    eq(c.last_error, "no network path is up", "waiting for a path")
    set_wifi(True)
    t = time.ticks_ms()
    ok(await c.wait_connected(3000), "reconnected")
    ok(ms_since(t) < 2000, "after %d ms" % ms_since(t))
    eq(await c.publish(EVENT, b"back"), True, "publishing again")
    eq((c.connects, c.disconnects), (2, 1), "connects, disconnects")
    await c.disconnect()


def test_packet_ids_wrap_and_skip_those_in_flight():
    c = MQTTClient(LinkManager([_Loopback()]), "x", "127.0.0.1", 1)
    c._pid = 65533
    c._inflight = {65535: None, 1: None}
    eq([c._new_pid() for _ in range(3)], [65534, 2, 3], "packet ids")


def test_keepalive_zero_and_bad_settings_refused():
    links = LinkManager([_Loopback()])
    for kw in ({"keepalive_s": 0}, {"keepalive_s": 10, "ping_interval_s": 11}, {"subscriptions": [("a", 2)]},
               {"ssl_params": {"server_hostname": "x"}}):
        try:
            MQTTClient(links, "x", "127.0.0.1", 1, **kw)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % kw)


# --- reconnecting after an outage: fire first, every wait bounded ---

def _fire_rig(client):
    health = Health()
    outbox = Outbox()
    recorder = Recorder(outbox, Sequencer(), Clock(Board()), health)
    sender = Sender(outbox, client, EVENT, recorder.queued, health)
    return recorder, asyncio.create_task(sender.run())


def _delivered(monitor, event_id):
    return any(t == EVENT and json.loads(p)["id"] == event_id for t, p in monitor.msgs)


async def test_a_fire_ends_a_long_reconnect_backoff_and_is_delivered_at_once():
    mqtt._BACKOFF_MIN_MS = 30000  # the very first backoff is 22-38 s: as one grown during a long outage
    links = sim_links()
    monitor = await Monitor().start()
    proxy = await Proxy(port()).start()
    proxy.refuse = True  # the broker is unreachable
    c = device(links, "127.0.0.1", proxy.port, backoff_max_s=600)
    asyncio.create_task(c.run())
    recorder, task = _fire_rig(c)
    ok(await until(lambda: c.last_error, 3000), "first attempt failed")
    recorder.record("373", "new", 2, "panel_fault", "fault")
    await asyncio.sleep_ms(2500)
    eq((c.attempts, c.connected), (1, False), "a fault waits out the backoff")
    proxy.refuse = False  # the broker is back
    t = time.ticks_ms()
    fire = recorder.record("110", "new", 1, "panel_fire", "fire")
    ok(await until(lambda: _delivered(monitor, fire.id), 3000), "fire delivered within 3 s, not after the backoff")
    ok(ms_since(t) < 2000, "in %d ms: the recorder woke the sender at once, not after the 22-38 s backoff" % ms_since(t))
    task.cancel()
    await c.disconnect()
    await monitor.stop()


async def test_a_pending_fire_retries_a_dead_broker_every_two_seconds_not_faster():
    mqtt._BACKOFF_MIN_MS = 30000
    links = sim_links()
    proxy = await Proxy(port()).start()
    proxy.refuse = True
    c = device(links, "127.0.0.1", proxy.port, backoff_max_s=600)
    asyncio.create_task(c.run())
    recorder, task = _fire_rig(c)
    ok(await until(lambda: c.last_error, 3000), "first attempt failed")
    recorder.record("110", "new", 1, "panel_fire", "fire")
    t = time.ticks_ms()
    ok(await until(lambda: len(proxy.accepts) >= 1 + 3, 10000), "attempts go on while the fire waits")
    gaps = [time.ticks_diff(b, a) for a, b in zip(proxy.accepts, proxy.accepts[1:])]
    # Against a backoff of 22-38 s: at once, then every 2 s, never sooner (a busy machine may
    # run one late).
    ok(time.ticks_diff(proxy.accepts[1], t) < 1000, "the first at once: %r" % gaps)
    for g in gaps[1:3]:
        ok(1900 <= g < 3500, "kick-driven attempts ~2 s apart: %r" % gaps)
    task.cancel()
    await c.disconnect()


async def test_a_path_coming_back_up_ends_the_backoff():
    mqtt._BACKOFF_MIN_MS = 30000
    links = sim_links()
    proxy = await Proxy(port()).start()
    proxy.refuse = True
    c = device(links, "127.0.0.1", proxy.port, backoff_max_s=600)
    asyncio.create_task(c.run())
    ok(await until(lambda: c.last_error, 3000), "first attempt failed")
    set_wifi(False)
    await asyncio.sleep_ms(500)
    eq(c.attempts, 1, "a path going down does not end the backoff")
    proxy.refuse = False
    set_wifi(True)
    t = time.ticks_ms()
    ok(await c.wait_connected(3000), "connected once the path is back, not after the backoff")
    ok(ms_since(t) < 1500, "in %d ms" % ms_since(t))
    await c.disconnect()


async def _closed_port():
    p, server = await _serve(lambda r, w: None)
    server.close()
    await server.wait_closed()
    return p


async def test_the_broker_name_is_looked_up_once_not_on_every_retry():
    mqtt._BACKOFF_MIN_MS = 50  # retries 50, 100, 200... ms apart
    calls = []
    fail = []
    real = netio.resolve

    async def resolve(h, p, path, timeout_ms):  # fl.dns: seconds when DNS is down
        calls.append(h)
        if fail:
            raise OSError(-202)
        return await real(h, p, path, timeout_ms)
    netio.resolve = resolve
    links = sim_links()
    p = await _closed_port()
    c = device(links, "localhost", p, backoff_max_s=1)
    asyncio.create_task(c.run())
    ok(await until(lambda: c.attempts >= 5, 5000), "retried")
    eq(calls, ["localhost"], "one lookup for %d failed connects" % c.attempts)
    # Once the answer is _RERESOLVE_MS old, a failed connect looks the name up again, once; a
    # lookup that fails keeps the address we had.
    mqtt._RERESOLVE_MS = 300
    fail.append(1)
    ok(await until(lambda: len(calls) == 2, 3000), "looked up again")
    mqtt._RERESOLVE_MS = 60000
    n = c.attempts
    ok(await until(lambda: c.attempts >= n + 3, 5000), "retried")
    eq(len(calls), 2, "not again on each retry")
    ok(c.last_error.startswith("connection to localhost:%d failed: " % p), "old address still tried: %r" % c.last_error)
    await c.disconnect()
    # An IP literal is never looked up again.
    fail.clear()
    mqtt._RERESOLVE_MS = 0
    c = device(links, "127.0.0.1", p, backoff_max_s=1)
    asyncio.create_task(c.run())
    ok(await until(lambda: c.attempts >= 4, 5000), "retried")
    eq(calls.count("127.0.0.1"), 1, "IP literal resolved once (no DNS)")
    await c.disconnect()


async def test_a_dns_lookup_that_blocked_is_not_repeated_on_every_retry():
    mqtt._BACKOFF_MIN_MS = 50
    mqtt._DNS_SLOW_MS = 100
    calls = []

    async def resolve(h, p, path, timeout_ms):  # DNS down: no answer, then fails
        calls.append(h)
        await asyncio.sleep_ms(150)
        raise OSError(-202)
    netio.resolve = resolve
    c = device(sim_links(), "broker.invalid", await _closed_port(), backoff_max_s=1)
    asyncio.create_task(c.run())
    ok(await until(lambda: c.attempts >= 5, 5000), "retried")
    eq(len(calls), 1, "one blocking lookup for %d attempts" % c.attempts)
    ok(c.last_error.startswith("cannot resolve broker.invalid (OSError: -202); next lookup in "), c.last_error)
    await c.disconnect()


# --- MQTT 3.1.1 to the letter ---
def _publishes(fb, payload):
    """(DUP flag, packet id) of each PUBLISH of payload the fake broker read."""
    out = []
    for p in fb.got:
        if p[0] >> 4 != codec.PUBLISH:
            continue
        topic, body, qos, retain, dup, pid = codec.decode_publish(p[0], memoryview(p)[codec.parse_header(p, 0, len(p))[2]:])
        if bytes(body) == payload:
            out.append((dup, pid))
    return out


async def test_a_resend_keeps_its_packet_id_with_dup_while_the_session_lives():
    links = sim_links()
    fb = await FakeBroker().start()
    fb.session_present = 1
    c = device(links, "127.0.0.1", fb.port)
    await start(c)
    tok = token().encode()
    fb.drop_publish.add(tok)
    eq(await c.publish(EVENT, tok), False, "not acknowledged: the broker closed instead")
    ok(await c.wait_connected(5000), "reconnected")
    # Other messages in between take other ids, never the one the session holds.
    for i in range(3):
        eq(await c.publish(EVENT, b"other %d" % i), True, "other message acked")
    fb.drop_publish.add(tok)
    eq(await c.publish(EVENT, tok, dup=True), False, "resend cut too")
    ok(await c.wait_connected(5000), "reconnected again")
    eq(await c.publish(EVENT, tok, dup=True), True, "resend acked")
    sends = _publishes(fb, tok)
    eq(len(sends), 3, "three attempts")
    pid = sends[0][1]
    eq(sends, [(False, pid), (True, pid), (True, pid)], "one packet id, DUP on every resend")
    others = [pid2 for _, pid2 in sum([_publishes(fb, b"other %d" % i) for i in range(3)], [])]
    ok(pid not in others, "held id %d not reused: %r" % (pid, others))
    eq(c.resends, 2, "counted")
    await c.disconnect()


async def test_a_lost_session_makes_the_resend_a_new_message():
    links = sim_links()
    fb = await FakeBroker().start()
    fb.session_present = 1
    c = device(links, "127.0.0.1", fb.port)
    await start(c)
    tok = token().encode()
    fb.drop_publish.add(tok)
    eq(await c.publish(EVENT, tok), False, "not acknowledged")
    fb.session_present = 0  # the broker lost (or never had) the session
    ok(await c.wait_connected(5000), "reconnected")
    eq(await c.publish(EVENT, tok, dup=True), True, "sent again")
    first, again = _publishes(fb, tok)
    eq((first[0], again[0]), (False, False), "new to a broker without the session: no DUP")
    eq(c.resends, 0, "not counted as a resend")
    # And after a reboot (a new client: no session state in RAM) the same holds.
    await c.disconnect()


async def test_a_suback_with_fewer_return_codes_than_topics_is_a_refusal():
    links = sim_links()
    fb = await FakeBroker().start()
    fb.suback_codes = 1
    health = Health()
    c = device(links, "127.0.0.1", fb.port, subscriptions=[(ACK, 1), ("firelink/%s/cmd" % DEVICE, 1)], health=health)
    await start(c)
    eq(health.faults.get("mqtt_subscribe"), "broker refused subscription to firelink/%s/cmd" % DEVICE, "fault")
    eq(c.bad_packets, 1, "counted as a broker error")
    await c.disconnect()
    fb.suback_codes = None
    c = device(links, "127.0.0.1", fb.port, subscriptions=[(ACK, 1), ("firelink/%s/cmd" % DEVICE, 1)], health=health)
    await start(c)
    eq(health.faults.get("mqtt_subscribe"), None, "granted in full: fault cleared")
    await c.disconnect()


async def test_the_backoff_after_a_drop_is_honoured_despite_a_notice_from_before_it():
    mqtt._BACKOFF_MIN_MS = 3000
    links = sim_links()
    proxy = await Proxy(port()).start()
    c = device(links, "127.0.0.1", proxy.port)
    await start(c)
    links._notify()  # a link notice while connected (e.g. another path changing): stale by the drop
    c.kick()  # ignored while connected
    await asyncio.sleep_ms(100)
    t = time.ticks_ms()
    proxy.cut()
    ok(await until(lambda: len(proxy.accepts) == 2, 10000), "reconnected")
    gap = time.ticks_diff(proxy.accepts[1], t)
    ok(gap >= 3000 * 3 // 4, "the next attempt waited its backoff (3 s +-25 %%): %d ms" % gap)
    ok(await c.wait_connected(5000), "connected")
    eq((len(proxy.accepts), c.disconnects), (2, 1), "one attempt after the drop")
    await c.disconnect()
