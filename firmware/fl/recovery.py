"""Boot-only: what the flash says at boot, read once, then released (fl/boot.py's way with the
config validator).

Reading the sequence files, the reported-state checkpoint, resuming the numbering after the
outbox's newest record, replaying the records past the checkpoint and listing what stays
active for the 305 run once per boot, before the parts start. Their code lives here so that
the app can drop it (`fl.boot.release`) once the boot event is recorded: on the lean board
that heap then holds what runs. The classes it fills (fl/events.py Sequencer, fl/reported.py
Reported, fl/recorder.py Recorder) import it when they need it, so anything constructing them
later (tests, the REPL) loads it again from flash.
"""
import json

from fl import store
from fl.events import Event, _seq_read
from fl.log import Logger


def read_sequence(sq, path):
    """Sequencer's start: the highest valid mark among the copies and any temporary file a
    power cut left behind (fl/events.py Sequencer)."""
    best = None
    trust = 0
    found = False
    primary = None
    for p in (path, path + ".tmp", sq.backup, sq.backup + ".tmp"):
        data = store.read_bytes(p)
        if data is None:
            continue
        found = True
        r = _seq_read(data)
        if p == path:
            primary = r
        if r is not None and (best is None or r[0] > best):
            best, trust = r
    sq._have_mark = best is not None
    if best is None:
        sq.recovery = "lost" if found else "fresh"
        best = 1
    else:
        sq.recovery = "primary" if primary is not None else "backup"
    sq._next = best if best > 0 else 1
    sq._trust = trust
    sq._reserved = sq._next  # nothing of the new boot is reserved yet


def resume_sequence(sq, newest, complete):
    """Sequencer.resume (see there)."""
    mark = sq._next
    if sq._have_mark and complete and newest > 0 and sq._trust <= newest < mark:
        sq._next = newest + 1
        sq._reserved = mark  # still reserved on flash: no write until numbering reaches it
        sq.recovery = "outbox"
        return
    if not sq._have_mark:
        # A new device, or both copies unreadable: the outbox is all there is.
        sq.at_least(newest)
        return
    if newest >= mark:
        sq._next = newest + 1
    elif sq.recovery != "fresh" and newest + 1 < mark:
        sq.skipped = (newest + 1, mark - 1)


def read_reported(rep, path):
    """Reported's start: the newest whole checkpoint of the two files (fl/reported.py)."""
    log = Logger("reported")
    best = None
    for slot in (0, 1):
        raw = store.read_bytes(path % slot)
        if raw is None:
            continue
        try:
            d = json.loads(raw)
            gen, seq, on, acks, lost = int(d["n"]), int(d["seq"]), d["on"], d["ack"], d["lost"]
            if type(on) is not dict or type(acks) is not dict or type(lost) is not list:
                raise ValueError("bad types")
        except (ValueError, KeyError, TypeError) as e:
            log.warn("%s unreadable (%s)", path % slot, e)
            rep.recovery = "lost"
            continue
        if best is None or gen > best[0]:
            best = (gen, slot, seq, on, acks, lost)
    if best is None:
        if rep.recovery == "lost":
            # Replaying the whole outbox is the best left; a restore may then be missed.
            log.error("reported state unreadable: starting from the outbox alone")
        return
    rep._gen, slot, seq, rep.on, rep.acks, rep.lost = best
    rep._slot = 1 - slot
    rep.seq = rep.applied = seq
    rep.recovery = "file"


def resume_numbering(rec):
    """Recorder's start: numbering resumes right after the outbox's newest record
    (fl/recorder.py)."""
    log = Logger("recorder")
    outbox, sequencer, health = rec.outbox, rec.sequencer, rec.health
    # The outbox keeps the newest record's payload even after delivery: numbering resumes
    # right after it (its number is its seq; the payload's seq covers older outboxes).
    hint = outbox.newest_order
    payload = outbox.newest_payload()
    if payload is not None:
        try:
            hint = max(hint, Event.from_json(payload).seq)
        except ValueError as e:
            log.warn("newest outbox record unreadable: %s", e)
    sequencer.resume(hint, outbox.complete())
    sequencer.at_least(outbox.newest_order)  # record numbers must keep growing
    if sequencer.recovery in ("backup", "lost"):
        log.warn("sequence file %s: resuming at %d", sequencer.recovery, sequencer.peek())
        health.count("seq_recovered_" + sequencer.recovery)
    if sequencer.skipped:
        log.warn("outbox cannot tell where numbering stands: seq %d..%d skipped", *sequencer.skipped)
        health.count("seq_skipped")


def replay(rec):
    """Recorder's start, with a Reported: the records past its checkpoint are replayed into it."""
    log = Logger("recorder")
    rep, ob = rec.reported, rec.outbox
    n = 0
    for _, payload in ob.records_after(rep.seq):
        try:
            ev = Event.from_json(payload)
        except ValueError as e:
            log.warn("outbox record unreadable at replay: %s", e)
            continue
        rep.apply(ev.seq, ev.code, ev.q, ev.zone, ev.input, ev.cls)
        if ev.cls == "fire" and ev.q == "new":
            rec.replayed_fires.append((ev.id, ev.ts, ev.tsync))
        n += 1
    if n:
        log.info("reported state: %d events replayed from the outbox past seq %d", n, rep.seq)
    for r in rep.lost:
        ob.lose_range(r[0], r[1])
    ob.set_levels(rep.is_active("622", ""), rep.is_active("623", ""), rep.is_active("624", ""))
    ob.keep_after = rep.seq
    ob.on_overwrite = rec.checkpoint


def active_json(outbox, reported):
    """The 305's `"active": ["code:name", ...]`: as many as fit beside the event."""
    room = outbox.max_payload - 180
    items = []
    for code, name, _, _ in reported.active():
        item = json.dumps(code + ":" + name)
        if len(item) + 1 > room:
            break
        room -= len(item) + 1
        items.append(item)
    return ',"active":[%s]' % ",".join(items)
