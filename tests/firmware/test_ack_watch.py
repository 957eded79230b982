# EN 54-21: a fire event with no acknowledgement from the centre in time raises a local fault.
import asyncio

from fwtest import eq, ok

from fl.health import Health
from fl.sender import AckWatch


async def _run_for(watch, ms):
    t = asyncio.create_task(watch.run())
    await asyncio.sleep_ms(ms)
    t.cancel()


async def test_ack_in_time_raises_nothing():
    health = Health()
    w = AckWatch(0.3, health)
    w.expect("00000001-abcd")
    w.on_ack(b'{"id": "00000001-abcd"}')
    await _run_for(w, 600)
    eq(health.faults, {}, "faults")
    eq(w.pending(), 0, "pending")


async def test_missing_ack_raises_fault_once_and_late_ack_restores_it():
    health = Health()
    changes = []
    health.listen(lambda name, active, detail: changes.append((name, active)))
    w = AckWatch(0.2, health)
    w.expect("00000001-aaaa")
    w.expect("00000002-bbbb")
    await _run_for(w, 900)
    ok("centre_ack" in health.faults, "centre_ack fault raised")
    eq(changes, [("centre_ack", True)], "fault changes (one episode, not one per event)")
    w.on_ack(b'{"id": "00000001-aaaa"}')
    ok("centre_ack" in health.faults, "still faulty while one event is unacknowledged")
    w.on_ack(b'{"id": "00000002-bbbb"}')
    eq(health.faults, {}, "fault restored")
    eq(changes[-1], ("centre_ack", False), "restore reported")


def test_malformed_acks_are_ignored_and_counted():
    health = Health()
    w = AckWatch(100, health)
    w.expect("x")
    for bad in (b"", b"not json", b"[1,2]", b'{"id": 5}', b'{"nope": "x"}', b"\xff\xfe"):
        w.on_ack(bad)
    eq(w.rejected, 6, "rejected")
    eq(w.pending(), 1, "the real event still awaits its ack")


async def test_overdue_ids_are_capped_and_the_fault_holds_until_the_tracked_ones_are_acked():
    OVERDUE_MAX = 64  # fl.sender.OVERDUE_MAX
    health = Health()
    w = AckWatch(0.05, health)
    ids = ["%08d-ffff" % i for i in range(OVERDUE_MAX + 100)]
    for i in ids:
        w.expect(i)
    await _run_for(w, 700)  # the centre never acks
    eq(len(w._overdue), OVERDUE_MAX, "overdue ids kept")
    eq(w.untracked, 100, "the rest counted")
    eq(health.counters.get("centre_ack_untracked"), 100, "counted in health")
    eq(w.pending(), 0, "none still pending")
    ok("centre_ack" in health.faults, "fault raised")
    tracked = sorted(w._overdue)
    for i in tracked[:-1]:
        w.on_ack(('{"id": "%s"}' % i).encode())
    ok("centre_ack" in health.faults, "still faulty while a tracked one is overdue")
    w.on_ack(('{"id": "%s"}' % tracked[-1]).encode())
    eq(health.faults, {}, "restored once every tracked one is acked")


async def test_awaited_fire_survives_a_reboot_by_snapshot_and_restore():
    health = Health()
    w = AckWatch(0.3, health)
    w.expect("00000001-aaaa")
    saved = w.snapshot(1760000000, True)
    ok(0 < saved["00000001-aaaa"][1] <= 300, saved)
    eq(saved["00000001-aaaa"][0], 1760000001, "due by the RTC, rounded up")
    w2 = AckWatch(0.3, Health())  # after the reboot
    w2.restore(saved, 1760000000, True)
    eq(w2.pending(), 1)
    await _run_for(w2, 1500)
    ok("centre_ack" in w2._health.faults, "354 after the reboot: %r" % w2._health.faults)
    w3 = AckWatch(0.3, Health())  # the RTC was lost: the time left then is used
    w3.restore({"00000002-bbbb": [1760000001, 200]}, 12345, False)
    eq(w3.pending(), 1)
    await _run_for(w3, 800)
    ok("centre_ack" in w3._health.faults, "354 with the time left")
