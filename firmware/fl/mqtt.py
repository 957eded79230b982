"""The MQTT 3.1.1 connection to the broker: keeps one session up over the current path.

Bytes live in `fl.mqtt_codec`; this module owns the connection and its clocks:
- one socket at a time, opened over `links.current()` and dropped when that path goes down
  or a preferred one comes up;
- every wait has a deadline: connect (TCP + TLS handshake + CONNACK), each write, each
  PUBACK/SUBACK, and the broker's silence: a PINGREQ goes out once nothing was sent for
  `ping_interval_s` (default: the keepalive less 5 %, so only as often as the keepalive needs:
  on a metered link pings are most of the bytes), and no packet within `ping_timeout_ms`
  after it means the chain is dead (a PUBLISH's PUBACK deadline proves it while traffic flows);
- QoS 1 publishes each wait on their own packet id, several in flight, woken by their PUBACK
  (no polling); one supervisor task enforces all the deadlines, so a publish allocates no
  timer. A missing PUBACK drops the connection. Nothing is retried here: the sender keeps
  each message in its flash outbox and publishes it again with dup=True once reconnected.
  The session (CleanSession=0) remembers the packet id of each PUBLISH written but never
  acknowledged, so such a resend goes out with its original id and DUP=1 for as long as the
  broker keeps the session (MQTT 3.1.1 §4.4); a CONNACK without a session ends them all;
- any failure closes the socket and retries after a capped exponential backoff with jitter,
  cut short by a path coming up or by kick() (the sender's, while a fire waits); the broker's
  name is looked up once and again only after a failure, at most every 10 minutes;
  refusals, TLS and authentication problems are logged plainly and raised as health faults;
- broker bytes that break the spec are logged and ignored while the framing holds, and drop
  the connection when it does not. The receive loop (fl.mqtt_rx) never dies on EOF or a bad
  callback. A SUBACK's return codes are matched to the topics: a topic without one is refused.

Buffers are allocated once in the constructor: one for what goes out, one for what comes in.
"""
import asyncio
import os

from fl import bufpool
from fl import mqtt_codec as codec
from fl import mqtt_rx, netio, ticks
from fl.log import Logger
from fl.mqtt_rx import ConnectionLost

_log = Logger("mqtt")
_TICK_MS = 5000  # the supervisor and the backoff wake at least this often: `progress` for the watchdog
_BACKOFF_MIN_MS = 1000
# A lookup (fl.dns: asyncio over UDP, never getaddrinfo) can still cost an attempt seconds when
# DNS is down, so a resolved address is kept: looked up again only after a connect to it
# failed, and at most this often.
_RERESOLVE_MS = 600000
# With no address at all, a lookup that took long (DNS down, not a quick refusal) is not repeated
# sooner than this, whatever asks for an attempt (backoff, kick()). Short: a lookup blocks
# nothing any more, and a fire must not wait a minute after the resolver comes back.
_DNS_RETRY_MS = 5000
_DNS_SLOW_MS = 1000
# Unacknowledged PUBLISHes whose packet id the session keeps for a resend (the sender has one
# event in flight at a time; heartbeats and answers are never resent and age out).
_SESSION_UNACKED = 4
_DNS_TIMEOUT_MS = 5000  # one lookup of the broker's name, within the connect timeout


class Refused(Exception):
    def __init__(self, rc):
        super().__init__("broker refused connection: %s (code %d)" % (codec.connack_name(rc), rc))
        self.rc = rc


class TLSFailed(Exception):
    pass


def _ms_left(deadline):
    return max(0, ticks.diff(deadline, ticks.ms()))


