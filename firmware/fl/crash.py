"""The last crash, kept on flash across the reset that follows it (issue 12).

`record()` runs where a part of the application failed (fl/app.py): the traceback, the part's
name, the firmware and how long the device had been up go to CRASH_FILE, atomically. At the
next boot `note_boot()` adds the reset cause and boot number of the boot that followed, once.
The diagnostics console (`crash`) and `firelink diag report` read it back. Bounded: the
traceback is cut to TRACE_MAX characters and at most PER_BOOT records are written per boot (a
part failing in a loop must not wear the flash); it stays until the next crash replaces it.
"""
import io
import json
import sys

from fl import store

CRASH_FILE = "crash.json"
BOOTS_FILE = "boots.dat"
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
    import os
    try:
        os.remove(CRASH_FILE)
        store.charge()
    except OSError:
        pass


_boots = 0


def boots():
    """This boot's number (1 = the first boot that counted), 0 before note_boot()."""
    return _boots


def note_boot(reset_cause):
    """Counts this boot and attaches its reset cause to a crash recorded by the boot before."""
    global _boots
    raw = store.read_bytes(BOOTS_FILE)
    try:
        _boots = (int(raw) if raw else 0) + 1
    except ValueError:
        _boots = 1
    try:
        store.write_atomic(BOOTS_FILE, str(_boots).encode())
    except OSError:
        pass  # a full flash: the count is this boot's only
    if not store.exists(CRASH_FILE):
        return
    rec = read()
    if rec is not None and "reset_after" not in rec:
        rec["reset_after"] = reset_cause
        rec["boot_after"] = _boots
        try:
            store.write_atomic(CRASH_FILE, json.dumps(rec).encode())
        except OSError:
            pass
