"""The last crash, kept on flash across the reset that follows it (issue 12).

`record()` runs where a part of the application failed (fl/app.py): the traceback, the part's
name, the firmware and how long the device had been up go to CRASH_FILE, atomically. At the
next boot `note_boot()` adds the reset cause and boot number of the boot that followed, once.
The diagnostics console (`crash`) and `firelink diag report` read it back. (The boot number is
counted by fl/diag.py.) Bounded: the
traceback is cut to TRACE_MAX characters and at most PER_BOOT records are written per boot (a
part failing in a loop must not wear the flash); it stays until the next crash replaces it.
"""
import io
import json
import sys

from fl import store

CRASH_FILE = "crash.json"
TRACE_MAX = 1500
PER_BOOT = 3
_written = 0


def record(part, exc, fw, uptime_s, boot=0):
    """Keeps this failure as the last crash; returns whether it was written. Never raises: it
    runs in failure paths, a full heap or flash included."""
    global _written
    if _written >= PER_BOOT:
        return False
    try:
        buf = io.StringIO()
        sys.print_exception(exc, buf)
        trace = buf.getvalue()
        if len(trace) > TRACE_MAX:
            trace = "..." + trace[-TRACE_MAX:]
        store.write_atomic(CRASH_FILE, json.dumps({
            "part": part, "error": repr(exc)[:200], "traceback": trace, "fw": fw,
            "uptime_s": uptime_s, "boot": boot}).encode())
        _written += 1
        return True
    except Exception:  # noqa: BLE001 - a crash report must not crash the crash handler
        return False


def read():
    """The last crash (dict) or None."""
    raw = store.read_bytes(CRASH_FILE)
    if not raw:
        return None
    try:
        rec = json.loads(raw)
        return rec if type(rec) is dict else None
    except ValueError:
        return None


def clear():
    store.remove(CRASH_FILE)


def note_boot(reset_cause, boot):
    """Attaches the reset cause and number of this boot to a crash recorded before it, once.
    Never raises: a failing flash must not stop the boot."""
    try:
        rec = read()
        if rec is not None and "reset_after" not in rec:
            rec["reset_after"] = reset_cause
            rec["boot_after"] = boot
            store.write_atomic(CRASH_FILE, json.dumps(rec).encode())
    except Exception:  # noqa: BLE001
        pass
