# Persisted, prioritised outbox (fl/outbox.py): ordering, capacity, levels, power-loss recovery,
# storage faults. Everything runs on real files in the test's own directory.
import os

from fwtest import eq, ok, raises, read

from fl.outbox import Outbox
from fl.slotfile import MAGIC, SlotFile

TIMEOUT_S = 120
FIRE, FAULT, STATUS = 0, 1, 2


def drain(ob):
    """Every payload in send order, removing as a sender would after PUBACK."""
    out = []
    while True:
        head = ob.peek()
        if head is None:
            ob.flush_removals()  # as the sender does once it has nothing to send
            return out
        out.append(head[1])
        ok(ob.remove(head[0]), "remove %r" % (head,))


def payloads(ob):
    """Every payload in send order, read from a fresh Outbox on the same files (not modified)."""
    out = []
    seen = []
    fresh = Outbox(ob.path, ob.capacity, ob.slot_size)
    while True:
        head = fresh.peek()
        if head is None:
            return out
        out.append(head[1])
        seen.append(head[0])
        # Drop from the fresh index only: flash stays as it was.
        i = fresh._slot_of(head[0])
        fresh._unindex(i)


def test_fire_before_fault_before_status_oldest_first():
    ob = Outbox(capacity=16)
    for prio, p in ((STATUS, b"s1"), (FAULT, b"f1"), (FIRE, b"F1"), (STATUS, b"s2"), (FIRE, b"F2"),
                    (FAULT, b"f2"), (STATUS, b"s3")):
        eq(ob.put(prio, p), (), "no level codes at low fill")
    eq(len(ob), 7)
    eq(ob.depth_by_priority(), (2, 2, 3))
    want = [b"F1", b"F2", b"f1", b"f2", b"s1", b"s2", b"s3"]
    eq(payloads(ob), want, "order after reopen")
    eq(drain(ob), want, "send order")
    eq(len(ob), 0)
    eq(ob.peek(), None)
    eq(payloads(ob), [], "removals are persisted")


def test_fire_jumps_queue_while_a_fault_is_in_flight():
    ob = Outbox(capacity=8)
    ob.put(FAULT, b"fault")
    h, p, _ = ob.peek()
    eq(p, b"fault")
    ob.mark_sent(h)
    ob.put(FIRE, b"fire")
    eq(ob.peek()[1], b"fire", "fire goes next")
    ok(ob.remove(h), "the in-flight fault's handle still works after the fire arrived")
    eq(drain(ob), [b"fire"])


def test_mark_sent_sets_dup_in_ram_only():
    ob = Outbox(capacity=8)
    ob.put(FAULT, b"a")
    ob.put(FAULT, b"b")
    h, p, sent = ob.peek()
    eq((p, sent), (b"a", False))
    ok(ob.mark_sent(h), "mark_sent")
    eq(ob.peek(), (h, b"a", True), "resend carries DUP")
    eq(Outbox(capacity=8).peek()[2], False, "DUP flag is not persisted")
    ok(not ob.mark_sent(12345), "unknown handle")
    ok(not ob.remove(12345), "unknown handle")
    ok(ob.remove(h), "remove")
    ok(not ob.remove(h), "second remove of the same handle")
    eq(ob.peek()[1:], (b"b", False))


def test_priority_of_a_handle_on_flash_in_ram_or_gone():
    ob = FlakyOutbox(capacity=8)
    ob.put(STATUS, b"s")
    h_s = ob.peek()[0]
    eq(ob.priority(h_s), STATUS, "the head")
    ob.put(FAULT, b"f")
    h_f = ob.peek()[0]
    eq((ob.priority(h_f), ob.priority(h_s)), (FAULT, STATUS), "head and a record behind it")
    FlakyOutbox.fail = True
    ob.put(FIRE, b"F")
    h_F = ob.peek()[0]
    eq(ob.in_ram(), 1)
    eq((ob.priority(h_F), ob.priority(h_f)), (FIRE, FAULT), "RAM-held fire at the head")
    FlakyOutbox.fail = False
    ok(ob.remove(h_F), "remove")
    eq((ob.priority(h_F), ob.priority(12345)), (None, None), "gone or never there")


