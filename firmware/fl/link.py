"""Network paths behind one interface, and the manager that picks the path in use.

A path (Wi-Fi now, 4G/PPP later) brings its interface up and opens sockets that belong to
it. When a path fails, every socket it opened is closed with it: the whole chain goes down
and is rebuilt, and nothing above waits on a half-dead socket. Fire events never wait on a
path's recovery: the sender keeps them in the outbox and the manager offers whichever path
is up.
"""
import asyncio

from fl import netio, ticks
from fl.log import Logger

_log = Logger("link")


class PathDown(OSError):
    pass


class Path:
    """Base for a concrete path (the hardware layer subclasses it).

    Subclasses implement: `async bring_up(timeout_ms) -> bool`, `is_up() -> bool`,
    `signal_dbm() -> int | None`, `dns_servers()`, `dhcp_ntp()`, and may set `ifname` for
    socket binding."""

    name = "path"
    ifname = None
    # Path faults are reported only after this long down (peers: LAN 90 s, cellular 180 s),
    # so a router reboot does not flood the centre; alarms never wait on it.
    fault_delay_ms = 90000

    def __init__(self):
        self._socks = []
        self.failures = 0
        self.down_since = None

    async def bring_up(self, timeout_ms):
        raise NotImplementedError

    def is_up(self):
        raise NotImplementedError

    def signal_dbm(self):
        return None

    def dns_servers(self):
        """The DNS servers this path's network gives (IPv4, optionally :port), e.g. by DHCP."""
        return ()

    def dhcp_ntp(self):
        """The NTP server this path's network offers (config "dhcp"), or None."""
        return None

    def route(self, addr):
        """The address a socket of this path connects to for addr: addr itself on a board (the
        socket is bound to the path's interface); the simulated board's per-path fault proxy."""
        return addr

    async def open(self, addr, timeout_ms, ssl_ctx=None, server_hostname=None):
        """Opens a stream over this path; the socket is closed if the path goes down."""
        if not self.is_up():
            raise PathDown(113, "%s is down" % self.name)  # EHOSTUNREACH
        stream, raw = await netio.open_stream(self.route(addr), timeout_ms, ssl_ctx, server_hostname, self.ifname)
        self._socks.append(raw)
        return stream, raw

    def forget(self, raw):
        if raw in self._socks:
            self._socks.remove(raw)

    def close_all(self):
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        self._socks.clear()


async def broker_probe(path, host, port, timeout_ms):
    """True if the broker answers over path within timeout_ms: a PINGREQ before any CONNECT,
    which a broker answers by closing the connection (a TLS listener by its alert). Any answer
    proves the round trip; a silent stall (bytes dropped) gives none. Costs one TCP connection
    and two bytes, and never touches the device's MQTT session."""
    addr = await netio.resolve(host, port, path, timeout_ms)
    stream, raw = await path.open(addr, timeout_ms)
    try:
        stream.write(b"\xc0\x00")
        await asyncio.wait_for_ms(stream.drain(), timeout_ms)
        await asyncio.wait_for_ms(stream.read(16), timeout_ms)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        path.forget(raw)
        try:
            raw.close()
        except OSError:
            pass


SWITCH_WINDOW_MS = 600000  # the cap on switches counts over 10 minutes
PROBE_MS = 5000


