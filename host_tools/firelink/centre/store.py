"""The monitoring centre's log: every message received, the events in them, and each device's state.

SQLite in WAL mode, so another process (a report, `sqlite3 run/monitor.db`) can read while the
monitor writes. `synchronous=FULL`: a committed batch survives a power cut, and the monitor only
acknowledges what is committed. The schema is created on open; `PRAGMA user_version` holds its
version. One writer (the monitor's worker thread); `readonly=True` opens a second reader.
"""
from __future__ import annotations

import bisect
import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from firelink.errors import FireLinkError

SCHEMA_VERSION = 2
QUARANTINE_ROWS = 1000  # the newest this many rejected messages are kept
QUARANTINE_KEEP = 4096  # bytes of each: its start, with its full size beside it

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    device TEXT,
    kind TEXT NOT NULL,          -- status, event, heartbeat, cmd_result, unknown
    payload BLOB NOT NULL,       -- exactly the bytes received
    retained INTEGER NOT NULL DEFAULT 0,
    dup INTEGER NOT NULL DEFAULT 0,
    problem TEXT                 -- why it was not understood, NULL when it was
);
CREATE INDEX IF NOT EXISTS messages_device ON messages (device, received_at);

CREATE TABLE IF NOT EXISTS events (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    code TEXT NOT NULL,
    q TEXT NOT NULL,
    zone INTEGER NOT NULL,
    input TEXT NOT NULL,
    class TEXT NOT NULL,
    ts REAL,
    tsync INTEGER NOT NULL,
    detail TEXT,
    received_at REAL NOT NULL,
    latency_s REAL,              -- received_at - ts, only when the device clock was synchronised
    late INTEGER NOT NULL,       -- arrived after a higher seq of the same device
    acked_at REAL,               -- when the broker accepted our first ack for it
    acks INTEGER NOT NULL DEFAULT 0,  -- acks published (one more per duplicate received)
    message_id INTEGER NOT NULL REFERENCES messages (id),
    suspect TEXT,                -- why the centre doubts it (class/code mismatch), NULL when it does not
    retained INTEGER NOT NULL DEFAULT 0,  -- first seen as a retained replay, not live
    flood INTEGER NOT NULL DEFAULT 0,     -- arrived while its device was flooding the centre
    PRIMARY KEY (device, id)
);
CREATE INDEX IF NOT EXISTS events_seq ON events (device, seq);

CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,         -- at most 256 characters of it
    device TEXT,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,       -- bytes received
    payload BLOB NOT NULL,       -- the first QUARANTINE_KEEP bytes, as received
    retained INTEGER NOT NULL DEFAULT 0,
    dup INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS losses (  -- sequence numbers a device declared lost (outbox overflow)
    device TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    event_id TEXT NOT NULL,      -- the event that declared them
    declared_at REAL NOT NULL,
    PRIMARY KEY (device, first, last)
);

CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,         -- unknown, online, offline, lost, revoked
    state_since REAL NOT NULL,
    last_heard REAL,             -- last message received live from it (retained ones do not count)
    supervision_s REAL NOT NULL, -- silence longer than this raises "device lost"
    heartbeat_s REAL,            -- heartbeat interval learned from their spacing
    fw TEXT,
    reset TEXT,
    link_path TEXT,
    signal_dbm INTEGER,
    outbox_depth INTEGER,
    clock_offset_s REAL,         -- heartbeat received_at - ts while the device clock is synchronised
    faults TEXT,                 -- JSON: the active faults of the last heartbeat
    last_heartbeat TEXT          -- JSON: the last heartbeat as received
);
"""


MIGRATIONS = {
    1: """
