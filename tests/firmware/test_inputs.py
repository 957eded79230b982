# fl.inputs: contact types, debounce, EOL supervision, boot states, the event mapping. Exact timing uses
# a fake board and a fake clock (fl.inputs._now replaced, the fake wait_inputs advances it); the end-to-end
# cases drive the real sim board through sim/control.json in real time.
import asyncio
import json

from fwtest import eq, ok
from fl import inputs, store, ticks
from fl.health import Health
from fl.inputs import Inputs, event_for, CODES, BATTERY_EVERY_MS, IDLE_MS, SETTLE_MS, LINE_FAULT_MS

EOL = {"short_max": 250, "active_max": 1300, "normal_max": 3300}


class Clock:
    def __init__(self):
        self.t = 1000

    def __call__(self):
        return self.t


class Pin:
    def __init__(self):
        self.v = 1  # pull-up, contact open
        self.fail = False

    def value(self):
        if self.fail:
            raise OSError(5)
        return self.v


class Adc:
    def __init__(self):
        self.raw = 2100

    def read_raw(self):
        return self.raw


class FakeBoard:
    def __init__(self, clock):
        self.clock = clock
        self.pins = {}
        self.adcs = {}
        self.mv = 3900
        self.made = []

    def digital_input(self, ch):
        self.made.append(ch)
        return self.pins.setdefault(ch, Pin())

    def analog_input(self, ch):
        self.made.append(ch)
        return self.adcs.setdefault(ch, Adc())

    def battery_mv(self):
        return self.mv

    def board_info(self):
        return {"eol": EOL, "battery": {"low_mv": 3450}}

    async def wait_inputs(self, timeout_ms):
        self.clock.t += timeout_ms


def spec(name, kind="fire", channel="in1", contact="no", debounce_ms=50, eol=False, zone=1):
    return {"name": name, "kind": kind, "channel": channel, "contact": contact,
            "debounce_ms": debounce_ms, "zone": zone, "eol": eol}


class Rig:
    """Inputs on a fake board with a fake clock; records (t, name, old, new)."""

    def __init__(self, *specs, health=None):
        self.clock = Clock()
        inputs._now = self.clock
        self.board = FakeBoard(self.clock)
        self.changes = []
        self.inp = Inputs(self.board, list(specs), EOL, self.on_change, battery_low_mv=3450, health=health)

    def on_change(self, s, old, new):
        self.changes.append((self.clock.t, s["name"], old, new))

    def pin(self, ch="in1"):
        return self.board.pins[ch]

    def adc(self, ch="in6"):
        return self.board.adcs[ch]

    def scan_until(self, t_end):
        """Scans as run() would (at the interval scan() asks for) until the clock reaches t_end."""
        while self.clock.t < t_end:
            wait = self.inp.scan()
            self.clock.t += wait
        return self.changes

    def scan_every(self, step, t_end):
        while self.clock.t < t_end:
            self.inp.scan()
            self.clock.t += step


# --- contact types ---

def test_no_contact_active_when_closed():
    r = Rig(spec("f", debounce_ms=0))
    r.inp.prime()
    eq(r.inp.states(), {"f": "normal"}, "open contact")
    r.pin().v = 0
    r.inp.scan()
    eq(r.inp.states(), {"f": "active"}, "closed contact")
    eq(r.changes, [(1000, "f", "normal", "active")])


def test_nc_contact_active_when_open():
    r = Rig(spec("t", "tamper", contact="nc", debounce_ms=0))
    r.pin().v = 0  # closed: the normal state of a normally closed contact
    r.inp.prime()
    eq(r.inp.states(), {"t": "normal"})
    eq(r.changes, [], "normal at boot is not reported")
    r.pin().v = 1
    r.inp.scan()
    eq(r.inp.states(), {"t": "active"})


def test_pins_made_once():
    r = Rig(spec("a"), spec("b", channel="in6", eol=True), spec("c", "battery", channel="battery"))
    r.inp.prime()
    r.scan_until(2000)
    eq(r.board.made, ["in1", "in6"], "each channel configured once, battery read through the board")


