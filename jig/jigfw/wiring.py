"""The jig's wiring map (hardware/jig.json, copied to the jig as jig.json): which jig pin
drives which device input, which resistor network, which power switch and sense lines.

The host's `firelink.board.jigcheck` checks a map in full against the device's board definition;
here the jig only refuses a map it could not serve safely (a pin twice, a value of the wrong
type), so that a broken file gives `ERR wiring: ...` answers instead of a crash or a relay
driven by two roles.
"""
import json

# The resistor network of an EOL channel, by line state: (connect, alarm, short) switch levels.
# Normal is the EOL resistor alone, active adds the alarm resistor across it, open takes the
# line away, short puts 0 ohm across the terminals.
EOL_SWITCHES = {
    "normal": (1, 0, 0),
    "active": (1, 1, 0),
    "open": (0, 0, 0),
    "short": (1, 0, 1),
}
CONTACT_STATES = ("closed", "open")
SENSE_NAMES = ("led_status", "led_fault", "buzzer")


class WiringError(Exception):
    pass


def _pin(value, what):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WiringError("%s: pin must be a number >= 0, not %r" % (what, value))
    return value


def _obj(value, what):
    if not isinstance(value, dict):
        raise WiringError("%s must be an object" % what)
    return value


class Wiring:
    """The parsed map. `contacts`: channel -> pin; `eol`: channel -> dict(connect, alarm,
    short pins, r_eol, r_alarm ohms); `power`, `en`, `boot`: dicts with `pin`; `sense`: output
    name -> pin; `rail`: the ADC pin reading the device's 3V3 rail (or None)."""

    def __init__(self, doc):
        doc = _obj(doc, "jig.json")
        self.name = str(doc.get("name", "?"))
        self.dut_board = str(doc.get("dut_board", "?"))
        self.doc = doc
        used = {}

        def use(pin, role):
            pin = _pin(pin, role)
            if pin in used:
                raise WiringError("pin %d used twice: %s and %s" % (pin, used[pin], role))
            used[pin] = role
            return pin

        self.contacts = {}
        for ch, spec in _obj(doc.get("contacts", {}), "contacts").items():
            self.contacts[ch] = use(_obj(spec, ch).get("pin"), ch)
        self.eol = {}
        dut = _obj(doc.get("dut", {}), "dut")
        self.pullup_ohm = dut.get("eol_pullup_ohm", 4700)
        self.adc_max = dut.get("adc_max", 4095)
        for ch, spec in _obj(doc.get("eol", {}), "eol").items():
            spec = _obj(spec, ch)
            if ch in self.contacts:
                raise WiringError("%s is both a contact and an EOL line" % ch)
            net = {}
            for sw in ("connect", "alarm", "short"):
                net[sw] = use(spec.get(sw), "%s %s switch" % (ch, sw))
            for r in ("r_eol", "r_alarm"):
                v = spec.get(r)
                if not isinstance(v, (int, float)) or v <= 0:
                    raise WiringError("%s: %s must be a resistance in ohms > 0, not %r" % (ch, r, v))
                net[r] = v
            self.eol[ch] = net
        self.power = self._line(doc, "power", use)
        self.en = self._line(doc, "en", use)
        self.boot = self._line(doc, "boot", use)
        self.rail = None
        self.rail_divider = 1.0
        if self.power is not None and self.power.get("sense") is not None:
            self.rail = use(self.power["sense"], "power sense")
            self.rail_divider = self.power.get("sense_divider", 1.0)
        self.sense = {}
        for name, pin in _obj(doc.get("sense", {}), "sense").items():
            if name not in SENSE_NAMES:
                raise WiringError("sense: unknown device output %r (known: %s)" % (name, ", ".join(SENSE_NAMES)))
            self.sense[name] = use(pin, "sense " + name)

    @staticmethod
    def _line(doc, key, use):
        spec = doc.get(key)
        if spec is None:
            return None
        spec = _obj(spec, key)
        out = dict(spec)
        out["pin"] = use(spec.get("pin"), key)
        out["active_high"] = bool(spec.get("active_high", True))
        return out

    def channels(self):
        return sorted(list(self.contacts) + list(self.eol))

    def summary(self):
        """The map as the MAP command reports it (compact, one line of JSON)."""
        out = {"name": self.name, "dut_board": self.dut_board,
               "contacts": self.contacts,
               "eol": {ch: {k: n[k] for k in ("connect", "alarm", "short", "r_eol", "r_alarm")}
                       for ch, n in self.eol.items()},
               "sense": self.sense}
        for key in ("power", "en", "boot"):
            line = getattr(self, key)
            if line is not None:
                out[key] = line["pin"]
        if self.rail is not None:
            out["rail"] = self.rail
        return out


def load(path):
    with open(path) as f:
        try:
            doc = json.load(f)
        except ValueError as e:
            raise WiringError("%s is not JSON: %s" % (path, e))
    return Wiring(doc)


def eol_count(pullup_ohm, adc_max, r_line):
    """The ADC count a device reads on an EOL input with `r_line` ohms from the terminal to
    ground (None: nothing, the line is open) behind its pull-up to the ADC's full scale."""
    if r_line is None:
        return adc_max
    return int(adc_max * r_line / (pullup_ohm + r_line) + 0.5)


def eol_resistance(net, connect, alarm, short):
    """Ohms across the line for switch levels (None: open)."""
    if short:
        return 0
    if not connect:
        return None
    r = net["r_eol"]
    if alarm:
        r = r * net["r_alarm"] / (r + net["r_alarm"])
    return r