def test_holds_1024_events_across_reopen():
    ob = Outbox()
    eq(ob.capacity, 1024)
    eq(ob.max_payload, 240)
    codes = []
    for i in range(1024):
        codes.extend(ob.put(i % 3, b"event %04d " % i + b"x" * 200))
    eq(codes, ["622", "623"], "levels on the way up")
    eq(len(ob), 1024)
    eq(ob.dropped, 0)
    eq(ob.fill_percent(), 100)
    eq(ob.depth_by_priority(), (342, 341, 341))
    eq(sorted(os.listdir("outbox")), sorted(str(i) for i in range(64)), "64 files of 16 slots")
    eq(os.stat("outbox/0")[6], 4096)
    ob2 = Outbox()
    eq(len(ob2), 1024)
    n = 0
    for p in (0, 1, 2):
        for i in range(p, 1024, 3):
            h, got, _ = ob2.peek()
            eq(got, b"event %04d " % i + b"x" * 200, "record %d" % n)
            ob2.remove(h)
            n += 1
    eq((n, len(ob2), ob2.peek()), (1024, 0, None), "all 1024 payloads intact, in order")


def test_payload_limit_and_bad_priority():
    ob = Outbox(capacity=4)
    ob.put(FAULT, b"x" * 240)
    e = raises(ValueError, ob.put, FAULT, b"x" * 241)
    eq(str(e), "payload of 241 bytes exceeds the 240 a 256-byte slot holds")
    eq(str(raises(ValueError, ob.put, 3, b"x")), "bad priority 3: want 0 fire, 1 fault or 2 status")
    eq(str(raises(ValueError, ob.put, -1, b"x")), "bad priority -1: want 0 fire, 1 fault or 2 status")
    eq(len(ob), 1)


def test_level_codes_with_hysteresis():
    ob = Outbox(capacity=20)
    restored = []
    ob.on_restore = restored.append
    got = {}
    for i in range(1, 21):
        c = ob.put(FAULT, b"e%d" % i)
        if c:
            got[i] = c
    eq(got, {10: ("622",), 18: ("623",)}, "622 at 10/20, 623 at 18/20")
    eq(ob.put(STATUS, b"e21"), ("624",), "first overflow")
    eq(ob.put(FAULT, b"e22"), (), "same overflow episode")
    eq(ob.dropped, 2)
    eq(len(ob), 20)
    # Drain down, watching the restores.
    at = {}
    while len(ob) > 5:
        ob.remove(ob.peek()[0])
        if restored and len(restored) not in at:
            at[len(restored)] = (len(ob), restored[-1])
    eq(restored, ["623", "624", "622"], "restores")
    eq(at, {1: (15, "623"), 2: (9, "624"), 3: (7, "622")}, "restore points: <80 %, <50 %, <40 %")
    # No repeat of 622 while fill moves between 40 % and 50 %... (here 5 -> 9 -> 8 -> 9)
    for i in range(4):
        ob.put(FAULT, b"r%d" % i)
    ob.remove(ob.peek()[0])
    eq(ob.put(FAULT, b"r9"), (), "below 50 %")
    eq(ob.put(FAULT, b"r10"), ("622",), "re-armed below 40 %, fires again at 50 %")


def test_level_600_no_repeat_between_40_and_50():
    ob = Outbox(capacity=10)
    for i in range(5):
        c = ob.put(STATUS, b"%d" % i)
    eq(c, ("622",))
    ob.remove(ob.peek()[0])  # 4/10: 40 %, not below
    eq(ob.put(STATUS, b"x"), (), "hysteresis: no second 622")


