"""The centre treats devices as hostile (issue 10 §3) and tells the truth (issue 9 §1, §6):
every probe is a real MQTT message from a device account through the session's mosquitto,
unless the broker itself would stop it (then `Monitor.ingest`, the same path after the intake)."""
from __future__ import annotations

import io
import json
import time

from rich.console import Console

from firelink.centre import store as monitor_store
from firelink.centre.devices import Supervision
from firelink.centre.intake import FairQueue, Incoming
from firelink.centre.payload import MAX_PAYLOAD
from firelink.centre.store import QUARANTINE_KEEP, Event, MonitorStore
from firelink.centre.view import LineSink, LiveView, clean
from tests.host.monitor_fixtures import devices, peers, start_monitor  # noqa: F401 (fixtures)
from tests.host.mqtt_peer import event_payload, wait_until


def acks_for(peer, dev) -> list[str]:
    return [json.loads(p)["id"] for p in peer.messages(dev.topic("ack"))]


def strict(line: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(line, parse_constant=refuse)


HOSTILE = [
    ("heartbeat", b'{"link": {"signal_dbm": 18446744073709551616}}', "integer out of range"),
    ("heartbeat", b'{"outbox": {"depth": 9223372036854775808}}', "integer out of range"),
    ("heartbeat", b'{"link": {"signal_dbm": 9223372036854775807}}', "signal_dbm"),
    ("heartbeat", b'{"battery_mv": NaN}', "not strict JSON"),
    ("heartbeat", b'{"ts": Infinity}', "not strict JSON"),
    ("heartbeat", b'{"ts": 1e999}', "number out of range"),
    ("heartbeat", b'{"faults": ' + b'[' * 50 + b']' * 50 + b'}', "nested deeper"),
    ("heartbeat", b'[' * 3000, "not JSON"),  # deeper than the parser's recursion (the broker passes 4 KiB)
    ("heartbeat", b'{"a":' * 600 + b'1' + b'}' * 600, "nested deeper"),
    ("status", b'{"state": "online", "fw": "\xff\xfe"}', "not UTF-8"),
    ("status", b'{"state": "online", "fw": "\\ud800"}', "lone surrogate"),
    ("event", event_payload(1, "zone-70", zone=2**70), "integer out of range"),
    ("event", event_payload(1, "zone-1000", zone=1000), "'zone'"),
    ("event", event_payload(2**64, "seq-64"), "integer out of range"),
    ("event", event_payload(1, "ts-neg", ts=-5), "'ts'"),
    ("event", event_payload(1, "ms-1000", ms=1000), "'ms'"),
    ("event", event_payload(1, "esc\x1b[2J"), "'id'"),
    ("event", event_payload(1, "input-esc", input="\x1b]0;pwned\x07"), "control characters"),
    ("event", event_payload(1, "tsync-str", tsync="yes"), "'tsync'"),
    ("event", event_payload(1, "lost-bad", lost=[[5, 3]]), "'lost'"),
    ("event", event_payload(1, "lost-many", lost=[[i, i] for i in range(9)]), "'lost'"),
    ("cmd/result", b'{"id": 5}', "'id'"),
]


def test_no_device_message_stops_the_monitor_and_none_poisons_its_session(devices, peers, start_monitor, tmp_path):
    db = tmp_path / "centre.db"
    run = start_monitor(db=db, client_id="hostile-session")
    a, b = devices("fl-bad"), devices("fl-good")
    pa, pb = peers(a), peers(b)
    pa.subscribe(a.topic("ack"))
    for kind, body, _ in HOSTILE:
        pa.publish(a.topic(kind), body)
    pb.publish(b.topic("event"), event_payload(1, "b-fire"))

    run.sink.wait(lambda s: s.events_of(b.id))
    run.sink.wait(lambda s: len(s.warnings_of(a.id)) == len(HOSTILE), timeout_s=10)
    assert run.monitor.failure is None
    held = run.store.quarantined(device=a.id)
    assert len(held) == len(HOSTILE)
    for q in held:  # each kept raw, with a reason that says what was wrong
        kind, body, why = next(h for h in HOSTILE if a.topic(h[0]) == q.topic and h[1][:QUARANTINE_KEEP] == q.payload)
        assert why in q.reason, (q.reason, why)
        assert q.size == len(body)
    assert run.store.events(a.id) == [] and run.store.messages(device=a.id) == []
    time.sleep(0.3)  # acks would have followed their batch at once
    assert acks_for(pa, a) == []  # a rejected event is never acknowledged as held
    assert run.monitor.device(a.id).state == "online"  # it spoke: it is there

    # Every one of them was settled with the broker: a restarted monitor is not fed them again.
    run.monitor.stop()
    run.store.close()
    again = start_monitor(db=db, client_id="hostile-session")
    pb.publish(b.topic("event"), event_payload(2, "b-fire-2"))
    again.sink.wait(lambda s: s.events_of(b.id))
    assert again.monitor.wait_idle(5)
    assert again.monitor.failure is None
    assert again.sink.warnings_of(a.id) == [] and len(again.store.quarantined(device=a.id)) == len(HOSTILE)


def test_oversized_payloads_are_quarantined_in_part_and_the_quarantine_is_bounded(start_monitor, monkeypatch):
    run = start_monitor()
    big = b'{"detail": "' + b"x" * (1024 * 1024) + b'"}'
    run.monitor.ingest("firelink/fl-huge/event", big)
    run.sink.wait(lambda s: s.warnings_of("fl-huge"))
    (q,) = run.store.quarantined(device="fl-huge")
    assert q.size == len(big) and len(q.payload) == QUARANTINE_KEEP and q.payload == big[:QUARANTINE_KEEP]
    assert f"limit {MAX_PAYLOAD}" in q.reason
    assert len(run.sink.warnings_of("fl-huge")[0].reason) < 200

    monkeypatch.setattr(monitor_store, "QUARANTINE_ROWS", 5)
    for i in range(8):
        run.monitor.ingest("firelink/fl-junk/heartbeat", b"junk %d" % i)
    assert run.monitor.wait_idle(5)
    kept = run.store.quarantined()
    assert len(kept) == 5 and kept[-1].payload == b"junk 7"


def test_the_intake_queue_is_fair_and_fire_goes_first():
    q = FairQueue()
    for seq in range(1000):
        q.put(Incoming("firelink/fl-a/event", event_payload(seq, cls="fault", code="373"), 0.0))
    q.put(Incoming("firelink/fl-b/heartbeat", b"{}", 0.0))
    q.put(Incoming("firelink/fl-c/event", event_payload(1), 0.0))
    batch = q.get_batch(10, 0.1)
    assert [m.topic for m in batch[:3]] == ["firelink/fl-c/event", "firelink/fl-a/event", "firelink/fl-b/heartbeat"]
    assert len(batch) == 10 and len(q) == 992
    seqs = [json.loads(m.payload)["seq"] for m in batch if "fl-a" in m.topic]
    assert seqs == sorted(seqs)  # one device's order is kept


def test_a_flood_is_one_fault_its_events_stored_and_acked_and_another_devices_fire_still_shown(
        devices, peers, start_monitor):
    run = start_monitor(flood_events=50, flood_window_s=2.0)
    lines = io.StringIO()
    run.monitor.sinks.append(LineSink(lines))
    a, b = devices("fl-flood"), devices("fl-calm")
    pa, pb = peers(a), peers(b)
    pa.subscribe(a.topic("ack"))
    n = 2000
    infos = [pa.client.publish(a.topic("event"), event_payload(seq, f"{seq:08x}-f"), qos=1)
             for seq in range(1, n + 1)]
    pb.publish(b.topic("event"), event_payload(1, "calm-fire"))
    for info in infos:
        info.wait_for_publish(20)
    run.sink.wait(lambda s: len(s.events_of(a.id)) == n and s.events_of(b.id), timeout_s=30)
    wait_until(lambda: len(acks_for(pa, a)) == n, timeout_s=20)
    assert len(run.store.events(a.id)) == n and all(e.flood for e in run.store.events(a.id)[60:])
    assert run.monitor.flooding() == [a.id]
    run.sink.wait(lambda s: True)
    records = [strict(line) for line in lines.getvalue().splitlines()]
    mine = [r for r in records if r.get("device") == a.id]
    floods = [r for r in mine if r["type"] == "flood"]
    assert len(floods) == 1
    assert len([r for r in mine if r["type"] == "alarm"]) <= 50  # the rest are in the store, not on screen
    calm = [r for r in records if r.get("device") == b.id and r["type"] == "alarm"]
    assert [r["id"] for r in calm] == ["calm-fire"]
    # Quiet for a window: the flood ends with its count.
    wait_until(lambda: any(strict(x)["type"] == "flood_end" for x in lines.getvalue().splitlines()), timeout_s=10)
    end = [strict(x) for x in lines.getvalue().splitlines() if strict(x)["type"] == "flood_end"][0]
    assert end["device"] == a.id and end["events"] + 50 >= n and end["fire"] == end["events"]


def test_retained_junk_is_quarantined_and_reported_once_not_at_every_resubscription(start_monitor):
    run = start_monitor()
    for _ in range(3):  # as the broker replays it after each reconnect
        run.monitor.ingest("firelink/fl-old-junk/status", b"offline 1234", retained=True)
    assert run.monitor.wait_idle(5)
    assert len(run.store.quarantined(device="fl-old-junk")) == 1
    assert len(run.sink.warnings_of("fl-old-junk")) == 1


def test_a_junk_flood_is_one_fault_not_a_warning_per_message(start_monitor):
    run = start_monitor(flood_events=50, flood_window_s=2.0)
    for i in range(500):
        run.monitor.ingest("firelink/fl-junk/event", b"junk %d" % i)
    assert run.monitor.wait_idle(10)
    assert len(run.store.quarantined(device="fl-junk")) == 500
    assert len(run.sink.warnings_of("fl-junk")) == 50
    assert run.monitor.flooding() == ["fl-junk"] and run.monitor.stats.floods == 1


def test_class_and_code_checked_against_each_other(devices, peers, start_monitor):
    run = start_monitor()
    lines = io.StringIO()
    run.monitor.sinks.append(LineSink(lines))
    dev = devices()
    peer = peers(dev)
    cases = [("110", "fire", None), ("301", "fire", "non-fire code 301"), ("999", "fire", "non-fire code 999"),
             ("110", "fault", "fire code 110 sent with class 'fault'"), ("999", "fault", "code 999 is not"),
             ("117", "fire", None), ("608", "status", None)]
    for i, (code, cls, _) in enumerate(cases, 1):
        peer.publish(dev.topic("event"), event_payload(i, f"c-{i}", code=code, cls=cls))
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == len(cases))
    got = {e.id: e for e in run.store.events(dev.id)}
    for i, (code, cls, why) in enumerate(cases, 1):
        e = got[f"c-{i}"]
        assert (why is None and e.suspect is None) or (why and why in e.suspect), (code, cls, e.suspect)
    types = {r["id"]: r["type"] for r in map(strict, lines.getvalue().splitlines()) if r.get("device") == dev.id
             and "id" in r}
    assert types == {"c-1": "alarm", "c-2": "suspect", "c-3": "suspect", "c-4": "suspect", "c-5": "suspect",
                     "c-6": "alarm", "c-7": "status"}


