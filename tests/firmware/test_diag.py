# The diagnostics console (fl/diag.py): framed answers among log lines, walk test, config set,
# the last crash kept on flash, and untrusted input that never crashes it or prints a secret.
import asyncio
import json
import random

from binascii import crc32
from fwtest import eq, ok, write

from fl import crash, store
from fl.app import App
from fl.hal.sim import Board

SECRET = "s3cr3t-Pa55word"
APN_PASSWORD = "apn-Pa55-xyz"


def _app(**config):
    cfg = {"device_id": "fl-diag", "broker": {"host": "127.0.0.1", "port": 9},
           "cellular": {"user": "u", "password": APN_PASSWORD}}  # a password kept in config.json itself
    cfg.update(config)
    write("config.json", json.dumps(cfg))
    write("secrets.json", json.dumps({"mqtt_username": "fl-diag", "mqtt_password": SECRET}))
    store.ensure_dir("sim")
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0}}))
    app = App(Board())
    app.console.out = lambda line: app.printed.append(line)
    app.printed = []
    return app


def _answers(lines):
    """{tag: object} from the frames printed; checks each frame's crc and numbering."""
    parts = {}
    for line in lines:
        if not line.startswith("#FL1 "):
            continue
        _, tag, kn, crc, chunk = line.split(" ", 4)
        k, n = kn.split("/")
        eq(int(crc, 16), crc32(chunk.encode()) & 0xFFFFFFFF, "frame crc")
        parts.setdefault(tag, []).append((int(k), n, chunk))
    out = {}
    for tag, chunks in parts.items():
        eq([c[0] for c in chunks], list(range(1, len(chunks) + 1)), "chunks in order")
        eq(chunks[-1][1], str(len(chunks)), "the last frame says how many")
        ok(all(c[1] in ("+", str(len(chunks))) for c in chunks), "n: + or the count")
        out[tag] = json.loads("".join(c[2] for c in chunks))
    return out


async def _ask(app, line):
    app.printed.clear()
    for b in line.encode() + b"\n":
        await app.console.feed_byte(b)
    return _answers(app.printed)


def _queued(app):
    out = []
    while True:
        item = app.outbox.peek()
        if item is None:
            return out
        out.append(json.loads(bytes(item[1])))
        app.outbox.remove(item[0])


async def test_status_parts_are_framed_and_config_is_masked():
    app = _app()
    a = await _ask(app, "?a1 all")
    eq(sorted(a), ["a1"], "one answer, tag echoed")
    r = a["a1"]
    ok(r["ok"], r)
    eq(r["id"]["id"], "fl-diag", "identity")
    eq((r["id"]["board"], r["id"]["hal"]), (app.board.board_info()["name"], "sim"), "the board's definition and HAL")
    ok(all(k in r["id"] for k in ("fw", "boot", "reset", "uptime_s", "safe_mode")), r["id"])
    eq([(i["name"], i["code"]) for i in r["inputs"]][:1], [("panel_fire", "110")], "inputs listed, with their code")
    ok("mqtt" in r["paths"] and "fire" in r["outbox"], "paths and outbox")
    ok(len(app.printed) > 1, "a long answer is cut into several frames")
    c = (await _ask(app, "?b config"))["b"]
    eq(c["config"]["secrets"]["mqtt_password"], "***", "secret masked")
    ok(SECRET not in "".join(app.printed), "the secret is never printed")
    eq(c["config"]["cellular"]["password"], "***", "the APN password masked")


async def test_outbox_answer_has_depth_per_class_in_ram_and_the_oldest_age():
    app = _app()
    _queued(app)
    r = (await _ask(app, "?o outbox"))["o"]["outbox"]
    eq((r["depth"], r["oldest_seq"], r["oldest_age_s"]), (0, None, None), "empty: no oldest")
    app.recorder.record("602", "new", 0, "", "status")
    first = app.outbox.newest_order
    await asyncio.sleep_ms(400)
    app.recorder.record("110", "new", 1, "panel_fire", "fire")
    r = (await _ask(app, "?o outbox"))["o"]["outbox"]
    eq((r["fire"], r["status"], r["in_ram"]), (1, 1, 0), "depth per class, none in RAM")
    eq((r["oldest_seq"], r["oldest_code"], r["oldest_class"]), (first, "602", "status"),
       "the oldest waiting is the status record, though fire goes first")
    ok(0.35 <= r["oldest_age_s"] < 30, "its age from its own stamp: %r" % r)
    handle = app.outbox.peek()[0]  # the fire goes
    app.outbox.remove(handle)
    app.outbox.remove(app.outbox.peek()[0])  # and the status record
    r = (await _ask(app, "?o outbox"))["o"]["outbox"]
    eq((r["depth"], r["oldest_seq"]), (0, None), "delivered: no oldest")


async def test_walk_test_enters_flags_alarms_and_ends_by_itself():
    app = _app()
    await app.inputs.start()
    _queued(app)
    r = (await _ask(app, "?w walk on 1"))["w"]
    ok(r["ok"] and r["walk"]["on"], r)
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0, "in1": 0}}))
    app.board.refresh(force=True)
    app.inputs.scan()
    for _ in range(50):
        await asyncio.sleep_ms(20)
        app.inputs.scan()
    evs = _queued(app)
    eq(sorted((e["code"], e["q"]) for e in evs), [("110", "new"), ("607", "new")], "607 and the fire (first)")
    eq([e.get("test") for e in evs if e["code"] == "110"], [True], "the alarm is flagged as test")
    app.console.walk.start(0)  # the bounded time has run out
    app.console.tick()
    evs = _queued(app)
    eq([(e["code"], e["q"]) for e in evs], [("607", "restore")], "timed exit")
    ok(app.console.walk is None, "walk test off")
    eq(app.console.test_flag(), None, "alarms after it are not flagged")


