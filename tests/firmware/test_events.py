# Event record, Contact ID check digit and sequence numbers (fl/events.py).
import os

from fwtest import eq, ok, raises, read, write

from fl import events
from fl.contact_id import contact_id_message
from fl.events import Event, Sequencer

FIRE_JSON = (b'{"id":"00000005-abcd","seq":5,"ts":1760000000,"tsync":true,"code":"110","q":"new",'
             b'"zone":1,"input":"in1","class":"fire"}')


def _fire():
    return Event(5, 1760000000, True, "110", "new", 1, "in1", "fire", id="00000005-abcd")


def test_to_json_exact_bytes():
    eq(_fire().to_json(), FIRE_JSON, "fire json")
    ev = Event(7, 0, False, "380", "restore", 12, "in2", "fault", "line open", "00000007-0001")
    eq(ev.to_json(), b'{"id":"00000007-0001","seq":7,"ts":0,"tsync":false,"code":"380","q":"restore",'
                     b'"zone":12,"input":"in2","class":"fault","detail":"line open"}', "fault json")


def test_round_trip_keeps_every_field():
    for ev in (_fire(),
               Event(9, 1, False, "307", "new", 0, "", "fault",
                     'config: inputs[1].debounce_ms must be "20..5000" \\ \u00e9', "00000009-ffff"),
               Event(4294967295, 2000000000, True, "602", "restore", 999, "x" * 40, "status"),
               Event(10, 1760000000, True, "110", "new", 1, "in1", "fire", ms=999),
               Event(11, 1760000000, True, "110", "new", 1, "in1", "fire", ms=0)):
        back = Event.from_json(ev.to_json())
        for k in Event.__slots__:
            eq(getattr(back, k), getattr(ev, k), k)
        eq(back.to_json(), ev.to_json(), "re-encoded")


def test_from_json_ignores_unknown_keys():
    ev = Event.from_json(FIRE_JSON[:-1] + b',"future":1}')
    eq(ev.code, "110")


def _replace(key, value_json):
    """FIRE_JSON with one key's value replaced (value_json None: key removed)."""
    import json
    d = json.loads(FIRE_JSON)
    parts = []
    for k in ("id", "seq", "ts", "tsync", "code", "q", "zone", "input", "class", "detail"):
        if k == key:
            if value_json is not None:
                parts.append('"%s":%s' % (k, value_json))
        elif k in d:
            parts.append('"%s":%s' % (k, json.dumps(d[k])))
    return ("{" + ",".join(parts) + "}").encode()


def _err(b):
    return str(raises(ValueError, Event.from_json, b))


def test_from_json_rejects_missing_keys():
    for k in ("id", "seq", "ts", "tsync", "code", "q", "zone", "input", "class"):
        eq(_err(_replace(k, None)), "event lacks key '%s'" % k, k)


def test_ms_follows_ts_and_is_left_out_for_records_without_it():
    ev = Event(5, 1760000000, True, "110", "new", 1, "in1", "fire", id="00000005-abcd", ms=37)
    eq(ev.to_json(), FIRE_JSON.replace(b'"ts":1760000000,', b'"ts":1760000000,"ms":37,'), "with ms")
    eq(Event.from_json(FIRE_JSON).ms, None, "a record written before ms existed")
    for bad in ("1000", "-1", "1.5", '"5"'):
        body = FIRE_JSON.replace(b'"ts":1760000000,', b'"ts":1760000000,"ms":' + bad.encode() + b',')
        eq(_err(body), "bad ms %r: want an int 0..999 (milliseconds within ts)" % (eval(bad),), bad)


def test_clock_stamp_is_one_reading_in_utc_with_milliseconds():
    import time
    from fl.clock import Clock, utc_now_ms
    from fl.hal.sim import Board

    for _ in range(200):
        before = time.time()
        t, ms = utc_now_ms()
        after = time.time()
        ok(0 <= ms <= 999, "ms %d" % ms)
        ok(before - 0.002 <= t + ms / 1000 <= after + 0.002, "%r <= %d.%03d <= %r" % (before, t, ms, after))
    t, ms, synced = Clock(Board()).stamp()
    ok(type(t) is int and type(ms) is int and synced is True, repr((t, ms, synced)))


