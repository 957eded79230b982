# fl.ticks on the unix port behaves like the ESP32's ticks (extmod/modtime.c with a 2^30 ms
# period), and the firmware's long waits stay right across a wrap and beyond 2^29 ms.
import asyncio
import json

from fwtest import eq, ok, raises, write

from fl import store, ticks
from fl.commands import Commands
from fl.events import Sequencer
from fl.health import Health
from fl.outbox import Outbox
from fl.recorder import Recorder
from fl.sender import AckWatch, Sender

PERIOD = 1 << 30
HALF = 1 << 29
DAY_MS = 86400 * 1000
TIMEOUT_S = 60


async def until(cond, timeout_ms=5000):
    """True once cond() is, polled every 20 ms; False after timeout_ms (generous: busy machines)."""
    t0 = ticks.ms()
    while not cond():
        if ticks.since(t0) > timeout_ms:
            return False
        await asyncio.sleep_ms(20)
    return True


def jump(ms):
    """Time passes for everything that polls ticks.ms(); one jump must stay below 2^29 ms."""
    ticks.rebase(ticks.add(ticks.ms(), ms))


def test_starts_a_few_seconds_before_the_wrap():
    # The runner sets no $FL_TICKS_START: the default start is the board's worst place.
    to_wrap = PERIOD - ticks.ms()
    ok(0 < to_wrap <= 3000, "%d ms before the wrap" % to_wrap)


async def test_the_counter_wraps_like_the_board():
    ticks.rebase(PERIOD - 30)
    t0 = ticks.ms()
    await asyncio.sleep_ms(80)
    t1 = ticks.ms()
    ok(t1 < 1000, "wrapped to %d" % t1)
    ok(50 <= ticks.diff(t1, t0) < 1000, "diff across the wrap %d" % ticks.diff(t1, t0))
    ok(ticks.diff(t0, t1) < 0, "the other way round is negative")


def test_add_refuses_what_the_board_refuses():
    t = ticks.ms()
    for d in (HALF, -HALF, HALF + 1, 604800 * 1000):
        raises(OverflowError, ticks.add, t, d)
    for d in (HALF - 1, -(HALF - 1), 0, 100000):
        eq(ticks.diff(ticks.add(t, d), t), d, "diff(add(t, %d), t)" % d)
        eq(ticks.diff(t, ticks.add(t, d)), -d, "diff(t, add(t, %d))" % d)
    eq(ticks.add(PERIOD - 1, 1), 0, "wraps to 0")
    eq(ticks.add(0, -1), PERIOD - 1, "wraps back")


def test_diff_is_signed_within_half_a_period():
    eq(ticks.diff(0, PERIOD - 1), 1, "just after the wrap")
    eq(ticks.diff(PERIOD - 1, 0), -1, "just before")
    eq(ticks.diff(HALF - 1, 0), HALF - 1, "largest positive")
    eq(ticks.diff(HALF, 0), -HALF, "half a period apart reads negative, as on the board")
    eq(ticks.diff(123, 123), 0, "same")


def test_values_that_are_not_board_ticks_are_refused():
    raises(ValueError, ticks.diff, PERIOD, 0)
    raises(ValueError, ticks.add, -1, 5)
    raises(ValueError, ticks.diff, 5, 1 << 40)


def test_recent_treats_a_wrapped_stamp_as_old():
    ok(not ticks.recent(None, 2000), "never")
    s = ticks.ms()
    ok(ticks.recent(s, 2000), "just taken")
    # 2^30 - 20 s old: ticks.diff says -20 s (a stamp in the future). Seconds of margin, not
    # milliseconds: real time passes between the jumps on a busy machine.
    jump(HALF - 10000)
    jump(HALF - 10000)
    ok(ticks.diff(ticks.ms(), s) < 0, "the raw difference is fooled")
    ok(not ticks.recent(s, 2000), "recent() is not")


def test_countdown_waits_a_week_through_a_wrap():
    ticks.rebase(PERIOD - 10 * 1000)
    week = 604800 * 1000
    c = ticks.Countdown(week)
    for _ in range(6):
        jump(DAY_MS)
        ok(not c.due(), "not due after %d ms" % (week - c.left()))
    jump(DAY_MS - 1000)
    ok(0 < c.left() <= 1000, "1 s before: %d left" % c.left())
    jump(1000)
    ok(c.due(), "due after a week")
    c.extend(week)
    ok(week - 100 < c.left() <= week, "the next one a week after the last, no drift: %d" % c.left())


def test_countdown_overdue_for_weeks_stays_small():
    c = ticks.Countdown(1000)
    for _ in range(4):
        # Polled once per jump, at least once per 2^29 ms even with a second of real time
        # between jumps on a busy machine.
        jump(HALF - 1000)
        ok(c.due(), "due")
    ok(-HALF <= c.left() < 0, "left %d stays a board small int" % c.left())


async def test_ack_wait_of_100_s_across_a_wrap():
    health = Health()
    w = AckWatch(100, health)
    ticks.rebase(PERIOD - 40 * 1000)
    w.expect("00000001-aaaa")
    task = asyncio.create_task(w.run())
    try:
        jump(99 * 1000)  # the wrap is 40 s in
        await asyncio.sleep_ms(700)
        eq(health.faults, {}, "no fault 99 s in")
        eq(w.pending(), 1, "still waiting")
        jump(1500)
        ok(await until(lambda: "centre_ack" in health.faults), "fault at 100 s: %r" % health.faults)
    finally:
        task.cancel()


