"""Broker-side helpers for firmware tests: the test device's client, the centre's side, and
the real link layer over the simulated board."""
import asyncio
import os
import time

from fwtest import env, ok

from fl import store
from fl.hal.sim import CONTROL, Board
from fl.health import Health
from fl.link import LinkManager, Path
from fl.mqtt import MQTTClient

DEVICE = env("FL_DEVICE_ID", "fl-test1")
PREFIX = "firelink/%s/" % DEVICE
STATUS = PREFIX + "status"
EVENT = PREFIX + "event"
ACK = PREFIX + "ack"


def token():
    return "%08x" % int.from_bytes(os.urandom(4), "big")


def host():
    return env("FL_BROKER_HOST")


def port():
    return int(env("FL_BROKER_PORT"))


def ms_since(t):
    return time.ticks_diff(time.ticks_ms(), t)


async def until(cond, timeout_ms, step_ms=10):
    """Polls a test condition (test side only); returns whether it became true in time."""
    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    while not cond():
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            return False
        await asyncio.sleep_ms(step_ms)
    return True


def set_wifi(up):
    store.write_atomic(CONTROL, ('{"links": {"wifi": %s}}' % ("true" if up else "false")).encode())


def sim_links():
    """The real link layer over the simulated board (Wi-Fi up unless control.json says not)."""
    links = LinkManager(Board().paths({}), check_ms=50)
    asyncio.create_task(links.run())
    return links


def device(links, h, p, **kw):
    args = {"username": env("FL_DEVICE_USER"), "password": env("FL_DEVICE_PASS"), "health": Health()}
    args.update(kw)
    return MQTTClient(links, DEVICE + "-" + token(), h, p, **args)


async def start(client, timeout_ms=5000):
    task = asyncio.create_task(client.run())
    ok(await client.wait_connected(timeout_ms), "connected within %d ms (last error: %s)" % (timeout_ms, client.last_error))
    return task


class _Loopback(Path):
    name = "lo"

    def is_up(self):
        return True

    async def bring_up(self, timeout_ms):
        return True


_centres = [0]


class Monitor:
    """The centre's side, written with the same client: sees everything under firelink/<device>/.
    The broker binds client ids to accounts: successive Monitors alternate between the test's two
    centre accounts, so two can be connected at once."""

    def __init__(self, topic=PREFIX + "#"):
        self.msgs = []
        self._ev = asyncio.Event()
        who = ("FL_MONITOR", "FL_CENTRE")[_centres[0] % 2]
        _centres[0] += 1
        self.client = MQTTClient(LinkManager([_Loopback()]), "mon-" + token(), host(), port(),
                                 username=env(who + "_USER"), password=env(who + "_PASS"),
                                 subscriptions=[(topic, 1)], on_message=self._on)

    def _on(self, topic, payload):
        self.msgs.append((topic, payload))
        self._ev.set()

    async def start(self):
        self.task = await start(self.client)
        return self

    def count(self, topic, payload):
        return sum(1 for m in self.msgs if m == (topic, payload))

    async def wait_for(self, topic, payload, n=1, timeout_ms=5000):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while self.count(topic, payload) < n:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return False
            self._ev.clear()
            try:
                await asyncio.wait_for_ms(self._ev.wait(), left)
            except asyncio.TimeoutError:
                pass
        return True

    async def stop(self):
        await self.client.disconnect()


def buggy_handler(got):
    """An on_message that records what arrives and raises on b"boom", like an application bug."""
    def on_message(topic, payload):
        got.append((topic, payload))
        if payload == b"boom":
            raise ValueError("handler bug")
    return on_message