def test_retained_event_is_flagged_not_replayed_as_a_live_alarm(devices, peers, start_monitor, tmp_path):
    dev = devices()
    peer = peers(dev)
    peer.publish(dev.topic("event"), event_payload(1, "kept-fire"), retain=True)
    try:
        run = start_monitor(db=tmp_path / "fresh.db")  # a fresh subscriber: the broker replays it
        (ev,) = run.sink.wait(lambda s: s.events_of(dev.id))
        assert ev.retained and run.store.event(dev.id, "kept-fire").retained
        from firelink.centre.view import event_type
        assert event_type(ev) == "retained"
        assert any("retained" in w.reason for w in run.sink.warnings_of(dev.id))
        assert run.monitor.device(dev.id) is None or run.monitor.device(dev.id).last_heard is None
    finally:
        peer.publish(dev.topic("event"), b"", retain=True)  # clear it for later tests


def test_a_reused_id_with_other_content_is_flagged_and_not_acked(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    fire = event_payload(1, "same-id", code="110")  # once: a resend repeats the record, its ts too
    peer.publish(dev.topic("event"), fire)
    peer.publish(dev.topic("event"), fire)  # a resend: fine
    peer.publish(dev.topic("event"), event_payload(2, "same-id", code="301", cls="fault"))
    peer.publish(dev.topic("event"), event_payload(3, "marker"))
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2)
    wait_until(lambda: len(acks_for(peer, dev)) == 3)
    assert sorted(acks_for(peer, dev)) == ["marker", "same-id", "same-id"]
    (q,) = run.store.quarantined(device=dev.id)
    assert "reused with different content" in q.reason
    assert run.store.event(dev.id, "same-id").code == "110"
    assert any("reused" in w.reason for w in run.sink.warnings_of(dev.id))