def test_full_drops_oldest_non_fire():
    ob = Outbox(capacity=6)
    for prio, p in ((FIRE, b"F1"), (STATUS, b"s1"), (FAULT, b"f1"), (FIRE, b"F2"), (FAULT, b"f2"),
                    (STATUS, b"s2")):
        ob.put(prio, p)
    eq(ob.put(FAULT, b"f3"), ("624",))
    eq(ob.dropped, 1)
    eq(payloads(ob), [b"F1", b"F2", b"f1", b"f2", b"f3", b"s2"], "s1 (oldest non-fire) gave way")
    eq(ob.put(STATUS, b"s3"), ())
    eq(ob.put(FIRE, b"F3"), ())
    eq(ob.dropped, 3)
    eq(payloads(ob), [b"F1", b"F2", b"F3", b"f3", b"s2", b"s3"], "then f1, then f2")
    eq(ob.depth_by_priority(), (3, 1, 2))


def test_fire_never_dropped_when_all_slots_hold_fire():
    ob = Outbox(capacity=4)
    for i in range(4):
        ob.put(FIRE, b"F%d" % i)
    eq(ob.put(FAULT, b"fault"), ("624",), "a new fault is dropped")
    eq(ob.put(STATUS, b"status"), ())
    eq(ob.dropped, 2)
    eq(len(ob), 4)
    eq(ob.put(FIRE, b"F4"), (), "a new fire is kept")
    eq(ob.put(FIRE, b"F5"), ())
    eq(len(ob), 6)
    eq(ob.in_ram(), 2)
    eq(ob.depth_by_priority(), (6, 0, 0))
    eq(ob.peek()[1], b"F0")
    ob.remove(ob.peek()[0])
    eq(ob.in_ram(), 1, "a freed slot takes the oldest RAM-held fire")
    eq(payloads(ob), [b"F1", b"F2", b"F3", b"F4"], "on flash")
    eq(drain(ob), [b"F1", b"F2", b"F3", b"F4", b"F5"])
    eq(ob.dropped, 2)


def _setup_for_tearing():
    """Six records in slots 0..5, the one in slot 2 removed: a dead slot between live ones."""
    ob = Outbox(capacity=16)
    for i in range(6):
        ob.put(i % 3, b"rec-%d" % i + b"." * (20 * i))
    h = ob._order[2]
    ok(ob.remove(h), "remove slot 2")
    ob.flush_removals()
    return ob


def _tear(slot, nbytes_of, image, pristine):
    path, off = SlotFile("outbox", 16).location(slot)  # no I/O; same layout for any capacity
    with open(path, "wb") as f:
        f.write(pristine)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(image[:nbytes_of])


def _check_torn(slot):
    ob = _setup_for_tearing()
    before = payloads(ob)
    eq(len(before), 5)
    path, off = ob.location(slot)
    pristine = read(path)
    new = b"torn-record-" + b"#" * 150
    image = ob.image(ob._next_order, STATUS, new)
    eq(len(image), 256)
    for k in range(len(image) + 1):
        _tear(slot, k, image, pristine)
        ob2 = Outbox(capacity=16)
        got = drain(ob2)
        if k == len(image):
            eq(got, before + [new], "complete record at k=%d" % k)
        else:
            eq(got, before, "torn at k=%d: absent, others intact" % k)


def test_record_torn_at_every_offset_into_a_never_used_slot():
    _check_torn(9)


def test_record_torn_at_every_offset_into_a_removed_slot_between_live_ones():
    # Slot 2 held a removed record; slots 3..5 after it must still read back.
    _check_torn(2)


def test_overwrite_of_dropped_record_torn_at_every_offset():
    # When full, the new record overwrites the oldest non-fire one in place. Cut short, that
    # slot holds the dropped record, the new one (if all its header and payload made it) or
    # nothing; every other record stays intact.
    ob = Outbox(capacity=4)
    for prio, p in ((FAULT, b"victim"), (FIRE, b"F1"), (FAULT, b"f2"), (STATUS, b"s3")):
        ob.put(prio, p)
    path, off = ob.location(0)
    pristine = read(path)
    new = b"newer-" + b"n" * 60
    image = ob.image(ob._next_order, FAULT, new)
    whole = 12 + len(new)
    for k in range(len(image) + 1):
        _tear(0, k, image, pristine)
        got = drain(Outbox(capacity=4))
        if k == 0:
            eq(got, [b"F1", b"victim", b"f2", b"s3"], "untouched at k=0")
        elif k >= whole:
            eq(got, [b"F1", b"f2", new, b"s3"], "header and payload whole at k=%d" % k)
        else:
            eq(got, [b"F1", b"f2", b"s3"], "torn at k=%d: both gone, others intact" % k)


