"""The monitor against the real mosquitto of the `broker` fixture, with devices as real MQTT peers."""
from __future__ import annotations

import json
import time

import pytest

from firelink.centre.devices import Supervision
from firelink.centre.monitor import Sink
from firelink.centre.store import MonitorStore
from tests.host.monitor_fixtures import devices, peers, start_monitor  # noqa: F401 (fixtures)
from tests.host.mqtt_peer import event_payload, wait_until


def acks_for(peer, dev) -> list[str]:
    return [json.loads(p)["id"] for p in peer.messages(dev.topic("ack"))]


def test_event_is_stored_acked_and_shown(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    peer.publish(dev.topic("event"), event_payload(7, "00000007-aa01", code="111", zone=3, input="smoke_1"))

    ev = run.sink.wait(lambda s: s.events_of(dev.id))[0]
    assert (ev.id, ev.seq, ev.code, ev.q, ev.zone, ev.input, ev.cls) == ("00000007-aa01", 7, "111", "new", 3,
                                                                          "smoke_1", "fire")
    wait_until(lambda: acks_for(peer, dev) == ["00000007-aa01"])
    stored = run.store.event(dev.id, "00000007-aa01")
    assert stored is not None and stored.acks == 1
    # acked_at is when the broker confirmed our ack
    wait_until(lambda: run.store.event(dev.id, "00000007-aa01").acked_at is not None)
    kinds = [m.kind for m in run.store.messages(device=dev.id)]
    assert kinds == ["event"]
    assert run.monitor.device(dev.id).state == "online"


def test_duplicate_is_shown_once_and_acked_again(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    body = event_payload(1, "00000001-dup")
    peer.publish(dev.topic("event"), body)
    peer.publish(dev.topic("event"), body)  # the device missed the first ack and sends it again
    peer.publish(dev.topic("event"), event_payload(2, "00000002-dup"))  # sync point: after the duplicate

    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2)
    wait_until(lambda: len(acks_for(peer, dev)) == 3)
    assert acks_for(peer, dev) == ["00000001-dup", "00000001-dup", "00000002-dup"]
    assert [e.id for e in run.sink.events_of(dev.id)] == ["00000001-dup", "00000002-dup"]
    assert len(run.store.messages(device=dev.id, kind="event")) == 3  # every message is kept
    assert [e.seq for e in run.store.events(dev.id)] == [1, 2]
    assert run.store.event(dev.id, "00000001-dup").acks == 2
    assert run.monitor.stats.duplicates == 1


def test_backlog_is_ordered_by_seq_and_gaps_are_flagged(devices, peers, start_monitor):
    run = start_monitor(gap_grace_s=0.3)
    dev = devices()
    peer = peers(dev)
    # After an outage the fire event (seq 9) jumps the queued faults (6, 7); 8 never comes.
    peer.publish(dev.topic("event"), event_payload(5, code="373", cls="fault", input="panel_fault"))
    run.sink.wait(lambda s: s.events_of(dev.id))  # or the monitor takes fire first from one batch, too
    peer.publish(dev.topic("event"), event_payload(9, code="110"))
    peer.publish(dev.topic("event"), event_payload(6, code="301", cls="fault", input="mains"))
    peer.publish(dev.topic("event"), event_payload(7, code="301", q="restore", cls="fault", input="mains"))

    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 4)
    assert [e.seq for e in run.sink.events_of(dev.id)] == [5, 9, 6, 7]  # shown as they arrive
    assert [e.late for e in run.sink.events_of(dev.id)] == [False, False, True, True]
    assert [e.seq for e in run.store.events(dev.id)] == [5, 6, 7, 9]  # history in seq order
    assert run.store.seq_gaps(dev.id) == [(dev.id, 8, 8)]
    assert run.monitor.missing_seqs(dev.id) == 1
    # Reported once the gap has stayed open for the grace time; 6..7 were filled before that.
    assert run.sink.wait(lambda s: [g for g in s.gaps if g[0] == dev.id]) == [(dev.id, 8, 8)]

    peer.publish(dev.topic("event"), event_payload(8, code="302", cls="fault", input="battery"))
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 5)
    assert run.store.seq_gaps(dev.id) == []
    assert run.monitor.missing_seqs(dev.id) == 0


