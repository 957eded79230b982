# Outbox → broker through the sender, against real mosquitto: fire first, nothing removed
# before its PUBACK, everything delivered after the link returns.
import asyncio
import json

from fwtest import eq, ok

from fl.clock import Clock
from fl.events import Sequencer
from fl.hal.sim import Board
from fl.health import Health
from fl.outbox import Outbox
from fl.recorder import Recorder
from fl.sender import Sender
from mqtt_peers import EVENT, Monitor, device, host, port, set_wifi, sim_links, start, until

FIXTURES = ("broker", "fresh_accounts")  # fresh: the broker binds client ids (and sessions) to accounts
TIMEOUT_S = 60


def _parts():
    health = Health()
    outbox = Outbox()
    recorder = Recorder(outbox, Sequencer(), Clock(Board()), health)
    return health, outbox, recorder


def _events(monitor):
    return [json.loads(p) for t, p in monitor.msgs if t == EVENT]


async def test_queued_fire_events_go_out_before_older_faults_and_status():
    health, outbox, recorder = _parts()
    recorder.record("305", "new", 0, "", "status")
    recorder.record("373", "new", 2, "panel_fault", "fault")
    recorder.record("110", "new", 1, "panel_fire", "fire")
    recorder.record("301", "new", 5, "mains", "fault")
    recorder.record("111", "new", 3, "smoke", "fire")
    monitor = await Monitor().start()
    client = device(sim_links(), host(), port())
    await start(client)
    sender = Sender(outbox, client, EVENT, recorder.queued, health)
    task = asyncio.create_task(sender.run())
    ok(await until(lambda: len(_events(monitor)) == 5, 5000), "all five delivered")
    eq([e["seq"] for e in _events(monitor)], [3, 5, 2, 4, 1], "delivery order (fire first, then oldest)")
    eq(len(outbox), 0, "outbox empty after PUBACKs")
    task.cancel()
    await client.disconnect()
    await monitor.stop()


async def test_events_wait_in_the_outbox_while_the_link_is_down_then_all_arrive_in_order():
    health, outbox, recorder = _parts()
    monitor = await Monitor().start()
    links = sim_links()
    client = device(links, host(), port())
    await start(client)
    sender = Sender(outbox, client, EVENT, recorder.queued, health)
    task = asyncio.create_task(sender.run())
    set_wifi(False)
    ok(await until(lambda: not client.connected, 2000), "link down noticed")
    for zone in range(1, 21):
        recorder.record("373", "new", zone, "z%d" % zone, "fault")
    await asyncio.sleep_ms(300)
    eq(len(outbox), 20, "nothing leaves the outbox without a connection")
    set_wifi(True)
    ok(await until(lambda: len(_events(monitor)) >= 20, 10000), "delivered after the link returned")
    eq([e["seq"] for e in _events(monitor)], list(range(1, 21)), "in order, each once")
    ok(await until(lambda: len(outbox) == 0, 2000), "outbox drained")
    task.cancel()
    await client.disconnect()
    await monitor.stop()


async def test_a_fire_recorded_during_a_backlog_jumps_the_queue():
    health, outbox, recorder = _parts()
    for zone in range(1, 201):
        recorder.record("602", "new", zone, "", "status")
    monitor = await Monitor().start()
    client = device(sim_links(), host(), port())
    await start(client)
    sender = Sender(outbox, client, EVENT, recorder.queued, health)
    task = asyncio.create_task(sender.run())
    ok(await until(lambda: len(_events(monitor)) >= 10, 5000), "backlog started")
    fire = recorder.record("110", "new", 1, "panel_fire", "fire")
    ok(await until(lambda: len(_events(monitor)) >= 200 + 1, 20000), "everything delivered")
    ids = [e["id"] for e in _events(monitor)]
    position = ids.index(fire.id)
    before = len(_events(monitor)[:position])
    ok(position < 200 - 100, "fire delivered at position %d of 201, after %d status events" % (position, before))
    task.cancel()
    await client.disconnect()
    await monitor.stop()
