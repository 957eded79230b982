"""Runs one firmware test function inside the MicroPython unix port.

Invoked by tests/firmware/conftest.py as `micropython mprun.py <module> <test_name>`
in a fresh working directory, which is the device's filesystem for that test. Exit
status: 0 pass, 1 fail (device-side traceback on stderr), 77 skipped.
"""
import sys
import asyncio

from fwtest import Skip


def main():
    module_name, test_name = sys.argv[1], sys.argv[2]
    module = __import__(module_name)
    fn = getattr(module, test_name)
    try:
        result = fn()
        # An `async def` test returns a generator-based coroutine in MicroPython.
        if result is not None and hasattr(result, "send"):
            asyncio.run(result)
    except Skip as e:
        print("SKIP:", e)
        sys.exit(77)
    except BaseException as e:  # noqa: B902 - report everything, including SystemExit
        if isinstance(e, SystemExit):
            raise
        sys.print_exception(e, sys.stderr)
        sys.exit(1)


main()
