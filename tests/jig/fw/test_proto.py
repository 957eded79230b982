# The jig's protocol: one answer per line, inputs driven as one change, errors that change nothing.
FIXTURES = ("jig_wiring",)
from fwtest import eq, ok

from jigkit import ok_fields, recording_jig
from jigfw.proto import Jig
from jigfw.wiring import Wiring, WiringError
import jigkit


def test_power_up_state_is_safe_every_switch_open_device_off():
    jig, hal = recording_jig()
    ok(all(level == 0 for level in hal.levels.values()), "every pin low at start: %r" % hal.levels)
    eq(hal.log[-1], "commit", "the safe state is applied")
    st = jig.handle("STATE")
    ok(st.startswith("OK STATE in1=open "), st)
    ok("power=off en=high boot=high" in st, st)


def test_set_drives_contacts_and_eol_networks_as_one_change_and_stamps_the_edge():
    jig, hal = recording_jig()
    w = jig.w
    hal.log.clear()
    a = jig.handle("SET in1=closed in6=active in7=short")
    f = ok_fields(a)
    eq((f["in1"], f["in6"], f["in7"]), ("closed", "active", "short"), a)
    ok(int(f["us"]) >= 0 and int(f["ms"]) >= 0, "timestamps: " + a)
    eq(hal.log.count("commit"), 1, "one commit for the whole change")
    eq(hal.log[-1], "commit")
    eq(hal.levels[w.contacts["in1"]], 1, "in1 closed")
    n6, n7 = w.eol["in6"], w.eol["in7"]
    eq((hal.levels[n6["connect"]], hal.levels[n6["alarm"]], hal.levels[n6["short"]]), (1, 1, 0), "in6 active")
    eq((hal.levels[n7["connect"]], hal.levels[n7["short"]]), (1, 1), "in7 short")
    # Make before break: from short to open, nothing turns on, the short switch turns off.
    hal.log.clear()
    jig.handle("SET in7=normal")
    writes = [x for x in hal.log if x != "commit"]
    ons = [i for i, (_, lv) in enumerate(writes) if lv]
    offs = [i for i, (_, lv) in enumerate(writes) if not lv]
    ok(max(ons) < min(offs), "switches closing go before those opening: %r" % writes)
    eq(jig.handle("SET in1 open").split()[2], "in1=open", "two-word form")


def test_bad_commands_get_one_error_each_and_change_nothing():
    jig, hal = recording_jig()
    jig.handle("SET in1=closed")
    before = dict(hal.levels)
    bad = [
        ("SET in1=closed in9=open", "no channel 'in9'"),
        ("SET in1=short", "in1 is a dry contact"),
        ("SET in6=closed", "in6 is an EOL line"),
        ("SET in1=open in1=closed", "given twice"),
        ("SET in1", "not channel=state"),
        ("SET", "give channel=state"),
        ("POWER maybe", "POWER on or POWER off"),
        ("EN pulse 0", "pulse length"),
        ("EN pulse 99999", "pulse length"),
        ("EN sideways", "EN low"),
        ("READ now", "takes no arguments"),
        ("FROB", "unknown command 'FROB'"),
        ("#x1 READ", "bad tag"),
        ("#7", "no command after the tag"),
    ]
    for line, why in bad:
        a = jig.handle(line)
        ok(a.startswith("ERR ") or a.startswith("#7 ERR "), "%r -> %r" % (line, a))
        ok(why in a, "%r -> %r (wanted %r)" % (line, a, why))
    eq(hal.levels, before, "nothing driven by a refused command")
    eq(jig.handle("   "), None, "a blank line is no command")
    eq(jig.handle("#42 set in1=open")[:7], "#42 OK ", "the tag comes back, the verb in any case")


def test_power_waits_for_the_rail_and_says_when_it_does_not_follow():
    jig, hal = recording_jig()
    w = jig.w
    hal.mv[w.rail] = 1650  # 3.3 V through the 2:1 divider
    f = ok_fields(jig.handle("POWER on"))
    eq(f["rail_mv"], "3300")
    eq(hal.levels[w.power["pin"]], 1)
    a = jig.handle("POWER off")  # the rail stays up: a stuck MOSFET
    ok(a.startswith("ERR POWER: switched off but the rail is at 3300 mV"), a)
    eq(hal.levels[w.power["pin"]], 0, "the switch is off all the same")
    hal.mv[w.rail] = 0
    eq(ok_fields(jig.handle("POWER off"))["rail_mv"], "0")


def test_en_and_boot_hold_and_pulse_and_read_the_outputs():
    jig, hal = recording_jig()
    w = jig.w
    jig.handle("EN low")
    eq(hal.levels[w.en["pin"]], 1, "EN held low: the open-drain switch on")
    ok("en=low" in jig.handle("STATE"))
    hal.log.clear()
    a = jig.handle("EN pulse 20")
    ok(a.startswith("OK EN pulse 20 us="), a)
    eq([x for x in hal.log if x != "commit"], [(w.en["pin"], 1), (w.en["pin"], 0)], "asserted then released")
    eq(hal.levels[w.en["pin"]], 0)
    jig.handle("BOOT low")
    eq(hal.levels[w.boot["pin"]], 1)
    jig.handle("BOOT high")
    eq(hal.levels[w.boot["pin"]], 0)
    hal.inputs[w.sense["led_fault"]] = 1
    f = ok_fields(jig.handle("READ"))
    eq((f["led_status"], f["led_fault"], f["buzzer"]), ("0", "1", "0"))


def test_version_map_and_clock():
    jig, hal = recording_jig()
    v = ok_fields(jig.handle("VERSION"))
    eq(v["wiring"], "firelink-jig-v1")
    ok(int(v["period"]) > 0, "tick period")
    a = jig.handle("MAP")
    ok(a.startswith("OK MAP {"), a)
    import json
    m = json.loads(a[len("OK MAP "):])
    eq(m["contacts"]["in1"], jig.w.contacts["in1"])
    eq(m["eol"]["in6"]["r_eol"], 4700)
    c = ok_fields(jig.handle("CLOCK"))
    ok("us" in c and "ms" in c and c["period"] == v["period"], repr(c))


def test_a_broken_wiring_map_is_refused_and_the_jig_says_so():
    doc = jigkit.wiring_doc()
    doc["contacts"]["in2"]["pin"] = doc["contacts"]["in1"]["pin"]
    try:
        Wiring(doc)
    except WiringError as e:
        ok("used twice" in str(e), str(e))
    else:
        raise AssertionError("a pin used twice was accepted")
    jig = Jig(jigkit.RecordingHal(), None, "jig.json: pin 2 used twice")
    ok(jig.handle("SET in1=closed").startswith("ERR wiring: jig.json: pin 2 used twice"))
    ok(jig.handle("VERSION").startswith("OK VERSION jig="), "still says who it is")
