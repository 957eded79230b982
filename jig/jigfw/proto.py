"""The jig's line protocol: one command per line in, exactly one answer line out.

    [#tag] VERB [args]         ->  [#tag] OK VERB ...   or   [#tag] ERR <reason>

An optional `#tag` (digits) is echoed so that a host can match answers to questions even
after line noise; the verb is case-insensitive. Every answer that changes something carries
the jig's own clock at the moment the change was made (`us=` ticks_us, `ms=` ticks_ms), so the
host can time what the device did from the edge the jig drove. Commands:

    VERSION                   firmware version, wiring name, device board, tick period
    MAP                       the wiring map as one line of JSON
    SET in1=closed in6=active drive inputs (dry contact: closed|open; EOL line:
                              normal|active|open|short); all given in one change, or none
    POWER on|off              switch the device's supply; waits (bounded) for its rail
    EN low|high|pulse [ms]    hold / release the device's EN (reset) line, or pulse it low
    BOOT low|high             hold / release the device's BOOT (GPIO0) line
    READ                      the device's LED and buzzer lines, and its rail in mV
    STATE                     what the jig drives now
    CLOCK                     the jig's ticks, to map its clock onto the host's
    HELP                      the verbs

A command never partly happens: arguments are checked before anything is driven.
"""
import json
import time

from jigfw import VERSION
from jigfw.wiring import CONTACT_STATES, EOL_SWITCHES, eol_resistance, eol_count

MAX_PULSE_MS = 5000
TICKS_PERIOD = time.ticks_add(0, -1) + 1
VERBS = ("VERSION", "MAP", "SET", "POWER", "EN", "BOOT", "READ", "STATE", "CLOCK", "HELP")


class CommandError(Exception):
    pass


def _stamp():
    return "us=%d ms=%d" % (time.ticks_us(), time.ticks_ms())


