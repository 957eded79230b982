"""Backlogs for the outage scenarios: many real events made by toggling the device's inputs
(debounce shortened by config), what the device says it recorded, and the order in which
the firmware must deliver them.

The delivery rule (fl/outbox.py, fl/events.py): the outbox sends the best record first,
fire (priority 0) before fault (1) before status (2), and within one priority the oldest
(lowest insertion number, i.e. lowest seq). For a backlog queued while the device could not
send, to which nothing of a higher priority is added during delivery, the order in which the
centre first receives the events is therefore exactly the backlog sorted by (priority, seq).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

from tests.hil.dut import Dut

PRIORITY = {"fire": 0, "fault": 1, "status": 2}
# Contact ID code and class by input kind (docs/config.md).
KIND_EVENT = {"fire": ("110", "fire"), "smoke": ("111", "fire"), "heat": ("114", "fire"), "manual": ("115", "fire"),
              "supervisory": ("200", "fault"), "fault": ("373", "fault"), "mains": ("301", "fault"),
              "tamper": ("383", "fault")}
_CHANGE = re.compile(r" INFO app: input (\w+): (\w+) -> (\w+)\r?\n")
# What the device logs as it records: an input change (one event for the inputs used here),
# or an outbox level event (fl/recorder.py), in the order the events are numbered.
_RECORD = re.compile(r" INFO app: input (?P<name>\w+): (?P<old>\w+) -> (?P<new>\w+)\r?\n"
                     r"| WARN recorder: outbox level (?P<code>\d+) (?P<q>new|restore): (?P<detail>[^\r\n]*)\r?\n")

# Inputs whose every change is one event: four fault-class contacts and a smoke detector,
# none of them waiting (debounce 0), plus the panel's fire output at its default.
FAST_INPUTS = [
    {"name": "panel_fire", "kind": "fire", "channel": "in1", "zone": 1},
    {"name": "panel_fault", "kind": "fault", "channel": "in2", "zone": 2, "debounce_ms": 0},
    {"name": "smoke", "kind": "smoke", "channel": "in3", "zone": 3, "debounce_ms": 0},
    {"name": "tamper", "kind": "tamper", "channel": "in4", "contact": "nc", "zone": 4, "debounce_ms": 0},
    {"name": "mains", "kind": "mains", "channel": "in5", "contact": "nc", "zone": 5, "debounce_ms": 0},
    {"name": "valve", "kind": "supervisory", "channel": "in6", "zone": 6, "debounce_ms": 0},
    {"name": "battery", "kind": "battery", "channel": "battery", "zone": 7},
]
FAULT_GROUP = ("panel_fault", "tamper", "mains", "valve")


@dataclass(frozen=True)
class Expected:
    seq: int
    code: str
    q: str
    cls: str
    zone: int
    input: str
    detail: str | None = None

    @property
    def key(self) -> tuple[int, int]:
        """The outbox's delivery order: priority, then age."""
        return PRIORITY[self.cls], self.seq


def input_changes(dut: Dut, since: int) -> list[tuple[str, str, str]]:
    """(input, old, new) for every change the device logged since the console position."""
    return [m.groups() for m in _CHANGE.finditer(dut.log_text(since))]  # type: ignore[misc]


def toggle(dut: Dut, states: dict[str, str], since: int, changes_before: int, timeout_s: float = 5.0) -> int:
    """Drives `states` in one wiring change and waits until the device has logged each of them;
    returns the number of changes logged since `since`."""
    dut.set_inputs(states)
    want = changes_before + len(states)
    deadline = time.monotonic() + timeout_s
    while True:
        n = len(input_changes(dut, since))
        if n >= want:
            return n
        if time.monotonic() >= deadline:
            raise AssertionError(f"the device logged {n - changes_before} of {len(states)} input changes "
                                 f"{states} within {timeout_s} s:\n{dut.log_text(since)[-1500:]}")
        time.sleep(0.005)


def make_backlog(dut: Dut, fault_writes: int, fire_every: int, since: int) -> int:
    """`fault_writes` wiring changes, each toggling the four fault-class inputs together (four
    events), and a smoke alarm with its restore after every `fire_every`-th (two fire events).
    Returns the number of input changes (= events) logged."""
    n = len(input_changes(dut, since))
    for i in range(fault_writes):
        state = "active" if i % 2 == 0 else "normal"
        n = toggle(dut, {name: state for name in FAULT_GROUP}, since, n)
        if i % fire_every == fire_every - 1:
            n = toggle(dut, {"smoke": "active"}, since, n)
            n = toggle(dut, {"smoke": "normal"}, since, n)
    return n


def expected_events(dut: Dut, since: int, first_seq: int,
                    inputs: list[dict[str, Any]] = FAST_INPUTS) -> list[Expected]:
    """The events the device logged recording since the console position, numbered from
    first_seq: one per input change (these inputs' changes are plain normal <-> active), and
    the outbox level events with their detail."""
    by_name = {i["name"]: i for i in inputs}
    out = []
    for k, m in enumerate(_RECORD.finditer(dut.log_text(since))):
        if m["code"]:
            out.append(Expected(first_seq + k, m["code"], m["q"], "status", 0, "", m["detail"]))
            continue
        spec = by_name[m["name"]]
        code, cls = KIND_EVENT[spec["kind"]]
        if {m["old"], m["new"]} != {"normal", "active"}:
            raise AssertionError(f"unexpected change {m['name']}: {m['old']} -> {m['new']}")
        out.append(Expected(first_seq + k, code, "new" if m["new"] == "active" else "restore", cls, spec["zone"],
                            m["name"]))
    return out


def as_expected(events: Iterable[Any]) -> list[Expected]:
    """The centre's events (firelink.centre.store.Event) in the same shape; `detail` only for
    status events (the level events' detail is logged, the reset event's is not)."""
    return [Expected(e.seq, e.code, e.q, e.cls, e.zone, e.input, e.detail if e.cls == "status" else None)
            for e in events]
