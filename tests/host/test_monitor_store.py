"""The monitor's SQLite store and its device bookkeeping, without a broker."""
from __future__ import annotations

import ast
import sqlite3

import pytest

from firelink.centre import contact_id
from firelink.centre.devices import DeviceBook, SeqTracker, Supervision
from firelink.centre.payload import PayloadError, parse_event, parse_topic
from firelink.centre.store import Device, Event, MonitorStore, StoreError
from tests.tooling import FIRMWARE


def ev(device: str, seq: int, event_id: str | None = None, **kw) -> Event:
    base = dict(code="110", q="new", zone=1, input="panel_fire", cls="fire", ts=1000.0, tsync=True, detail=None,
                received_at=1001.5, latency_s=1.5)
    base.update(kw)
    return Event(device=device, id=event_id or f"id-{seq}", seq=seq, **base)


def test_schema_wal_and_reopen(tmp_path):
    db = tmp_path / "sub" / "m.db"
    with MonitorStore(db) as s:
        with s.batch():
            mid = s.add_message(1001.5, "firelink/a/event", "a", "event", b"\xffraw", dup=True)
            assert s.add_event(ev("a", 3), mid)
            assert not s.add_event(ev("a", 3), mid)  # (device, id) held once
            s.save_device(Device("a", "online", 1001.5, 200.0, last_heard=1001.5, faults={"mains": "lost"}))
        s.mark_acked("a", "id-3", 1002.0)
        s.mark_acked("a", "id-3", 1009.0)  # the first confirmation counts
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with MonitorStore(db) as s:
        (m,) = s.messages()
        assert (m.payload, m.dup, m.kind, m.device) == (b"\xffraw", True, "event", "a")
        e = s.event("a", "id-3")
        assert e is not None and (e.acked_at, e.latency_s, e.cls) == (1002.0, 1.5, "fire")
        assert s.devices()["a"].faults == {"mains": "lost"}
        assert s.unacked() == []


def test_batch_rolls_back_on_error(tmp_path):
    with MonitorStore(tmp_path / "m.db") as s:
        with pytest.raises(RuntimeError):
            with s.batch():
                s.add_message(1.0, "t", None, "unknown", b"x")
                raise RuntimeError("disk on fire")
        assert s.messages() == []


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "m.db"
    MonitorStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="schema version 99"):
        MonitorStore(db)


def test_seq_gaps_and_order(tmp_path):
    with MonitorStore(tmp_path / "m.db") as s:
        with s.batch():
            for seq in (10, 4, 5, 9, 14):
                s.add_event(ev("a", seq), 0)
            s.add_event(ev("b", 1), 0)
        assert [e.seq for e in s.events("a")] == [4, 5, 9, 10, 14]
        assert s.seq_gaps() == [("a", 6, 8), ("a", 11, 13)]
        assert s.seq_bounds() == {"a": (4, 14), "b": (1, 1)}


def test_seq_tracker_gaps_and_lateness():
    t = SeqTracker()
    assert t.add(10, now=0.0) is False
    assert t.add(13, now=1.0) is False  # 11..12 missing
    assert t.add(7, now=2.0) is True  # below the lowest: 8..9 missing too
    assert [(g.first, g.last) for g in t.gaps] == [(8, 9), (11, 12)]
    assert t.add(11, now=3.0) is True
    assert t.missing() == 3
    assert t.due(now=3.0, grace_s=2.0) == [(12, 12)]  # opened at 1.0; 8..9 at 2.0
    assert t.due(now=10.0, grace_s=2.0) == [(8, 9)]  # each reported once
    assert t.add(8, 11.0) and t.add(9, 11.0) and t.add(12, 11.0)
    assert t.missing() == 0


def test_supervision_precedence():
    sup = Supervision(fixed_s=None, per_device={"x": 5.0}, factor=3, margin_s=20, default_heartbeat_s=60)
    assert sup.time_for("x", 1.0) == 5.0
    assert sup.time_for("y", None) == 200.0
    assert sup.time_for("y", 10.0) == 50.0
    assert Supervision(fixed_s=30.0).time_for("y", 10.0) == 30.0


