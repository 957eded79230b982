# Remote commands (fl/commands.py): `test` records a 601 through the real recorder and outbox,
# and the answer goes out on cmd/result without blocking the receive loop.
import asyncio
import json

from fwtest import eq, ok

from fl.commands import Commands
from fl.events import Event, Sequencer
from fl.health import Health
from fl.outbox import Outbox
from fl.recorder import Recorder

TOPIC = "firelink/fl-t/cmd/result"


class FakeClock:
    def now(self):
        return 1760000000, True


class FakeMQTT:
    def __init__(self, ok=True):
        self.ok = ok
        self.published = []

    async def publish(self, topic, payload, qos=1, retain=False, dup=False, timeout_ms=None):
        await asyncio.sleep_ms(1)
        self.published.append((topic, json.loads(payload), qos))
        return self.ok


def make(mqtt=None):
    ob = Outbox(capacity=32)
    rec = Recorder(ob, Sequencer(), FakeClock(), Health())
    m = mqtt or FakeMQTT()
    return Commands(rec, m, TOPIC), ob, m


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
    result = cmds.handle(b'{"cmd": "test", "id": "prov-1"}')
    eq(result["ok"], True, "ok")
    evs = queued(ob)
    eq([(e.code, e.q, e.zone, e.cls) for e in evs], [("601", "new", 0, "status")], "recorded events")
    eq(evs[0].detail, "remote test prov-1", "detail")
    await asyncio.sleep_ms(20)
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
        r = cmds.handle(payload)
        eq((r["ok"], r["id"], r["cmd"]), (False, ref, name), repr(payload[:30]))
        ok(r["error"], "error text")
    eq(len(ob), 0, "nothing recorded")
    await asyncio.sleep_ms(30)
    eq(len(m.published), len(cases), "each answered")
    eq(cmds.refused, len(cases), "counted")


async def test_tests_in_quick_succession_are_refused_as_busy():
    cmds, ob, m = make()
    eq(cmds.handle(b'{"cmd": "test"}')["ok"], True, "first")
    second = cmds.handle(b'{"cmd": "test"}')
    eq(second["ok"], False, "second")
    ok(second["error"].startswith("busy"), second["error"])
    eq(len(queued(ob)), 1, "one 601")


async def test_an_undelivered_answer_is_logged_not_raised():
    cmds, ob, m = make(FakeMQTT(ok=False))
    eq(cmds.handle(b'{"cmd": "test", "id": "x"}')["ok"], True, "recorded")
    await asyncio.sleep_ms(20)
    eq(len(m.published), 1, "tried once")
    eq(len(queued(ob)), 1, "the event stays queued for the sender")
