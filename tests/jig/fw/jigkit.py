"""Helpers for the jig firmware tests: a jig on a recording HAL, and one on the simulated
device wiring in this test's directory (the unix port's working directory)."""
import json
import os

from jigfw.hal_sim import SimHal
from jigfw.proto import Jig
from jigfw.wiring import Wiring




def wiring_doc():
    with open(os.getenv("FL_JIG_JSON")) as f:
        return json.load(f)


class RecordingHal:
    """Pin levels in memory, every write and commit in order: what a PinHal would have done."""

    def __init__(self):
        self.levels = {}
        self.log = []
        self.mv = {}
        self.inputs = {}

    def write(self, pin, level):
        self.levels[pin] = level
        self.log.append((pin, level))

    def commit(self):
        self.log.append("commit")

    def read(self, pin):
        return self.inputs.get(pin, 0)

    def read_mv(self, pin):
        return self.mv.get(pin, 0)


def recording_jig(doc=None):
    hal = RecordingHal()
    return Jig(hal, Wiring(doc or wiring_doc())), hal


def sim_jig(doc=None):
    """A jig whose HAL drives a virtual device in ./dut (its sim/ files)."""
    for d in ("dut", "dut/sim"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    w = Wiring(doc or wiring_doc())
    return Jig(SimHal(w, "dut"), w)


def control():
    with open("dut/sim/control.json") as f:
        return json.load(f)


def ok_fields(answer):
    """'OK VERB a=1 b=x' -> {'a': '1', 'b': 'x'}; fails on anything but OK."""
    if not answer.startswith("OK "):
        raise AssertionError("not OK: %r" % answer)
    out = {}
    for part in answer.split()[2:]:
        k, _, v = part.partition("=")
        out[k] = v
    return out