def test_from_json_rejects_bad_values():
    cases = (
        ("id", "5", "bad id 5: want a str of 1..32 chars"),
        ("id", '""', "bad id '': want a str of 1..32 chars"),
        ("seq", '"5"', "bad seq '5': want an int >= 0"),
        ("seq", "true", "bad seq True: want an int >= 0"),
        ("seq", "-1", "bad seq -1: want an int >= 0"),
        ("ts", "1.5", "bad ts 1.5: want an int >= 0 (UTC seconds)"),
        ("tsync", "1", "bad tsync 1: want true or false"),
        ("code", "110", "bad code 110: want 3 digits, e.g. \"110\""),
        ("code", '"11"', "bad code '11': want 3 digits, e.g. \"110\""),
        ("code", '"11a"', "bad code '11a': want 3 digits, e.g. \"110\""),
        ("code", '"1100"', "bad code '1100': want 3 digits, e.g. \"110\""),
        ("q", '"old"', "bad q 'old': want \"new\" or \"restore\""),
        ("q", "1", "bad q 1: want \"new\" or \"restore\""),
        ("zone", '"1"', "bad zone '1': want an int 0..999"),
        ("zone", "1000", "bad zone 1000: want an int 0..999"),
        ("input", "null", "bad input None: want a str"),
        ("class", '"alarm"', "bad class 'alarm': want one of fire, fault, status"),
        ("class", '"FIRE"', "bad class 'FIRE': want one of fire, fault, status"),
        ("detail", "5", "bad detail 5: want a str"),
        ("detail", "null", "bad detail None: omit the key instead"),
    )
    for key, value, msg in cases:
        eq(_err(_replace(key, value)), msg, "%s=%s" % (key, value))


def test_from_json_rejects_non_objects():
    eq(_err(b"[1,2]"), "event is not a JSON object")
    eq(_err(b"42"), "event is not a JSON object")
    ok(_err(b'{"id":').startswith("event is not JSON: "), "truncated")
    ok(_err(b"").startswith("event is not JSON: "), "empty")
    ok(_err(b"\xff\xfe").startswith("event is not JSON: "), "binary")


def test_id_keeps_seq_and_random_half():
    ids = [events.make_id(5) for _ in range(8)]
    for i in ids:
        eq(len(i), 13, "id length")
        ok(i.startswith("00000005-"), i)
        int(i[9:], 16)
    ok(len(set(ids)) > 1, "random half varies: %r" % ids)
    ev = Event(0x1234abcd, 0, False, "110", "new", 1, "in1", "fire")
    ok(ev.id.startswith("1234abcd-"), ev.id)
    eq(Event.from_json(ev.to_json()).id, ev.id, "id survives encoding")


def test_priority_by_class():
    eq(events.priority("fire"), 0)
    eq(events.priority("fault"), 1)
    eq(events.priority("status"), 2)
    eq(str(raises(ValueError, events.priority, "alarm")), "bad class 'alarm': want one of fire, fault, status")
    eq(_fire().priority, 0)


def test_contact_id_check_digit_hand_computed():
    # 1+2+3+4 + 1+8 + 1+1+1+10 + 10+10 + 10+10+1 = 73; 73 + 2 = 75 = 5 * 15
    eq(contact_id_message("1234", "new", "110", 0, 1), "1234 18 1110 00 001 2")
    # Q 3 instead of 1: 75 already a multiple of 15, so S is 15, sent as F
    eq(contact_id_message("1234", "restore", "110", 0, 1), "1234 18 3110 00 001 F")
    # 10 + 9 + (1+6+10+2) + 20 + (10+10+2) = 80; S = 10, sent as digit 0
    eq(contact_id_message("1234", "new", "602", 0, 2), "1234 18 1602 00 002 0")
    # B+E+E+F = 54; + 9 + (1+3+7+3) + (10+1) + (10+1+5) = 104; S = 1
    eq(contact_id_message("beef", "1", "373", 1, 15), "BEEF 18 1373 01 015 1")
    # 10 + 9 + (1+1+3+1) + (10+1) + (10+1+5) = 52; S = 8
    eq(contact_id_message("1234", "new", "131", 1, 15), "1234 18 1131 01 015 8")
    # 10 + 9 + (6+6+2+4) + (10+10) + (10+10+10) = 87; S = 3
    eq(contact_id_message("1234", "6", "624", 0, 0), "1234 18 6624 00 000 3")


def test_contact_id_digit_sum_is_multiple_of_15():
    for acct in ("0000", "1234", "FFFF", "0A0B"):
        for code in ("110", "373", "602"):
            for zone in (0, 1, 10, 999):
                msg = contact_id_message(acct, "new", code, 0, zone)
                total = 0
                for c in msg.replace(" ", ""):
                    v = int(c, 16)
                    total += 10 if v == 0 else v
                eq(total % 15, 0, msg)