async def test_lamp_test_lights_every_led_and_the_buzzer_then_stops_the_buzzer():
    from fl.hal.sim import OUTPUTS
    app = _app()

    def outputs():
        with open(OUTPUTS) as f:
            return json.load(f)

    asking = asyncio.create_task(_ask(app, "?l leds"))
    await asyncio.sleep_ms(500)
    eq([outputs()[k] for k in ("led_status", "led_fault", "buzzer")], [True, True, True], "all on during the test")
    r = (await asking)["l"]
    ok(r["ok"] and r["tested"] == ["led_status", "led_fault", "buzzer"], r)
    eq(outputs()["buzzer"], False, "the buzzer stops at its end")


async def test_silence_and_config_set_validated_and_written_atomically():
    app = _app()
    app.health.set_fault("mains", True, "lost")
    r = (await _ask(app, "?s silence"))["s"]
    ok(r["ok"] and app.indicators.silenced, "silenced")
    bad = (await _ask(app, "?c set heartbeat_s 1"))["c"]
    ok(not bad["ok"] and "heartbeat_s" in bad["error"], bad)
    eq(json.loads(store.read_bytes("config.json"))["heartbeat_s"] if "heartbeat_s" in
       json.loads(store.read_bytes("config.json")) else None, None, "a refused value is not written")
    no = (await _ask(app, "?c set inputs []"))["c"]
    ok(not no["ok"] and "cannot be set" in no["error"], no)
    good = (await _ask(app, "?c set broker.port 1884"))["c"]
    ok(good["ok"], good)
    eq(json.loads(store.read_bytes("config.json"))["broker"]["port"], 1884, "written")
    codes = [(e["code"], e.get("detail", "")) for e in _queued(app)]
    ok(any(c == "306" and "broker.port" in d for c, d in codes), "306 recorded: %r" % codes)
    ok(any(c == "306" and "silence" in d for c, d in codes), "silence recorded as 306: %r" % codes)


async def test_a_task_crash_is_kept_on_flash_with_the_reset_that_followed():
    app = _app()

    async def boom():
        raise RuntimeError("induced crash")

    app.heartbeat.run = boom
    task = asyncio.create_task(app._supervise("heartbeat", app.heartbeat))
    await asyncio.sleep_ms(200)
    task.cancel()
    rec = crash.read()
    ok(rec and rec["part"] == "heartbeat" and "induced crash" in rec["traceback"], rec)
    app2 = _app()  # the next boot
    app2.printed = []
    r = (await _ask(app2, "?k crash"))["k"]
    eq(r["crash"]["reset_after"], "power_on", "reset cause of the boot that followed")
    ok("induced crash" in r["crash"]["traceback"], "traceback kept")


async def test_fuzz_random_lines_never_crash_or_leak_and_the_alarm_path_records():
    app = _app()
    await app.inputs.start()
    _queued(app)
    rnd = random.getrandbits
    verbs = ("all", "walk", "walk on x", "set", "set broker.port", "set log_level \"loud\"", "log 99", "crash",
             "config", "id", "nonsense", "set site " + "\"" + "x" * 80, "log -1", "walk on 99999")
    n = 10000
    for i in range(n):
        kind = i % 4
        if kind == 0:
            line = bytes(rnd(8) for _ in range(rnd(6) * 3))  # binary, any byte
        elif kind == 1:
            line = b"?" + bytes(32 + rnd(7) % 95 for _ in range(rnd(5)))
        elif kind == 2:
            line = b"?t" + b"%d " % (i % 10) + verbs[i % len(verbs)].encode()
        else:
            line = b"?" + b"y" * (150 + rnd(6))  # around LINE_MAX
        app.printed.clear()
        for b in line + b"\n":
            await app.console.feed_byte(b)
        out = "".join(app.printed)
        if SECRET in out or APN_PASSWORD in out:
            raise AssertionError("secret printed for %r" % line)
        for frame in app.printed:
            ok(frame.startswith("#FL1 "), "only frames: %r" % frame)
        if i % 2500 == 0:  # the panel's fire output changes meanwhile
            # in1 is the panel's NO contact with a pull-up: 0 (closed) is active, 1 normal
            write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0, "in1": (i // 2500) % 2}}))
            app.board.refresh(force=True)
        if i % 25 == 0:  # and the alarm path keeps scanning and recording
            app.inputs.scan()
    ok(app.console.requests > 2000 and app.console.ignored > 1000, "counted")
    for _ in range(10):  # the last change's debounce
        await asyncio.sleep_ms(20)
        app.inputs.scan()
    fires = [(e["code"], e["q"]) for e in _queued(app) if e["code"] == "110"]
    eq(fires, [("110", "new"), ("110", "restore")] * 2, "every change of the fire input recorded, none lost")


def test_ctrl_c_leaves_the_serial_line_to_the_repl():
    """The clean stop after Ctrl-C still runs the app's tasks (up to 2 s), the console's reader
    among them; what follows Ctrl-C on the line (mpremote's Ctrl-A) is the REPL's, so main()
    releases the console first (docs/diag.md, "Breaking in")."""
    from fl import app as app_module

    _app()  # config and secrets on flash
    seen = []

    async def stopped_by_ctrl_c(self):
        seen.append((self, self.console.reading))
        raise KeyboardInterrupt

    run = App.run
    App.run = stopped_by_ctrl_c
    try:
        app_module.main(Board())
    finally:
        App.run = run
    app, reading = seen[0]
    ok(reading, "the console reads the line while the app runs")
    ok(not app.console.reading, "released once Ctrl-C stopped the app")
    asyncio.run(app.console.poll())
    ok(app.console._poller is None, "the line is not even looked at")
