"""Assertion helpers for firmware tests: MicroPython's assert shows no values."""
import os


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what or "value", got, want))


def ok(cond, what="condition"):
    if not cond:
        raise AssertionError(what)


def raises(exc_type, fn, *args, **kw):
    """Calls fn and returns the exception it raised; fails if it raised nothing."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc_type.__name__, fn))


class Skip(Exception):
    pass


def skip(reason):
    raise Skip(reason)


def env(name, default=None):
    """A fixture value the pytest side passed in (see tests/firmware/conftest.py)."""
    v = os.getenv(name)
    return default if v is None else v


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def write(path, data):
    with open(path, "wb" if isinstance(data, (bytes, bytearray)) else "w") as f:
        f.write(data)
