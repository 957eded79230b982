# fl.pathmgr's decisions without a network: a failed session moves to the other path every
# time (a fire never waits on a dead path), the switch cap only holds back failbacks, and a
# failback needs the stable period and a probe that reaches the broker.
import asyncio

from fwtest import eq, ok

from fl import ticks
from fl.health import Health
from fl.link import Path
from fl.pathmgr import PathManager

CELL = {"failback_stable_s": 10, "max_switches": 3, "backup_test_s": 3600}


class Up(Path):
    def __init__(self, name):
        super().__init__()
        self.name = name

    def is_up(self):
        return True

    async def bring_up(self, timeout_ms):
        return True


def manager(probe_ok):
    wifi, cell = Up("wifi"), Up("cellular")
    m = PathManager([wifi, cell], Health(), CELL, ("127.0.0.1", 1883))
    m.stable_ms = 0  # the stable period is passed at once here; the probe still decides

    async def probe(path, timeout_ms):
        return probe_ok[0]

    m.probe = probe
    return m, wifi, cell


async def test_failover_is_never_capped_failback_is():
    probe_ok = [True]
    m, wifi, cell = manager(probe_ok)
    eq(m.current(), wifi, "primary first")
    eq(wifi.ping_ms, 30000, "Wi-Fi beside a backup is pinged every 30 s")
    for i in range(5):
        m.session_failed(wifi, "no PUBACK", ticks.ms())
        eq(m.current(), cell, "failover %d" % i)
        await m._failback(wifi)
        if m.current() is cell:
            break  # the cap held the failback back
    eq(m.current(), cell, "after the cap the session stays on 4G")
    eq(m.switches, 3, "switches counted up to the cap")
    ok(m.refused_switches >= 1, "a failback refused")
    # A failed session over 4G now has nowhere better to go (Wi-Fi is demoted): it stays.
    m.session_failed(cell, "no PINGRESP", ticks.ms())
    eq(m.current(), cell, "no move to a demoted path")


async def test_failback_needs_the_probe():
    probe_ok = [False]
    m, wifi, cell = manager(probe_ok)
    m.session_failed(wifi, "no CONNACK", None)
    await m._failback(wifi)
    eq(m.current(), cell, "probe failed: stays on 4G")
    probe_ok[0] = True
    await m._failback(wifi)
    eq(m.current(), wifi, "probe passed: back to Wi-Fi")
    eq(m.describe()["paths"], {"wifi": "up", "cellular": "up"}, "both up")


class Session:
    """Stands in for fl.mqtt's view the manager reads: follows links.current() on every change,
    reaching the broker over a path only if `works` says so (as a CONNACK would)."""

    def __init__(self, m, works):
        self.m = m
        self.works = works
        self.connected = True
        self.path = m.current()
        self.moves = []
        self.delay_ms = 20  # a reconnect's time
        m.listen(self._change)

    def _change(self):
        self.connected = False
        asyncio.create_task(self._reconnect())

    async def _reconnect(self):
        await asyncio.sleep_ms(self.delay_ms)
        p = self.m.current()
        self.moves.append(p.name)
        if self.works[p.name]:
            self.path, self.connected = p, True
        else:
            self.m.session_failed(p, "no CONNACK", ticks.ms())

    def path_name(self):
        return self.path.name if self.connected else None


class Beat:
    def __init__(self, session):
        self.session = session
        self.sent_over = []

    async def send_now(self):
        self.sent_over.append(self.session.path_name())
        return self.session.connected


async def test_backup_test_is_a_heartbeat_over_the_backup_and_back():
    m, wifi, cell = manager([True])
    s = Session(m, {"wifi": True, "cellular": True})
    m.mqtt, m.heartbeat = s, Beat(s)
    eq(await m._test_backup(cell), True, "the heartbeat went over 4G")
    eq(m.heartbeat.sent_over, ["cellular"], "sent while the session was on the backup")
    await asyncio.sleep_ms(50)
    eq((s.moves, s.path_name(), m.switches), (["cellular", "wifi"], "wifi", 0),
       "moved there and back; not a switch the cap counts")