# --- boot ---

def test_boot_states_definite_and_abnormal_ones_reported():
    r = Rig(spec("f"), spec("m", "mains", channel="in5", contact="nc", debounce_ms=10000),
            spec("z", "smoke", channel="in6", eol=True), spec("t", "tamper", channel="in4"),
            spec("b", "battery", channel="battery", debounce_ms=30000))
    r.board.pins["in5"] = Pin()  # open: mains lost
    r.board.adcs["in6"] = Adc()
    r.board.adcs["in6"].raw = 4095  # line cut
    r.board.mv = 3300  # battery low
    r.inp = Inputs(r.board, r.inp.specs, EOL, r.on_change, battery_low_mv=3450)
    r.inp.prime()
    eq(r.inp.states(), {"f": "normal", "m": "active", "z": "open", "t": "normal", "b": "active"})
    eq([c[1:] for c in r.changes], [("m", "boot", "active"), ("z", "boot", "open"), ("b", "boot", "active")])


async def test_start_waits_for_steady_readings_then_reports():
    r = Rig(spec("f"), spec("g", channel="in2"))
    r.pin("in1").v = 0  # fire active at power-up
    t0 = r.clock.t
    await r.inp.start()
    eq(r.changes, [(t0 + 50, "f", "boot", "active")], "reported once steady for 50 ms")
    ok(r.inp.started, "started")
    eq(r.inp.states(), {"f": "active", "g": "normal"})


async def test_start_is_bounded_when_an_input_chatters():
    r = Rig(spec("f"))
    t0 = r.clock.t
    pin = r.pin()
    real_wait = r.board.wait_inputs

    async def chatter(timeout_ms):
        pin.v ^= 1
        await real_wait(timeout_ms)
    r.board.wait_inputs = chatter
    await r.inp.start(settle_ms=100)
    ok(r.clock.t - t0 <= 100 + SETTLE_MS, "start gave up after settle_ms")
    ok(r.inp.states()["f"] in ("normal", "active"), "still definite")


# --- debounce ---

def test_bounce_shorter_than_debounce_is_ignored():
    r = Rig(spec("f", debounce_ms=50))
    r.inp.prime()
    r.pin().v = 0
    r.scan_every(5, 1045)  # closed for 45 ms
    r.pin().v = 1
    r.scan_until(3000)
    eq(r.changes, [], "nothing reported")
    eq(r.inp.states(), {"f": "normal"})


def test_stable_change_reported_once_at_debounce():
    r = Rig(spec("f", debounce_ms=50))
    r.inp.prime()
    r.pin().v = 0
    r.scan_until(5000)
    eq(r.changes, [(1050, "f", "normal", "active")], "exactly at debounce_ms, once")
    r.pin().v = 1
    t = r.clock.t
    r.scan_until(t + 1000)
    eq(r.changes[1:], [(t + 50, "f", "active", "normal")], "restore debounced the same way")


def test_fire_reported_within_debounce_plus_one_scan_of_the_edge():
    r = Rig(spec("f", debounce_ms=50))
    r.inp.prime()
    eq(r.inp.scan(), IDLE_MS, "idle scans are IDLE_MS apart")
    edge = r.clock.t + 37  # the contact closes between two idle scans
    r.clock.t += IDLE_MS
    r.pin().v = 0
    r.scan_until(edge + 1000)
    ok(r.changes, "reported")
    delay = r.changes[0][0] - edge
    ok(50 <= delay <= 50 + IDLE_MS, "delay %d ms" % delay)


def test_bounce_restarts_the_debounce():
    r = Rig(spec("x", "fault", debounce_ms=2000))
    r.inp.prime()
    r.pin().v = 0
    r.scan_every(5, 2900)   # 1900 ms closed
    r.pin().v = 1
    r.scan_every(5, 2910)   # bounce back
    r.pin().v = 0
    r.scan_every(5, 4905)   # 1995 ms closed again: not yet
    eq(r.changes, [])
    r.scan_every(5, 5000)
    eq(r.changes, [(4910, "x", "normal", "active")])


