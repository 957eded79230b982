"""The payloads the centre reads (docs/protocol.md): topic -> (device, kind), bytes -> checked records.

Devices are treated as hostile: a box stolen from one site holds valid credentials. Every
message is checked before anything of it is stored: size, UTF-8, strict JSON (no NaN or
Infinity, no number the store cannot hold, bounded nesting), and then every field the centre
uses for its type, range and length. What fails raises PayloadError with a short reason (never
the device's bytes at length); the monitor keeps such a message raw in its bounded quarantine.
Unknown keys are allowed (newer firmware) but must pass the same generic bounds.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from firelink.centre import contact_id
from firelink.centre.store import Event

TOPIC_PREFIX = "firelink"
# `cmd`: what the centre asked of a device (firelink cmd), kept beside its result (issue 12).
SUBSCRIPTIONS = ("status", "event", "heartbeat", "cmd/result", "cmd")
KINDS = {"status": "status", "event": "event", "heartbeat": "heartbeat", "cmd/result": "cmd_result", "cmd": "cmd"}

# Limits. The largest legitimate message (a heartbeat listing every fault) is well under 2 KiB;
# the firmware refuses to build anything over its 2 KiB packet buffer.
MAX_PAYLOAD = 8192  # bytes; larger ones are quarantined (first QUARANTINE_KEEP bytes kept)
MAX_DEPTH = 6  # nesting of JSON objects/lists
MAX_ID_LEN = 64
MAX_NAME_LEN = 64  # input names, fault names, fw, reset cause, path ...
MAX_DETAIL_LEN = 512
MAX_FAULT_DETAIL_LEN = 2048  # a heartbeat's `faults.config` lists every configuration problem
MAX_ENTRIES = 64  # keys in a heartbeat's inputs/faults/counters/outbox
MAX_SEQ = 2**53 - 1  # exact in JSON everywhere and in SQLite
MAX_TS = 2**33  # year 2242: anything later is not a clock
MAX_LOST_RANGES = 8  # TEAM contract: at most 8 pairs per event
INT64 = 2**63
DEVICE_ID = re.compile(r"[a-z0-9_-]{1,32}\Z")  # the documented device id rule (docs/config.md)
ONLINE, OFFLINE, REVOKED = "online", "offline", "revoked"
STATES = (ONLINE, OFFLINE, REVOKED)


class PayloadError(ValueError):
    """A message the centre cannot use; it is quarantined with this reason and reported."""


def parse_topic(topic: str) -> tuple[str, str] | None:
    """`firelink/<device>/<kind>` -> (device, kind) for the four topics the centre reads."""
    if len(topic) > 128:
        return None
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != TOPIC_PREFIX or parts[2] not in KINDS or not DEVICE_ID.match(parts[1]):
        return None
    return parts[1], KINDS[parts[2]]


def short(value: Any, limit: int = 40) -> str:
    """repr of a device's value for a reason text: escaped and bounded, never the whole thing."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# --- strict JSON ---
def _no_constant(name: str) -> Any:
    raise PayloadError(f"not strict JSON: {name}")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(f"number out of range: {text[:20]}")
    return value


def _int(text: str) -> int:
    if len(text) > 20:
        raise PayloadError(f"integer out of range: {text[:20]}...")
    value = int(text)
    if not -INT64 <= value < INT64:
        raise PayloadError(f"integer out of range: {text}")
    return value


