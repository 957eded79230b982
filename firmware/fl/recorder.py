"""Recorder: turns what an input saw into an event that is on flash before anyone sends it.

`record()` numbers and stamps the event, puts it in the outbox (durable before it returns)
and wakes the sender through `queued`. Outbox levels come back as `status` events: 622
(50 %), 623 (90 %), 624 (overflow), each with q "new" when reached and q "restore" when the
outbox re-arms (622 below 40 %, 623 below 80 %, 624 below 50 %: see fl/outbox.py).

The outbox record of each event carries its seq as its number: numbering resumes exactly
after the newest record at boot (fl/events.py Sequencer.resume), and the records the outbox
drops are named by seq. Every 624 event declares them: `"lost": [[first, last], ...]`
(inclusive, merged, at most MAX_LOST_PAIRS and as many as fit one slot); more are declared by
further 624 events. If a 624 carrying ranges is dropped in turn, they (and its own seq) are
declared again.

With a `Reported` (fl/reported.py), each event recorded updates what the centre is told, and
at boot the records newer than its checkpoint are replayed into it.
"""
import asyncio

from fl.events import Event, PRIORITY, STATUS, make_id, valid_code
from fl.log import Logger

_log = Logger("recorder")
MAX_LOST_PAIRS = 8
_DECLARED_KEEP = 8  # 624 events whose ranges are re-declared if they are dropped


def _int(t):
    try:
        return max(int(t), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


class Recorder:
    def __init__(self, outbox, sequencer, clock, health, reported=None):
        self.outbox = outbox
        self.sequencer = sequencer
        self.clock = clock
        self.health = health
        self.reported = reported
        self.queued = asyncio.Event()
        self.before_checkpoint = None  # the app refreshes what the outbox cannot replay (acks)
        self.replayed_fires = []  # [(event id, ts, tsync)] of fire `new` events replayed at boot
        self._declared = {}  # seq of a 624 -> the ranges it declared
        self._dropped_seen = outbox.dropped
        from fl import recovery  # boot-only code (the app releases it once booted)
        recovery.resume_numbering(self)
        outbox.on_restore = self._level_restored
        outbox.on_drop = self._dropped
        if reported is not None:
            recovery.replay(self)
        self._report()
        if len(outbox):
            self.queued.set()

    def checkpoint(self):
        """Writes the reported state's checkpoint (also from inside a put: records nothing)."""
        rep = self.reported
        if rep is None:
            return True
        if self.before_checkpoint is not None:
            self.before_checkpoint()
        rep.lost = [list(r) for r in self.outbox.lost]
        ok = rep.write()
        if ok:
            self.outbox.keep_after = rep.seq
        return ok

    def record(self, code, q, zone, input_name, cls, detail=None, more=None):
        """Builds the event, stores it durably, raises any outbox level events; returns it.
        ValueError for a malformed code, q, zone or class (a programming or configuration
        error), except for class fire: a fire is recorded anyway, as code 110 if its own
        code is unusable, with the error in its detail. `more`: further JSON keys."""
        ev = self._record(code, q, zone, input_name, cls, detail, more)
        self.queued.set()
        return ev

    def _record(self, code, q, zone, input_name, cls, detail, more=None):
        ts, ms, synced = self.clock.stamp()
        ev = Event(0, _int(ts), synced is True, code, q, zone,
                   input_name if type(input_name) is str else str(input_name), cls,
                   detail if detail is None or type(detail) is str else str(detail), "-", ms, more)
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
        codes = self._put(ev)
        if cls == "fire":
            _log.info("fire %s %s zone %d seq %d", ev.code, ev.q, ev.zone, ev.seq)
        self.health.count("events")
        self._report()
        self._raise_levels(codes)
        if len(self.outbox.lost) >= MAX_LOST_PAIRS:
            # Many separate ranges: declare them now rather than hold a growing list (one
            # declaration per event recorded at most, so a full outbox cannot loop here).
            self._raise_levels(self._level_event("624", "new"))
        return ev

    def _put(self, ev):
        """Stores the event under its seq; then (and only then) the centre will be told."""
        ob = self.outbox
        codes = ob.put(PRIORITY[ev.cls], self._fit(ev), ev.seq)
        if ob.held(ev.seq):
            self.sequencer.unstored(ev.seq)  # not on flash: the outbox cannot vouch for this number
        if self.reported is not None:
            self.reported.apply(ev.seq, ev.code, ev.q, ev.zone, ev.input, ev.cls)
        return codes

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
        declared = None
        if code == "624" and ob.lost:
            declared = self._attach_lost(ev)
        _log.warn("outbox level %s %s: %s%s", code, q, detail, "; lost %s" % ev.more[8:] if declared else "")
        codes = self._put(ev)
        if declared:
            for r in declared:
                ob.declared(r[0], r[1])
            self._declared[seq] = declared
            while len(self._declared) > _DECLARED_KEEP:
                del self._declared[min(self._declared)]
        self._report()
        return codes

    def _attach_lost(self, ev):
        """Puts as many lost ranges as fit one slot into the event; returns them."""
        pairs = [list(r) for r in self.outbox.lost[:MAX_LOST_PAIRS]]
        limit = self.outbox.max_payload
        while True:
            ev.more = ',"lost":[%s]' % ",".join("[%d,%d]" % (a, b) for a, b in pairs)
            if len(ev.to_json()) <= limit or len(pairs) == 1:
                break
            if ev.detail:
                ev.detail = None  # the ranges are worth more than the fill figures
            else:
                pairs.pop()
        return pairs

    def _dropped(self, seq):
        # A 624 that declared ranges was dropped itself: they are owed again.
        ranges = self._declared.pop(seq, None)
        if ranges:
            for a, b in ranges:
                self.outbox.lose_range(a, b)

    def declare_lost(self):
        """Declares records lost outside a put (a corrupt slot found while sending) by starting
        an overflow episode; the app's housekeeping calls this. True if it recorded."""
        if not self.outbox.lost or not self.outbox.begin_overflow():
            return False
        self._raise_levels(self._level_event("624", "new"))
        self.queued.set()
        return True

    def restore_levels(self):
        """At boot: restores of levels reported before the reboot that no longer hold."""
        self.outbox.rearm()

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
        if len(payload) > limit and ev.more:
            ev.more = None  # extra keys are a courtesy; the event itself must go
            payload = ev.to_json()
        return payload

    def _report(self):
        ob, seq, h = self.outbox, self.sequencer, self.health
        fault = ob.storage_fault or (self.reported.storage_fault if self.reported is not None else None)
        h.set_fault("storage", fault is not None, fault or "")
        h.set_fault("sequence", seq.storage_fault is not None, seq.storage_fault or "")
        d = ob.dropped - self._dropped_seen
        if d > 0:
            h.count("events_dropped", d)
            self._dropped_seen = ob.dropped
