# Outbox cost per operation and heap for 1024 records (MicroPython: unix port or a board).
#
#   cd "$(mktemp -d)" && MICROPYPATH=/path/to/firmware:.frozen micropython /path/to/tests/bench/bench_outbox.py
#
# Works in the current directory (the device's filesystem), under bench_outbox_fs/.
import gc
import os
import sys
import time

from fl.outbox import Outbox

DIR = "bench_outbox_fs"
N = 1024
PAYLOAD = (b'{"id":"00000001-abcd","seq":1,"ts":1760000000,"tsync":true,"code":"380","q":"new",'
           b'"zone":12,"input":"in2","class":"fault","detail":"line open"}')


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        os.remove(path + "/" + n)
    os.rmdir(path)


def us_since(t0):
    return time.ticks_diff(time.ticks_us(), t0)


def main():
    rmtree(DIR)
    gc.collect()
    heap0 = gc.mem_alloc()
    t0 = time.ticks_us()
    ob = Outbox(DIR, capacity=N)
    t_create = us_since(t0)
    gc.collect()
    heap_index = gc.mem_alloc() - heap0

    t0 = time.ticks_us()
    for i in range(N):
        ob.put(1 + (i & 1), PAYLOAD)  # faults and status, alternating
    t_put = us_since(t0)
    gc.collect()
    heap_full = gc.mem_alloc() - heap0
    del ob
    gc.collect()

    t0 = time.ticks_us()
    ob = Outbox(DIR, capacity=N)
    t_open = us_since(t0)
    assert len(ob) == N

    # Peek after a change scans the index; a repeated peek is answered from its cache.
    t0 = time.ticks_us()
    ob.peek()
    t_peek_cold = us_since(t0)
    t0 = time.ticks_us()
    for _ in range(100):
        ob.peek()
    t_peek_hot = us_since(t0) / 100

    t_peek = t_mark = t_remove = 0
    for _ in range(N):
        t0 = time.ticks_us()
        h = ob.peek()[0]
        t_peek += us_since(t0)
        t0 = time.ticks_us()
        ob.mark_sent(h)
        t_mark += us_since(t0)
        t0 = time.ticks_us()
        ob.remove(h)
        t_remove += us_since(t0)
    assert len(ob) == 0

    # Fire jumping a full queue of faults: the put that makes room, then the peek that finds it.
    for i in range(N):
        ob.put(1, PAYLOAD)
    t0 = time.ticks_us()
    ob.put(0, PAYLOAD)
    t_put_full = us_since(t0)
    t0 = time.ticks_us()
    ob.peek()
    t_peek_fire = us_since(t0)

    print("outbox bench: %s, MicroPython %s, %d slots of %d B, payload %d B"
          % (sys.platform, ".".join(str(v) for v in sys.implementation.version[:3]), N, ob.slot_size,
             len(PAYLOAD)))
    print("  create (pre-allocate %d files)  %9d us" % ((N + 15) // 16, t_create))
    print("  open with %d records (scan)    %9d us" % (N, t_open))
    print("  put                              %9d us/op" % (t_put // N))
    print("  put into a full outbox (drop)    %9d us" % t_put_full)
    print("  peek after remove (scan + read)  %9d us/op" % (t_peek // N))
    print("  peek, first after open           %9d us" % t_peek_cold)
    print("  peek, repeated (cached)          %9.1f us/op" % t_peek_hot)
    print("  peek, fire behind %d faults    %9d us" % (N, t_peek_fire))
    print("  mark_sent                        %9d us/op" % (t_mark // N))
    print("  remove                           %9d us/op" % (t_remove // N))
    print("  heap: index %d B; with %d records queued %d B" % (heap_index, N, heap_full))
    del ob
    rmtree(DIR)


main()
