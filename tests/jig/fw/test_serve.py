# The serial loop: garbage never ends it, every line gets exactly one answer.
FIXTURES = ("jig_wiring",)
import os

from fwtest import eq, ok

from jigfw import serve


class Port:
    def __init__(self, data):
        self.data = data
        self.i = 0
        self.out = []

    def read(self, n):
        b = self.data[self.i:self.i + n]
        self.i += n
        return b

    def write(self, s):
        self.out.append(s)


def answers(port):
    return "".join(port.out).split("\n")[:-1]


def test_garbage_lines_get_an_error_each_and_the_loop_goes_on():
    os.mkdir("dut")
    os.mkdir("dut/sim")
    junk = [b"\x00\x01\x02", b"\xff\xfe\xfd", b"x" * 5000, b"\x03\x03\x01", b"SET in1=\xe9", b"   ", b"\r",
            b"SET in1=closed"]
    port = Port(b"\n".join(junk) + b"\nCLOCK\r\n")
    serve.main(wiring_path=os.getenv("FL_JIG_JSON"), stdin=port, stdout=port, sim_dut="dut")
    got = answers(port)
    ok(got[0].startswith("READY jig "), got[0])
    eq(got[1:5], ["ERR not printable ASCII text"] * 2 + ["ERR line too long (max 200 bytes)",
                                                        "ERR not printable ASCII text"])
    eq(got[5], "ERR not printable ASCII text")
    ok(got[6].startswith("OK SET in1=closed "), got[6])
    ok(got[7].startswith("OK CLOCK "), got[7])
    eq(len(got), 8, "one answer per non-blank line")


def test_a_missing_or_broken_wiring_file_is_served_with_its_reason():
    with open("bad.json", "w") as f:
        f.write('{"contacts": {"in1": {"pin": -3}}}')
    port = Port(b"SET in1=closed\nVERSION\nREPL\nVERSION\n")
    serve.main(wiring_path="bad.json", stdin=port, stdout=port)
    got = answers(port)
    ok("wiring broken" in got[0], got[0])
    ok(got[1].startswith("ERR wiring: bad.json: in1: pin must be a number"), got[1])
    ok(got[2].startswith("OK VERSION jig=") and "wiring=broken" in got[2], got[2])
    eq(got[3], "OK REPL: leaving the jig loop")
    eq(len(got), 4, "nothing read after REPL")