def test_zero_debounce_reports_on_first_scan():
    r = Rig(spec("f", debounce_ms=0))
    r.inp.prime()
    r.pin().v = 0
    r.inp.scan()
    eq(r.changes, [(1000, "f", "normal", "active")])


def test_scan_rate_and_progress():
    r = Rig(spec("f"))
    r.inp.prime()
    p0 = r.inp.progress
    eq(r.inp.scan(), IDLE_MS, "idle")
    r.pin().v = 0
    eq(r.inp.scan(), SETTLE_MS, "settling: sample fast")
    eq(r.inp.progress, p0 + 2, "progress counts scans")


# --- EOL supervision ---

def test_every_eol_state_at_the_thresholds():
    cases = ((0, "short"), (249, "short"), (250, "active"), (620, "active"), (1299, "active"), (1300, "normal"),
             (2100, "normal"), (3299, "normal"), (3300, "open"), (4095, "open"))
    for raw, want in cases:
        r = Rig(spec("z", "smoke", channel="in6", eol=True))
        r.board.adcs["in6"] = Adc()
        r.board.adcs["in6"].raw = raw
        r.inp = Inputs(r.board, r.inp.specs, EOL, r.on_change)
        r.inp.prime()
        eq(r.inp.states()["z"], want, "raw %d" % raw)


def test_eol_takes_thresholds_from_the_board_when_not_given():
    clock = Clock()
    inputs._now = clock
    board = FakeBoard(clock)
    inp = Inputs(board, [spec("z", channel="in6", eol=True)])
    board.adcs["in6"].raw = 100
    inp.prime()
    eq(inp.states(), {"z": "short"})


def test_line_trouble_confirmed_longer_than_fire():
    r = Rig(spec("z", "fire", channel="in6", eol=True, debounce_ms=50))
    r.inp.prime()
    r.adc().raw = 4095
    t0 = r.clock.t
    r.scan_until(t0 + LINE_FAULT_MS + 100)
    eq(r.changes, [(t0 + LINE_FAULT_MS, "z", "normal", "open")], "open needs LINE_FAULT_MS")
    r.adc().raw = 620
    t1 = r.clock.t
    r.scan_until(t1 + 200)
    eq(r.changes[1:], [(t1 + 50, "z", "open", "active")], "leaving trouble: the input's own debounce")


def test_eol_flicker_through_active_is_not_fire():
    # A wire being cut may read "active" for a moment; shorter than debounce, it never reports.
    r = Rig(spec("z", "fire", channel="in6", eol=True, debounce_ms=50))
    r.inp.prime()
    r.adc().raw = 620
    r.scan_every(5, r.clock.t + 20)
    r.adc().raw = 4095
    r.scan_until(r.clock.t + 2000)
    eq([c[2:] for c in r.changes], [("normal", "open")])


def test_battery_low_with_hysteresis():
    r = Rig(spec("b", "battery", channel="battery", debounce_ms=30000))
    r.inp.prime()
    r.board.mv = 3400
    t0 = r.clock.t
    r.scan_until(t0 + 32000)
    eq([c[2:] for c in r.changes], [("normal", "active")])
    ok(r.changes[0][0] - t0 <= 30000 + BATTERY_EVERY_MS, "low reported within debounce + one battery read")
    r.board.mv = 3500  # above low_mv but inside the hysteresis band: still low
    r.scan_until(r.clock.t + 32000)
    eq(r.inp.states(), {"b": "active"})
    r.board.mv = 3550
    r.scan_until(r.clock.t + 32000)
    eq([c[2:] for c in r.changes], [("normal", "active"), ("active", "normal")])


