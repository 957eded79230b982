"""The app's long-lived buffers, made at boot before its code loads: one per job.

The code loads as hundreds of small blocks spread over the heap; a buffer of kilobytes needs
one contiguous piece, which the heap may no longer have by the time the part that uses it
starts (a MemoryError at start on the lean board). fl.boot reserves the big ones first; each
part takes its own by kind and size when it starts, and makes one itself when none was
reserved (tests, the REPL, a config changed since boot).

kind: "B" for a bytearray, or an array typecode ("I": the outbox's record order).
"""
from array import array

_held = {}  # (kind, n) -> [buffer, ...]
_ITEM = {"H": 2, "I": 4}  # bytes per item (C unsigned short / int on the ESP32 and the unix port)


def reserve(kind, n):
    _held.setdefault((kind, n), []).append(_new(kind, n))


def take(kind, n):
    """A zeroed buffer of n items: the reserved one if there is one, else a new one."""
    free = _held.get((kind, n))
    if free:
        buf = free.pop()
        if not free:
            del _held[(kind, n)]
        return buf
    return _new(kind, n)


def _new(kind, n):
    if kind == "B":
        return bytearray(n)
    return array(kind, bytes(n * _ITEM[kind]))
