# MicroPython script (tests/bench/bench_heap.py runs it in a virtual device's directory, the shipped
# build on MICROPYPATH): what the input loop allocates per scan while nothing changes.
#
# The real scan task (fl.inputs.Inputs.run) on the simulated board, the device's own inputs
# (fl.boot.load_config), for WINDOW_MS with the GC off; per scan:
#   total    every byte the heap handed out (micropython.mem_total), freed again or not
#   garbage  what is left for the GC (gc.mem_alloc grows while it is off)
# The simulator's own control-file poll (reading sim/control.json every 10 ms, the stand-in for
# the ESP32's pin hardware) is measured separately and taken out. The same scan with the wait the
# board used before (asyncio.wait_for_ms on the ThreadSafeFlag) is measured for comparison.
import asyncio
import gc
import sys

import micropython

from fl import boot, hal
from fl.inputs import Inputs

WINDOW_MS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000

board = hal.load()
cfg, problems = boot.load_config(board)
sim = {"total": 0, "garbage": 0}
_refresh = board.refresh


def measured_refresh(force=False):
    t, a = micropython.mem_total(), gc.mem_alloc()
    try:
        return _refresh(force)
    finally:
        sim["total"] += micropython.mem_total() - t
        sim["garbage"] += gc.mem_alloc() - a


board.refresh = measured_refresh
flag = asyncio.ThreadSafeFlag()


async def old_wait(timeout_ms):
    try:
        await asyncio.wait_for_ms(flag.wait(), timeout_ms)
    except asyncio.TimeoutError:
        pass


async def window(inputs, label):
    task = asyncio.create_task(inputs.run())
    await asyncio.sleep_ms(500)  # started and settled
    gc.collect()
    gc.disable()
    sim["total"] = sim["garbage"] = 0
    scans0, t0, a0 = inputs.progress, micropython.mem_total(), gc.mem_alloc()
    await asyncio.sleep_ms(WINDOW_MS)
    scans = inputs.progress - scans0
    total, garbage = micropython.mem_total() - t0, gc.mem_alloc() - a0
    gc.enable()
    task.cancel()
    await asyncio.sleep_ms(20)
    # This task's own sleep allocates nothing (asyncio.sleep_ms), so what was allocated in the
    # window is the scan loop's and the simulator's.
    print("%s scans %d total %d garbage %d sim_total %d sim_garbage %d" % (
        label, scans, total - sim["total"], garbage - sim["garbage"], sim["total"], sim["garbage"]))


async def main():
    await window(Inputs(board, cfg["inputs"]), "edgewait")
    inputs = Inputs(board, cfg["inputs"])
    board.wait_inputs = old_wait
    await window(inputs, "wait_for_ms")


asyncio.run(main())
