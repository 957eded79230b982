"""Recorder: turns what an input saw into an event that is on flash before anyone sends it.

`record()` numbers and stamps the event, puts it in the outbox (durable before it returns)
and wakes the sender through `queued`. Outbox levels come back as `status` events: 622
(50 %), 623 (90 %), 624 (overflow), each with q "new" when reached and q "restore" when the
outbox re-arms (622 below 40 %, 623 below 80 %, 624 below 50 %: see fl/outbox.py).
"""
import asyncio

from fl.events import Event, PRIORITY, STATUS, make_id, valid_code
from fl.log import Logger

_log = Logger("recorder")


def _int(t):
    try:
        return max(int(t), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


class Recorder:
    def __init__(self, outbox, sequencer, clock, health):
        self.outbox = outbox
        self.sequencer = sequencer
        self.clock = clock
        self.health = health
        self.queued = asyncio.Event()
        self._dropped_seen = outbox.dropped
        # The outbox keeps the newest record's payload even after delivery: numbering resumes
        # past it even if the sequence file was lost.
        hint = 0
        payload = outbox.newest_payload()
        if payload is not None:
            try:
                hint = Event.from_json(payload).seq
            except ValueError as e:
                _log.warn("newest outbox record unreadable: %s", e)
        sequencer.at_least(hint)
        if sequencer.recovery in ("backup", "lost"):
            _log.warn("sequence file %s: resuming at %d", sequencer.recovery, sequencer.peek())
            health.count("seq_recovered_" + sequencer.recovery)
        outbox.on_restore = self._level_restored
        self._report()
        if len(outbox):
            self.queued.set()

    def record(self, code, q, zone, input_name, cls, detail=None):
        """Builds the event, stores it durably, raises any outbox level events; returns it.
        ValueError for a malformed code, q, zone or class (a programming or configuration
        error), except for class fire: a fire is recorded anyway, as code 110 if its own
        code is unusable, with the error in its detail."""
        ev = self._record(code, q, zone, input_name, cls, detail)
        self.queued.set()
        return ev

    def _record(self, code, q, zone, input_name, cls, detail):
        ts, ms, synced = self.clock.stamp()
        ev = Event(0, _int(ts), synced is True, code, q, zone,
                   input_name if type(input_name) is str else str(input_name), cls,
                   detail if detail is None or type(detail) is str else str(detail), "-", ms)
        try:
            ev.check()
        except ValueError as e:
            if cls != "fire":
                raise
            _log.error("fire event with bad fields (%s): recorded anyway", e)
            self.health.count("events_repaired")
            ev.code = code if valid_code(code) else "110"
            ev.q = q if q in ("new", "restore") else "new"
            ev.zone = zone if type(zone) is int and 0 <= zone <= 999 else 0
            ev.detail = "recorder: %s" % e
        ev.seq = self.sequencer.take()
        ev.id = make_id(ev.seq)
        codes = self.outbox.put(PRIORITY[cls], self._fit(ev))
        if cls == "fire":
            _log.info("fire %s %s zone %d seq %d", ev.code, ev.q, ev.zone, ev.seq)
        self.health.count("events")
        self._report()
        self._raise_levels(codes)
        return ev

    def _raise_levels(self, codes):
        # Each level code fires once per arming, so this ends after at most three events.
        pending = list(codes)
        while pending:
            for c in self._level_event(pending.pop(0), "new"):
                if c not in pending:
                    pending.append(c)

    def _level_event(self, code, q):
        ob = self.outbox
        detail = "outbox %d/%d, dropped %d" % (len(ob), ob.capacity, ob.dropped)
        ts, ms, synced = self.clock.stamp()
        seq = self.sequencer.take()
        ev = Event(seq, _int(ts), synced is True, code, q, 0, "", STATUS, detail, None, ms)
        _log.warn("outbox level %s %s: %s", code, q, detail)
        codes = ob.put(PRIORITY[STATUS], self._fit(ev))
        self._report()
        return codes

    def _level_restored(self, code):
        self._raise_levels(self._level_event(code, "restore"))
        self.queued.set()

    def _fit(self, ev):
        """The event's JSON, shortening detail then input name until it fits one slot: an
        alarm with a long name is still an alarm."""
        limit = self.outbox.max_payload
        payload = ev.to_json()
        while len(payload) > limit and ev.detail:
            cut = max(len(payload) - limit, 1)
            ev.detail = ev.detail[:-cut] if cut < len(ev.detail) else None
            payload = ev.to_json()
        while len(payload) > limit and ev.input:
            cut = max(len(payload) - limit, 1)
            ev.input = ev.input[:-cut] if cut < len(ev.input) else ""
            payload = ev.to_json()
        return payload

    def _report(self):
        ob, seq, h = self.outbox, self.sequencer, self.health
        h.set_fault("storage", ob.storage_fault is not None, ob.storage_fault or "")
        h.set_fault("sequence", seq.storage_fault is not None, seq.storage_fault or "")
        d = ob.dropped - self._dropped_seen
        if d > 0:
            h.count("events_dropped", d)
            self._dropped_seen = ob.dropped
