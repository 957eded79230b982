"""Two paths (Wi-Fi and 4G) behind fl.link's interface: which one carries the one MQTT session.

Loaded only on a device with a second path: a single-path device keeps fl.link's plain
LinkManager and the heap this costs.
"""
import asyncio

from fl import netio, ticks
from fl.link import LinkManager
from fl.log import Logger

_log = Logger("link")


async def broker_probe(path, host, port, timeout_ms):
    """True if the broker answers over path within timeout_ms: a PINGREQ before any CONNECT,
    which a broker answers by closing the connection (a TLS listener by its alert). Any answer
    proves the round trip; a silent stall (bytes dropped) gives none. Costs one TCP connection
    and two bytes, and never touches the device's MQTT session."""
    addr = await netio.resolve(host, port, path, timeout_ms)
    stream, raw = await path.open(addr, timeout_ms)
    try:
        stream.write(b"\xc0\x00")
        path.tx_b += 2
        await asyncio.wait_for_ms(stream.drain(), timeout_ms)
        path.rx_b += len(await asyncio.wait_for_ms(stream.read(16), timeout_ms))
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
# The backup test moves the session to the backup and back: the backup must carry it (CONNACK,
# SUBACK, birth) within this, or the test fails. A silent stall is found sooner: the session's
# own CONNACK deadline demotes the backup (session_failed).
TEST_CONNECT_MS = 30000
TEST_RETRY_MS = 60000  # a test put off for a fire waiting, or for a session that was not up
# Wi-Fi as primary is pinged this often (it costs no data plan): with the 10 s answer deadline
# and the fault delay counted from the last packet heard, a silent stall is reported within
# ~90 s (path_fault_delay_s 90 by default). The 4G backup keeps broker.ping_interval_s.
PRIMARY_PING_MS = 30000