class _Offline:
    """An MQTT client that is down: counts the kicks the sender gives it."""

    connected = False

    def __init__(self):
        self.kicks = 0

    def signal_on_connect(self, ev):
        pass

    def kick(self):
        self.kicks += 1


class _Clock:
    def now(self):
        return 1760000000, True

    def stamp(self):
        return 1760000000, 0, True


async def test_a_fire_kicks_the_backoff_when_the_last_kick_is_a_week_old():
    outbox = Outbox(capacity=16)
    health = Health()
    recorder = Recorder(outbox, Sequencer(), _Clock(), health)
    mqtt = _Offline()
    sender = Sender(outbox, mqtt, "t/event", recorder.queued, health)
    sender._kicked_at = ticks.ms()  # a kick, then a week in which the sender never looked
    jump(HALF - 1)
    jump(604800 * 1000 - HALF + 1)
    recorder.record("110", "new", 1, "panel_fire", "fire")
    task = asyncio.create_task(sender.run())
    try:
        ok(await until(lambda: mqtt.kicks > 0), "kicked")
        eq(mqtt.kicks, 1, "kicked once")
    finally:
        task.cancel()


async def test_a_remote_test_a_week_after_the_last_is_not_busy():
    outbox = Outbox(capacity=16)
    recorder = Recorder(outbox, Sequencer(), _Clock(), Health())

    class _MQTT:
        async def publish(self, *a, **kw):
            return True

    cmds = Commands(recorder, _MQTT(), "t/result")
    eq(cmds.execute(b'{"cmd": "test"}')["ok"], True, "first")
    eq(cmds.execute(b'{"cmd": "test"}')["ok"], False, "busy right after")
    jump(HALF - 1)
    jump(604800 * 1000 - HALF + 1)
    eq(cmds.execute(b'{"cmd": "test"}')["ok"], True, "a week later")
    await asyncio.sleep_ms(10)


async def test_weekly_periodic_test_through_a_wrap_keeps_housekeeping_alive():
    from fl.app import App
    from fl.hal.sim import Board

    write("config.json", json.dumps({"device_id": "fl-week", "periodic_test_s": 604800,
                                     "broker": {"host": "127.0.0.1", "port": 9}}))
    write("secrets.json", json.dumps({"mqtt_username": "fl-week", "mqtt_password": "x"}))
    store.ensure_dir("sim")
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0}, "links": {"wifi": False}}))
    ticks.rebase(PERIOD - 5000)
    app = App(Board())
    tests = []
    app._periodic_test = lambda: tests.append(ticks.ms())
    task = asyncio.create_task(app._supervise("housekeeping", app))
    try:
        await asyncio.sleep_ms(100)  # housekeeping starts its countdown
        p = app.progress
        for day in range(6):
            jump(DAY_MS)
            # housekeeping looks once a second: two looks, so it has seen the new day
            ok(await until(lambda: app.progress >= p + 2), "housekeeping runs on day %d" % (day + 1))
            p = app.progress
        eq(tests, [], "no test before a week")
        jump(DAY_MS)
        ok(await until(lambda: tests), "the weekly test")
        p = app.progress
        ok(await until(lambda: app.progress >= p + 2), "housekeeping runs on")
        eq(len(tests), 1, "the weekly test, once")
        ok(not [f for f in app.health.faults if f.startswith("task_")], "no part failed: %r" % app.health.faults)
    finally:
        task.cancel()


def test_matches_a_32_bit_ports_own_ticks():
    # Runs where the interpreter's own ticks have the board's period: a 32-bit build of the unix
    # port (esp32.md says how; $MICROPYTHON selects it). There fl.ticks must agree with
    # time.ticks_add/ticks_diff (extmod/modtime.c) on every value, edges and random ones.
    import os
    import time

    from fwtest import skip

    if time.ticks_add(0, -1) != PERIOD - 1:
        skip("this interpreter's ticks have period %d, not 2^30: no board rules to compare with" % (
            time.ticks_add(0, -1) + 1))

    def rnd(bits):
        b = os.urandom(4)
        return (b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]) & ((1 << bits) - 1)

    edges = (0, 1, PERIOD - 1, HALF - 1, HALF, HALF + 1)
    for a in edges:
        for b in edges:
            eq(ticks.diff(a, b), time.ticks_diff(a, b), "diff(%d, %d)" % (a, b))
    for _ in range(3000):
        a, b = rnd(30), rnd(30)
        eq(ticks.diff(a, b), time.ticks_diff(a, b), "diff(%d, %d)" % (a, b))
    for d in (0, 1, -1, HALF - 1, -(HALF - 1), HALF, -HALF, HALF + 1, PERIOD, -PERIOD):
        for t in edges:
            try:
                want = time.ticks_add(t, d)
            except OverflowError:
                want = "OverflowError"
            try:
                got = ticks.add(t, d)
            except OverflowError:
                got = "OverflowError"
            eq(got, want, "add(%d, %d)" % (t, d))