def test_lines_are_strict_json_and_the_live_view_strips_terminal_escapes(devices, peers, start_monitor):
    run = start_monitor()
    lines = io.StringIO()
    view = LiveView()
    run.monitor.sinks += [LineSink(lines), view]
    dev = devices()
    peer = peers(dev)
    peer.publish(dev.topic("event"), b'{"id": "n", "seq": 1, "code": "110", "q": "new", "class": "fire", "ts": NaN}')
    peer.publish(dev.topic("event"), event_payload(2, "d", detail="\x1b[2J\x1b]0;owned\x07 text\u202e"))
    peer.publish(dev.topic("heartbeat"), json.dumps({"fw": "1.0\u202egnp.exe", "link": {"path": "wifi"}}).encode())
    run.sink.wait(lambda s: s.events_of(dev.id) and s.warnings_of(dev.id))
    assert run.monitor.wait_idle(5)
    for line in lines.getvalue().splitlines():
        strict(line)
    # Straight from a device, as if the checks had let it through: the view still shows no escape.
    view.on_event(Event(dev.id, "x", 3, "110", "new", 1, "\x1b[31mred\x1b[0m\u202eevil", "fire", None, False,
                        None, time.time()))
    view.on_warning(type(run.sink.warnings[0])(time.time(), "bad \x1b[2J thing", None, dev.id))
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, force_terminal=False).print(view.renderable())
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "red" in text and "thing" in text
    assert clean("a\x1b[2Jb") == "a?[2Jb" and len(clean("x" * 500)) == 80