async def test_failing_backup_test_returns_to_the_primary_and_fire_puts_it_off():
    m, wifi, cell = manager([False])
    s = Session(m, {"wifi": True, "cellular": False})
    m.mqtt, m.heartbeat = s, Beat(s)
    eq(await m._test_backup(cell), False, "no session over a dead backup: failed")
    eq(m.heartbeat.sent_over, [], "no heartbeat sent")
    await asyncio.sleep_ms(50)
    eq((m.current(), s.path_name()), (wifi, "wifi"), "the session is back on Wi-Fi")
    # A fire waiting while the session is moving: the test gives way (the fire goes first).
    m2, wifi2, cell2 = manager([True])
    s2 = Session(m2, {"wifi": True, "cellular": True})
    m2.mqtt, m2.heartbeat = s2, Beat(s2)
    fire = [False]
    m2.fire_waiting = lambda: fire[0]
    s2.delay_ms = 500  # the session is still moving when the fire comes

    async def alarm():
        await asyncio.sleep_ms(10)
        fire[0] = True

    asyncio.create_task(alarm())
    eq(await m2._test_backup(cell2), None, "put off for the fire")
    await asyncio.sleep_ms(50)
    eq(m2.current(), wifi2, "the fire's session is on the primary")
    await asyncio.sleep_ms(1200)
    n = len(s2.moves)
    eq(await m2._test_backup(cell2), None, "not started while a fire waits")
    await asyncio.sleep_ms(50)
    eq(len(s2.moves), n, "the session not moved")


async def test_both_paths_failed_is_a_fault_even_with_both_links_up():
    m, wifi, cell = manager([False])
    h = m._health
    s = Session(m, {"wifi": False, "cellular": False})
    m.mqtt = s
    s.connected = False
    for p in (wifi, cell):
        p.fault_delay_ms = 0
        m._report_path(p, True)  # both worked once (before that, no fault for 60 s after boot)
    eq(h.faults, {}, "both fine")
    m.session_failed(wifi, "no PINGRESP", ticks.ms())  # Wi-Fi stalls: demoted, session to 4G
    await asyncio.sleep_ms(50)  # 4G's CONNACK never comes either
    for p in (wifi, cell):
        m._report_path(p, True)
    eq(sorted(k for k in h.faults if k.startswith("path")), ["path_cellular", "path_wifi", "paths_all"],
       "both path faults and both-failed, though both links are up")
    s.works["cellular"] = True
    s.connected, s.path = True, cell  # 4G carries the session again
    m._report_path(cell, True)
    ok("paths_all" not in h.faults and "path_cellular" not in h.faults and "path_wifi" in h.faults,
       "4G restored: %r" % h.faults)


async def until(pred, what, timeout_ms=10000):
    t0 = ticks.ms()
    while not pred():
        ok(ticks.diff(ticks.ms(), t0) < timeout_ms, "%s within %d ms" % (what, timeout_ms))
        await asyncio.sleep_ms(20)
    return ticks.diff(ticks.ms(), t0)


async def test_backup_tested_at_boot_on_schedule_and_after_a_modem_reset():
    m, wifi, cell = manager([True])
    s = Session(m, {"wifi": True, "cellular": True})
    m.mqtt, m.heartbeat = s, Beat(s)
    m._test_every_ms = 6000  # backup_test_s (an hour by default; 300 s at least in the config)
    task = asyncio.create_task(m._backup_tests())
    try:
        await until(lambda: m.tests == 1, "the test at boot")
        took = await until(lambda: m.tests == 2, "the scheduled one")
        ok(took >= 5500, "not before its time: %d ms" % took)
        m._on_modem_reset("pwrkey")  # after each modem reset: at once, not at the schedule
        took = await until(lambda: m.tests == 3, "the one after the modem reset")
        ok(took < 5000, "before the schedule: %d ms" % took)
        eq((m.heartbeat.sent_over, m.tests_failed), (["cellular"] * 3, 0), "each a heartbeat over 4G")
        s.works["cellular"] = False
        m._on_modem_reset("reset")
        await until(lambda: m.tests == 4, "the test after the second reset")
        eq((m.tests_failed, m._health.faults.get("backup_test")), (1, "no heartbeat over cellular"),
           "a failing test is the backup_test fault")
    finally:
        task.cancel()
