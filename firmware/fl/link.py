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
        self.tx_b = self.rx_b = 0  # bytes the MQTT session and probes sent/received over it

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


class LinkManager:
    """Keeps the paths up and says which one to use; notifies listeners when it changes.

    `current()` is the first path (in configured priority) that is up, or None."""

    # What fl.pathmgr adds, with one path's answers, so callers use them plainly: getattr()
    # with a default on a missing attribute builds an AttributeError each time (on every
    # change, every heartbeat), garbage a lean board's fragmented heap can do without.
    quiet_change = False  # set during the backup test
    ident_gen = 0  # the modem's identity generation

    def session_failed(self, path, reason="", silent_since=None):
        """The MQTT session over `path` failed with the path up: one path has nowhere to move."""

    def __init__(self, paths, check_ms=250, bring_up_timeout_ms=20000, health=None):
        self.paths = paths
        self._check_ms = check_ms
        self._bring_up_timeout_ms = bring_up_timeout_ms
        self._health = health
        self.progress = 0
        self._listeners = []

    def listen(self, fn):
        """fn() is called (synchronously, keep it cheap) on every change of any path's state;
        each listener hears every change."""
        self._listeners.append(fn)

    def _notify(self):
        for fn in self._listeners:
            fn()

    def current(self):
        for p in self.paths:
            if p.is_up():
                return p
        return None

    def describe(self, full=True):
        p = self.current()
        return {"path": p.name if p else None, "signal_dbm": p.signal_dbm() if p else None}

    async def run(self):
        """One supervising task per path, so a slow bring-up on one never delays another."""
        await asyncio.gather(*[self._supervise(p) for p in self.paths])

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
                self._came_up(p)
                retry_ms = 0
                self._notify()
            was_up = up
            self._report_path(p, up)
            if not up and retry_ms <= 0:
                try:
                    ok = await p.bring_up(self._bring_up_timeout_ms)
                except OSError as e:
                    _log.warn("%s bring-up failed: %s", p.name, e)
                    ok = False
                if not ok:
                    retry_ms = 5000
                continue
            if up and self._has_work(p):
                await self._work(p)
            await asyncio.sleep_ms(self._check_ms)
            retry_ms -= self._check_ms

    # Hooks for a manager of several paths (fl/pathmgr.py); one path needs none of them.
    def _came_up(self, p):
        p.down_since = None

    def _usable(self, p, up):
        return up

    def _report_path(self, p, up):
        """The path's fault: raised once it has been unusable past its delay, cleared when usable."""
        if self._health is None:
            return
        usable = self._usable(p, up)
        if not usable and p.down_since is not None and ticks.diff(ticks.ms(), p.down_since) >= p.fault_delay_ms:
            self._health.set_fault("path_" + p.name, True,
                                   "%s %s" % (p.name, "down" if not up else "not reaching the broker"))
        elif usable:
            self._health.set_fault("path_" + p.name, False)

    def _has_work(self, p):
        return False

    async def _work(self, p):
        pass