def test_revoked_device_is_shown_revoked_never_lost(devices, peers, start_monitor):
    dev = devices()
    run = start_monitor(supervision=Supervision(per_device={dev.id: 0.5}))
    peer = peers(dev)
    peer.publish(dev.topic("heartbeat"), b"{}")
    run.sink.wait(lambda s: s.changes_of(dev.id) == ["online"])
    # What the broker slice publishes on revoke (retained on the device's status topic).
    peer.publish(dev.topic("status"), b'{"state": "revoked"}', retain=True)
    run.sink.wait(lambda s: s.changes_of(dev.id) == ["online", "revoked"])
    time.sleep(1.2)  # past its supervision time
    assert run.monitor.wait_idle(5)
    assert run.sink.changes_of(dev.id) == ["online", "revoked"] and run.monitor.device(dev.id).state == "revoked"
    peer.publish(dev.topic("status"), b"", retain=True)  # cleared: noted, not malformed
    run.sink.wait(lambda s: any("cleared" in w.reason for w in s.warnings_of(dev.id)))
    assert run.store.quarantined(device=dev.id) == []


def test_declared_losses_are_losses_with_their_range_not_gaps(devices, peers, start_monitor, tmp_path):
    db = tmp_path / "loss.db"
    run = start_monitor(db=db, gap_grace_s=0.3)
    dev = devices()
    peer = peers(dev)
    for seq in (1, 2, 3):
        peer.publish(dev.topic("event"), event_payload(seq, code="373", cls="fault"))
    # The outbox dropped 4..9 and 12; 10, 11 and the 624 (13) arrive; 14 never does, 15 comes.
    peer.publish(dev.topic("event"), event_payload(10, code="373", cls="fault"))
    peer.publish(dev.topic("event"), event_payload(11, code="373", cls="fault"))
    peer.publish(dev.topic("event"), event_payload(13, code="624", cls="status", input="", zone=0,
                                                   lost=[[4, 9], [12, 12]]))
    peer.publish(dev.topic("event"), event_payload(15, code="373", cls="fault"))
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 7)
    assert run.store.losses(dev.id) == [(dev.id, 4, 9), (dev.id, 12, 12)]
    assert run.store.seq_gaps(dev.id) == [(dev.id, 14, 14)]
    assert run.sink.wait(lambda s: [g for g in s.gaps if g[0] == dev.id]) == [(dev.id, 14, 14)]
    assert run.monitor.missing_seqs(dev.id) == 1
    run.monitor.stop()
    run.store.close()
    with MonitorStore(db) as s:
        assert s.seq_gaps(dev.id) == [(dev.id, 14, 14)]