def test_latency_only_with_a_synchronised_clock(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    sent = time.time()
    peer.publish(dev.topic("event"), event_payload(1, ts=sent - 2.0, tsync=True))
    peer.publish(dev.topic("event"), event_payload(2, ts=sent - 2.0, tsync=False))
    synced, unsynced = run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2 and s.events_of(dev.id))
    assert 2.0 <= synced.latency_s < 3.0
    assert unsynced.latency_s is None
    assert run.store.event(dev.id, synced.id).latency_s == synced.latency_s


def test_malformed_messages_are_quarantined_and_warned_and_the_monitor_goes_on(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    bad = [(dev.topic("event"), b"{not json"), (dev.topic("event"), b'{"id": "x1"}'),
           (dev.topic("event"), json.dumps({**json.loads(event_payload(3)), "q": "maybe"}).encode()),
           (dev.topic("heartbeat"), b"[1, 2]"), (dev.topic("status"), b"\xff\xfe"),
           (dev.topic("status"), b'{"state": "sleeping"}')]
    for topic, body in bad:
        peer.publish(topic, body)
    peer.publish(dev.topic("event"), event_payload(4, "00000004-ok"))
    run.monitor.ingest("firelink/x/unknown-kind", b"{}")
    run.monitor.ingest("elsewhere/topic", b"\x00")

    run.sink.wait(lambda s: s.events_of(dev.id))
    run.sink.wait(lambda s: len(s.warnings_of(dev.id)) == len(bad))
    assert run.monitor.wait_idle(5)
    # What the centre could use is in `messages`; the rest, raw and with the reason, in the quarantine.
    assert [m.problem for m in run.store.messages(device=dev.id)] == [None]
    held = run.store.quarantined(device=dev.id)
    assert sorted((q.topic, q.payload) for q in held) == sorted(bad)  # bytes kept as received (fire first)
    assert all(q.reason for q in held)
    assert any("event x1 not held" in q.reason for q in held)
    unknown = [q for q in run.store.quarantined() if q.device is None][-2:]
    assert [q.topic for q in unknown] == ["firelink/x/unknown-kind", "elsewhere/topic"]
    assert all(q.reason == "unexpected topic" for q in unknown)
    assert any(w.topic == "elsewhere/topic" for w in run.sink.warnings)
    wait_until(lambda: acks_for(peer, dev) == ["00000004-ok"])  # nothing malformed is acknowledged
    assert len(run.store.quarantined(device=dev.id)) == len(bad)  # (other tests' retained junk may be there too)
    assert run.monitor.device(dev.id).state == "online"  # malformed or not, the device spoke


def test_suspect_events_are_flagged_not_shown_as_fire(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.publish(dev.topic("event"), event_payload(1, "a-1", code="380", cls="fire", input="panel_fire"))
    peer.publish(dev.topic("event"), event_payload(1, "b-1", code="601", cls="status"))  # seq never repeats
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2)
    first, second = run.sink.events_of(dev.id)
    assert "non-fire code 380" in first.suspect and second.suspect is None
    assert run.store.event(dev.id, "a-1").suspect == first.suspect
    reasons = [w.reason for w in run.sink.wait(lambda s: s.warnings_of(dev.id))]
    assert reasons == ["event b-1 reuses seq 1 of event a-1"]


def test_walk_test_events_are_stored_and_shown_as_tests_not_alarms(devices, peers, start_monitor):
    from firelink.centre.view import event_record
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.publish(dev.topic("event"), event_payload(1, "w-1", test=True))  # panel_fire in walk test mode
    peer.publish(dev.topic("event"), event_payload(2, "w-2"))  # a real fire after it
    peer.publish(dev.topic("event"), event_payload(3, "w-3", test="yes"))  # not a flag: refused
    run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2)
    walked, real = run.sink.events_of(dev.id)
    assert (walked.test, real.test) == (True, False)
    assert run.store.event(dev.id, "w-1").test and not run.store.event(dev.id, "w-2").test
    assert (event_record(walked)["type"], event_record(real)["type"]) == ("test", "alarm")
    assert any("'test' is not true or false" in (q.reason or "") for q in run.store.quarantined(dev.id))


