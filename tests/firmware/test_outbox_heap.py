# A full-size outbox (1024 slots of 256 B) opens, fills and drains in 64 KB of heap: the index
# is compact and boot reads slot by slot, never the whole 256 KB.
#
# The modules are loaded as the .mpy bytecode that ships to the ESP32 (mpy-cross, xtensawin):
# a board never compiles them from source in its own heap, and compiling outbox.py from source
# alone needs more than 64 KB on this 64-bit port.
import gc
import os
import sys

from fwtest import eq, ok, skip

HEAPSIZE = "64k"
TIMEOUT_S = 120
MODULES = ("__init__", "ticks", "store", "log", "bufpool", "slotfile", "outbox")


def _firmware_dir():
    for d in sys.path:
        try:
            os.stat(d + "/fl/outbox.py")
            return d
        except OSError:
            pass
    raise AssertionError("fl/outbox.py not on the path")


def _load_shipped_outbox():
    mpy_cross = os.getenv("MPY_CROSS") or sys.executable.rsplit("/", 1)[0] + "/mpy-cross"
    try:
        os.stat(mpy_cross)
    except OSError:
        skip("mpy-cross not found beside %s (set $MPY_CROSS)" % sys.executable)
    src = _firmware_dir() + "/fl/"
    os.mkdir("build")
    os.mkdir("build/fl")
    for m in MODULES:
        status = os.system("%s -march=xtensawin -o build/fl/%s.mpy %s%s.py" % (mpy_cross, m, src, m))
        eq(status, 0, "mpy-cross " + m)
    sys.path.insert(0, os.getcwd() + "/build")
    from fl import outbox
    ok(outbox.__file__.endswith("build/fl/outbox.mpy"), outbox.__file__)
    return outbox.Outbox


def _fill(Outbox, before):
    ob = Outbox()
    gc.collect()
    index = gc.mem_alloc() - before
    print("outbox object and index: %d bytes" % index)
    ok(index < 8 * 1024, "index uses %d bytes" % index)
    for i in range(1024):
        ob.put(i % 3, b"%04d" % i + b"p" * 176)
    eq(len(ob), 1024)
    eq(ob.dropped, 0)


def test_1024_slot_outbox_in_64k_heap():
    Outbox = _load_shipped_outbox()
    gc.collect()
    before = gc.mem_alloc()
    print("heap: %d used, %d free before opening" % (before, gc.mem_free()))
    _fill(Outbox, before)
    gc.collect()
    print("after the first instance is gone: %d bytes" % (gc.mem_alloc() - before))
    ob = Outbox()  # reopen: scans every slot
    eq(len(ob), 1024)
    gc.collect()
    held = gc.mem_alloc() - before
    print("reopened with 1024 records: %d bytes" % held)
    ok(held < 16 * 1024, "after reopen: %d bytes" % held)
    n = 0
    for p in (0, 1, 2):
        for i in range(p, 1024, 3):
            h, payload, _ = ob.peek()
            eq(payload[:4], b"%04d" % i, "record %d" % n)
            ob.remove(h)
            n += 1
    eq((n, len(ob)), (1024, 0))
    gc.collect()
    print("heap: %d used, %d free after draining" % (gc.mem_alloc(), gc.mem_free()))