def test_battery_read_at_most_every_second():
    r = Rig(spec("b", "battery", channel="battery", debounce_ms=30000))
    reads = []
    real = r.board.battery_mv

    def counting():
        reads.append(r.clock.t)
        return real()
    r.board.battery_mv = counting
    r.inp.prime()
    r.board.mv = 3000  # settling: the scan runs every SETTLE_MS, the battery is read once a second
    r.scan_until(r.clock.t + 5000)
    eq(reads, [1000, 2000, 3000, 4000, 5000])


# --- faults inside the module ---

def test_read_failure_keeps_state_and_raises_a_health_fault():
    h = Health()
    r = Rig(spec("f", debounce_ms=0), spec("g", channel="in2", debounce_ms=0), health=h)
    r.inp.prime()
    r.pin("in1").fail = True
    r.pin("in2").v = 0
    r.inp.scan()
    r.inp.scan()
    eq(r.inp.states(), {"f": "normal", "g": "active"}, "the other input still works")
    eq(h.faults, {"input_read": "f"})
    eq(r.inp.read_errors, 2)
    r.pin("in1").fail = False
    r.inp.scan()
    eq(h.faults, {}, "fault cleared once readable")


def test_callback_error_does_not_stop_scanning():
    h = Health()
    r = Rig(spec("f", debounce_ms=0), spec("g", channel="in2", debounce_ms=0), health=h)

    def bad(s, old, new):
        if s["name"] == "f":
            raise ValueError("app bug")
        r.changes.append((r.clock.t, s["name"], old, new))
    r.inp._on_change = bad
    r.inp.prime()
    r.pin("in1").v = 0
    r.pin("in2").v = 0
    eq(r.inp.scan(), IDLE_MS, "a failing report is retried at the idle rate, not in a hot loop")
    eq(r.inp.states(), {"f": "normal", "g": "active"}, "only the reported change is committed")
    eq([c[1:] for c in r.changes], [("g", "normal", "active")], "the other input still reported")
    eq(h.counters.get("input_callback_error"), 1)


class Flaky:
    """An on_change that raises (as a MemoryError in the recorder would) the first `n` times."""

    def __init__(self, rig, n):
        self.rig, self.n, self.calls = rig, n, 0

    def __call__(self, s, old, new):
        self.calls += 1
        if self.calls <= self.n:
            raise MemoryError("memory allocation failed")
        self.rig.changes.append((self.rig.clock.t, s["name"], old, new))


def test_fire_whose_recording_raises_is_retried_each_scan_and_reported_once():
    h = Health()
    r = Rig(spec("f", debounce_ms=50), health=h)
    r.inp._on_change = flaky = Flaky(r, 3)
    r.inp.prime()
    r.pin().v = 0
    t_edge = r.clock.t
    waits = []
    while not r.changes and r.clock.t < t_edge + 2000:
        eq(r.inp.states(), {"f": "normal"}, "not active before the event exists")
        waits.append(r.inp.scan())
        r.clock.t += waits[-1]
    eq(flaky.calls, 4, "three failures, then reported")
    eq([c[1:] for c in r.changes], [("f", "normal", "active")], "reported once, after it stopped raising")
    eq(r.changes[0][0], t_edge + 50 + 3 * IDLE_MS, "retried on each following (idle-paced) scan")
    eq(r.inp.states(), {"f": "active"}, "committed once reported")
    eq(h.counters.get("input_callback_error"), 3, "each failure counted")
    eq(h.counters.get("fault_input_event"), 1, "one input_event fault episode")
    eq(h.faults, {}, "fault cleared once reported")
    eq(r.inp.event_errors, 3)
    r.scan_until(r.clock.t + 1000)
    eq(len(r.changes), 1, "not reported again")
    eq(flaky.calls, 4, "no further calls")