def test_contact_id_rejects_bad_fields():
    eq(str(raises(ValueError, contact_id_message, "123", "new", "110", 0, 1)), "bad account '123': want 4 hex digits")
    eq(str(raises(ValueError, contact_id_message, "12G4", "new", "110", 0, 1)), "bad account '12G4': want 4 hex digits")
    eq(str(raises(ValueError, contact_id_message, "1234", "old", "110", 0, 1)), "bad q 'old': want new, restore, 1, 3 or 6")
    eq(str(raises(ValueError, contact_id_message, "1234", "new", "11", 0, 1)), "bad code '11': want 3 digits")
    eq(str(raises(ValueError, contact_id_message, "1234", "new", "110", 100, 1)), "bad partition 100: want 0..99")
    eq(str(raises(ValueError, contact_id_message, "1234", "new", "110", 0, 1000)), "bad zone 1000: want 0..999")


# --- Sequencer ---------------------------------------------------------------------

def test_sequencer_fresh_device_counts_from_one():
    s = Sequencer()
    eq(s.recovery, "fresh")
    eq([s.take() for _ in range(5)], [1, 2, 3, 4, 5])
    eq(events._seq_parse(read("seq.dat")), 33, "reserved mark")
    eq(read("seq.dat.bak"), read("seq.dat"), "backup copy")


def test_sequencer_writes_once_per_block():
    s = Sequencer(block=8)
    s.take()
    first = read("seq.dat")
    os.remove("seq.dat")
    for _ in range(7):
        s.take()  # 2..8 are inside the reserved block: no write
    ok(not events.store.exists("seq.dat"), "no write inside the block")
    eq(s.take(), 9)
    eq(events._seq_parse(read("seq.dat")), 17, "next block reserved")
    eq(events._seq_parse(first), 9)


def test_sequencer_never_repeats_across_restarts():
    issued = []
    for run in range(6):
        s = Sequencer(block=4)
        eq(s.recovery, "fresh" if run == 0 else "primary", "run %d" % run)
        for _ in range(run * 3 + 1):  # 1, 4, 7, ... numbers, crossing blocks at varying points
            issued.append(s.take())
    for a, b in zip(issued, issued[1:]):
        ok(b > a, "increasing: %r" % issued)
    # Each restart skips at most one block.
    eq(issued[:4], [1, 5, 6, 7], "restart jumps past the reserved block")


def test_sequencer_corrupt_primary_uses_backup():
    s = Sequencer(block=16)
    for _ in range(20):
        s.take()  # marks: 17 at seq 1, then 33 at seq 17
    eq(events._seq_parse(read("seq.dat")), 33)
    for bad in (b"", read("seq.dat")[:6], b"garbage!garbage!", b"FLSQ" + b"\x40\x00\x00\x00" + b"\x00" * 4):
        write("seq.dat", bad)
        s2 = Sequencer(block=16)
        eq(s2.recovery, "backup", "primary %r" % bad)
        eq(s2.take(), 33, "continues at the backup mark")
        eq(events._seq_parse(read("seq.dat")), 49, "primary rewritten")
        write("seq.dat.bak", events._seq_image(33))  # same starting point for the next case


def test_sequencer_torn_temp_file_is_ignored_and_whole_one_used():
    s = Sequencer(block=10)
    s.take()  # mark 11
    write("seq.dat.tmp", events._seq_image(21)[:7])
    eq(Sequencer(block=10).take(), 11, "torn tmp ignored")
    # A cut between writing the temporary file and renaming it: its mark is the newest.
    write("seq.dat.tmp", events._seq_image(21))
    s3 = Sequencer(block=10)
    eq(s3.recovery, "primary")
    eq(s3.take(), 21)


def test_sequencer_all_copies_lost_resumes_past_hint():
    s = Sequencer()
    for _ in range(3):
        s.take()
    write("seq.dat", b"\x00" * 12)
    write("seq.dat.bak", b"FLSQ")
    s2 = Sequencer()
    eq(s2.recovery, "lost")
    eq(s2.peek(), 1)
    s2.at_least(3)  # the recorder passes the newest seq the outbox still holds
    eq(s2.take(), 4)
    s2.at_least(2)  # never moves backwards
    eq(s2.take(), 5)
    eq(events._seq_parse(read("seq.dat")), 36, "new mark persisted")


def test_sequencer_storage_failure_keeps_counting():
    write("nodir", b"a file, so nodir/seq.dat cannot be created")
    s = Sequencer("nodir/seq.dat", block=2)
    eq([s.take() for _ in range(5)], [1, 2, 3, 4, 5])
    ok(s.storage_fault is not None and s.storage_fault.startswith("seq store write failed: "), s.storage_fault)