def test_device_lost_after_supervision_time_and_back(devices, peers, start_monitor):
    dev = devices()
    run = start_monitor(supervision=Supervision(per_device={dev.id: 1.0}))
    peer = peers(dev)
    peer.publish(dev.topic("heartbeat"), json.dumps({"ts": int(time.time()), "tsync": True,
                                                     "link": {"path": "wifi", "signal_dbm": -61},
                                                     "outbox": {"depth": 2}}).encode())
    run.sink.wait(lambda s: s.changes_of(dev.id) == ["online"])
    d = run.monitor.device(dev.id)
    assert (d.link_path, d.signal_dbm, d.outbox_depth, d.supervision_s) == ("wifi", -61, 2, 1.0)

    run.sink.wait(lambda s: "lost" in s.changes_of(dev.id), timeout_s=3)
    lost = run.monitor.device(dev.id)
    assert lost.state == "lost"
    assert 1.0 <= lost.state_since - lost.last_heard < 1.6
    assert run.store.devices()[dev.id].state == "lost"

    peer.publish(dev.topic("heartbeat"), b'{"ts": 0}')
    run.sink.wait(lambda s: s.changes_of(dev.id) == ["online", "lost", "back"])
    assert run.monitor.device(dev.id).state == "online"


def test_supervision_time_is_learned_from_heartbeat_spacing(devices, peers, start_monitor):
    run = start_monitor(supervision=Supervision(margin_s=0.3))
    dev = devices()
    peer = peers(dev)
    for _ in range(4):
        peer.publish(dev.topic("heartbeat"), b"{}")
        time.sleep(0.3)
    wait_until(lambda: (run.monitor.device(dev.id) or None) and run.monitor.device(dev.id).heartbeat_s)
    d = run.monitor.device(dev.id)
    assert 0.25 <= d.heartbeat_s <= 0.45
    assert abs(d.supervision_s - (3 * d.heartbeat_s + 0.3)) < 1e-6
    run.sink.wait(lambda s: "lost" in s.changes_of(dev.id), timeout_s=3)
    lost = run.monitor.device(dev.id)
    assert d.supervision_s <= lost.state_since - lost.last_heard < d.supervision_s + 0.6


def test_retained_offline_shows_the_device_offline_at_once(broker, devices, peers, start_monitor):
    dev = devices()
    # A device that vanished: the broker publishes its retained last will.
    peer = peers(dev)
    peer.client.will_set(dev.topic("status"), b'{"state": "offline"}', qos=1, retain=True)
    peer.close()
    peer.connect()
    peer.publish(dev.topic("status"), b'{"state": "online", "fw": "0.1.0", "reset": "power_on"}', retain=True)
    run = start_monitor()
    # The retained "online" is old news: known, not heard.
    d = wait_until(lambda: run.monitor.device(dev.id))
    assert (d.state, d.fw, d.last_heard) == ("unknown", "0.1.0", None)
    peer.client.socket().close()  # the device drops off the network without a DISCONNECT
    run.sink.wait(lambda s: s.changes_of(dev.id)[-1:] == ["offline"])
    peer.client.loop_stop()

    # A monitor started later learns it from the retained will alone.
    again = start_monitor(db=run.store.path.with_name("second.db"))
    again.sink.wait(lambda s: s.changes_of(dev.id) == ["offline"])
    d = again.monitor.device(dev.id)
    assert d.state == "offline" and d.fw is None and d.last_heard is None