ALTER TABLE events ADD COLUMN suspect TEXT;
ALTER TABLE events ADD COLUMN retained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN flood INTEGER NOT NULL DEFAULT 0;
""",
}


class StoreError(FireLinkError, RuntimeError):
    pass


@dataclass
class Message:
    id: int
    received_at: float
    topic: str
    device: str | None
    kind: str
    payload: bytes
    retained: bool
    dup: bool
    problem: str | None


@dataclass
class Event:
    device: str
    id: str
    seq: int
    code: str
    q: str
    zone: int
    input: str
    cls: str
    ts: float | None
    tsync: bool
    detail: str | None
    received_at: float
    latency_s: float | None = None
    late: bool = False
    acked_at: float | None = None
    acks: int = 0
    suspect: str | None = None  # why the centre doubts it; shown as suspect, never as a plain fire
    retained: bool = False  # a retained replay from the broker, not a live event
    flood: bool = False  # arrived while its device flooded the centre
    lost: list[tuple[int, int]] = field(default_factory=list)  # seq ranges the device declared lost

    def same_content(self, other: Event) -> bool:
        """Whether two events with one id say the same (a resend) or not (an id reused)."""
        return ((self.seq, self.code, self.q, self.zone, self.input, self.cls, self.detail, self.tsync)
                == (other.seq, other.code, other.q, other.zone, other.input, other.cls, other.detail, other.tsync)
                and (self.ts is None) == (other.ts is None)
                and (self.ts is None or other.ts is None or abs(self.ts - other.ts) < 0.0015))


@dataclass
class Quarantined:
    id: int
    received_at: float
    topic: str
    device: str | None
    kind: str
    size: int
    payload: bytes
    retained: bool
    dup: bool
    reason: str


@dataclass
class Device:
    device: str
    state: str
    state_since: float
    supervision_s: float
    last_heard: float | None = None
    heartbeat_s: float | None = None
    fw: str | None = None
    reset: str | None = None
    link_path: str | None = None
    signal_dbm: int | None = None
    outbox_depth: int | None = None
    clock_offset_s: float | None = None
    faults: dict[str, Any] = field(default_factory=dict)
    last_heartbeat: dict[str, Any] | None = None


_EVENT_COLS = ("device, id, seq, code, q, zone, input, class, ts, tsync, detail, received_at, latency_s, late, "
               "acked_at, acks, suspect, retained, flood")
_DEVICE_COLS = ("device, state, state_since, supervision_s, last_heard, heartbeat_s, fw, reset, link_path, "
                "signal_dbm, outbox_depth, clock_offset_s, faults, last_heartbeat")


class Store(Protocol):
    """What the monitor needs of its store: one writer, batches committed as a whole, and a
    savepoint per message so one message that cannot be stored never costs its batch.
    MonitorStore (SQLite) is the one implementation; a clustered centre can put another here."""

    def batch(self) -> Any: ...
    def savepoint(self) -> Any: ...
    def add_message(self, received_at: float, topic: str, device: str | None, kind: str, payload: bytes,
                    retained: bool = False, dup: bool = False, problem: str | None = None) -> int: ...
    def quarantine(self, received_at: float, topic: str, device: str | None, kind: str, payload: bytes,
                   reason: str, retained: bool = False, dup: bool = False) -> int: ...
    def add_event(self, ev: Event, message_id: int) -> bool: ...
    def event(self, device: str, event_id: str) -> Event | None: ...
    def id_for_seq(self, device: str, seq: int) -> str | None: ...
    def count_ack_sent(self, device: str, event_id: str) -> None: ...
    def mark_acked(self, device: str, event_id: str, at: float) -> None: ...
    def add_loss(self, device: str, first: int, last: int, event_id: str, at: float) -> bool: ...
    def save_device(self, d: Device) -> None: ...
    def devices(self) -> dict[str, Device]: ...
    def unacked(self) -> list[tuple[str, str]]: ...
    def seq_bounds(self) -> dict[str, tuple[int, int]]: ...
    def seq_gaps(self, device: str | None = None) -> list[tuple[str, int, int]]: ...
    def losses(self, device: str | None = None) -> list[tuple[str, int, int]]: ...


class MonitorStore:
    """The monitor's SQLite database. Thread-safe by a lock; meant for one writing thread."""

    def __init__(self, path: Path | str, readonly: bool = False, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                self._create()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the monitor database {self.path}: {e}") from e

    def _create(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this monitor knows {SCHEMA_VERSION}")
        if version:
            for v in range(version, SCHEMA_VERSION):
                self._db.executescript(MIGRATIONS[v])
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> MonitorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction: everything written inside is committed together (and durably) or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a batch: what is written in here is undone alone if it raises."""
        with self._lock:
            self._db.execute("SAVEPOINT one_message")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK TO one_message")
                self._db.execute("RELEASE one_message")
                raise
            self._db.execute("RELEASE one_message")

    # --- writing ---
    def add_message(self, received_at: float, topic: str, device: str | None, kind: str, payload: bytes,
                    retained: bool = False, dup: bool = False, problem: str | None = None) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO messages (received_at, topic, device, kind, payload, retained, dup, problem) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (received_at, topic, device, kind, bytes(payload), int(retained), int(dup), problem))
            return int(cur.lastrowid or 0)

    def quarantine(self, received_at: float, topic: str, device: str | None, kind: str, payload: bytes,
                   reason: str, retained: bool = False, dup: bool = False) -> int:
        """Keeps a message the centre could not use: its first QUARANTINE_KEEP bytes, its size and
        why. Only the newest QUARANTINE_ROWS are kept, so a hostile device cannot fill the disk."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO quarantine (received_at, topic, device, kind, size, payload, retained, dup, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (received_at, topic[:256], device, kind, len(payload), bytes(payload[:QUARANTINE_KEEP]),
                 int(retained), int(dup), reason[:1000]))
            rowid = int(cur.lastrowid or 0)
            self._db.execute("DELETE FROM quarantine WHERE id <= ?", (rowid - QUARANTINE_ROWS,))
            return rowid

    def add_loss(self, device: str, first: int, last: int, event_id: str, at: float) -> bool:
        """A range of sequence numbers the device declared lost; returns whether it is new."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO losses (device, first, last, event_id, declared_at) "
                                   "VALUES (?, ?, ?, ?, ?)", (device, first, last, event_id, at))
            return cur.rowcount == 1

    def set_problem(self, message_id: int, problem: str) -> None:
        with self._lock:
            self._db.execute("UPDATE messages SET problem = ? WHERE id = ?", (problem, message_id))

    def add_event(self, ev: Event, message_id: int) -> bool:
        """Stores an event unless (device, id) is already held; returns whether it was new."""
        with self._lock:
            cur = self._db.execute(
                f"INSERT OR IGNORE INTO events ({_EVENT_COLS}, message_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ev.device, ev.id, ev.seq, ev.code, ev.q, ev.zone, ev.input, ev.cls, ev.ts, int(ev.tsync),
                 ev.detail, ev.received_at, ev.latency_s, int(ev.late), ev.acked_at, ev.acks, ev.suspect,
                 int(ev.retained), int(ev.flood), message_id))
            return cur.rowcount == 1

    def count_ack_sent(self, device: str, event_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET acks = acks + 1 WHERE device = ? AND id = ?", (device, event_id))

    def mark_acked(self, device: str, event_id: str, at: float) -> None:
        """Records when the broker accepted our ack; the first time counts."""
        with self._lock:
            self._db.execute("UPDATE events SET acked_at = ? WHERE device = ? AND id = ? AND acked_at IS NULL",
                             (at, device, event_id))

    def save_device(self, d: Device) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO devices ({_DEVICE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (d.device, d.state, d.state_since, d.supervision_s, d.last_heard, d.heartbeat_s, d.fw, d.reset,
                 d.link_path, d.signal_dbm, d.outbox_depth, d.clock_offset_s, json.dumps(d.faults),
                 None if d.last_heartbeat is None else json.dumps(d.last_heartbeat)))

    # --- reading ---
    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def messages(self, device: str | None = None, kind: str | None = None) -> list[Message]:
        """Messages in the order received."""
        where, params = _where(device=device, kind=kind)
        rows = self._rows("SELECT id, received_at, topic, device, kind, payload, retained, dup, problem "
                          f"FROM messages{where} ORDER BY id", params)
        return [Message(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), bool(r[6]), bool(r[7]), r[8]) for r in rows]

    def quarantined(self, device: str | None = None) -> list[Quarantined]:
        """Rejected messages kept (the newest QUARANTINE_ROWS), oldest first."""
        where, params = _where(device=device)
        rows = self._rows("SELECT id, received_at, topic, device, kind, size, payload, retained, dup, reason "
                          f"FROM quarantine{where} ORDER BY id", params)
        return [Quarantined(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bool(r[7]), bool(r[8]), r[9])
                for r in rows]

    def losses(self, device: str | None = None) -> list[tuple[str, int, int]]:
        """(device, first, last) ranges the devices declared lost."""
        where, params = _where(device=device)
        return [(r[0], r[1], r[2]) for r in
                self._rows(f"SELECT device, first, last FROM losses{where} ORDER BY device, first", params)]

    def events(self, device: str | None = None) -> list[Event]:
        """Events ordered by device, then sequence number (not by arrival: fire jumps the queue)."""
        where, params = _where(device=device)
        rows = self._rows(f"SELECT {_EVENT_COLS} FROM events{where} ORDER BY device, seq", params)
        return [_event(r) for r in rows]

    def event(self, device: str, event_id: str) -> Event | None:
        rows = self._rows(f"SELECT {_EVENT_COLS} FROM events WHERE device = ? AND id = ?", (device, event_id))
        return _event(rows[0]) if rows else None

    def id_for_seq(self, device: str, seq: int) -> str | None:
        rows = self._rows("SELECT id FROM events WHERE device = ? AND seq = ? LIMIT 1", (device, seq))
        return rows[0][0] if rows else None

    def unacked(self) -> list[tuple[str, str]]:
        """(device, event id) of events whose ack the broker never confirmed."""
        return [(r[0], r[1]) for r in self._rows("SELECT device, id FROM events WHERE acked_at IS NULL "
                                                 "ORDER BY device, seq")]

    def devices(self) -> dict[str, Device]:
        rows = self._rows(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY device")
        return {r[0]: Device(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                             json.loads(r[12] or "{}"), None if r[13] is None else json.loads(r[13]))
                for r in rows}

    def seq_bounds(self) -> dict[str, tuple[int, int]]:
        """device -> (lowest, highest) sequence number held."""
        return {r[0]: (r[1], r[2]) for r in self._rows("SELECT device, MIN(seq), MAX(seq) FROM events GROUP BY device")}

    def seq_gaps(self, device: str | None = None) -> list[tuple[str, int, int]]:
        """(device, first, last) for each run of sequence numbers missing between the lowest and the
        highest held: events the device may have sent that the centre does not hold."""
        where, params = _where(device=device)
        rows = self._rows(
            "SELECT device, seq + 1, nxt - 1 FROM ("
            f"  SELECT device, seq, LEAD(seq) OVER (PARTITION BY device ORDER BY seq) AS nxt FROM events{where}"
            ") WHERE nxt > seq + 1 ORDER BY device, seq", params)
        declared: dict[str, list[tuple[int, int]]] = {}
        for name, first, last in self.losses(device):
            declared.setdefault(name, []).append((first, last))
        declared = {name: merged(ranges) for name, ranges in declared.items()}
        out = []
        for name, first, last in rows:
            out += [(name, a, b) for a, b in subtract((first, last), declared.get(name, []))]
        return out


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted, overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def subtract(span: tuple[int, int], ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the inclusive range `span` that none of `ranges` (sorted and merged, see
    `merged`) covers. Only the ranges that overlap the span are looked at."""
    first, last = span
    parts = []
    i = bisect.bisect_left(ranges, (first, first))
    if i > 0 and ranges[i - 1][1] >= first:
        i -= 1
    at = first
    while i < len(ranges) and ranges[i][0] <= last:
        lo, hi = ranges[i]
        if lo > at:
            parts.append((at, lo - 1))
        at = max(at, hi + 1)
        i += 1
    if at <= last:
        parts.append((at, last))
    return parts


def _where(**conditions: Any) -> tuple[str, tuple[Any, ...]]:
    used = [(k, v) for k, v in conditions.items() if v is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in used), tuple(v for _, v in used)


def _event(r: tuple[Any, ...]) -> Event:
    return Event(device=r[0], id=r[1], seq=r[2], code=r[3], q=r[4], zone=r[5], input=r[6], cls=r[7], ts=r[8],
                 tsync=bool(r[9]), detail=r[10], received_at=r[11], latency_s=r[12], late=bool(r[13]),
                 acked_at=r[14], acks=r[15], suspect=r[16], retained=bool(r[17]), flood=bool(r[18]))
