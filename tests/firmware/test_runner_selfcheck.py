# Proves the runner reports what happens on the device: a failing assertion fails the item.
from fwtest import eq, raises


def test_eq_passes_on_equal():
    eq(1 + 1, 2)


def test_eq_reports_values():
    e = raises(AssertionError, eq, 1, 2, "sum")
    eq(str(e), "sum: got 1, want 2")


async def test_async_test_runs_under_asyncio():
    import asyncio
    await asyncio.sleep_ms(1)
