"""The jig's main loop: read a line from the serial port, answer it, forever.

Lines are bytes up to a newline, at most MAX_LINE long; anything longer, or not printable
ASCII, gets an `ERR` and is dropped, so line noise or a wrong baud rate costs one error answer,
never the jig. ^C is not an interrupt while serving (it is just a byte); the REPL command
leaves the loop for the MicroPython REPL (to update the jig with mpremote).
"""
import os
import sys

from jigfw import VERSION
from jigfw.proto import Jig
from jigfw.wiring import WiringError, load

MAX_LINE = 200


def make_hal(wiring, sim_dut=None):
    if sys.platform in ("linux", "darwin"):
        from jigfw.hal_sim import SimHal
        return SimHal(wiring, sim_dut)
    from jigfw.hal_pin import PinHal
    return PinHal(wiring)


def lines(read_byte):
    """Yields (True, line) for each line, or (False, reason) for a bad one."""
    buf = bytearray()
    too_long = False
    while True:
        b = read_byte()
        if not b:
            return
        c = b[0]
        if c == 0x0A:
            if too_long:
                yield False, "line too long (max %d bytes)" % MAX_LINE
            elif any(x < 0x20 or x > 0x7E for x in buf):
                yield False, "not printable ASCII text"
            else:
                yield True, buf.decode()
            buf = bytearray()
            too_long = False
        elif c == 0x0D:
            continue
        elif len(buf) < MAX_LINE:
            buf.append(c)
        else:
            too_long = True


def main(wiring_path=None, stdin=None, stdout=None, sim_dut=None):
    path = wiring_path or os.getenv("JIG_WIRING") or "jig.json"
    wiring, error = None, None
    try:
        wiring = load(path)
    except (OSError, WiringError) as e:
        error = "%s: %s" % (path, e)
    hal = make_hal(wiring, sim_dut)
    try:
        jig = Jig(hal, wiring, error)
    except Exception as e:  # the defaults could not be driven: serve, and say why on every command
        jig = Jig(hal, None, "cannot set the safe state: %s %s" % (type(e).__name__, e))
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout
    try:
        import micropython
        micropython.kbd_intr(-1)
    except (ImportError, AttributeError):
        pass
    stdout.write("READY jig %s%s\n" % (VERSION, "" if error is None else " (wiring broken: %s)" % error))
    try:
        for good, line in lines(lambda: stdin.read(1)):
            if not good:
                answer = "ERR " + line
            elif line.strip().upper() == "REPL":
                stdout.write("OK REPL: leaving the jig loop\n")
                return
            else:
                answer = jig.handle(line)
            if answer is not None:
                stdout.write(answer + "\n")
    finally:
        try:
            import micropython
            micropython.kbd_intr(3)
        except (ImportError, AttributeError):
            pass
