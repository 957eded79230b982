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