def test_lost_ranges_without_end_are_bounded(start_monitor):
    run = start_monitor(flood_events=10_000)
    seq = 0
    for n in range(200):  # 8 ranges each, far apart: 1,600 declared ranges
        ranges = [[10_000 + 100 * (8 * n + k), 10_000 + 100 * (8 * n + k)] for k in range(8)]
        seq += 1
        run.monitor.ingest("firelink/fl-liar/event", event_payload(seq, f"{seq:08x}-l", code="624", cls="status",
                                                                   lost=ranges))
    assert run.monitor.wait_idle(20)
    assert len(run.store.events("fl-liar")) == 200  # every event held
    assert len(run.store.losses("fl-liar")) == 1000
    capped = [w for w in run.sink.warnings_of("fl-liar") if "tracks no more" in w.reason]
    assert len(capped) == 1


def test_event_time_has_milliseconds_and_latency_is_real(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    now = time.time()
    peer.publish(dev.topic("event"), event_payload(1, ts=int(now) - 1, ms=250))
    (ev,) = run.sink.wait(lambda s: s.events_of(dev.id))
    assert ev.ts == int(now) - 1 + 0.25
    assert abs(ev.latency_s - (ev.received_at - ev.ts)) < 0.002


def test_heartbeat_next_s_sets_the_supervision_also_after_a_restart(devices, peers, start_monitor, tmp_path):
    dev = devices()
    first = start_monitor(db=tmp_path / "next.db")
    peers(dev).publish(dev.topic("heartbeat"), b'{"next_s": 3600}')
    first.sink.wait(lambda s: s.changes_of(dev.id) == ["online"])
    assert first.monitor.device(dev.id).supervision_s == 2 * 3600 + 60
    first.monitor.stop()
    first.store.close()
    again = start_monitor(db=tmp_path / "next.db")
    assert again.monitor.device(dev.id).supervision_s == 2 * 3600 + 60  # not the 60 s default's 200 s


def test_heartbeat_next_s_sets_the_supervision(devices, peers, start_monitor):
    dev = devices()
    run = start_monitor(supervision=Supervision(next_margin_s=0.5))
    peer = peers(dev)
    peer.publish(dev.topic("heartbeat"), b'{"next_s": 1}')
    run.sink.wait(lambda s: s.changes_of(dev.id) == ["online"])
    assert run.monitor.device(dev.id).supervision_s == 2 * 1 + 0.5
    run.sink.wait(lambda s: "lost" in s.changes_of(dev.id), timeout_s=5)
    lost = run.monitor.device(dev.id)
    assert 2.5 <= lost.state_since - lost.last_heard < 3.2