class LinkManager:
    """Keeps the paths up and says which one to use; notifies listeners when it changes.

    `current()` is the first path (in configured priority) that is up and not demoted, or
    failing that any path that is up. A path is demoted when the MQTT session over it failed
    while its interface stayed up (no PUBACK for 10 s, no PINGRESP, no CONNACK: a silent
    stall nobody announces) and another path is up: the session moves at once and fire never
    waits for the first path to recover. A demoted path comes back (failback) only after it
    has stayed up for `stable_ms` and a probe over it reached the broker. Every switch is
    counted; beyond `max_switches` in 10 minutes the manager stays where it is, so a flapping
    path cannot make the session flap with it."""

    def __init__(self, paths, check_ms=250, bring_up_timeout_ms=20000, health=None, stable_ms=60000,
                 max_switches=6, probe=None):
        self.paths = paths
        self._check_ms = check_ms
        self._bring_up_timeout_ms = bring_up_timeout_ms
        self._health = health
        self.progress = 0
        self._listeners = []
        self.stable_ms = stable_ms
        self.max_switches = max_switches
        self.probe = probe  # async fn(path, timeout_ms) -> bool: the broker answered over path
        self._demoted = {}  # path name -> ticks when demoted (or last failed probe)
        self._switch_at = []  # ticks of recent switches, at most max_switches kept
        self.switches = 0
        self.refused_switches = 0
        self._ever_up = False
        self._started = ticks.ms()

    def listen(self, fn):
        """fn() is called (synchronously, keep it cheap) on every change of any path's state;
        each listener hears every change."""
        self._listeners.append(fn)

    def _notify(self):
        for fn in self._listeners:
            fn()

    def usable(self, p):
        return p.is_up() and p.name not in self._demoted

    def current(self):
        for p in self.paths:
            if self.usable(p):
                return p
        # Every path that is up is suspect: a suspect path beats none.
        for p in self.paths:
            if p.is_up():
                return p
        return None

    def describe(self):
        p = self.current()
        d = {"path": p.name if p else None, "signal_dbm": p.signal_dbm() if p else None}
        if len(self.paths) < 2:
            return d
        d["paths"] = dict((q.name, "up" if self.usable(q) else "suspect" if q.is_up() else "down") for q in self.paths)
        d["switches"] = self.switches
        for q in self.paths:
            modem = getattr(q, "modem", None)
            if modem is not None:
                i = modem.info
                d["cell"] = {"dbm": i.get("rssi_dbm"), "op": i.get("operator"), "apn": i.get("apn"),
                             "reg": i.get("reg"), "iccid": i.get("iccid"), "imei": i.get("imei"),
                             "state": modem.state, "resets": modem.resets, "dials": modem.dials}
        return d

    def _may_switch(self):
        now = ticks.ms()
        while self._switch_at and not ticks.recent(self._switch_at[0], SWITCH_WINDOW_MS):
            self._switch_at.pop(0)
        if len(self._switch_at) >= self.max_switches:
            self.refused_switches += 1
            return False
        self._switch_at.append(now)
        self.switches += 1
        if self._health is not None:
            self._health.count("path_switches")
        return True

    def session_failed(self, path, reason=""):
        """The MQTT session over `path` failed although the path is up (called by fl.mqtt)."""
        if path.name in self._demoted or len(self.paths) < 2:
            return
        other = None
        for q in self.paths:
            if q is not path and self.usable(q):
                other = q
        if other is None:
            return  # nowhere better to go: keep trying this one
        if not self._may_switch():
            _log.warn("%s failed (%s) but %d switches in 10 min: staying", path.name, reason, self.max_switches)
            return
        _log.warn("%s is up but the session over it failed (%s): moving to %s", path.name, reason, other.name)
        self._demoted[path.name] = ticks.ms()
        path.close_all()
        path.down_since = ticks.ms()
        self._notify()

    async def _failback(self, p):
        """A demoted path that stayed up stable_ms is probed; it returns if the broker answers."""
        since = self._demoted.get(p.name)
        if since is None or not p.is_up() or ticks.recent(since, self.stable_ms):
            return
        ok = True
        if self.probe is not None:
            try:
                ok = await self.probe(p, PROBE_MS)
            except Exception as e:  # noqa: BLE001 - a failed probe is an answer, not a crash
                _log.warn("probe over %s failed: %r", p.name, e)
                ok = False
        if not ok:
            self._demoted[p.name] = ticks.ms()  # another stable period before the next probe
            return
        cur = self.current()
        if cur is not None and cur is not p and self.paths.index(cur) < self.paths.index(p):
            del self._demoted[p.name]  # a better path carries the session: no switch needed
            return
        if not self._may_switch():
            self._demoted[p.name] = ticks.ms()
            return
        _log.info("%s stable for %d s and the broker answers over it: back to it", p.name, self.stable_ms // 1000)
        del self._demoted[p.name]
        p.down_since = None
        self._notify()

    async def run(self):
        """One supervising task per path, so a slow bring-up on one never delays another."""
        await asyncio.gather(*[self._supervise(p) for p in self.paths])

    def _check_all(self):
        """Both paths failed: a local fault at once (the outbox keeps its event until a path
        returns). Not before any path has been up, or 60 s after boot."""
        if self._health is None or len(self.paths) < 2:
            return
        up = False
        for p in self.paths:
            if self.usable(p):
                up = True
                self._ever_up = True
        if not up and (self._ever_up or not ticks.recent(self._started, 60000)):
            self._health.set_fault("paths_all", True, "no path works")
        elif up:
            self._health.set_fault("paths_all", False)

    async def _supervise(self, p):
        was_up = False
        retry_ms = 0
        # A path that is down at boot counts as down from boot.
        p.down_since = None if p.is_up() else ticks.ms()
        while True:
            self.progress += 1
            up = p.is_up()
            if was_up and not up:
                _log.warn("%s went down: closing its sockets", p.name)
                p.close_all()
                p.down_since = ticks.ms()
                p.failures += 1
                if self._health:
                    self._health.count("link_%s_down" % p.name)
                self._notify()
            elif up and not was_up:
                _log.info("%s is up", p.name)
                if p.name in self._demoted:
                    self._demoted[p.name] = ticks.ms()  # stable from now, not from the demotion
                else:
                    p.down_since = None
                retry_ms = 0
                self._notify()
            was_up = up
            good = up and p.name not in self._demoted
            if not good and p.down_since is not None and self._health is not None \
                    and ticks.diff(ticks.ms(), p.down_since) >= p.fault_delay_ms:
                self._health.set_fault("path_" + p.name, True, "%s %s" % (p.name, "down" if not up else "not reaching the broker"))
            elif good and self._health is not None:
                self._health.set_fault("path_" + p.name, False)
            self._check_all()
            if not up and retry_ms <= 0:
                try:
                    ok = await p.bring_up(self._bring_up_timeout_ms)
                except OSError as e:
                    _log.warn("%s bring-up failed: %s", p.name, e)
                    ok = False
                if not ok:
                    retry_ms = 5000
                continue
            if up and p.name in self._demoted:
                await self._failback(p)
            await asyncio.sleep_ms(self._check_ms)
            retry_ms -= self._check_ms
