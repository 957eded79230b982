"""The event record: what happened, when, in which order, and how it reads on the wire.

An event carries a Contact ID code (so any receiving centre can map it without a table of
ours), a per-device sequence number and an id that stays the same on every retransmission.
Classes `fire` and `fault` are kept apart on the wire (Decree 105 Art. 25.2.b); `status`
covers tests, log levels and the like. Fire goes first: priority fire 0 < fault 1 < status 2.

Sequence numbers continue exactly across reboots without a flash write of their own: every
event is written to the outbox with its seq as the record's number, so at boot the newest
record on flash (delivered or not) says where numbering stands. `Sequencer` also keeps a
reserved high-water mark one block ahead on flash, written once per block: it is the floor
used when the outbox cannot tell (wiped, unreadable, made smaller), so a number is never
issued twice; only then is a range skipped.
"""
import binascii
import json
import os
import struct

from fl import store

FIRE = "fire"
FAULT = "fault"
STATUS = "status"
CLASSES = (FIRE, FAULT, STATUS)
PRIORITY = {FIRE: 0, FAULT: 1, STATUS: 2}
QUALIFIERS = ("new", "restore")

# What each Contact ID code means is the centre's business: the device only sends codes, so the
# table lives on the host (host_tools/firelink/centre/contact_id.py), not in the board's RAM.

_KEYS = ("id", "seq", "ts", "tsync", "code", "q", "zone", "input", "class")


def priority(cls):
    """Outbox priority of an event class; ValueError for an unknown class."""
    p = PRIORITY.get(cls)
    if p is None:
        raise ValueError("bad class %r: want one of fire, fault, status" % (cls,))
    return p


def valid_code(code):
    """True for a Contact ID event code: exactly three decimal digits as a str."""
    return type(code) is str and len(code) == 3 and code.isdigit()


def _random16():
    try:
        return int.from_bytes(os.urandom(2), "big")
    except (AttributeError, OSError):
        import random
        return random.getrandbits(16)


def make_id(seq):
    """Sequence plus 16 random bits: still unique if the sequence store were ever lost."""
    return "%08x-%04x" % (seq & 0xFFFFFFFF, _random16())


def _check(ev):
    """Raises ValueError naming the first field that is malformed."""
    if type(ev.id) is not str or not 0 < len(ev.id) <= 32:
        raise ValueError("bad id %r: want a str of 1..32 chars" % (ev.id,))
    if type(ev.seq) is not int or ev.seq < 0:
        raise ValueError("bad seq %r: want an int >= 0" % (ev.seq,))
    if type(ev.ts) is not int or ev.ts < 0:
        raise ValueError("bad ts %r: want an int >= 0 (UTC seconds)" % (ev.ts,))
    if ev.ms is not None and (type(ev.ms) is not int or not 0 <= ev.ms <= 999):
        raise ValueError("bad ms %r: want an int 0..999 (milliseconds within ts)" % (ev.ms,))
    if type(ev.tsync) is not bool:
        raise ValueError("bad tsync %r: want true or false" % (ev.tsync,))
    if not valid_code(ev.code):
        raise ValueError("bad code %r: want 3 digits, e.g. \"110\"" % (ev.code,))
    if ev.q not in QUALIFIERS:
        raise ValueError("bad q %r: want \"new\" or \"restore\"" % (ev.q,))
    if type(ev.zone) is not int or not 0 <= ev.zone <= 999:
        raise ValueError("bad zone %r: want an int 0..999" % (ev.zone,))
    if type(ev.input) is not str:
        raise ValueError("bad input %r: want a str" % (ev.input,))
    if ev.cls not in CLASSES:
        raise ValueError("bad class %r: want one of fire, fault, status" % (ev.cls,))
    if ev.detail is not None and type(ev.detail) is not str:
        raise ValueError("bad detail %r: want a str" % (ev.detail,))


class Event:
    __slots__ = ("id", "seq", "ts", "ms", "tsync", "code", "q", "zone", "input", "cls", "detail", "more")

    def __init__(self, seq, ts, tsync, code, q, zone, input, cls, detail=None, id=None, ms=None, more=None):
        self.seq = seq
        self.ts = ts
        self.ms = ms  # milliseconds within ts; None for records written before it existed
        self.tsync = tsync
        self.code = code
        self.q = q
        self.zone = zone
        self.input = input
        self.cls = cls
        self.detail = detail
        self.id = make_id(seq) if id is None else id
        # Further keys, already JSON (',"lost":[[5,9]]'): the 624's lost ranges, the 305's
        # conditions still active. Not read back by the firmware.
        self.more = more

    def check(self):
        """Raises ValueError if any field is malformed; returns self."""
        _check(self)
        return self

    @property
    def priority(self):
        return PRIORITY[self.cls]

    def to_json(self):
        """Compact JSON bytes, keys in a fixed order so the same event gives the same bytes."""
        d = json.dumps
        s = '{"id":%s,"seq":%d,"ts":%d%s,"tsync":%s,"code":%s,"q":%s,"zone":%d,"input":%s,"class":%s' % (
            d(self.id), self.seq, self.ts, "" if self.ms is None else ',"ms":%d' % self.ms,
            "true" if self.tsync else "false", d(self.code), d(self.q), self.zone, d(self.input), d(self.cls))
        if self.detail is not None:
            s += ',"detail":' + d(self.detail)
        if self.more:
            s += self.more
        return (s + "}").encode()

    @staticmethod
    def from_json(b):
        """Parses and checks one event; ValueError with the reason on anything malformed.
        Unknown keys are ignored so a newer peer may add fields."""
        try:
            o = json.loads(b)
        except (ValueError, TypeError, UnicodeError) as e:
            raise ValueError("event is not JSON: %s" % (e,))
        if type(o) is not dict:
            raise ValueError("event is not a JSON object")
        for k in _KEYS:
            if k not in o:
                raise ValueError("event lacks key %r" % (k,))
        ev = Event(o["seq"], o["ts"], o["tsync"], o["code"], o["q"], o["zone"], o["input"],
                   o["class"], o.get("detail"), o["id"], o.get("ms"))
        if "detail" in o and o["detail"] is None:
            raise ValueError("bad detail None: omit the key instead")
        _check(ev)
        return ev

    def __repr__(self):
        return "Event(%s seq=%d %s %s %s zone=%d %r)" % (
            self.id, self.seq, self.cls, self.code, self.q, self.zone, self.input)


