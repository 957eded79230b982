"""The payloads the centre reads (docs/protocol.md): topic -> (device, kind), JSON -> records.

Strict about what the centre needs to hold an event (id, seq, code, q, class) and lenient
about the rest, so one odd field does not cost an alarm; anything it cannot use raises
PayloadError with a reason the monitor stores beside the raw bytes and reports.
"""
from __future__ import annotations

import json
from typing import Any

from firelink import contact_id
from firelink.monitor_store import Event

TOPIC_PREFIX = "firelink"
SUBSCRIPTIONS = ("status", "event", "heartbeat", "cmd/result")
KINDS = {"status": "status", "event": "event", "heartbeat": "heartbeat", "cmd/result": "cmd_result"}
MAX_ID_LEN = 64


class PayloadError(ValueError):
    """A message the centre cannot understand; it is stored with this reason and reported."""


def parse_topic(topic: str) -> tuple[str, str] | None:
    """`firelink/<device>/<kind>` -> (device, kind) for the four topics the centre reads."""
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != TOPIC_PREFIX or not parts[1] or parts[2] not in KINDS:
        return None
    return parts[1], KINDS[parts[2]]


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PayloadError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"a JSON {type(value).__name__}, not an object")
    return value


def _need(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PayloadError(f"{key!r} missing or not {getattr(kind, '__name__', kind)}: {value!r}")
    return value


def parse_event(device: str, doc: dict[str, Any], received_at: float) -> Event:
    """An event payload (docs/protocol.md) -> Event; latency only when the device clock is synchronised."""
    event_id = _need(doc, "id", str)
    if not event_id or len(event_id) > MAX_ID_LEN:
        raise PayloadError(f"'id' empty or longer than {MAX_ID_LEN}")
    seq = _need(doc, "seq", int)
    code = _need(doc, "code", str)
    if len(code) != 3 or not code.isdigit():
        raise PayloadError(f"'code' is not three digits: {code!r}")
    q = _need(doc, "q", str)
    if q not in ("new", "restore"):
        raise PayloadError(f"'q' is {q!r}, not 'new' or 'restore'")
    cls = _need(doc, "class", str)
    if cls not in contact_id.CLASSES:
        raise PayloadError(f"'class' is {cls!r}, not one of {', '.join(contact_id.CLASSES)}")
    ts = doc.get("ts")
    ts = float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None
    tsync = doc.get("tsync") is True
    zone = doc.get("zone", 0)
    detail = doc.get("detail")
    return Event(device=device, id=event_id, seq=seq, code=code, q=q,
                 zone=zone if isinstance(zone, int) and not isinstance(zone, bool) else 0,
                 input=str(doc.get("input") or ""), cls=cls, ts=ts, tsync=tsync,
                 detail=detail if isinstance(detail, str) else None, received_at=received_at,
                 latency_s=round(received_at - ts, 3) if (tsync and ts is not None) else None)