def test_device_book_states():
    book = DeviceBook(Supervision(fixed_s=10.0), {}, now=100.0)
    assert book.status("d", "online", 100.0, retained=True) is None  # old news: not heard
    assert book.get("d", 100.0).state == "unknown"
    assert book.status("d", "offline", 101.0, retained=True) == "offline"
    assert book.heard("d", 102.0) == "online"
    assert book.expire(111.0) == [] and book.next_deadline() == 112.0
    book.suspend()  # the monitor cannot hear: nobody is lost meanwhile
    assert book.expire(150.0) == []
    book.resume(150.0)
    assert book.expire(159.0) == []
    assert [(d.device, change) for d, change in book.expire(160.5)] == [("d", "lost")]
    assert book.status("d", "offline", 161.0, retained=False) is None  # lost stays lost
    assert book.heard("d", 162.0) == "back"


def test_parse_topic_and_event():
    assert parse_topic("firelink/fl-1/cmd/result") == ("fl-1", "cmd_result")
    assert parse_topic("firelink/fl-1/ack") is None
    assert parse_topic("firelink//event") is None
    e = parse_event("d", {"id": "a", "seq": 1, "code": "301", "q": "restore", "class": "fault", "ts": 90,
                          "tsync": True}, received_at=100.0)
    assert (e.latency_s, e.zone, e.input) == (10.0, 0, "")
    for bad in ({"id": "a", "seq": "1", "code": "301", "q": "new", "class": "fault"},
                {"id": "a", "seq": True, "code": "301", "q": "new", "class": "fault"},
                {"id": "a", "seq": 1, "code": "31", "q": "new", "class": "fault"},
                {"id": "", "seq": 1, "code": "301", "q": "new", "class": "fault"},
                {"id": "a", "seq": 1, "code": "301", "q": "new", "class": "burglary"}):
        with pytest.raises(PayloadError):
            parse_event("d", bad, 0.0)


def test_contact_id_table_covers_the_reference_codes():
    reference = ("110 111 114 115 200 373 380 137 145 383 301 302 309 311 305 306 307 350 351 352 353 354 570 571 "
                 "601 602 607 608 622 623 624 625 626 627 628").split()
    assert sorted(contact_id.CODES) == sorted(reference)
    assert contact_id.meaning("999") == "unknown code 999"
    assert contact_id.class_mismatch("110", "fire") is None
    assert contact_id.class_mismatch("114", "fault")
    assert contact_id.class_mismatch("380", "fault") is None


def test_contact_id_table_has_the_firmware_codes():
    """The device sends codes only (their meanings would cost its RAM), so the host's table must
    know every code the firmware can raise: each three-digit string in fl/ is one."""
    codes = {node.value for path in (FIRMWARE / "fl").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) == 3
             and node.value.isdigit()}
    assert {"110", "305", "602", "624"} <= codes  # the scan finds them where they are
    assert sorted(codes - set(contact_id.CODES)) == []


def test_ranges_merge_and_subtract():
    from firelink.centre.store import merged, subtract
    assert merged([(5, 9), (1, 2), (3, 3), (8, 12), (20, 20)]) == [(1, 3), (5, 12), (20, 20)]
    ranges = merged([(4, 9), (12, 12), (20, 30)])
    assert subtract((1, 40), ranges) == [(1, 3), (10, 11), (13, 19), (31, 40)]
    assert subtract((5, 8), ranges) == [] and subtract((10, 11), ranges) == [(10, 11)]
    assert subtract((9, 12), ranges) == [(10, 11)] and subtract((1, 2), []) == [(1, 2)]


def test_seq_tracker_is_bounded_against_a_hostile_device():
    from firelink.centre.devices import MAX_RANGES
    t = SeqTracker()
    for seq in range(0, 4 * MAX_RANGES, 2):  # every other seq: a gap each time
        t.add(seq, now=0.0)
    assert len(t.gaps) == MAX_RANGES and t.capped
    t = SeqTracker()
    t.add(1, 0.0)
    for i in range(2 * MAX_RANGES):
        t.declare_lost(10 + 3 * i, 10 + 3 * i)
    assert len(t.declared) == MAX_RANGES and t.capped
    assert t.declare_lost(10, 10) is False  # already declared: not news
    t.add(10 + 3 * MAX_RANGES + 1, 1.0)
    assert len(t.gaps) <= MAX_RANGES
    assert t.due(1.5, grace_s=1.0) == [] and t.due(2.0, grace_s=1.0)