# --- sequence numbers ---------------------------------------------------------------

_SEQ_MAGIC = b"FLSQ"
_SEQ_MAGIC2 = b"FLS2"


def _seq_image(mark, trust=0):
    if not trust:
        body = struct.pack("<4sI", _SEQ_MAGIC, mark)
    else:
        body = struct.pack("<4sII", _SEQ_MAGIC2, mark, trust)
    return body + struct.pack("<I", binascii.crc32(body))


def _seq_read(data):
    """(mark, trust) from a seq file's bytes, or None if they are torn or garbled. `trust`: the
    outbox's newest record tells where numbering stands only if it is numbered at least this
    (a number issued while flash refused the outbox's writes is not on flash)."""
    if data is None or len(data) < 12:
        return None
    if data[:4] == _SEQ_MAGIC and len(data) == 12:
        mark, crc = struct.unpack("<II", data[4:])
        trust = 0
        n = 8
    elif data[:4] == _SEQ_MAGIC2 and len(data) == 16:
        mark, trust, crc = struct.unpack("<III", data[4:])
        n = 12
    else:
        return None
    if binascii.crc32(data[:n]) != crc:
        return None
    return mark, trust


def _seq_parse(data):
    """The mark in a seq file's bytes, or None if they are torn or garbled."""
    r = _seq_read(data)
    return None if r is None else r[0]


class Sequencer:
    """Per-device sequence numbers 1, 2, 3, ... that never repeat across reboots.

    Two copies (`path` and `path + ".bak"`), each replaced atomically and checked by CRC32.
    Boot continues from the highest valid mark among the copies and any temporary file a
    power cut left behind: every number issued so far is below the latest mark written, and
    the latest mark is the highest one that was ever completely written. If no copy is valid,
    numbering starts at 1 and `recovery` says so ("lost"); the recorder then calls
    `at_least(n)` with the highest seq the outbox still holds (its newest record survives
    delivery), and event ids stay unique through their random half regardless.
    `recovery`: "primary", "backup" (primary missing or corrupt), "fresh" (no file at all,
    a new device) or "lost" (files present but none valid).

    `resume(newest, complete)` (the recorder, at boot) continues right after the newest number
    the outbox holds when it can be trusted; `skipped` then says which range, if any, had to
    be skipped, and `recovery` becomes "outbox" when numbering continued exactly.
    """

    def __init__(self, path="seq.dat", block=32):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = path
        self.backup = path + ".bak"
        self.block = block
        self.storage_fault = None
        self.skipped = None
        from fl import recovery  # boot-only code (the app releases it once booted)
        recovery.read_sequence(self, path)

    def resume(self, newest, complete):
        """At boot: `newest` is the highest number among the outbox's records (0 if none),
        `complete` whether the outbox loaded every file. Continues at newest + 1 when that is
        known to follow the last number issued (the mark on flash is above it); otherwise at
        the mark (never a repeat), noting the skipped range."""
        from fl import recovery
        recovery.resume_sequence(self, newest, complete)

    def unstored(self, seq):
        """A number went out with its record held in RAM (flash refused the outbox): the
        outbox's newest record no longer tells where numbering stands until one numbered at
        least `seq` is on flash. Persisted so that a reboot never issues `seq` again."""
        if self._trust >= seq:
            return
        self._trust = seq
        self._write(max(self._reserved, seq + self.block))

    def _write(self, mark):
        img = _seq_image(mark, self._trust)
        try:
            # Primary first, then backup, each in one write (one block, no rename; the CRC tells
            # a torn one): a cut in either leaves the other whole, and no lower than any number
            # issued, since a number past a mark is issued only once it is written.
            store.write_whole(self.path, img)
            store.write_whole(self.backup, img)
            self.storage_fault = None
        except OSError as e:
            # Keep numbering in RAM: an alarm is worth more than a gap-free sequence.
            self.storage_fault = "seq store write failed: %s" % (e,)
        self._reserved = mark

    def at_least(self, n):
        """The next number issued will be greater than n."""
        if self._next <= n:
            self._next = n + 1

    def peek(self):
        """The number `take()` would return."""
        return self._next

    def take(self):
        """The next sequence number; the mark is persisted before a number past it is issued."""
        if self._next >= self._reserved:
            self._write(self._next + self.block)
        n = self._next
        self._next = n + 1
        return n
