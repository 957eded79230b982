# The unix port's jig HAL: switches become what the virtual device reads in sim/control.json.
FIXTURES = ("jig_wiring",)
from fwtest import eq, ok, write

from jigkit import control, ok_fields, sim_jig
from jigfw.proto import eol_counts


def test_contacts_and_eol_states_land_in_the_device_bands():
    jig = sim_jig()
    c = control()
    eq(c["inputs"]["in1"], 1, "open contact: the pull-up reads 1")
    eq(c["power"], False, "device off until asked")
    jig.handle("SET in1=closed in4=closed")
    c = control()
    eq((c["inputs"]["in1"], c["inputs"]["in4"], c["inputs"]["in2"]), (0, 0, 1))
    # Bands of hardware/board.json: short <= 250 < active <= 1300 < normal <= 3300 < open.
    bands = {"short": (0, 250), "active": (251, 1300), "normal": (1301, 3300), "open": (3301, 4095)}
    counts = eol_counts(jig.w, "in6")
    for state, (lo, hi) in bands.items():
        jig.handle("SET in6=" + state)
        got = control()["inputs"]["in6"]
        eq(got, counts[state], state)
        ok(lo <= got <= hi, "%s reads %d, outside %d..%d" % (state, got, lo, hi))


def test_merges_into_the_control_file_and_keeps_what_others_wrote():
    import os
    os.mkdir("dut")
    os.mkdir("dut/sim")
    write("dut/sim/control.json", '{"links": {"wifi": false}, "inputs": {"in9": 7}, "rssi": -70}')
    jig = sim_jig()
    jig.handle("SET in2=closed")
    c = control()
    eq(c["links"], {"wifi": False})
    eq(c["rssi"], -70)
    eq(c["inputs"]["in9"], 7)
    eq(c["inputs"]["in2"], 0)


def test_power_en_boot_lines_and_the_rail_from_the_supervisor():
    jig = sim_jig()
    jig.w.power["settle_ms"] = 100
    a = jig.handle("POWER on")  # no supervisor: nothing comes up
    ok(a.startswith("ERR POWER: switched on but the rail is at 0 mV"), a)
    eq(control()["power"], True)
    # A supervisor killed outright leaves "running" behind: its pid tells.
    write("dut/sim/supervisor.json", '{"state": "running", "pid": 999999999}')
    ok(jig.handle("POWER on").startswith("ERR POWER"), "a dead supervisor powers nothing")
    write("dut/sim/supervisor.json", '{"state": "running", "pid": 1}')  # /proc/1: always there
    write("dut/sim/outputs.json", '{"led_status": true, "buzzer": false}')
    eq(ok_fields(jig.handle("POWER on"))["rail_mv"], "3300")
    f = ok_fields(jig.handle("READ"))
    eq((f["led_status"], f["led_fault"], f["buzzer"]), ("1", "0", "0"))
    jig.handle("EN low")
    eq(control()["en"], False, "EN held: the line is low")
    jig.handle("BOOT low")
    eq(control()["boot"], False)
    jig.handle("EN high")
    eq(control()["en"], True)
    write("dut/sim/supervisor.json", '{"state": "unpowered", "pid": 1}')
    eq(ok_fields(jig.handle("POWER off"))["rail_mv"], "0")
    eq(ok_fields(jig.handle("READ"))["led_status"], "0", "an unpowered device lights nothing")


def test_no_device_directory_is_an_error_answer():
    jig = sim_jig()
    jig.hal.dir = "nowhere/at/all"
    a = jig.handle("SET in1=closed")
    ok(a.startswith("ERR SET failed: SimError cannot write"), a)