class Jig:
    def __init__(self, hal, wiring=None, wiring_error=None):
        self.hal = hal
        self.w = wiring
        self.wiring_error = wiring_error
        self.state = {}  # channel -> state name we drive
        self.power_on = False
        self.en_held = False
        self.boot_held = False
        if wiring is not None:
            self.defaults()

    # --- the safe state at power-up: nothing closed, lines open, device off, EN/BOOT free ---
    def defaults(self):
        w = self.w
        for ch, pin in w.contacts.items():
            self.hal.write(pin, 0)
            self.state[ch] = "open"
        for ch, net in w.eol.items():
            for sw in ("connect", "alarm", "short"):
                self.hal.write(net[sw], 0)
            self.state[ch] = "open"
        if w.power is not None:
            self.power_on = w.power.get("default") == "on"
            self._drive(w.power, self.power_on)
        for line in (w.en, w.boot):
            if line is not None:
                self._drive(line, False)
        self.hal.commit()

    def _drive(self, line, asserted):
        self.hal.write(line["pin"], 1 if asserted == line["active_high"] else 0)

    # --- the protocol ---
    def handle(self, line):
        """One line (str, without its newline) -> one answer (str), or None for a blank line."""
        line = line.strip()
        if not line:
            return None
        tag = ""
        if line[0] == "#":
            head, _, rest = line.partition(" ")
            if len(head) < 2 or not head[1:].isdigit():
                return "ERR bad tag %r: # then digits" % head
            tag, line = head + " ", rest.strip()
            if not line:
                return tag + "ERR no command after the tag"
        parts = line.split()
        verb, args = parts[0].upper(), parts[1:]
        if verb not in VERBS:
            return tag + "ERR unknown command %r (commands: %s)" % (parts[0][:20], " ".join(VERBS))
        if self.w is None and verb not in ("VERSION", "HELP", "CLOCK"):
            return tag + "ERR wiring: %s" % self.wiring_error
        try:
            return tag + "OK " + getattr(self, "_cmd_" + verb.lower())(args)
        except CommandError as e:
            return tag + "ERR %s: %s" % (verb, e)
        except Exception as e:  # a hardware fault must not end the jig: the host hears of it
            return tag + "ERR %s failed: %s %s" % (verb, type(e).__name__, e)

    def _no_args(self, args):
        if args:
            raise CommandError("takes no arguments")

    def _cmd_help(self, args):
        return "HELP " + " ".join(VERBS)

    def _cmd_version(self, args):
        self._no_args(args)
        if self.w is None:
            return "VERSION jig=%s wiring=broken period=%d" % (VERSION, TICKS_PERIOD)
        return "VERSION jig=%s wiring=%s dut=%s period=%d" % (VERSION, self.w.name, self.w.dut_board, TICKS_PERIOD)

    def _cmd_map(self, args):
        self._no_args(args)
        return "MAP " + json.dumps(self.w.summary())

    def _cmd_clock(self, args):
        self._no_args(args)
        return "CLOCK %s period=%d" % (_stamp(), TICKS_PERIOD)

    def _cmd_set(self, args):
        if len(args) == 2 and "=" not in args[0]:
            args = [args[0] + "=" + args[1]]
        if not args:
            raise CommandError("give channel=state pairs, e.g. SET in1=closed")
        wanted = []
        for a in args:
            ch, eq, st = a.partition("=")
            if not eq or not ch or not st:
                raise CommandError("%r is not channel=state" % a[:30])
            st = st.lower()
            if any(c == ch for c, _ in wanted):
                raise CommandError("%s given twice" % ch)
            if ch in self.w.contacts:
                if st not in CONTACT_STATES:
                    raise CommandError("%s is a dry contact: closed or open, not %r" % (ch, st[:20]))
            elif ch in self.w.eol:
                if st not in EOL_SWITCHES:
                    raise CommandError("%s is an EOL line: normal, active, open or short, not %r" % (ch, st[:20]))
            else:
                raise CommandError("no channel %r on this jig (channels: %s)" % (ch[:20], ", ".join(self.w.channels())))
            wanted.append((ch, st))
        # Make before break: switches that close go first, so a line passes through no state
        # that was not asked for (normal -> short never shows open on the way).
        levels = []
        for ch, st in wanted:
            if ch in self.w.contacts:
                levels.append((self.w.contacts[ch], 1 if st == "closed" else 0))
            else:
                net = self.w.eol[ch]
                for sw, level in zip(("connect", "alarm", "short"), EOL_SWITCHES[st]):
                    levels.append((net[sw], level))
        for pin, level in levels:
            if level:
                self.hal.write(pin, 1)
        for pin, level in levels:
            if not level:
                self.hal.write(pin, 0)
        self.hal.commit()
        stamp = _stamp()
        for ch, st in wanted:
            self.state[ch] = st
        return "SET %s %s" % (" ".join("%s=%s" % p for p in wanted), stamp)

    def _rail_mv(self):
        if self.w.rail is None:
            return None
        return int(self.hal.read_mv(self.w.rail) * self.w.rail_divider)

    def _cmd_power(self, args):
        if len(args) != 1 or args[0].lower() not in ("on", "off"):
            raise CommandError("POWER on or POWER off")
        line = self.w.power
        if line is None:
            raise CommandError("this jig has no power switch")
        on = args[0].lower() == "on"
        self._drive(line, on)
        self.hal.commit()
        stamp = _stamp()
        self.power_on = on
        if self.w.rail is None:
            return "POWER %s rail=unsensed %s" % (args[0].lower(), stamp)
        # The answer waits for the rail, so "off" means off: the host may rely on it at once.
        settle_ms = line.get("settle_ms", 2000)
        deadline = time.ticks_add(time.ticks_ms(), settle_ms)
        while True:
            mv = self._rail_mv()
            if (mv >= line.get("on_mv", 2800)) if on else (mv <= line.get("off_mv", 500)):
                return "POWER %s rail_mv=%d %s" % (args[0].lower(), mv, stamp)
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise CommandError("switched %s but the rail is at %d mV after %d ms" % (args[0].lower(), mv, settle_ms))
            time.sleep_ms(5)

    def _cmd_en(self, args):
        return self._hold("EN", self.w.en, "en_held", args)

    def _cmd_boot(self, args):
        return self._hold("BOOT", self.w.boot, "boot_held", args)

    def _hold(self, verb, line, attr, args):
        if line is None:
            raise CommandError("this jig has no %s line" % verb)
        what = args[0].lower() if args else ""
        if what == "pulse":
            ms = 100
            if len(args) == 2:
                if not args[1].isdigit() or not 1 <= int(args[1]) <= MAX_PULSE_MS:
                    raise CommandError("pulse length is 1..%d ms, not %r" % (MAX_PULSE_MS, args[1][:20]))
                ms = int(args[1])
            elif len(args) > 2:
                raise CommandError("%s pulse [ms]" % verb)
            self._drive(line, True)
            self.hal.commit()
            time.sleep_ms(ms)
            self._drive(line, False)
            self.hal.commit()
            setattr(self, attr, False)
            return "%s pulse %d %s" % (verb, ms, _stamp())  # the release: when the chip starts
        if len(args) != 1 or what not in ("low", "high"):
            raise CommandError("%s low, %s high or %s pulse [ms]" % (verb, verb, verb))
        self._drive(line, what == "low")
        self.hal.commit()
        setattr(self, attr, what == "low")
        return "%s %s %s" % (verb, what, _stamp())

    def _cmd_read(self, args):
        self._no_args(args)
        out = ["%s=%d" % (name, self.hal.read(pin)) for name, pin in sorted(self.w.sense.items())]
        mv = self._rail_mv()
        out.append("rail_mv=%s" % ("unsensed" if mv is None else mv))
        return "READ %s %s" % (" ".join(out), _stamp())

    def _cmd_state(self, args):
        self._no_args(args)
        out = ["%s=%s" % (ch, self.state[ch]) for ch in self.w.channels()]
        if self.w.power is not None:
            out.append("power=%s" % ("on" if self.power_on else "off"))
        if self.w.en is not None:
            out.append("en=%s" % ("low" if self.en_held else "high"))
        if self.w.boot is not None:
            out.append("boot=%s" % ("low" if self.boot_held else "high"))
        return "STATE " + " ".join(out)


def eol_counts(w, ch):
    """What the device should read on an EOL channel in each state (for MAP readers and tests)."""
    net = w.eol[ch]
    return {st: eol_count(w.pullup_ohm, w.adc_max, eol_resistance(net, *sw)) for st, sw in EOL_SWITCHES.items()}