def _depth_ok(value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


def parse_json(payload: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object, strictly: bounded size, UTF-8, finite numbers, integers within
    64 bits, no lone surrogates, bounded nesting."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"oversized: {len(payload)} bytes (limit {MAX_PAYLOAD})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError(f"not UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_float, parse_int=_int)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("not JSON: nested too deep") from None
    except ValueError as e:
        raise PayloadError(f"not JSON: {str(e)[:80]}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"a JSON {type(value).__name__}, not an object")
    # Both walks only when the text could need them (a few brackets; a \uD8xx-\uDFxx escape).
    if text.count("{") + text.count("[") > MAX_DEPTH and not _depth_ok(value, 1):
        raise PayloadError(f"nested deeper than {MAX_DEPTH}")
    if _SURROGATE_ESCAPE.search(text):
        _strings_ok(value)
    return value


def _strings_ok(value: Any) -> None:
    """JSON `\\ud800` escapes decode to lone surrogates, which no UTF-8 output can carry."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise PayloadError("text with a lone surrogate")
    elif isinstance(value, dict):
        for k, v in value.items():
            _strings_ok(k)
            _strings_ok(v)
    elif isinstance(value, list):
        for v in value:
            _strings_ok(v)


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


# --- field checks ---
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(doc: dict[str, Any], key: str, lo: int, hi: int, required: bool = False, default: Any = None) -> Any:
    value = doc.get(key)
    if value is None and not required:  # absent or null: not known
        return default
    if not _is_int(value) or not lo <= value <= hi:
        raise PayloadError(f"{key!r} is not an integer in {lo}..{hi}: {short(value)}")
    return value


def number(doc: dict[str, Any], key: str, lo: float, hi: float, required: bool = False) -> float | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not _is_num(value) or not lo <= value <= hi:
        raise PayloadError(f"{key!r} is not a number in {lo:g}..{hi:g}: {short(value)}")
    return float(value)


def text(doc: dict[str, Any], key: str, limit: int, required: bool = False, controls: bool = False,
         default: Any = None) -> Any:
    value = doc.get(key)
    if value is None and not required:
        return default
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        raise PayloadError(f"{key!r} is not a text of at most {limit} characters: {short(value)}")
    if not controls and _CONTROL.search(value):
        raise PayloadError(f"{key!r} holds control characters: {short(value)}")
    return value


def flag(doc: dict[str, Any], key: str, default: bool = False) -> bool:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise PayloadError(f"{key!r} is not true or false: {short(value)}")
    return value


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
        raise PayloadError(f"{key!r} is not an object of at most {MAX_ENTRIES} entries: {short(value)}")
    for name in value:
        if len(name) > MAX_NAME_LEN or _CONTROL.search(name):
            raise PayloadError(f"{key!r} has a bad name: {short(name)}")
    return value


def event_id(doc: dict[str, Any]) -> str | None:
    """The event's id if it is usable, for the warning about an event that is not."""
    value = doc.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN and value.isprintable() else None


# --- records ---
def parse_event(device: str, doc: dict[str, Any], received_at: float) -> Event:
    """An event payload (docs/protocol.md) -> Event, every field checked. The event time is
    `ts + ms/1000` (ms 0-999; old devices send `ts` only); latency only while the device clock
    is synchronised. The class is checked against the code: a mismatch makes the event suspect."""
    eid = text(doc, "id", MAX_ID_LEN, required=True)
    if not all(0x21 <= ord(c) <= 0x7E for c in eid):
        raise PayloadError(f"'id' is not printable ASCII without spaces: {short(eid)}")
    seq = integer(doc, "seq", 0, MAX_SEQ, required=True)
    code = text(doc, "code", 3, required=True)
    if len(code) != 3 or not code.isascii() or not code.isdigit():
        raise PayloadError(f"'code' is not three digits: {short(code)}")
    q = text(doc, "q", 8, required=True)
    if q not in ("new", "restore"):
        raise PayloadError(f"'q' is {short(q)}, not 'new' or 'restore'")
    cls = text(doc, "class", 8, required=True)
    if cls not in contact_id.CLASSES:
        raise PayloadError(f"'class' is {short(cls)}, not one of {', '.join(contact_id.CLASSES)}")
    ts = number(doc, "ts", 0, MAX_TS)
    ms = integer(doc, "ms", 0, 999)
    tsync = flag(doc, "tsync")
    zone = integer(doc, "zone", 0, 999, default=0)
    name = text(doc, "input", MAX_NAME_LEN, default="") or ""
    detail = text(doc, "detail", MAX_DETAIL_LEN, controls=True)
    lost = lost_ranges(doc)
    when = None if ts is None else (ts + ms / 1000 if ms is not None else ts)
    return Event(device=device, id=eid, seq=seq, code=code, q=q, zone=zone, input=name, cls=cls, ts=when,
                 tsync=tsync, detail=detail, received_at=received_at,
                 latency_s=round(received_at - when, 3) if (tsync and when is not None) else None,
                 suspect=contact_id.class_mismatch(code, cls), lost=lost)


def lost_ranges(doc: dict[str, Any]) -> list[tuple[int, int]]:
    """`lost`: [[first, last], ...] inclusive seq ranges the device dropped (TEAM contract)."""
    if "lost" not in doc:
        return []
    value = doc["lost"]
    if not isinstance(value, list) or len(value) > MAX_LOST_RANGES:
        raise PayloadError(f"'lost' is not a list of at most {MAX_LOST_RANGES} ranges: {short(value)}")
    out = []
    for pair in value:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(_is_int(x) and 0 <= x <= MAX_SEQ for x in pair)
                or pair[0] > pair[1]):
            raise PayloadError(f"'lost' range is not [first, last] with first <= last: {short(pair)}")
        out.append((pair[0], pair[1]))
    return out


@dataclass(frozen=True)
class Status:
    state: str  # online, offline, revoked
    fw: str | None
    reset: str | None


def parse_status(doc: dict[str, Any]) -> Status:
    state = doc.get("state")
    if state not in STATES:
        raise PayloadError(f"status 'state' is {short(state)}, not one of {', '.join(STATES)}")
    number(doc, "ts", 0, MAX_TS)
    flag(doc, "safe_mode")
    return Status(state, text(doc, "fw", MAX_NAME_LEN), text(doc, "reset", MAX_NAME_LEN))


@dataclass(frozen=True)
class Heartbeat:
    doc: dict[str, Any]  # the checked heartbeat, as stored
    ts: float | None
    tsync: bool
    fw: str | None
    reset: str | None
    path: str | None
    signal_dbm: int | None
    outbox_depth: int | None
    faults: dict[str, Any]
    next_s: float | None  # seconds to the next scheduled heartbeat (TEAM contract)


MAX_NEXT_S = 31 * 86400


def parse_heartbeat(doc: dict[str, Any]) -> Heartbeat:
    """A heartbeat with the fields the centre uses checked; the rest of the document passed the
    generic bounds of parse_json and is stored as sent."""
    ts = number(doc, "ts", 0, MAX_TS)
    tsync = flag(doc, "tsync")
    integer(doc, "uptime_s", 0, MAX_SEQ)
    fw = text(doc, "fw", MAX_NAME_LEN)
    reset = text(doc, "reset", MAX_NAME_LEN)
    integer(doc, "battery_mv", 0, 100_000)
    integer(doc, "heap_free", 0, 2**40)
    integer(doc, "heap_peak", 0, 2**40)
    next_s = number(doc, "next_s", 1, MAX_NEXT_S)
    for name, state in _table(doc, "inputs").items():
        if not isinstance(state, str) or len(state) > 16:
            raise PayloadError(f"input {short(name)} state is {short(state)}")
    link = _table(doc, "link")
    path = text(link, "path", 16)
    signal = integer(link, "signal_dbm", -200, 50)
    outbox = _table(doc, "outbox")
    for name, count in outbox.items():
        if not _is_int(count) or not 0 <= count <= 2**31:
            raise PayloadError(f"outbox {short(name)} is {short(count)}")
    for name, count in _table(doc, "counters").items():
        if not _is_int(count) or not 0 <= count <= MAX_SEQ:
            raise PayloadError(f"counter {short(name)} is {short(count)}")
    faults = _table(doc, "faults")
    for name, detail in faults.items():
        if not (detail is None or isinstance(detail, (bool, int, float))
                or isinstance(detail, str) and len(detail) <= MAX_FAULT_DETAIL_LEN):
            raise PayloadError(f"fault {short(name)} detail is {short(detail)}")
    return Heartbeat(doc, ts, tsync, fw, reset, path, signal, outbox.get("depth"), faults, next_s)


def parse_cmd_result(doc: dict[str, Any]) -> None:
    text(doc, "id", 32)
    text(doc, "cmd", 32)
    flag(doc, "ok")
    text(doc, "error", MAX_DETAIL_LEN, controls=True)
    text(doc, "event", MAX_ID_LEN)
    integer(doc, "seq", 0, MAX_SEQ)


def looks_like_fire(kind: str, payload: bytes) -> bool:
    """Cheap guess, without parsing, that an event is a fire event: it goes in the urgent lane.
    A liar gains nothing by it: lanes are shared fairly between devices."""
    return kind == "event" and len(payload) <= MAX_PAYLOAD and b'"fire"' in payload
