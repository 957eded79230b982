# fl.edgewait: the input scan's wait ends on time or on an edge, and an idle wait leaves nothing
# for the GC (what the board's wait_for_ms on a ThreadSafeFlag did: ≈1.3 KB of garbage a scan).
import asyncio
import gc
import time

from fwtest import eq, ok
from fl.edgewait import EdgeWait


async def test_wait_ends_after_its_timeout():
    ew = EdgeWait()
    t0 = time.ticks_ms()
    await ew.wait(50)
    took = time.ticks_diff(time.ticks_ms(), t0)
    ok(50 <= took < 1000, "took %d ms" % took)


async def test_an_edge_ends_the_wait_early():
    ew = EdgeWait()

    async def edge():
        await asyncio.sleep_ms(30)
        ew.flag.set()  # what the pin interrupt handler does

    asyncio.create_task(edge())
    t0 = time.ticks_ms()
    await ew.wait(5000)
    took = time.ticks_diff(time.ticks_ms(), t0)
    ok(took < 2000, "woken by the edge, took %d ms" % took)
    eq(ew.edges, 1)


async def test_an_edge_while_nobody_waits_ends_the_next_wait_at_once():
    ew = EdgeWait()
    await ew.wait(0)  # starts the watcher
    ew.flag.set()
    await asyncio.sleep_ms(20)  # the watcher sees it: nobody asleep
    t0 = time.ticks_ms()
    await ew.wait(5000)
    ok(time.ticks_diff(time.ticks_ms(), t0) < 2000, "the pending edge ended the wait")
    t0 = time.ticks_ms()
    await ew.wait(40)  # consumed: this one sleeps its time
    ok(time.ticks_diff(time.ticks_ms(), t0) >= 40, "slept")


async def test_a_cancelled_sleeper_is_never_touched_again():
    ew = EdgeWait()

    async def scanner():
        while True:
            await ew.wait(10000)

    t = asyncio.create_task(scanner())
    await asyncio.sleep_ms(20)
    t.cancel()
    await asyncio.sleep_ms(20)
    ew.flag.set()  # the watcher must not requeue the finished task
    await asyncio.sleep_ms(20)
    ok(t.done(), "cancelled")
    t0 = time.ticks_ms()
    await ew.wait(30)  # the scheduler still works; the edge is pending for this wait
    ok(time.ticks_diff(time.ticks_ms(), t0) < 1000, "pending edge")


async def test_idle_waits_leave_no_garbage():
    ew = EdgeWait()
    for _ in range(3):
        await ew.wait(1)
    n = 200
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(n):
            await ew.wait(1)
        per_wait = (gc.mem_alloc() - before) / n
    finally:
        gc.enable()
    ok(per_wait < 8, "%.1f bytes of garbage per idle wait" % per_wait)  # wait_for_ms: ~1300
