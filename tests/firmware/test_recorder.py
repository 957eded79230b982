# Input -> event -> outbox (fl/recorder.py), on real files.
import asyncio
import os

from fwtest import eq, ok, raises

from fl.events import Event, Sequencer
from fl.health import Health
from fl.outbox import Outbox
from fl.recorder import Recorder

T0 = 1760000000


class FakeClock:
    def __init__(self, t=T0, synced=True):
        self.t = t
        self.synced = synced

    def now(self):
        return self.t, self.synced

    def stamp(self):
        return self.t, 250, self.synced


def make(capacity=32, outbox=None, clock=None, health=None):
    ob = outbox if outbox is not None else Outbox(capacity=capacity)
    return Recorder(ob, Sequencer(), clock or FakeClock(), health or Health()), ob


def queued(ob):
    """Every queued event in send order, from a fresh Outbox on the same files."""
    fresh = Outbox(ob.path, ob.capacity, ob.slot_size)
    out = []
    while True:
        head = fresh.peek()
        if head is None:
            return out
        out.append(Event.from_json(head[1]))
        fresh._unindex(fresh._slot_of(head[0]))


def summary(evs):
    return [(e.code, e.q, e.cls) for e in evs]


def test_record_builds_event_and_stores_it_before_returning():
    rec, ob = make()
    ok(not rec.queued.is_set(), "nothing queued yet")
    ev = rec.record("110", "new", 3, "in1", "fire")
    eq((ev.seq, ev.ts, ev.tsync, ev.code, ev.q, ev.zone, ev.input, ev.cls, ev.detail),
       (1, T0, True, "110", "new", 3, "in1", "fire", None))
    ok(ev.id.startswith("00000001-"), ev.id)
    ok(rec.queued.is_set(), "sender woken")
    got = queued(ob)  # read back from flash by a fresh outbox
    eq(len(got), 1)
    eq(got[0].to_json(), ev.to_json(), "stored bytes")
    eq(ob.peek()[1], ev.to_json())


def test_priority_follows_class():
    rec, ob = make()
    rec.record("602", "new", 0, "", "status")
    rec.record("380", "new", 2, "in2", "fault")
    rec.record("110", "new", 1, "in1", "fire")
    rec.record("373", "new", 0, "panel", "fault")
    eq(summary(queued(ob)), [("110", "new", "fire"), ("380", "new", "fault"), ("373", "new", "fault"),
                             ("602", "new", "status")])
    eq([e.seq for e in queued(ob)], [3, 2, 4, 1])


def test_unsynced_clock_marks_events():
    rec, _ = make(clock=FakeClock(12345, False))
    ev = rec.record("301", "new", 0, "mains", "fault")
    eq((ev.ts, ev.tsync), (12345, False))


def test_bad_arguments_raise_and_record_nothing():
    rec, ob = make()
    eq(str(raises(ValueError, rec.record, "11", "new", 1, "in1", "fault")), 'bad code \'11\': want 3 digits, e.g. "110"')
    eq(str(raises(ValueError, rec.record, "373", "on", 1, "in1", "fault")), 'bad q \'on\': want "new" or "restore"')
    eq(str(raises(ValueError, rec.record, "110", "new", 1, "in1", "alarm")),
       "bad class 'alarm': want one of fire, fault, status")
    eq(str(raises(ValueError, rec.record, "602", "new", 1000, "", "status")), "bad zone 1000: want an int 0..999")
    eq(len(ob), 0)
    eq(rec.record("110", "new", 1, "in1", "fire").seq, 1, "no number used up by the rejects")


def test_fire_with_bad_fields_is_still_recorded():
    rec, ob = make()
    ev = rec.record("11", "on", 1000, "in1", "fire")
    eq((ev.seq, ev.code, ev.q, ev.zone, ev.input, ev.cls), (1, "110", "new", 0, "in1", "fire"))
    eq(ev.detail, 'recorder: bad code \'11\': want 3 digits, e.g. "110"')
    ev2 = rec.record("111", "restore", 1000, "in1", "fire")
    eq((ev2.code, ev2.q, ev2.zone, ev2.detail), ("111", "restore", 0, "recorder: bad zone 1000: want an int 0..999"))
    eq(summary(queued(ob)), [("110", "new", "fire"), ("111", "restore", "fire")])
    eq(rec.health.counters.get("events_repaired"), 2)


def test_odd_clock_and_names_do_not_stop_an_event():
    rec, ob = make(clock=FakeClock(-5, None))
    ev = rec.record("110", "new", 1, 7, "fire", detail=42)
    eq((ev.ts, ev.tsync, ev.input, ev.detail), (0, False, "7", "42"))
    eq(len(queued(ob)), 1)