def test_removal_torn_half_cleared_magic():
    ob = Outbox(capacity=8)
    for i in range(3):
        ob.put(FAULT, b"r%d" % i)
    path, off = ob.location(1)
    pristine = read(path)
    for start, n in ((0, 1), (0, 2), (0, 3), (1, 2), (2, 2), (3, 1)):
        with open(path, "wb") as f:
            f.write(pristine)
        with open(path, "r+b") as f:
            f.seek(off + 256 - 4 + start)
            f.write(b"\x00" * n)
        eq(payloads(Outbox(capacity=8)), [b"r0", b"r2"], "magic cleared at %d+%d" % (start, n))


def test_corrupt_payload_is_not_read_and_later_records_are():
    ob = Outbox(capacity=8)
    for i in range(4):
        ob.put(STATUS, b"record-%d" % i)
    path, off = ob.location(1)
    data = bytearray(read(path))
    data[off + 12 + 3] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    ob2 = Outbox(capacity=8)
    eq(len(ob2), 3)
    eq(drain(ob2), [b"record-0", b"record-2", b"record-3"])


def test_corruption_after_boot_is_detected_at_peek():
    ob = Outbox(capacity=8)
    ob.put(FAULT, b"good-0")
    ob.put(FAULT, b"bad")
    ob.put(FAULT, b"good-2")
    ob.remove(ob.peek()[0])
    path, off = ob.location(1)
    with open(path, "r+b") as f:
        f.seek(off + 12)
        f.write(b"BAD")
    eq(ob.peek()[1], b"good-2", "corrupt record skipped")
    eq(ob.dropped, 1)
    ok(ob.storage_fault == "outbox slot 1 corrupt", ob.storage_fault)
    eq(len(ob), 1)


def test_reused_slots_keep_insertion_order():
    ob = Outbox(capacity=4)
    h = []
    for i, p in enumerate((b"A", b"B", b"C", b"D")):
        ob.put(STATUS, p)
        h.append(ob._order[i])  # the handle is the insertion number; slots fill 0, 1, 2, 3
    ob.remove(h[1])
    ob.remove(h[3])
    ob.put(STATUS, b"E")
    ob.put(STATUS, b"F")
    eq((ob._order[1], ob._order[3]), (h[3] + 1, h[3] + 2), "E and F took the freed slots 1 and 3")
    eq(payloads(ob), [b"A", b"C", b"E", b"F"])
    ob.remove(h[0])
    ob.put(STATUS, b"G")  # into slot 0, ahead of the others on flash
    eq(payloads(ob), [b"C", b"E", b"F", b"G"], "order by insertion, not by slot")


def test_newest_payload_survives_removal():
    ob = Outbox(capacity=8)
    eq(ob.newest_payload(), None)
    for i in range(3):
        ob.put(FAULT, b"n%d" % i)
    drain(ob)
    eq(Outbox(capacity=8).newest_payload(), b"n2")
    ob.put(STATUS, b"n3")
    eq(ob.newest_payload(), b"n3")


class FlakyOutbox(Outbox):
    """Real files, except that writes fail with ENOSPC while `fail` is set."""
    fail = False

    def _open(self, path, mode):
        if FlakyOutbox.fail and mode != "rb":
            raise OSError(28)
        return open(path, mode)


