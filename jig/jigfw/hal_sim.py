"""The jig's hardware on the MicroPython unix port: the virtual device's wiring, simulated.

Pins are levels in memory; `commit()` works out what those switches do to the device (a
closed opto-MOSFET reads 0 on its pulled-up input, an EOL network gives the ADC count of its
resistors behind the device's pull-up, the supply switch and the EN/BOOT lines) and writes it
into the virtual device's `sim/control.json`, the file its board simulation (fl/hal/sim.py)
and its supervisor (firelink.virtual.supervisor: power, EN, BOOT) already watch. The sense
pins read back the device's `sim/outputs.json` (LEDs, buzzer), and the rail sense its
supervisor's state: a running firmware means a powered device.

The device's directory comes from $JIG_SIM_DUT. The file is replaced atomically (written
beside, then renamed); the jig merges its keys into what is there. It takes no lock: while a
jig drives a virtual device, nothing else should write that device's control file.
"""
import json
import os

from jigfw.wiring import eol_count, eol_resistance

CONTROL = "sim/control.json"
CONTROL_SEQ = "sim/control.seq"  # the change counter the virtual device polls (fl/hal/sim.py)
OUTPUTS = "sim/outputs.json"
SUPERVISOR = "sim/supervisor.json"
RAIL_MV = 3300


class SimError(Exception):
    pass


def _read_json(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class SimHal:
    def __init__(self, wiring, dut_dir=None):
        self.w = wiring
        self.dir = dut_dir if dut_dir is not None else os.getenv("JIG_SIM_DUT")
        self.levels = {}

    def _path(self, rel):
        if not self.dir:
            raise SimError("no virtual device: set $JIG_SIM_DUT to its directory")
        return self.dir + "/" + rel

    def write(self, pin, level):
        self.levels[pin] = 1 if level else 0

    def _asserted(self, line):
        return line is not None and self.levels.get(line["pin"], 0) == (1 if line["active_high"] else 0)

    def world(self):
        """What the switches do to the device, in control.json's terms."""
        w = self.w
        inputs = {}
        for ch, pin in w.contacts.items():
            inputs[ch] = 0 if self.levels.get(pin, 0) else 1  # closed contact: the pull-up reads 0
        for ch, net in w.eol.items():
            r = eol_resistance(net, *(self.levels.get(net[sw], 0) for sw in ("connect", "alarm", "short")))
            inputs[ch] = eol_count(w.pullup_ohm, w.adc_max, r)
        out = {"inputs": inputs}
        if w.power is not None:
            out["power"] = self._asserted(w.power)
        if w.en is not None:
            out["en"] = not self._asserted(w.en)  # the line's level: held low means in reset
        if w.boot is not None:
            out["boot"] = not self._asserted(w.boot)
        return out

    def commit(self):
        path = self._path(CONTROL)
        doc = _read_json(path)
        world = self.world()
        inputs = doc.get("inputs") if isinstance(doc.get("inputs"), dict) else {}
        inputs.update(world.pop("inputs"))
        doc["inputs"] = inputs
        doc.update(world)
        tmp = path + ".jig"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(doc))
            os.rename(tmp, path)
        except OSError as e:
            raise SimError("cannot write %s: %s" % (path, e))
        self._bump()

    def _bump(self):
        """Counts the change in place, as the host tools do: once the counter exists the virtual
        device re-reads control.json only when it moves."""
        try:
            f = open(self._path(CONTROL_SEQ), "r+b")
        except OSError:
            return  # no counter: the device reads control.json on every poll
        try:
            old = f.read(8)
            n = (int.from_bytes(old, "little") + 1 if len(old) == 8 else 1) % (1 << 63)
            f.seek(0)
            f.write(n.to_bytes(8, "little"))
        finally:
            f.close()

    def _powered(self):
        st = _read_json(self._path(SUPERVISOR))
        if st.get("state") != "running" or not st.get("pid"):
            return False
        try:
            os.stat("/proc/%d" % st["pid"])  # a supervisor killed outright leaves "running" behind
        except OSError:
            return False
        return True

    def read(self, pin):
        for name, p in self.w.sense.items():
            if p == pin:
                return 1 if self._powered() and _read_json(self._path(OUTPUTS)).get(name) else 0
        return self.levels.get(pin, 0)

    def read_mv(self, pin):
        if pin == self.w.rail:
            return int(RAIL_MV / self.w.rail_divider) if self._powered() else 0
        raise SimError("pin %d has no analogue signal" % pin)
