# Remote commands (fl/commands.py): `test` records a 601 through the real recorder and outbox,
# and the answer goes out on cmd/result without blocking the receive loop; commands wait in a
# bounded queue, and a burst beyond it is refused as busy without allocating.
import asyncio
import gc
import json

from fwtest import env, eq, ok
from mqtt_peers import until

from fl import commands as commands_mod
from fl.commands import QUEUE_SLOTS, Commands
from fl.events import Event, Sequencer
from fl.health import Health
from fl.outbox import Outbox
from fl.recorder import Recorder

TOPIC = "firelink/fl-t/cmd/result"


class FakeClock:
    def now(self):
        return 1760000000, True

    def stamp(self):
        return 1760000000, 0, True


class FakeMQTT:
    """Publishes succeed while `ok`; `fail_next` publishes fail first, as when the session drops
    before the PUBACK; `back` says whether the session comes back (wait_connected)."""

    def __init__(self, ok=True, fail_next=0, back=False):
        self.ok = ok
        self.fail_next = fail_next
        self.back = back
        self.published = []
        self.dups = []
        self.waits = 0

    async def publish(self, topic, payload, qos=1, retain=False, dup=False, timeout_ms=None):
        await asyncio.sleep_ms(1)
        self.published.append((topic, json.loads(payload), qos))
        self.dups.append(dup)
        if self.fail_next:
            self.fail_next -= 1
            return False
        return self.ok

    async def wait_connected(self, timeout_ms):
        self.waits += 1
        await asyncio.sleep_ms(1 if self.back else timeout_ms)
        return self.back


def make(mqtt=None):
    ob = Outbox(capacity=32)
    rec = Recorder(ob, Sequencer(), FakeClock(), Health())
    m = mqtt or FakeMQTT()
    return Commands(rec, m, TOPIC), ob, m


async def run_all(cmds, m, answers, timeout_ms=3000):
    """Runs the command task until `answers` answers were published."""
    task = asyncio.create_task(cmds.run())
    try:
        ok(await until(lambda: len(m.published) >= answers, timeout_ms),
           "%d answers, got %r" % (answers, m.published))
        await asyncio.sleep_ms(20)  # nothing more comes
    finally:
        task.cancel()


def queued(ob):
    out = []
    while True:
        head = ob.peek()
        if head is None:
            return out
        out.append(Event.from_json(head[1]))
        ob.remove(head[0])


async def test_test_command_records_a_601_and_answers_with_its_id():
    cmds, ob, m = make()
    eq(cmds.handle(b'{"cmd": "test", "id": "prov-1"}'), True, "queued")
    await run_all(cmds, m, 1)
    evs = queued(ob)
    eq([(e.code, e.q, e.zone, e.cls) for e in evs], [("601", "new", 0, "status")], "recorded events")
    eq(evs[0].detail, "remote test prov-1", "detail")
    eq(m.published, [(TOPIC, {"id": "prov-1", "cmd": "test", "ok": True, "event": evs[0].id, "seq": evs[0].seq}, 1)],
       "answer")


async def test_bad_commands_are_answered_and_record_nothing():
    cmds, ob, m = make()
    cases = [
        (b"not json", None, None),
        (b"[1]", None, None),
        (b'{"cmd": "reboot", "id": "r1"}', "r1", "reboot"),
        (b'{"id": "r2"}', "r2", None),
        (b'{"cmd": "test", "id": 7}', None, "test"),
        (b'{"cmd": "test", "id": "' + b"x" * 40 + b'"}', None, "test"),
        (b'{"cmd": "test", "pad": "' + b"x" * 300 + b'"}', None, None),
        (b"\xff\xfe", None, None),
    ]
    for payload, ref, name in cases:
        r = cmds.execute(payload)
        eq((r["ok"], r["id"], r["cmd"]), (False, ref, name), repr(payload[:30]))
        ok(r["error"], "error text")
    eq(len(ob), 0, "nothing recorded")
    eq(cmds.refused, len(cases), "counted")
    # Through the queue too (the oversized one is queued by its length only), in order.
    for payload, _, _ in cases[:QUEUE_SLOTS - 1] + cases[-2:-1]:
        eq(cmds.handle(payload), True, "queued")
    await run_all(cmds, m, QUEUE_SLOTS)
    eq([(r[1]["ok"], r[1]["id"], r[1]["cmd"]) for r in m.published],
       [(False, ref, name) for _, ref, name in cases[:QUEUE_SLOTS - 1] + cases[-2:-1]], "each answered")
    ok(m.published[-1][1]["error"].startswith("command larger than"), m.published[-1][1]["error"])


