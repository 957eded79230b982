# The watchdog is fed only while every watched task makes progress.
import asyncio

from fwtest import eq, ok

from fl.hal.sim import Board
from fl.watchdog import Watchdog


class Task:
    def __init__(self):
        self.progress = 0


async def _tick(task, n, period_ms):
    for _ in range(n):
        task.progress += 1
        await asyncio.sleep_ms(period_ms)


async def test_fed_while_every_task_progresses():
    board = Board()
    a, b = Task(), Task()
    wd = Watchdog(board, timeout_ms=300, period_ms=20)
    wd.watch("a", a, allowance_ms=100)
    wd.watch("b", b, allowance_ms=100)
    runner = asyncio.create_task(wd.run())
    await asyncio.gather(_tick(a, 30, 20), _tick(b, 30, 20))  # 600 ms: twice the timeout
    runner.cancel()
    eq(wd.stalled, None, "stalled task")


async def test_stalled_task_stops_feeding_and_the_board_resets():
    board = Board()
    resets = []
    # The sim's reset ends the process (status 3, restarted by `firelink virtual`); here we only
    # record it, so the test can look at what the watchdog decided.
    board.reset = lambda cause: resets.append(cause)
    alive, stuck = Task(), Task()
    wd = Watchdog(board, timeout_ms=200, period_ms=20)
    wd.watch("alive", alive, allowance_ms=100)
    wd.watch("stuck", stuck, allowance_ms=100)
    runner = asyncio.create_task(wd.run())
    await _tick(alive, 10, 20)
    eq(resets, [], "no reset within the allowance + timeout")
    await _tick(alive, 25, 20)
    runner.cancel()
    eq(wd.stalled, "stuck", "stalled task")
    ok(resets and resets[0] == "watchdog", "reset after the stall: %r" % resets)
