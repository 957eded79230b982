# The heartbeat (fl/heartbeat.py) through the assembled app to real mosquitto: one at connect
# saying when the next is due (`next_s`), and an early one when health changes, rate-limited.
import asyncio
import json

from fwtest import env, eq, ok, write

from fl import heartbeat, store
from fl.app import App
from fl.hal.sim import Board
from mqtt_peers import DEVICE, PREFIX, Monitor, host, port, until

FIXTURES = ("broker",)
TIMEOUT_S = 60
HEARTBEAT = PREFIX + "heartbeat"


def _app(**config):
    cfg = {"device_id": DEVICE, "broker": {"host": host(), "port": port()}}
    cfg.update(config)
    write("config.json", json.dumps(cfg))
    write("secrets.json", json.dumps({"mqtt_username": env("FL_DEVICE_USER"), "mqtt_password": env("FL_DEVICE_PASS")}))
    store.ensure_dir("sim")
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0}}))
    return App(Board())


def _beats(mon):
    return [json.loads(p) for t, p in mon.msgs if t == HEARTBEAT]


async def test_one_at_connect_with_next_s_then_early_ones_on_health_changes_rate_limited():
    heartbeat.EARLY_MIN_S = 2
    mon = await Monitor().start()
    app = _app()
    eq(app.heartbeat._interval_s, 3600, "hourly by default")
    tasks = [asyncio.create_task(f()) for f in (app.links.run, app.mqtt.run, app.heartbeat.run)]
    ok(await until(lambda: len(_beats(mon)) == 1, 10000), "the heartbeat at connect")
    first = _beats(mon)[0]
    eq(first["next_s"], 3600, "next scheduled in an hour")
    ok("test_fault" not in first["faults"], "no fault yet")
    app.health.set_fault("test_fault", True, "raised by the test")
    app.health.set_fault("test_fault2", True, "and another")
    ok(await until(lambda: len(_beats(mon)) == 2, 6000), "an early heartbeat after the change")
    early = _beats(mon)[1]
    eq(sorted(k for k in early["faults"] if k.startswith("test_")), ["test_fault", "test_fault2"], "both faults in one")
    ok(3590 <= early["next_s"] <= 3600, "the schedule unchanged: next_s %d" % early["next_s"])
    app.health.set_fault("test_fault", False)
    await asyncio.sleep_ms(800)
    eq(len(_beats(mon)), 2, "not again within EARLY_MIN_S")
    ok(await until(lambda: len(_beats(mon)) == 3, 6000), "the clear reported once the rate limit allows")
    ok("test_fault" not in _beats(mon)[2]["faults"], "cleared")
    await asyncio.sleep_ms(2500)
    eq(len(_beats(mon)), 3, "nothing changed: no more until the hour is up")
    for t in tasks:
        t.cancel()
    await app.mqtt.disconnect()
    await mon.stop()