def test_long_detail_and_name_are_shortened_to_fit_a_slot():
    rec, ob = make()
    ev = rec.record("307", "new", 0, "", "fault", detail="config: " + "x" * 400)
    ok(len(ev.to_json()) <= ob.max_payload, "fits")
    ok(len(ev.to_json()) >= ob.max_payload - 2, "uses the room: %d" % len(ev.to_json()))
    ok(ev.detail.startswith("config: xxx"), ev.detail)
    eq(queued(ob)[0].detail, ev.detail)
    ev2 = rec.record("110", "new", 1, "n" * 300, "fire")
    ok(len(ev2.to_json()) <= ob.max_payload, "fits")
    ok(ev2.input.startswith("nnn"), "name kept as far as it fits")
    eq(len(queued(ob)), 2)


def test_sequence_continues_after_restart():
    rec, ob = make()
    for _ in range(3):
        rec.record("110", "new", 1, "in1", "fire")
    rec2, ob2 = make()  # reboot: new objects on the same files
    eq(rec2.record("110", "restore", 1, "in1", "fire").seq, 4, "right after the newest record: no hole")
    eq(len(ob2), 4)
    eq(rec2.sequencer.recovery, "outbox")


def test_sequence_continues_exactly_after_delivery_and_many_restarts():
    issued = []
    for run in range(6):
        rec, ob = make(capacity=256)  # no level events in between
        for _ in range(run * 7 + 1):  # crossing reserved blocks at varying points
            issued.append(rec.record("380", "new", 2, "in2", "fault").seq)
        while ob.peek():
            ob.remove(ob.peek()[0])  # delivered; removals pending in RAM or marked
        if run % 2:
            ob.flush_removals()
    eq(issued, list(range(1, len(issued) + 1)), "every number once, no hole")


def test_sequence_skips_to_the_mark_only_when_the_outbox_is_gone():
    rec, ob = make()
    for _ in range(3):
        rec.record("380", "new", 2, "in2", "fault")
    for name in os.listdir("outbox"):
        os.remove("outbox/" + name)
    h = Health()
    rec2, _ = make(health=h)
    eq(rec2.record("380", "restore", 2, "in2", "fault").seq, 33, "the reserved mark: never a repeat")
    eq(rec2.sequencer.skipped, (1, 32))
    eq(h.counters.get("seq_skipped"), 1)


def test_a_number_held_in_ram_is_never_issued_again():
    class Failing(Outbox):
        fail = False

        def _open(self, path, mode):
            if self.fail and mode != "rb":
                raise OSError(5)
            return open(path, mode)

    ob = Failing(capacity=16)
    rec, _ = make(outbox=ob)
    rec.record("380", "new", 2, "in2", "fault")  # 1 on flash
    ob.fail = True
    eq(rec.record("380", "restore", 2, "in2", "fault").seq, 2)
    eq(ob.in_ram(), 1)
    rec2, _ = make()  # power cut: the RAM-held record is gone, its number may have been sent
    ok(rec2.record("380", "new", 2, "in2", "fault").seq > 2, "2 not issued again")


def _deliver(ob, keep=0):
    """Sends (removes) the head until `keep` records are left; returns the events sent."""
    out = []
    while len(ob) > keep:
        h, p, _ = ob.peek()
        out.append(Event.from_json(p))
        ob.remove(h)
    return out


def _lost_in(ev_json):
    """The ranges a 624's payload declares."""
    import json
    return json.loads(ev_json).get("lost", [])


def test_dropped_records_are_declared_in_the_624_by_seq():
    rec, ob = make(capacity=10)
    for i in range(12):
        rec.record("380", "new" if i % 2 == 0 else "restore", 2, "in2", "fault")
    # Full at 10 (with the 622 and 623 events): the oldest give way; the first drop is declared
    # in the 624 "new", later ones wait for the next 624.
    sent = _deliver(ob, keep=0)
    seqs = [e.seq for e in sent]
    raws = [ob._file.read(i)[1] for i in range(ob.capacity) if ob._file.read(i)]
    declared = []
    for r in raws:
        if b'"624"' in r:
            declared += _lost_in(r)
    nums = set()
    for a, b in declared:
        nums.update(range(a, b + 1))
    top = max(seqs)
    eq(sorted(set(range(1, top + 1)) - set(seqs)), sorted(nums), "every seq sent, queued or declared lost")
    ok(len(nums) > 0, "something was dropped")
    eq(ob.lost, [], "nothing left pending")