async def test_tests_in_quick_succession_are_refused_as_busy():
    cmds, ob, m = make()
    eq(cmds.execute(b'{"cmd": "test"}')["ok"], True, "first")
    second = cmds.execute(b'{"cmd": "test"}')
    eq(second["ok"], False, "second")
    ok(second["error"].startswith("busy"), second["error"])
    eq(len(queued(ob)), 1, "one 601")


async def test_an_undelivered_answer_is_given_up_after_its_wait_not_raised():
    saved = commands_mod.ANSWER_WAIT_MS
    commands_mod.ANSWER_WAIT_MS = 60
    try:
        cmds, ob, m = make(FakeMQTT(ok=False))
        eq(cmds.handle(b'{"cmd": "test", "id": "x"}'), True, "queued")
        eq(cmds.handle(b'{"cmd": "test", "id": "y"}'), True, "queued")
        # The session never comes back: the first answer is given up after its wait (the
        # task goes on: the second command is run and answered, busy).
        await run_all(cmds, m, 2)
        eq([p[1]["id"] for p in m.published], ["x", "y"], "each tried once")
        ok(m.waits >= 1, "waited for the session")
        eq(len(queued(ob)), 1, "the event stays queued for the sender")
    finally:
        commands_mod.ANSWER_WAIT_MS = saved


async def test_an_answer_lost_to_a_dropped_session_is_sent_again_once_it_is_back():
    # The backup-path test moves the session to the other path and back: an answer in flight
    # then has no PUBACK; it goes again, as a resend, once the session is up.
    cmds, ob, m = make(FakeMQTT(fail_next=1, back=True))
    eq(cmds.handle(b'{"cmd": "test", "id": "moved"}'), True, "queued")
    await run_all(cmds, m, 2)
    eq([p[1]["id"] for p in m.published], ["moved", "moved"], "the same answer twice")
    eq(m.dups, [False, True], "the second as a resend")
    eq(m.waits, 1, "waited for the session once")
    eq(len(queued(ob)), 1, "one 601")


async def test_a_burst_beyond_the_queue_is_refused_as_busy_without_allocating():
    cmds, ob, m = make()
    cmd = b'{"cmd": "test", "id": "burst"}'
    for _ in range(QUEUE_SLOTS):
        eq(cmds.handle(cmd), True, "queued while there is room")
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(1000):
            cmds.handle(cmd)
        grew = gc.mem_alloc() - before
    finally:
        gc.enable()
    eq(grew, 0, "bytes allocated by 1000 refused commands")
    eq(cmds.busy, 1000, "counted")
    # The queued ones run one at a time (the first records its 601, the rest fall within the
    # test interval), then one answer says how many were refused.
    await run_all(cmds, m, QUEUE_SLOTS + 1)
    answers = [r[1] for r in m.published]
    eq([a["ok"] for a in answers], [True] + [False] * QUEUE_SLOTS, "answers")
    eq(answers[-1], {"id": None, "cmd": None, "ok": False, "error": "busy: 1000 command(s) refused"}, "busy answer")
    eq(len(queued(ob)), 1, "one 601")
    # The queue is usable again.
    eq(cmds.handle(b'{"cmd": "nope"}'), True, "queued after the burst")