def test_owed_fire_is_reported_even_if_the_input_restores_meanwhile():
    h = Health()
    r = Rig(spec("f", debounce_ms=0), health=h)
    r.inp._on_change = Flaky(r, 2)
    r.inp.prime()
    r.pin().v = 0
    r.inp.scan()  # confirmed, recording fails
    ok("input_event" in h.faults, "fault raised: %r" % h.faults)
    eq(h.faults["input_event"], "f", "names the input")
    r.pin().v = 1  # the contact opens again before the report got through
    r.clock.t += IDLE_MS
    r.inp.scan()  # fails again
    r.clock.t += IDLE_MS
    r.inp.scan()  # reported, then the restore is seen
    r.clock.t += IDLE_MS
    r.inp.scan()
    eq([c[1:] for c in r.changes], [("f", "normal", "active"), ("f", "active", "normal")],
       "the confirmed fire is not forgotten, and its restore follows")
    eq(r.inp.states(), {"f": "normal"})
    eq(h.faults, {}, "fault cleared")


def test_boot_report_that_raises_is_retried_by_the_scan():
    h = Health()
    r = Rig(spec("f"), health=h)
    r.inp._on_change = Flaky(r, 1)
    r.pin().v = 0  # fire active at power-up
    r.inp.prime()
    eq(r.changes, [], "boot report failed")
    ok("input_event" in h.faults, "fault raised")
    r.inp.scan()
    eq([c[1:] for c in r.changes], [("f", "boot", "active")], "reported by the next scan")
    eq(h.faults, {}, "fault cleared")
    r.scan_until(r.clock.t + 500)
    eq(len(r.changes), 1, "once")


# --- event mapping ---

def test_event_codes_by_kind():
    want = {"fire": ("110", "fire"), "smoke": ("111", "fire"), "heat": ("114", "fire"), "manual": ("115", "fire"),
            "supervisory": ("200", "fault"), "fault": ("373", "fault"), "mains": ("301", "fault"),
            "battery": ("302", "fault"), "tamper": ("383", "fault")}
    eq(sorted(CODES), sorted(want), "every kind has a code")
    for kind, (code, cls) in want.items():
        eq(event_for(kind, "normal", "active"), [(code, "new", cls)], kind)
        eq(event_for(kind, "active", "normal"), [(code, "restore", cls)], kind)
        eq(event_for(kind, "boot", "active"), [(code, "new", cls)], kind)
        eq(event_for(kind, "boot", "normal"), [], kind)


def test_line_trouble_is_never_fire():
    states = ("boot", "normal", "active", "open", "short")
    for kind in CODES:
        for old in states:
            for new in states[1:]:
                for prior in ("normal", "active"):
                    what = "%s %s->%s prior %s" % (kind, old, new, prior)
                    evs = event_for(kind, old, new, prior)
                    if new in ("open", "short"):
                        eq(evs, [] if old in ("open", "short") else [("380", "new", "fault")], what)
                    for code, q, cls in evs:
                        if code == "380":
                            eq(cls, "fault", what)


def test_trouble_transitions():
    eq(event_for("fire", "normal", "open"), [("380", "new", "fault")])
    eq(event_for("fire", "active", "short"), [("380", "new", "fault")])
    eq(event_for("fire", "boot", "short"), [("380", "new", "fault")])
    eq(event_for("fire", "open", "short"), [], "still in trouble")
    eq(event_for("fire", "open", "normal"), [("380", "restore", "fault")])
    eq(event_for("fire", "open", "active"), [("380", "restore", "fault"), ("110", "new", "fire")])
    eq(event_for("fire", "open", "active", "active"), [("380", "restore", "fault")], "fire already reported")
    eq(event_for("fire", "short", "normal", "active"), [("380", "restore", "fault"), ("110", "restore", "fire")])
    eq(event_for("mains", "short", "active"), [("380", "restore", "fault"), ("301", "new", "fault")])