def test_store_survives_restart_and_broker_keeps_messages_meanwhile(devices, peers, start_monitor, tmp_path):
    db = tmp_path / "centre.db"
    first = start_monitor(db=db, client_id="centre-restart-test")
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    # One payload, sent twice: a resend repeats the record, its `ts` too (built again across a
    # second's boundary, it would be an id reused with other content, rightly not acked).
    first_event = event_payload(1, "00000001-r")
    peer.publish(dev.topic("event"), first_event)
    first.sink.wait(lambda s: s.events_of(dev.id))
    wait_until(lambda: acks_for(peer, dev) == ["00000001-r"])
    first.monitor.stop()
    first.store.close()

    # While the monitor is down: a new event and a re-sent old one.
    peer.publish(dev.topic("event"), event_payload(2, "00000002-r", code="301", cls="fault"))
    peer.publish(dev.topic("event"), first_event)

    second = start_monitor(db=db, client_id="centre-restart-test")
    second.sink.wait(lambda s: s.events_of(dev.id))
    # The duplicate is acked again; so is 1 once more if the broker had not confirmed its first ack
    # before the stop (an unconfirmed ack is sent again at the next start).
    wait_until(lambda: sorted(set(acks_for(peer, dev)[1:])) == ["00000001-r", "00000002-r"])
    assert [e.id for e in second.sink.events_of(dev.id)] == ["00000002-r"]  # the old one is not shown again
    assert acks_for(peer, dev).count("00000002-r") == 1
    assert [e.seq for e in second.store.events(dev.id)] == [1, 2]
    assert len(second.store.messages(device=dev.id, kind="event")) == 3
    assert second.store.devices()[dev.id].state == "online"


def test_second_process_can_read_while_the_monitor_writes(devices, peers, start_monitor):
    run = start_monitor()
    dev = devices()
    peer = peers(dev)
    peer.publish(dev.topic("event"), event_payload(1))
    run.sink.wait(lambda s: s.events_of(dev.id))
    with MonitorStore(run.store.path, readonly=True) as reader:
        assert [e.seq for e in reader.events(dev.id)] == [1]
        peer.publish(dev.topic("event"), event_payload(2))
        run.sink.wait(lambda s: len(s.events_of(dev.id)) == 2)
        assert [e.seq for e in reader.events(dev.id)] == [1, 2]


# 1500 is past mosquitto's default per-client queue (1000), which the site broker raises.
@pytest.mark.parametrize("n", [900, 1500])
def test_backlog_queued_while_the_monitor_is_down(devices, peers, start_monitor, tmp_path, n):
    db = tmp_path / "outage.db"
    cid = f"outage-{n}"
    first = start_monitor(db=db, client_id=cid)
    first.monitor.stop()
    first.store.close()
    dev = devices()
    peer = peers(dev)
    for info in [peer.client.publish(dev.topic("event"), event_payload(seq), qos=1) for seq in range(1, n + 1)]:
        info.wait_for_publish(10)

    second = start_monitor(db=db, client_id=cid)
    peer.publish(dev.topic("event"), event_payload(n + 1, "marker"))  # after the backlog on the same path
    second.sink.wait(lambda s: any(e.id == "marker" for e in s.events_of(dev.id)), timeout_s=15)
    assert len(second.store.events(dev.id)) == n + 1


def test_a_failing_sink_is_dropped_and_a_failing_store_stops_the_monitor_unacked(devices, peers, start_monitor):
    class Broken(Sink):
        def on_event(self, event):
            raise RuntimeError("screen unplugged")

    run = start_monitor()
    run.monitor.sinks.insert(0, Broken())
    dev = devices()
    peer = peers(dev)
    peer.subscribe(dev.topic("ack"))
    peer.publish(dev.topic("event"), event_payload(1, "00000001-s"))
    run.sink.wait(lambda s: s.events_of(dev.id))  # the other sinks still hear of it
    run.sink.wait(lambda s: any("screen unplugged" in w.reason for w in s.warnings))
    assert not any(isinstance(s, Broken) for s in run.monitor.sinks)
    wait_until(lambda: acks_for(peer, dev) == ["00000001-s"])

    run.store.close()  # the disk goes away
    peer.publish(dev.topic("event"), event_payload(2, "00000002-s"))
    wait_until(lambda: run.monitor.failure is not None)
    assert any("monitor stopped" in w.reason for w in run.sink.warnings)
    time.sleep(0.2)
    assert acks_for(peer, dev) == ["00000001-s"]  # nothing acknowledged that is not stored
