"""The input scan's wait: until a timeout, or sooner when an input edge happens, allocating
nothing per wait.

`asyncio.wait_for_ms(flag.wait(), ms)` (what the board used) makes a task, two coroutines and
an exception on every call: ≈2.1 KB of heap per input scan, 10 scans a second while idle, for
the GC to sweep. Here the scan task sleeps exactly as `asyncio.sleep_ms` does (MicroPython's
SingletonGenerator: the task goes on the scheduler's queue with a wake-up time, nothing is
allocated), and one long-lived watcher task waits on the ThreadSafeFlag the interrupt handler
sets; on an edge it moves the sleeping scan task to the front of the queue. Only edges cost
an allocation (the flag's wait), never an idle scan.

This reaches into MicroPython's asyncio scheduler (`core._task_queue`, `core.cur_task`), as its
own sleep_ms and Event do; tests/firmware/test_edgewait.py pins the behaviour it relies on.
"""
import asyncio
import time
from asyncio import core


class EdgeWait:
    def __init__(self):
        self.flag = asyncio.ThreadSafeFlag()  # set() from an IRQ handler or the simulator
        self._due = None  # wake-up time of the wait being entered
        self._sleeper = None  # the task asleep in the queue, until it wakes
        self._pending = False  # an edge came while nobody slept: the next wait ends at once
        self._stop = StopIteration()
        self._watcher = None
        self.edges = 0

    def wait(self, timeout_ms):
        """`await ew.wait(ms)`: back after `timeout_ms`, or as soon as an edge is seen."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        if self._pending:
            self._pending = False
            timeout_ms = 0
        # asyncio's own clock, not fl.ticks: this time goes into the scheduler's queue.
        self._due = time.ticks_add(time.ticks_ms(), timeout_ms)
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._due is not None:  # entering the wait: sleep until due
            self._sleeper = core.cur_task
            core._task_queue.push(self._sleeper, self._due)
            self._due = None
            return None
        self._sleeper = None  # woken, by the clock or by _watch
        self._stop.__traceback__ = None
        raise self._stop

    async def _watch(self):
        while True:
            await self.flag.wait()
            self.edges += 1
            t = self._sleeper
            self._sleeper = None
            # A task cancelled while asleep never comes back through __next__: only a task
            # that has not finished is still on the queue.
            if t is not None and not t.done():
                core._task_queue.remove(t)
                core._task_queue.push(t)
            else:
                self._pending = True