def test_prior_seen_from_the_callback():
    r = Rig(spec("z", "fire", channel="in6", eol=True, debounce_ms=0))
    got = []

    def on_change(s, old, new):
        got.append(event_for(s["kind"], old, new, r.inp.prior(s["name"])))
    r.inp._on_change = on_change
    r.inp.prime()
    for raw in (620, 4095, 2100):  # fire, wire cut, wire repaired while the contact is open
        r.adc().raw = raw
        r.scan_until(r.clock.t + 2000)
    eq(got, [[("110", "new", "fire")], [("380", "new", "fault")],
             [("380", "restore", "fault"), ("110", "restore", "fire")]])


# --- end to end on the sim board, real time ---

def control(values):
    store.write_atomic("sim/control.json", json.dumps({"inputs": values}).encode())


async def test_sim_board_boot_and_fire_timing():
    from fl.hal.sim import Board
    inputs._now = ticks.ms
    board = Board()
    control({"in1": 1, "in4": 0, "in5": 0, "in6": 2100})
    board.refresh(force=True)
    specs = [spec("panel_fire"), spec("tamper", "tamper", "in4", "nc", 500),
             spec("mains", "mains", "in5", "nc", 10000), spec("zone6", "smoke", "in6", eol=True),
             spec("smoke", "smoke", "in3")]
    seen = []
    inp = Inputs(board, specs, board.board_info()["eol"],
                 lambda s, old, new: seen.append((ticks.ms(), s["name"], old, new)))
    await inp.start()
    eq(inp.states(), {"panel_fire": "normal", "tamper": "normal", "mains": "normal", "zone6": "normal",
                      "smoke": "normal"})
    eq(seen, [])
    task = asyncio.create_task(inp.run())
    try:
        await asyncio.sleep_ms(50)
        p0 = inp.progress
        t0 = ticks.ms()
        control({"in1": 0, "in4": 0, "in5": 0, "in6": 4095})
        for _ in range(300):
            if seen:
                break
            await asyncio.sleep_ms(5)
        eq([c[1:] for c in seen], [("panel_fire", "normal", "active")])
        delay = ticks.diff(seen[0][0], t0)
        ok(50 <= delay <= 50 + IDLE_MS, "fire reported %d ms after the edge" % delay)
        ok(inp.progress > p0, "progress moves")
        await asyncio.sleep_ms(LINE_FAULT_MS + 200)
        eq([c[1:] for c in seen], [("panel_fire", "normal", "active"), ("zone6", "normal", "open")])
        eq(inp.states()["zone6"], "open")
    finally:
        task.cancel()


async def test_sim_board_boot_reports_active_inputs():
    from fl.hal.sim import Board
    inputs._now = ticks.ms
    store.ensure_dir("sim")
    control({"in1": 0, "in5": 1, "in6": 100})
    board = Board()
    seen = []
    inp = Inputs(board, [spec("panel_fire"), spec("mains", "mains", "in5", "nc", 10000),
                         spec("zone6", "smoke", "in6", eol=True)],
                 on_change=lambda s, old, new: seen.append((s["name"], old, new)))
    await inp.start()
    eq(seen, [("panel_fire", "boot", "active"), ("mains", "boot", "active"), ("zone6", "boot", "short")])


async def test_run_survives_a_failing_wait_and_keeps_scanning():
    h = Health()
    r = Rig(spec("f", debounce_ms=0), health=h)
    r.inp.prime()
    calls = []
    real_wait = r.board.wait_inputs

    async def flaky(timeout_ms):
        calls.append(timeout_ms)
        if len(calls) == 1:
            raise OSError(5)
        if len(calls) == 3:
            r.pin().v = 0
        await real_wait(timeout_ms)
        await asyncio.sleep_ms(0)
    r.board.wait_inputs = flaky
    task = asyncio.create_task(r.inp.run())
    for _ in range(200):
        if r.changes:
            break
        await asyncio.sleep_ms(1)
    task.cancel()
    eq([c[1:] for c in r.changes], [("f", "normal", "active")], "still reporting after the error")
    eq(h.counters.get("input_scan_error"), 1)
    ok(r.inp.progress >= 3, "progress %d" % r.inp.progress)