def test_enospc_at_creation_holds_events_in_ram():
    FlakyOutbox.fail = True
    ob = FlakyOutbox(capacity=16)
    eq(ob.storage_fault, "outbox file outbox/0 unusable: no space left (errno 28)")
    for prio, p in ((STATUS, b"s"), (FAULT, b"f"), (FIRE, b"F1"), (FIRE, b"F2")):
        eq(ob.put(prio, p), ())
    eq((len(ob), ob.in_ram()), (4, 4))
    eq(ob.peek()[1], b"F1")
    FlakyOutbox.fail = False
    ok(ob.retry_storage(), "storage back")
    eq(ob.storage_fault, None)
    eq(ob.in_ram(), 0)
    eq(payloads(ob), [b"F1", b"F2", b"f", b"s"], "moved to flash")
    eq(drain(ob), [b"F1", b"F2", b"f", b"s"])


def test_write_failure_later_holds_in_ram_then_recovers():
    ob = FlakyOutbox(capacity=8)
    ob.put(FAULT, b"on-flash")
    FlakyOutbox.fail = True
    ob.put(STATUS, b"ram-1")
    ob.put(FIRE, b"ram-fire")
    eq(ob.storage_fault, "outbox write failed: no space left (errno 28); events held in RAM")
    eq(ob.in_ram(), 2)
    eq(ob.peek()[1], b"ram-fire", "RAM-held fire still first")
    h = ob.peek()[0]
    ob.mark_sent(h)
    FlakyOutbox.fail = False
    ob.put(STATUS, b"after")
    eq(ob.storage_fault, None)
    eq(ob.in_ram(), 0, "RAM-held records moved to flash")
    eq(ob.peek(), (h, b"ram-fire", True), "same handle and DUP flag after the move")
    eq(payloads(ob), [b"ram-fire", b"on-flash", b"ram-1", b"after"])
    ok(ob.remove(h), "remove by the old handle")
    eq(drain(ob), [b"on-flash", b"ram-1", b"after"])


def test_ram_hold_is_bounded_but_never_drops_fire():
    FlakyOutbox.fail = True
    ob = FlakyOutbox(capacity=16, ram_capacity=3)
    codes = []
    for i in range(5):
        codes.extend(ob.put(STATUS, b"s%d" % i))
    for i in range(3):
        codes.extend(ob.put(FIRE, b"F%d" % i))
    codes.extend(ob.put(FAULT, b"f"))
    eq(codes, ["624"], "overflow once")
    eq(ob.dropped, 3)
    eq(drain(ob), [b"F0", b"F1", b"F2", b"f", b"s3", b"s4"])
    FlakyOutbox.fail = False


def test_unwritable_path_without_injection():
    with open("blocked", "wb") as f:
        f.write(b"a file where the outbox directory should be")
    ob = Outbox("blocked", capacity=8)
    ok(ob.storage_fault is not None and ob.storage_fault.startswith("outbox file blocked/0 unusable: "),
       ob.storage_fault)
    for i in range(3):
        ob.put(FAULT, b"k%d" % i)
    eq(drain(ob), [b"k0", b"k1", b"k2"], "nothing lost while powered")


def test_segments_resume_after_partial_preallocation():
    ob = Outbox(capacity=40, slot_size=256)  # 3 files: 16 + 16 + 8 slots
    ob.put(FAULT, b"first")
    eq(os.stat("outbox/2")[6], 8 * 256)
    os.remove("outbox/2")
    data = read("outbox/1")[:1000]  # cut short mid-slot, as a power cut during creation would
    with open("outbox/1", "wb") as f:
        f.write(data)
    ob2 = Outbox(capacity=40, slot_size=256)
    eq(ob2.storage_fault, None)
    eq(os.stat("outbox/1")[6], 16 * 256)
    eq(os.stat("outbox/2")[6], 8 * 256)
    eq(payloads(ob2), [b"first"])


def test_magic_is_last_bytes_of_slot():
    ob = Outbox(capacity=4, slot_size=64)
    img = ob.image(7, FAULT, b"abc")
    eq(len(img), 64)
    eq(img[-4:], MAGIC)
    eq(img[:8], b"\x07\x00\x00\x00\x01\x00\x03\x00", "order, priority, 0, length")
    eq(img[12:15], b"abc")
    eq(img[15:60], bytes(45), "zero padding")
