# 1000 commands in a burst from the centre's account, through real mosquitto, at a small
# heap of its own: the device queues a few, refuses the rest as busy, never raises MemoryError, and its
# MQTT receive loop keeps going (the connection stays up; an ack sent after the burst arrives).
import asyncio
import gc

from fwtest import env, eq, ok

from fl.commands import QUEUE_SLOTS, Commands
from fl.events import Sequencer
from fl.health import Health
from fl.outbox import Outbox
from fl.recorder import Recorder
from mqtt_peers import ACK, DEVICE, Monitor, device, host, port, sim_links, start, token, until

FIXTURES = ("broker",)
TIMEOUT_S = 120
# The centre peer runs in this process too; it keeps only the device's answers (below), so the
# heap is back to the 384k the test had before the peer kept its own 1000 commands. The device's
# share must not grow with the burst (checked below: the heap comes back).
HEAPSIZE = "384k"

CMD = "firelink/%s/cmd" % DEVICE
RESULT = CMD + "/result"


class FakeClock:
    def now(self):
        return 1760000000, True

    def stamp(self):
        return 1760000000, 0, True


async def test_a_burst_of_1000_commands_is_refused_as_busy_and_the_link_stays_up():
    links = sim_links()
    health = Health()
    ob = Outbox(capacity=16)
    rec = Recorder(ob, Sequencer(), FakeClock(), health)
    acks = []
    cmds = None

    def on_message(topic, payload):
        if topic == CMD:
            cmds.handle(payload)
        else:
            acks.append(payload)

    c = device(links, host(), port(), subscriptions=[(CMD, 1), (ACK, 1)], on_message=on_message, health=health)
    cmds = Commands(rec, c, RESULT)
    await start(c)
    worker = asyncio.create_task(cmds.run())
    # The centre watches the answers only: subscribed to firelink/<id>/#, it would also keep its
    # own 1000 commands, and that list's growth (16 KB at once) fails now and then in this heap.
    mon = await Monitor(RESULT).start()
    gc.collect()
    free_before = gc.mem_free()
    n = 1000
    # QoS 0 from the centre: written back to back, they arrive at the device as fast as the
    # broker forwards them (QoS 1 would pace them by the centre's own PUBACKs).
    for i in range(n):
        await mon.client.publish(CMD, b'{"cmd":"test","id":"b%d"}' % i, qos=0)
    tok = token().encode()
    eq(await mon.client.publish(ACK, tok), True, "centre's ack after the burst")
    ok(await until(lambda: tok in acks, 20000), "the ack after the burst reached the device")
    ok(await until(lambda: cmds.handled + cmds.busy == n and any(
        b'"busy: ' in p for t, p in mon.msgs if t == RESULT), 20000),
        "every command handled or refused, busy answered: handled %d busy %d" % (cmds.handled, cmds.busy))
    eq((c.connected, c.disconnects, c.callback_errors), (True, 0, 0), "link up throughout")
    ok(cmds.busy > 0, "the burst overran the queue (%d refused)" % cmds.busy)
    results = [p for t, p in mon.msgs if t == RESULT]
    ok(len(results) <= cmds.handled + 1 + cmds.handled // QUEUE_SLOTS, "answers bounded: %d" % len(results))
    eq(len(ob), 1, "one 601 recorded (the rest within the test interval)")
    mon.msgs.clear()  # the centre's copy of the answers
    gc.collect()
    ok(gc.mem_free() > free_before - 4096, "heap back: %d free, %d before" % (gc.mem_free(), free_before))
    worker.cancel()
    await c.disconnect()
    await mon.stop()