class PathManager(LinkManager):
    """Keeps the paths up and says which one to use; notifies listeners when it changes.

    `current()` is the first path (in configured priority) that is up and not demoted, or
    failing that any path that is up. A path is demoted when the MQTT session over it failed
    while its interface stayed up (no PUBACK for 10 s, no PINGRESP, no CONNACK: a silent
    stall nobody announces) and another path is up: the session moves at once and fire never
    waits for the first path to recover. A demoted path comes back (failback) only after it
    has stayed up for `stable_ms` and a probe over it reached the broker. Every switch is
    counted; beyond `max_switches` in 10 minutes no failback happens (the session stays on the
    backup), so a flapping path cannot make the session flap with it. Moving away from a failed
    path is never refused: a fire must not wait on a dead path."""

    def __init__(self, paths, health, cell, broker, record=None, check_ms=250, bring_up_timeout_ms=20000):
        """cell: config's "cellular" section; broker: (host, port) for the probe; record: the
        recorder's record(), for modem resets (305 with input `modem`)."""
        super().__init__(paths, check_ms, bring_up_timeout_ms, health)
        self.stable_ms = cell["failback_stable_s"] * 1000
        self.max_switches = cell["max_switches"]
        self._test_every_ms = cell["backup_test_s"] * 1000
        self._broker = broker
        self._record = record
        self.mqtt = None  # set by the app: tests wait for its session
        self.heartbeat = None  # set by the app: the backup test is a heartbeat over the backup
        self.fire_waiting = None  # set by the app: fn() -> True while a fire event waits to be sent
        self._test_due = True  # at boot, then every backup_test_s and after each modem reset
        self._testing = None  # the backup path while a test moves the session onto it
        self.quiet_change = False  # a change the test makes and undoes: no early heartbeat for it
        self._failing = []  # names of paths whose session failed with no other path to go to
        self.tests = self.tests_failed = 0
        for p in paths:
            if p is paths[0] and p.name == "wifi":
                p.ping_ms = PRIMARY_PING_MS
            modem = getattr(p, "modem", None)
            if modem is not None:
                modem.health = health
                modem.on_reset = self._on_modem_reset
        self._demoted = {}  # path name -> ticks when demoted (or last failed probe)
        self._switch_at = []  # ticks of recent switches, at most max_switches kept
        self.switches = 0
        self.refused_switches = 0
        self._ever_up = False
        self._started = ticks.ms()

    def usable(self, p):
        return p.is_up() and p.name not in self._demoted

    def current(self):
        t = self._testing
        if t is not None and self.usable(t):
            return t
        for p in self.paths:
            if self.usable(p):
                return p
        # Every path that is up is suspect: a suspect path beats none.
        for p in self.paths:
            if p.is_up():
                return p
        return None

    def describe(self, full=True):
        """The link's health. full: everything (the status command, the first heartbeat after
        boot and after the modem's identity changed); else the fields that change, compact, so
        the hourly heartbeat stays small on a metered path."""
        # The path the session runs over (what this heartbeat went over), else the one meant.
        p = self.current()
        on = self.mqtt.path_name() if self.mqtt is not None else None
        for q in self.paths:
            if q.name == on:
                p = q
        d = {"path": p.name if p else None, "signal_dbm": p.signal_dbm() if p else None}
        d["paths"] = dict((q.name, "up" if self.usable(q) else "suspect" if q.is_up() else "down") for q in self.paths)
        d["switches"] = self.switches
        # Bytes each path carried for the MQTT session and the probes (above TLS and TCP/IP).
        d["bytes"] = dict((q.name, [q.tx_b, q.rx_b]) for q in self.paths)
        d["tests"] = [self.tests, self.tests_failed]
        for q in self.paths:
            modem = getattr(q, "modem", None)
            if modem is not None:
                d["cell"] = modem.describe(full)
        return d

    @property
    def ident_gen(self):
        """Grows when the modem's identity (ICCID, IMEI, firmware, operator...) changed."""
        n = 0
        for q in self.paths:
            modem = getattr(q, "modem", None)
            if modem is not None:
                n += modem.ident_gen
        return n

    def _recent_switches(self):
        while self._switch_at and not ticks.recent(self._switch_at[0], SWITCH_WINDOW_MS):
            self._switch_at.pop(0)
        return len(self._switch_at)

    def _note_switch(self):
        if self._recent_switches() >= self.max_switches:
            self._switch_at.pop(0)  # bounded: the oldest goes (it only delays failbacks)
        self._switch_at.append(ticks.ms())
        self.switches += 1
        if self._health is not None:
            self._health.count("path_switches")

    def _may_switch(self):
        """A failback is allowed only below max_switches in 10 minutes: a flapping primary
        leaves the session on the backup instead of dragging it back and forth."""
        if self._recent_switches() >= self.max_switches:
            self.refused_switches += 1
            return False
        self._note_switch()
        return True

    def session_failed(self, path, reason="", silent_since=None):
        """The MQTT session over `path` failed although the path is up (called by fl.mqtt)."""
        if path.name in self._demoted or len(self.paths) < 2:
            return
        other = None
        for q in self.paths:
            if q is not path and self.usable(q):
                other = q
        if other is None:
            # Nowhere better to go: keep trying this one, but it does not work (both paths
            # failed, and this one's fault counts from its last sign of life).
            if path.name not in self._failing:
                self._failing.append(path.name)
                path.down_since = silent_since if ticks.recent(silent_since, 3600000) else ticks.ms()
                self._test_due = True  # once another path carries the session, test this one
            return
        # Always allowed: a fire must never wait on a dead path. The cap holds back failbacks.
        self._note_switch()
        _log.warn("%s is up but the session over it failed (%s): moving to %s", path.name, reason, other.name)
        self._demoted[path.name] = ticks.ms()
        path.close_all()
        # The path has been failing since its session last heard the broker, not since now:
        # the fault delay counts from then (EN 50136 DP4: a lost primary within 90 s).
        path.down_since = silent_since if ticks.recent(silent_since, 3600000) else ticks.ms()
        self._notify()

    async def _failback(self, p):
        """A demoted path that stayed up stable_ms is probed; it returns if the broker answers."""
        since = self._demoted.get(p.name)
        if since is None or not p.is_up() or ticks.recent(since, self.stable_ms):
            return
        if not await self.probe(p, PROBE_MS):
            self._demoted[p.name] = ticks.ms()  # another stable period before the next probe
            return
        if p.name in self._failing:
            self._failing.remove(p.name)
        cur = self.current()
        if cur is not None and cur is not p and self.paths.index(cur) < self.paths.index(p):
            del self._demoted[p.name]  # a better path carries the session: no switch needed
            p.down_since = None
            if self._health is not None and "backup_test" in self._health.faults:
                self._test_due = True  # it answers again: the test can clear its fault now
            return
        if not self._may_switch():
            self._demoted[p.name] = ticks.ms()
            return
        _log.info("%s stable for %d s and the broker answers over it: back to it", p.name, self.stable_ms // 1000)
        del self._demoted[p.name]
        p.down_since = None
        self._notify()

    async def probe(self, path, timeout_ms):
        try:
            return await broker_probe(path, self._broker[0], self._broker[1], timeout_ms)
        except Exception as e:  # noqa: BLE001 - a probe that fails is an answer, not a crash
            _log.warn("probe over %s failed: %r", path.name, e)
            return False

    def _on_modem_reset(self, how):
        if self._record is not None:
            self._record("305", "new", 0, "modem", "status", detail=how)
        self._test_due = True

    async def run(self):
        await asyncio.gather(*([self._supervise(p) for p in self.paths] + [self._backup_tests()]))

    def _backup(self):
        """The path the session is not meant to use: the second in priority."""
        return self.paths[1]

    async def _backup_tests(self):
        """The backup path proves it carries the session end to end: a heartbeat over it,
        acknowledged by the broker (at boot once it is up, after each modem reset, every
        backup_test_s). There is one MQTT session (the broker allows one per device id): the
        test moves it onto the backup and back, each move a clean DISCONNECT so the centre sees
        no will. A failure is the `backup_test` fault (352), reported over the primary."""
        if len(self.paths) < 2:
            return  # 4G alone: no backup to test (its session is the test)
        wait = ticks.Countdown(0)
        while True:
            await asyncio.sleep_ms(1000)
            self.progress += 1
            if not (self._test_due or wait.due()) or self.mqtt is None or not self.mqtt.connected \
                    or self.heartbeat is None:
                continue
            backup = self._backup()
            if not backup.is_up():
                continue  # a path that is down is the path fault's business: tested once up
            ok = await self._test_backup(backup)
            if ok is None:
                wait.start(TEST_RETRY_MS)  # put off: not a result
                continue
            self._test_due = False
            wait.start(self._test_every_ms)
            self.tests += 1
            if not ok:
                self.tests_failed += 1
            if self._health is not None:
                self._health.count("backup_tests")
                self._health.set_fault("backup_test", not ok, "no heartbeat over %s" % backup.name)
            _log.info("backup test over %s: %s", backup.name, "ok" if ok else "FAILED")

    async def _test_backup(self, backup):
        """True: a heartbeat went over backup and was acknowledged; False: it did not; None:
        put off (a fire waits and the session is not up yet: the fire goes first)."""
        if self.fire_waiting is not None and self.fire_waiting():
            return None  # the session is the fire's now: not moved under it
        if self.current() is not backup:
            self._move(backup)
        try:
            deadline = ticks.after(TEST_CONNECT_MS)
            while not (self.mqtt.connected and self.mqtt.path_name() == backup.name):
                if self.current() is not backup:  # demoted by its failed session, or down
                    return False
                if ticks.due(deadline):
                    return False
                if not self.mqtt.connected and self.fire_waiting is not None and self.fire_waiting():
                    _log.info("backup test put off: a fire waits")
                    return None
                self.progress += 1
                await asyncio.sleep_ms(100)
            return await self.heartbeat.send_now() is True
        finally:
            if self._testing is not None:
                self._move(None)

    def _move(self, testing):
        """The session onto the tested backup (or back): not a switch the cap counts, and not
        news for an early heartbeat (the test sends its own)."""
        self._testing = testing
        self.quiet_change = True
        try:
            self._notify()
        finally:
            self.quiet_change = False

    def _check_all(self):
        """Both paths failed: a local fault at once (the outbox keeps its event until a path
        returns). Not before any path has been up, or 60 s after boot."""
        if self._health is None or len(self.paths) < 2:
            return
        up = False
        for p in self.paths:
            if self.usable(p) and p.name not in self._failing:
                up = True
                self._ever_up = True
        if not up and (self._ever_up or not ticks.recent(self._started, 60000)):
            self._health.set_fault("paths_all", True, "no path works")
        elif up:
            self._health.set_fault("paths_all", False)

    def _works(self, name):
        """The session (or a probe) got through over the path named: it is not failing."""
        if name in self._failing:
            self._failing.remove(name)
            for p in self.paths:
                if p.name == name and name not in self._demoted:
                    p.down_since = None

    def _came_up(self, p):
        if p.name in self._demoted:
            self._demoted[p.name] = ticks.ms()  # stable from now, not from the demotion
        else:
            p.down_since = None

    def _usable(self, p, up):
        return up and p.name not in self._demoted and p.name not in self._failing

    def _report_path(self, p, up):
        if self._failing and self.mqtt is not None and self.mqtt.connected:
            self._works(self.mqtt.path_name())
        super()._report_path(p, up)
        self._check_all()

    def _has_work(self, p):
        return p.name in self._demoted

    async def _work(self, p):
        await self._failback(p)