def test_a_dropped_624_has_its_ranges_declared_again():
    rec, ob = make(capacity=10)
    for i in range(8):
        rec.record("380", "new", 2, "in2", "fault")
    for i in range(20):  # everything old gives way, the first 624 too
        rec.record("380", "new", 2, "in2", "fault")
    sent = _deliver(ob, keep=0)
    seqs = set(e.seq for e in sent)
    nums = set()
    # The payloads as sent carry the ranges (Event.from_json keeps no unknown keys): read them
    # back from flash, where removed records keep their bytes.
    for i in range(ob.capacity):
        r = ob._file.read(i)
        if r and b'"624"' in r[1] and r[0] in seqs:
            for a, b in _lost_in(r[1]):
                nums.update(range(a, b + 1))
    top = max(seqs)
    missing = sorted(set(range(1, top + 1)) - seqs - nums)
    eq(missing, [], "every seq delivered or declared lost (sent %r, lost %r)" % (sorted(seqs), sorted(nums)))


def test_outbox_levels_become_status_events():
    rec, ob = make(capacity=10)
    for i in range(4):
        rec.record("380", "new", i, "in%d" % i, "fault")
    eq(len(ob), 4)
    rec.record("380", "new", 4, "in4", "fault")  # 5/10: 50 %, then the 622 event itself: 6/10
    eq(len(ob), 6)
    evs = queued(ob)
    lvl = evs[-1]
    eq((lvl.code, lvl.q, lvl.zone, lvl.input, lvl.cls, lvl.seq), ("622", "new", 0, "", "status", 6))
    eq(lvl.detail, "outbox 5/10, dropped 0")
    for i in range(3):
        rec.record("380", "new", 0, "in0", "fault")  # 7, 8, 9; the 623 event makes 10
    eq(summary(queued(ob)[-2:]), [("622", "new", "status"), ("623", "new", "status")])
    eq(len(ob), 10)
    rec.record("110", "new", 1, "in1", "fire")  # full: the oldest fault gives way, then 624
    eq(ob.dropped, 2)
    evs = queued(ob)
    eq(evs[0].code, "110")
    eq(summary(evs[-1:]), [("624", "new", "status")])
    eq(evs[-1].detail, "outbox 10/10, dropped 1")
    eq(rec.health.counters.get("events_dropped"), 2)
    # Draining re-arms the levels and reports each restore once.
    while len(ob) > 3:
        ob.remove(ob.peek()[0])
    tail = [e for e in queued(ob) if e.q == "restore"]
    eq(summary(tail), [("623", "restore", "status"), ("624", "restore", "status"), ("622", "restore", "status")])


def test_all_fire_outbox_keeps_fire_and_reports_overflow_once():
    rec, ob = make(capacity=4)
    for i in range(6):
        rec.record("110", "new", i, "in%d" % i, "fire")
    eq(ob.depth_by_priority(), (6, 0, 0), "no fire dropped")
    eq(ob.in_ram(), 2)
    # 622 (at 2/4) gave its slot to 623 (at 4/4), 623 to 624, 624 to the fourth fire.
    eq(ob.dropped, 3)
    eq([e.code for e in queued(ob)], ["110"] * 4, "on flash")
    eq([e.seq for e in queued(ob)], [1, 2, 4, 7], "seq 3, 5, 6 were the level events")
    eq(rec.health.counters.get("events_dropped"), 3)


def test_storage_fault_is_reported_and_nothing_lost():
    class Broken(Outbox):
        def _open(self, path, mode):
            if mode != "rb":
                raise OSError(28)
            return open(path, mode)

    h = Health()
    rec, ob = make(outbox=Broken(capacity=16), health=h)
    eq(h.faults.get("storage"), "outbox file outbox/0 unusable: no space left (errno 28)")
    ev = rec.record("110", "new", 1, "in1", "fire")
    eq(ob.in_ram(), 1)
    eq(ob.peek()[1], ev.to_json())


async def test_sender_wakes_on_record():
    rec, ob = make()
    got = []

    async def sender():
        await asyncio.wait_for_ms(rec.queued.wait(), 1000)
        rec.queued.clear()
        got.append(ob.peek()[1])

    task = asyncio.create_task(sender())
    await asyncio.sleep_ms(10)
    eq(got, [], "waiting")
    ev = rec.record("110", "new", 1, "in1", "fire")
    await task
    eq(got, [ev.to_json()])


def test_queued_set_at_boot_when_events_wait():
    rec, ob = make()
    rec.record("110", "new", 1, "in1", "fire")
    rec2, _ = make()
    ok(rec2.queued.is_set(), "events from before the reboot wake the sender")
