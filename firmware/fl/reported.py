"""What the centre has been told: every condition reported active, kept across reboots.

A condition is an input's own condition (code 110, 373, ...), its line trouble (380), a fault
(307, 350, ...) or an outbox level (622/623/624), keyed by code and input or fault name, and
active from its `new` to its `restore`. After a reboot the app compares it with what it sees
and sends only the difference: the restore of what cleared meanwhile, never a second `new`.

The outbox is the journal and this file the checkpoint. Every event reaches flash in the
outbox before anything else happens, with its seq as the record's number, and a delivered
record keeps its bytes until its slot is reused. So the checkpoint (small) need not be written
per event: it holds the state as of a seq, and at boot the
records numbered above it are replayed. It is written when the outbox is about to reuse a
slot whose record is newer than the checkpoint (`Outbox.on_overwrite`), after CHECKPOINT_EVERY
events, and soon after what the outbox cannot replay changes (the centre's acks of fire
events, lost ranges not yet declared). An idle device writes nothing.

Two files, `reported0.json` and `reported1.json`, written in turn, each in one write (one
flash block, no rename): the newest whole one counts, so a write cut short leaves the other.
Each: {"n": generation, "seq": n, "on": {"code|name": [zone, class]}, "ack": {event id:
[due_ts, left_ms]}, "lost": [[first, last]]}.
"""
import json

from fl import store
from fl.log import Logger

_log = Logger("reported")
PATH = "reported%d.json"
CHECKPOINT_EVERY = 64  # events applied since the checkpoint: bounds the replay at boot
LEVEL_CODES = ("622", "623", "624")


def key(code, name):
    return code + "|" + name


class Reported:
    def __init__(self, path=PATH):
        self.path = path
        self.on = {}  # "code|name" -> [zone, cls]
        self.acks = {}  # fire event id -> [due_ts (0: unknown), left_ms]: awaiting the centre's ack
        self.lost = []
        self.seq = 0  # the checkpoint covers events up to this seq
        self.applied = 0  # the newest seq applied
        self._since = 0  # events applied since the checkpoint
        self.dirty = False
        self.storage_fault = None
        self.recovery = "fresh"
        self._gen = 0
        self._slot = 1  # the next write goes to the other file than the newest
        from fl import recovery  # boot-only code (the app releases it once booted)
        recovery.read_reported(self, path)

    # --- the conditions ---
    def is_active(self, code, name):
        return key(code, name) in self.on

    def apply(self, seq, code, q, zone, name, cls):
        """One event recorded (or replayed from the outbox at boot)."""
        if seq > self.applied:
            self.applied = seq
        if cls != "status" or code in LEVEL_CODES:
            k = key(code, name)
            if q == "new" and k not in self.on:
                self.on[k] = [zone, cls]
            elif q == "restore" and k in self.on:
                del self.on[k]
        self._since += 1

    def active(self):
        """[(code, name, zone, cls)] of every condition reported active."""
        out = []
        for k, v in self.on.items():
            code, name = k.split("|", 1)
            out.append((code, name, v[0], v[1]))
        out.sort()
        return out

    def due(self):
        """True when the checkpoint should be written now (housekeeping asks every second)."""
        return self.dirty or self._since >= CHECKPOINT_EVERY

    # --- the checkpoint ---
    def write(self):
        """Writes the checkpoint (as of the newest event applied); False if flash refused."""
        data = json.dumps({"n": self._gen + 1, "seq": self.applied, "on": self.on, "ack": self.acks,
                           "lost": self.lost}, separators=(",", ":")).encode()
        try:
            store.write_whole(self.path % self._slot, data)
        except OSError as e:
            self.storage_fault = "reported state write failed: %s" % (e,)
            return False
        self._gen += 1
        self._slot = 1 - self._slot
        self.storage_fault = None
        self.seq = self.applied
        self._since = 0
        self.dirty = False
        return True
