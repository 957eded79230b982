"""Contact ID event codes as the centre reads them: code -> meaning and class.

The device puts the class (`fire`, `fault`, `status`) in every event itself; this table gives
the operator a meaning for the code and lets the monitor notice a device that classes a
fire code as something else, or a non-fire code as fire (a line fault must never look like
fire), or sends a code nobody defined. The table and its rules are docs/contact-id.md. Kept host-side
because the firmware's `fl/events.py` is MicroPython code (it imports the device store), not a
host library; a test keeps the two tables to the same codes.
"""
from __future__ import annotations

from dataclasses import dataclass

FIRE, FAULT, STATUS = "fire", "fault", "status"
CLASSES = (FIRE, FAULT, STATUS)


@dataclass(frozen=True)
class Code:
    code: str
    meaning: str
    cls: str


def _table(*rows: tuple[str, str, str]) -> dict[str, Code]:
    return {code: Code(code, meaning, cls) for code, meaning, cls in rows}


CODES: dict[str, Code] = _table(
    ("110", "fire alarm", FIRE),
    ("111", "smoke", FIRE),
    ("114", "heat", FIRE),
    ("115", "manual call point", FIRE),
    ("200", "fire supervisory", FAULT),
    ("373", "fire panel trouble", FAULT),
    ("380", "input line open or short", FAULT),
    ("137", "tamper", FAULT),
    ("145", "tamper", FAULT),
    ("383", "enclosure tamper", FAULT),
    ("301", "mains loss", FAULT),
    ("302", "low battery", FAULT),
    ("309", "battery test failure", FAULT),
    ("311", "battery missing", FAULT),
    ("305", "system reset", STATUS),
    ("306", "programming changed", STATUS),
    ("307", "self-test failure", FAULT),
    ("350", "communication trouble", FAULT),
    ("351", "path 1 (Wi-Fi) fault", FAULT),
    ("352", "path 2 (4G) fault", FAULT),
    ("353", "4G modem trouble (SIM, service, signal, no answer)", FAULT),
    ("354", "no acknowledgement from the centre", FAULT),
    ("570", "zone bypass", STATUS),
    ("571", "fire zone bypass", STATUS),
    ("601", "manual test", STATUS),
    ("602", "periodic test", STATUS),
    ("607", "walk test mode", STATUS),
    ("608", "periodic test, trouble present", FAULT),
    ("622", "event log 50 % full", STATUS),
    ("623", "event log 90 % full", FAULT),
    ("624", "event log overflow", FAULT),
    ("625", "time reset", STATUS),
    ("626", "time inaccurate", FAULT),
    ("627", "programming mode entered", STATUS),
    ("628", "programming mode left", STATUS),
)


def meaning(code: str) -> str:
    """The code's meaning, or a label that says the code is not in the table."""
    known = CODES.get(code)
    if known:
        return known.meaning
    return f"fire alarm, code {code}" if is_fire_code(code) else f"unknown code {code}"


def is_fire_code(code: str) -> bool:
    """Contact ID puts every alarm in the 1xx range (110-119 fire, 12x panic, 13x burglary...);
    of those only 110-119 are fire."""
    return len(code) == 3 and code.startswith("11") and code.isdigit()


def class_mismatch(code: str, cls: str) -> str | None:
    """Why the class a device sent does not fit the code, or None when it fits; the centre shows
    such an event as suspect, never as a plain fire (docs/contact-id.md).

    Class `fire` only with a fire code (110-119), a fire code only with class `fire`: that is
    the line Decree 105 Art. 25.2.b draws, and the one a wrongly wired input would cross. A
    code outside the table is suspect in any class. Between `fault` and `status` the device
    decides (the firmware sends 608 and the event log levels as `status`)."""
    if is_fire_code(code):
        return None if cls == FIRE else f"fire code {code} sent with class {cls!r}"
    if cls == FIRE:
        return f"non-fire code {code} ({meaning(code)}) sent with class 'fire'"
    if code not in CODES:
        return f"code {code} is not a Contact ID code this centre knows"
    return None