def _is_ip(host):
    """True for an IPv4 literal (getaddrinfo answers it without DNS)."""
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _describe(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    s = str(e).strip()
    return "%s: %s" % (type(e).__name__, s) if s else type(e).__name__


async def _wait(ev, timeout_ms):
    """True if ev was set within timeout_ms."""
    try:
        await asyncio.wait_for_ms(ev.wait(), timeout_ms)
        return True
    except asyncio.TimeoutError:
        return False


class MQTTClient:
    log = _log  # for fl.mqtt_rx
    describe = staticmethod(_describe)

    def __init__(self, links, client_id, host, port, *, username=None, password=None, keepalive_s=60,
                 ping_interval_s=None, ping_timeout_ms=None, connect_timeout_ms=10000, puback_timeout_ms=10000,
                 write_timeout_ms=5000, ssl_params=None, will=None, birth=None, subscriptions=(),
                 on_message=None, max_packet=2048, backoff_max_s=60, health=None):
        if not 0 < keepalive_s < 65536:
            raise ValueError("keepalive_s must be 1..65535 (0 would turn supervision off)")
        ping_ms = int((ping_interval_s if ping_interval_s is not None else
                       keepalive_s - max(1, keepalive_s // 20)) * 1000)
        if not 0 < ping_ms <= keepalive_s * 1000:
            raise ValueError("ping_interval_s must be > 0 and <= keepalive_s")
        for _, q in subscriptions:
            if q not in (0, 1):
                raise ValueError("subscriptions are QoS 0 or 1")
        if ssl_params is not None and not ssl_params.get("ca_der"):
            raise ValueError("TLS needs ssl_params['ca_der']: the broker must be verified")
        self._links = links
        self._failed_path = None  # the path a liveness failure was seen on, for the link manager
        self.rx_at = None  # ticks of the last packet received in the current session
        self._host = host
        self._port = port
        self._ping_ms = ping_ms
        self._ping_timeout_ms = min(ping_timeout_ms or 10000, ping_ms)
        self._connect_timeout_ms = connect_timeout_ms
        self._puback_timeout_ms = puback_timeout_ms
        self._write_timeout_ms = write_timeout_ms
        self._ssl_params = ssl_params
        self._ssl_ctx = None
        self._addr = None  # the broker's resolved address, kept across failures (_address)
        self._addr_at = None  # ticks_ms of the last lookup (answered or not)
        self._addr_hold = 0  # ms after _addr_at before the next lookup may run
        self._addr_suspect = False  # a connect to _addr failed since it was looked up
        self._literal = _is_ip(host)  # an IP literal: its one lookup never touches DNS
        self._dns_error = ""
        self.resolves = 0
        self._will = will
        self._birth = birth
        self._subs = list(subscriptions)
        self._on_message = on_message
        self._max_packet = max_packet
        self._backoff_max_ms = backoff_max_s * 1000
        self._health = health
        w = will or (None, b"", False, 0)
        self._connect_pkt = codec.connect(client_id, keepalive_s, clean_session=False, username=username,
                                          password=password, will_topic=w[0], will_payload=w[1],
                                          will_retain=w[2], will_qos=w[3])
        self._tx = bufpool.take("B", max_packet)  # reserved at boot, in one piece (fl/bufpool.py)
        self._txmv = memoryview(self._tx)
        self._rx = bufpool.take("B", max_packet + 5)  # the largest accepted packet with its fixed header
        self._rxmv = memoryview(self._rx)
        self._rs = self._re = 0  # unread bytes are rx[_rs:_re]
        # One packet on the socket at a time. A write the socket takes whole needs no lock;
        # only while one waits in drain() do others queue behind `_drained`.
        self._draining = False
        self._drained = asyncio.Event()
        self._up = asyncio.Event()
        self._wake = asyncio.Event()  # the supervisor's: link change, drop, stop, an early deadline
        self._reply = asyncio.Event()  # CONNACK or SUBACK arrived
        self._link_flag = False
        self._kicked = False  # kick(): end the backoff now
        self._connected_evs = []  # signal_on_connect(): set on every connect
        self._stream = self._raw = self._path = None
        self._rx_task = None
        self._epoch = 0  # which connection; stale drops are ignored
        self._connected = False
        self._stopping = False
        self._supervising = False
        self._sup_at = 0  # when the supervisor wakes next (ticks_ms)
        self._tx_at = 0  # ticks_ms of the last packet written: the keepalive counts from it
        self._pid = 0
        self._unacked = []  # [pid, topic, payload]: written, never acked, this session (_SESSION_UNACKED)
        self._inflight = {}  # packet id -> asyncio.Event, removed and set by its PUBACK
        self._deadlines = {}  # packet id -> (ticks_ms deadline, timeout_ms), for the supervisor
        self._events = []  # spare Events, reused
        self._connack = None
        self._sub_pid = 0
        self._suback = None
        self._rx_count = 0
        # Counters and state for the heartbeat, the console and the watchdog.
        self.connects = self.disconnects = self.pings = self.pongs = self.resends = 0
        self.bad_packets = self.oversized = self.callback_errors = self.attempts = 0
        self.last_error = ""
        self.progress = 0
        links.listen(self._on_link_change)

    # --- public ---
    @property
    def connected(self):
        """True once CONNACK, SUBACK and the birth message's PUBACK arrived on this connection."""
        return self._connected

    def path_name(self):
        """The path the session runs over, None when not connected."""
        return self._path.name if self._connected and self._path is not None else None

    async def wait_connected(self, timeout_ms):
        """True as soon as connected; False if timeout_ms passes first."""
        if self._connected:
            return True
        await _wait(self._up, timeout_ms)
        return self._connected

    def kick(self):
        """Something urgent waits (a fire): a pending reconnect backoff ends at once. Cheap and
        sync, callable from any task; rate-limiting is the caller's (see fl.sender)."""
        if self._connected:
            return  # nothing to hurry, and a stale kick must not void the backoff after a drop
        self._kicked = True
        self._wake.set()

    def signal_on_connect(self, ev):
        """Sets the asyncio.Event ev on every connect, so a task can wait on one event for
        both its own work and the connection coming up."""
        self._connected_evs.append(ev)

    def stats(self):
        return {"connected": self._connected, "connects": self.connects, "disconnects": self.disconnects,
                "attempts": self.attempts, "pings": self.pings, "pongs": self.pongs, "resends": self.resends,
                "bad_packets": self.bad_packets, "oversized": self.oversized, "inflight": len(self._inflight),
                "last_error": self.last_error}

    async def publish(self, topic, payload, qos=1, retain=False, dup=False, timeout_ms=None, _setup=False):
        """Sends one message. QoS 1: True once its PUBACK arrives; QoS 0: True once written.

        False when not connected, when the write or the PUBACK does not happen within
        timeout_ms (default puback_timeout_ms; the connection is then dropped as dead), or
        when the connection drops meanwhile. Raises ValueError for a message that could never
        be sent (wildcard/empty topic, QoS 2, larger than max_packet).

        (_setup: the birth and offline messages, sent before `connected` or maybe without a
        supervisor running, keep their own timer; when stopping, a late PUBACK is no reason
        to drop the connection before its DISCONNECT.)"""
        if not (self._connected or _setup):
            return False
        if timeout_ms is None:
            timeout_ms = self._puback_timeout_ms
        deadline = ticks.add(ticks.ms(), timeout_ms)
        while self._draining:  # the shared buffer below must not change under a pending write
            await self._drained.wait()
        s = self._stream
        if s is None:
            return False
        epoch = self._epoch
        ev = None
        pid = 0
        if qos:
            # A resend keeps the id the session knows it by; a message the session never saw
            # (first send, or after a reboot or a lost session) is new: a fresh id, no DUP.
            pid = self._session_pid(topic, payload) if dup else 0
            dup = pid != 0
            if not pid:
                pid = self._new_pid()
        else:
            dup = False  # §3.3.1.1: DUP is 0 on every QoS 0 message
        n = codec.publish_into(self._tx, topic, payload, qos, retain, dup, pid)  # ValueError: caller's bug
        if qos:
            ev = self._events.pop() if self._events else asyncio.Event()
            ev.clear()
            self._inflight[pid] = ev  # before the write: the PUBACK may beat us back
            if not _setup:
                self._deadlines[pid] = (deadline, timeout_ms)
                if self._supervising and ticks.diff(self._sup_at, deadline) > 0:
                    self._wake.set()  # sooner than the supervisor planned to look
        try:
            self._tx_at = ticks.ms()
            s.write(self._txmv[:n])  # usually taken whole: no lock, no await
            if s.out_buf:
                await self._drain(min(timeout_ms, self._write_timeout_ms))
        except Exception as e:
            self._forget(pid, ev)
            if pid and not _setup:
                self._keep_unacked(pid, topic, payload)  # part of it may have reached the broker
            self._drop("PUBLISH not written: %s" % _describe(e), epoch)
            return False
        if dup:
            self.resends += 1
        if not qos:
            return True
        if _setup:
            got = await _wait(ev, _ms_left(deadline))
        else:
            await ev.wait()  # set by its PUBACK, by a drop, or by the supervisor at the deadline
            got = True
        acked = self._inflight.get(pid) is not ev  # the PUBACK handler removes it; a drop leaves it
        self._forget(pid, ev)
        if not acked and not _setup:
            self._keep_unacked(pid, topic, payload)
        if not got and not self._stopping:
            self._drop("no PUBACK for packet %d within %d ms" % (pid, timeout_ms), epoch)
        return acked

    async def disconnect(self, offline_payload=None, timeout_ms=None):
        """Clean stop: publishes offline_payload retained on the will topic (else the birth
        topic) and waits (up to timeout_ms, default puback_timeout_ms) for its PUBACK, sends
        DISCONNECT (the broker then discards the will), closes the socket and makes run()
        return. The offline message goes out before DISCONNECT on the same connection, so the
        broker stores it even when its PUBACK cannot be awaited (e.g. the event loop that ran
        the receive task is gone after Ctrl-C)."""
        self._stopping = True  # run() reconnects no more
        if self._stream is not None and self._connected:
            topic = (self._will or self._birth or (None,))[0]
            if offline_payload is not None and topic:
                await self.publish(topic, offline_payload, 1, True, timeout_ms=timeout_ms, _setup=True)
            try:
                await self._send(codec.DISCONNECT_PACKET)
            except Exception as e:
                _log.warn("DISCONNECT not sent: %s", _describe(e))
        if self._stream is not None:
            _log.info("disconnected on request")
            self._close()
        self._wake.set()

    async def run(self):
        """Connects, supervises and reconnects until disconnect()."""
        self._stopping = False
        failures = 0
        try:
            while not self._stopping:
                self.progress += 1
                path = self._links.current()
                if path is None:
                    self._note_error("no network path is up", quiet_repeat=True)
                    self._link_flag = False
                    self._kicked = False  # no path to hurry over: a link change ends this wait
                    await self._pause(_TICK_MS, until_link=True)
                    continue
                # Changes and kicks from here on end the backoff after this attempt. (Cleared
                # here, not later: an attempt that fails early must not loop without a pause.)
                self._link_flag = self._kicked = False
                try:
                    await self._connect(path)
                    failures = 0
                    await self._supervise()
                    # Notices and kicks from while the session was up are stale now: the
                    # backoff after this drop is honoured, ended only by what comes after it.
                    self._link_flag = self._kicked = False
                    if self._failed_path is not None:
                        # The path is up but dead: another path may take over now (its
                        # notice ends the backoff at once).
                        self._path_failed(self._failed_path)
                        self._failed_path = None
                except Exception as e:
                    self._failed(e)
                    if not isinstance(e, (Refused, TLSFailed)):
                        self._path_failed(path)
                self._close()
                if self._stopping:
                    break
                delay = self._backoff_ms(failures)
                failures += 1
                _log.info("reconnecting in %d ms", delay)
                # A path coming (back) up or a pending fire (kick) ends the backoff at once: after
                # an outage the first attempt must not wait out a backoff grown during it.
                await self._pause(delay, until_up=True, kickable=True)
        finally:
            self._close()  # also when cancelled: nobody may wait on a connection nobody watches

    # --- connection ---
    def _tls_context(self):
        if self._ssl_params is None:
            return None
        if self._ssl_ctx is None:
            import ssl

            p = self._ssl_params
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cadata=p["ca_der"])
            if p.get("cert_der"):
                ctx.load_cert_chain(p["cert_der"], p["key_der"])
            ctx.verify_mode = ssl.CERT_REQUIRED
            self._ssl_ctx = ctx
        return self._ssl_ctx

    async def _connect(self, path):
        self.attempts += 1
        t0 = ticks.ms()
        deadline = ticks.add(t0, self._connect_timeout_ms)
        tls = self._ssl_params is not None
        try:
            ctx = self._tls_context()
        except (ValueError, OSError) as e:
            raise TLSFailed("TLS credentials not usable (CA, certificate or key; DER expected): %s" % _describe(e))
        addr = await self._address(path, min(_DNS_TIMEOUT_MS, self._connect_timeout_ms))
        hostname = self._ssl_params.get("server_hostname") or self._host if tls else None
        try:
            stream, raw = await path.open(addr, self._connect_timeout_ms, ctx, hostname)
        except Exception:
            self._addr_suspect = True  # maybe the broker moved: look it up again, in time
            raise
        self._epoch += 1
        self._stream, self._raw, self._path = stream, raw, path
        self._rs = self._re = self._rx_count = 0
        self._connack = None
        self._reply.clear()
        try:
            # With TLS the whole handshake runs inside this first write and its drain, before
            # the receive task touches the socket.
            self._tx_at = ticks.ms()
            stream.write(self._connect_pkt)
            if stream.out_buf:
                await asyncio.wait_for_ms(stream.drain(), _ms_left(deadline))
        except Exception as e:
            if isinstance(e, asyncio.TimeoutError):
                raise ConnectionLost("connect timed out after %d ms%s" % (
                    self._connect_timeout_ms, " in the TLS handshake" if tls else ""))
            raise self._tls_failure(e) or e
        self._rx_task = asyncio.create_task(mqtt_rx.rx_loop(self, self._epoch))
        if not await _wait(self._reply, _ms_left(deadline)):
            raise ConnectionLost("no CONNACK within %d ms" % self._connect_timeout_ms)
        if self._connack is None:
            raise ConnectionLost(self.last_error or "dropped before CONNACK")
        session_present, rc = self._connack
        if rc:
            raise Refused(rc)
        if not session_present and self._unacked:
            # The broker holds no session: what it never acknowledged is new to it now.
            _log.info("no session at the broker: %d unacknowledged message(s) go out as new", len(self._unacked))
            self._unacked = []
        if self._subs:
            await self._subscribe()
        if self._birth:
            if not await self.publish(self._birth[0], self._birth[1], 1, True, _setup=True):
                raise ConnectionLost(self.last_error or "no PUBACK for the birth message")
        if self._stream is None:
            raise ConnectionLost(self.last_error or "dropped while connecting")
        self._connected = True
        self._up.set()
        for ev in self._connected_evs:
            ev.set()
        self.connects += 1
        self._count("mqtt_connects")
        for name in ("mqtt_auth", "mqtt_refused", "mqtt_tls"):
            self._fault(name, False)
        _log.info("connected to %s:%d over %s%s in %d ms (session %s)", self._host, self._port, path.name,
                  " with TLS" if tls else "", ticks.diff(ticks.ms(), t0),
                  "resumed" if session_present else "new")

    async def _subscribe(self):
        self._sub_pid = pid = self._new_pid()
        self._suback = None
        self._reply.clear()
        await self._send(codec.subscribe(pid, self._subs))
        got = await _wait(self._reply, self._puback_timeout_ms)
        self._sub_pid = 0
        if self._stream is None:
            raise ConnectionLost(self.last_error or "dropped while subscribing")
        if not got or self._suback is None:
            raise ConnectionLost("no SUBACK within %d ms" % self._puback_timeout_ms)
        codes = self._suback
        if len(codes) != len(self._subs):
            # §3.9.3: one return code per topic, in order. A topic without one was not granted.
            self.bad_packets += 1
            self._count("mqtt_bad_packets")
            _log.warn("SUBACK has %d return code(s) for %d topic(s)", len(codes), len(self._subs))
        refused = [t for i, (t, _) in enumerate(self._subs) if i >= len(codes) or codes[i] == codec.SUBACK_FAILURE]
        if refused:
            msg = "broker refused subscription to %s" % ", ".join(refused)
            _log.error("%s", msg)
            self._fault("mqtt_subscribe", True, msg)
        else:
            self._fault("mqtt_subscribe", False)

    async def _address(self, path, timeout_ms):
        """The broker's address. Looks it up only when there is none yet, or when a connect to
        the one we have failed and the last lookup is _RERESOLVE_MS old: never on every retry
        (each lookup may take seconds). A failed re-lookup keeps the old one."""
        now = ticks.ms()
        if self._addr_at is not None:
            age = ticks.diff(now, self._addr_at)
            if age < 0:
                age = _RERESOLVE_MS  # ticks wrapped: days since the last lookup
            if self._addr is not None:
                if self._literal or not self._addr_suspect or age < _RERESOLVE_MS:
                    return self._addr
            elif age < self._addr_hold:
                raise ConnectionLost("cannot resolve %s (%s); next lookup in %d s" % (
                    self._host, self._dns_error, (self._addr_hold - age) // 1000 + 1))
        self.resolves += 1
        try:
            addr = await netio.resolve(self._host, self._port, path, timeout_ms)
        except Exception as e:
            took = ticks.diff(ticks.ms(), now)
            self._addr_at = ticks.ms()
            self._addr_hold = _DNS_RETRY_MS if took >= _DNS_SLOW_MS else 0
            self._dns_error = _describe(e)
            if self._addr is None:
                raise
            _log.warn("looking up %s again failed (%s): keeping the address we had", self._host, self._dns_error)
            return self._addr
        self._addr, self._addr_at, self._addr_suspect = addr, now, False
        return addr

    def _tls_failure(self, e):
        """A TLSFailed naming the problem if e is the TLS layer's (mbedTLS reports certificate
        trouble as ValueError, other failures as OSError with a negative code), else None."""
        if self._ssl_params is None or self._connack is not None:
            return None
        if isinstance(e, ValueError) and not isinstance(e, codec.MalformedPacket) or \
                isinstance(e, OSError) and e.args and isinstance(e.args[0], int) and e.args[0] < 0:
            what = "certificate verification failed" if "certif" in str(e).lower() else "handshake failed"
            return TLSFailed("TLS %s with %s:%d: %s" % (what, self._host, self._port, str(e).strip()))
        return None

    def _failed(self, e):
        if isinstance(e, Refused):
            msg = str(e)
            self._fault("mqtt_auth" if e.rc in (4, 5) else "mqtt_refused", True, msg)
        elif isinstance(e, TLSFailed):
            msg = str(e)
            self._fault("mqtt_tls", True, msg)
        elif isinstance(e, ConnectionLost):
            msg = str(e)
        else:
            msg = "connection to %s:%d failed: %s" % (self._host, self._port, _describe(e))
        if self._stream is not None:
            self._drop(msg)
        elif msg != self.last_error:  # a drop on the way already said it
            self._note_error(msg)

    async def _supervise(self):
        """Returns when the connection is gone. Pings once nothing was sent for the ping
        interval (what went out meanwhile is answered by PUBACKs with deadlines of their own).
        Also the one timer for every publish waiting on its PUBACK."""
        epoch = self._epoch
        ping_at = None
        ping_rx = 0
        # A path may ask for more frequent pings (an unmetered primary with a backup beside it:
        # a silent stall is found sooner, fl.pathmgr).
        ping_ms = min(getattr(self._path, "ping_ms", None) or self._ping_ms, self._ping_ms)
        seen_rx = self._rx_count
        self.rx_at = ticks.ms()
        self._supervising = True
        try:
            while True:
                self.progress += 1
                self._wake.clear()
                if self._stream is None or self._epoch != epoch:
                    return
                path = self._path
                if not path.is_up():
                    self._drop("path %s went down" % path.name)
                    return
                if self._links.current() is not path:
                    # A planned move (a better path, the backup test): DISCONNECT first, so the
                    # broker drops the will and the centre never sees this device offline. Not
                    # waited for: what the socket does not take at once is lost with it.
                    try:
                        self._stream.write(codec.DISCONNECT_PACKET)
                        path.tx_b += 2
                    except Exception:  # noqa: BLE001 - the drop below says what matters
                        pass
                    self._drop("moving from %s to a preferred path" % path.name)
                    return
                now = ticks.ms()
                if self._rx_count != seen_rx:
                    seen_rx, self.rx_at = self._rx_count, now  # the session's last sign of life
                wake = ticks.add(now, _TICK_MS)
                for pid in self._deadlines:
                    d, timeout_ms = self._deadlines[pid]
                    if ticks.diff(d, now) <= 0:
                        self._drop("no PUBACK for packet %d within %d ms" % (pid, timeout_ms))
                        self._failed_path = path
                        return
                    if ticks.diff(d, wake) < 0:
                        wake = d
                next_ping = ticks.add(self._tx_at, ping_ms)
                if ping_at is not None:
                    if self._rx_count != ping_rx:
                        ping_at = None
                    elif ticks.diff(now, ping_at) >= self._ping_timeout_ms:
                        self._drop("no PINGRESP within %d ms: broker or path is dead" % self._ping_timeout_ms)
                        self._failed_path = path
                        return
                if ticks.diff(now, next_ping) >= 0:
                    try:
                        await self._send(codec.PINGREQ_PACKET)
                    except Exception as e:
                        self._drop("PINGREQ not sent: %s" % _describe(e))
                        return
                    self.pings += 1
                    if ping_at is None:
                        ping_at, ping_rx = now, self._rx_count
                    continue  # the send yielded: look at everything again before sleeping
                if ticks.diff(next_ping, wake) < 0:
                    wake = next_ping
                if ping_at is not None:
                    d = ticks.add(ping_at, self._ping_timeout_ms)
                    if ticks.diff(d, wake) < 0:
                        wake = d
                self._sup_at = wake
                await _wait(self._wake, max(1, ticks.diff(wake, now)))
        finally:
            self._supervising = False

    def _drop(self, reason, epoch=None):
        """Closes the connection `epoch` (default: the current one) because of `reason` (None: a
        close that someone else reports)."""
        if self._stream is None or (epoch is not None and epoch != self._epoch):
            return
        was = self._connected
        if self._path is not None and not self._path.is_up():
            # The link layer closed our socket: say why rather than what the socket saw (EBADF).
            reason = "path %s went down" % self._path.name
        if reason is not None:
            self._note_error(reason)
        self._close()
        if was:
            self.disconnects += 1
            self._count("mqtt_disconnects")

    def _close(self):
        s, raw, path = self._stream, self._raw, self._path
        self._stream = self._raw = None
        self._connected = False
        self._up.clear()
        self._rs = self._re = 0
        for ev in self._inflight.values():
            ev.set()  # their publish() calls return False now, not at their deadline
        self._reply.set()
        t, self._rx_task = self._rx_task, None
        if t is not None and t is not asyncio.current_task():
            t.cancel()
        if s is not None:
            for sock in (s.s, raw):
                try:
                    sock.close()
                except OSError:
                    pass
            path.forget(raw)
        self._wake.set()

    # --- sending ---
    async def _send(self, pkt):
        """Writes one whole packet; waits (bounded) only when the socket cannot take it at once."""
        while self._draining:  # bounded: the drain in progress has its own deadline
            await self._drained.wait()
        s = self._stream
        if s is None:
            raise ConnectionLost("not connected")
        self._tx_at = ticks.ms()
        self._path.tx_b += len(pkt)
        s.write(pkt)  # asyncio's Stream writes at once and keeps only what the socket did not take
        if s.out_buf:
            await self._drain(self._write_timeout_ms)

    async def _drain(self, timeout_ms):
        """Waits until the stream took everything; meanwhile nothing else is written."""
        self._draining = True
        self._drained.clear()
        try:
            await asyncio.wait_for_ms(self._stream.drain(), timeout_ms)
        finally:
            self._draining = False
            self._drained.set()

    def _new_pid(self):
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in self._inflight and pid != self._sub_pid and not self._held(pid):
                self._pid = pid
                return pid

    def _held(self, pid):
        for e in self._unacked:
            if e[0] == pid:
                return True
        return False

    def _session_pid(self, topic, payload):
        """The packet id this session gave the same message, if it was never acknowledged."""
        for e in self._unacked:
            if e[2] == payload and e[1] == topic and e[0] not in self._inflight:
                return e[0]
        return 0

    def _keep_unacked(self, pid, topic, payload):
        if self._held(pid):
            return
        if len(self._unacked) >= _SESSION_UNACKED:
            self._unacked.pop(0)  # the oldest: if it is ever resent, it goes out as new
        self._unacked.append([pid, topic, payload])

    def _acked(self, pid):
        """A PUBACK: wakes its publish() and ends the session's hold on the id."""
        ev = self._inflight.pop(pid, None)
        if ev is not None:
            ev.set()
        for i, e in enumerate(self._unacked):
            if e[0] == pid:
                del self._unacked[i]
                break

    def _forget(self, pid, ev):
        if ev is None:
            return
        if self._inflight.get(pid) is ev:
            del self._inflight[pid]
        self._deadlines.pop(pid, None)
        if len(self._events) < 8:
            self._events.append(ev)

    def _path_failed(self, path):
        """Tells the link manager that the session over path failed with the path up: it may
        move to another path (fl/link.py)."""
        self._links.session_failed(path, self.last_error, self.rx_at)

    # --- waiting and bookkeeping ---
    def _on_link_change(self):
        self._link_flag = True
        self._wake.set()

    async def _pause(self, ms, until_link=False, until_up=False, kickable=False):
        """Sleeps ms; returns early on disconnect(), on a link change if until_link, on a link
        change that leaves a path up if until_up (a path going down is no reason to hurry),
        on kick() if kickable."""
        deadline = ticks.add(ticks.ms(), ms)
        while not self._stopping:
            if self._link_flag and (until_link or until_up and self._links.current() is not None):
                return
            if kickable and self._kicked:
                return
            left = _ms_left(deadline)
            if left <= 0:
                return
            self.progress += 1
            self._wake.clear()
            await _wait(self._wake, min(left, _TICK_MS))

    def _backoff_ms(self, failures):
        base = min(_BACKOFF_MIN_MS << min(failures, 16), self._backoff_max_ms)
        return base * (750 + os.urandom(1)[0] * 500 // 255) // 1000  # +-25 % jitter

    def _note_error(self, msg, quiet_repeat=False):
        if not (quiet_repeat and msg == self.last_error):
            _log.error("%s", msg)
        self.last_error = msg

    def _count(self, name):
        if self._health is not None:
            self._health.count(name)

    def _fault(self, name, active, detail=""):
        if self._health is not None:
            self._health.set_fault(name, active, detail)
