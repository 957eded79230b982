"""Log lines on the serial console: `<ms since boot> <LEVEL> <source>: <message>`.

MicroPython has no logging module. Secrets never reach this module: callers log names,
never values, of credentials.
"""
from fl import ticks

DEBUG = 10
INFO = 20
WARN = 30
ERROR = 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR"}
level = INFO
# Optional hook (e.g. the diagnostics console) that sees every line that is printed.
tap = None


def _emit(lvl, src, msg, args):
    if lvl < level:
        return
    if args:
        try:
            msg = msg % args
        except (TypeError, ValueError):
            msg = "%s %r" % (msg, args)
    line = "%d %s %s: %s" % (ticks.ms(), _NAMES[lvl], src, msg)
    print(line)
    if tap is not None:
        tap(line)


class Logger:
    def __init__(self, src):
        self.src = src

    def debug(self, msg, *args):
        _emit(DEBUG, self.src, msg, args)

    def info(self, msg, *args):
        _emit(INFO, self.src, msg, args)

    def warn(self, msg, *args):
        _emit(WARN, self.src, msg, args)

    def error(self, msg, *args):
        _emit(ERROR, self.src, msg, args)
