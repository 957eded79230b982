# The assembled app on the simulated board: one failing part is reported and restarted without
# taking the others down; a path that is up with no broker behind it is communication trouble.
import asyncio
import json

from fwtest import eq, ok, write
from mqtt_peers import until

from fl import store
from fl.app import App
from fl.hal.sim import Board

TIMEOUT_S = 60


def _app(**config):
    # Nothing listens on port 9 of the loopback: the broker is unreachable while Wi-Fi is up.
    cfg = {"device_id": "fl-app", "broker": {"host": "127.0.0.1", "port": 9}}
    cfg.update(config)
    write("config.json", json.dumps(cfg))
    write("secrets.json", json.dumps({"mqtt_username": "fl-app", "mqtt_password": "x"}))
    store.ensure_dir("sim")
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0}}))
    return App(Board())


def _queued_payloads(app):
    """The events waiting in the outbox, in the order they would go out (taking them out)."""
    payloads = []
    while True:
        item = app.outbox.peek()
        if item is None:
            return payloads
        payloads.append(bytes(item[1]))
        app.outbox.remove(item[0])


def _queued_codes(app):
    return [json.loads(p)["code"] for p in _queued_payloads(app)]


async def test_a_failing_part_is_reported_and_restarted_while_the_others_run():
    app = _app()
    runs = []

    async def flaky():
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("bug in a part")
        await asyncio.sleep_ms(10000)

    app.heartbeat.run = flaky
    task = asyncio.create_task(app._supervise("heartbeat", app.heartbeat))
    inputs = asyncio.create_task(app._supervise("inputs", app.inputs))
    ok(await until(lambda: len(runs) == 2, 5000), "started again after the failure: %d runs" % len(runs))
    ok("task_heartbeat" in app.health.faults, "fault raised: %r" % app.health.faults)
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0, "in1": 0}}))
    ok(await until(lambda: app.inputs.states()["panel_fire"] == "active", 3000), "inputs kept running")
    task.cancel()
    inputs.cancel()
    codes = _queued_codes(app)
    ok("110" in codes and "307" in codes, "fire and the task fault were recorded: %r" % codes)
    eq(codes[0], "110", "fire first")


async def test_broker_unreachable_with_the_path_up_is_reported_after_the_delay():
    app = _app(path_fault_delay_s=5)
    parts = [asyncio.create_task(app._supervise(n, p)) for n, p in
             (("links", app.links), ("mqtt", app.mqtt), ("housekeeping", app))]
    await asyncio.sleep_ms(3500)
    ok("broker_unreachable" not in app.health.faults, "not before the delay")
    ok(await until(lambda: "broker_unreachable" in app.health.faults, 6000),
       "raised after the delay: %r" % app.health.faults)
    for t in parts:
        t.cancel()
    codes = _queued_codes(app)
    ok("350" in codes, "350 recorded: %r" % codes)
    ok("351" not in codes, "the Wi-Fi path itself was up: %r" % codes)


async def test_periodic_test_report_is_602_and_608_while_troubled():
    app = _app(periodic_test_s=60)
    app._periodic_test()
    app.health.set_fault("mains_lost_for_test", True, "x")
    app._periodic_test()
    codes = [json.loads(p) for p in _queued_payloads(app)]
    tests = [(e["code"], e.get("detail")) for e in codes if e["code"] in ("602", "608")]
    eq(tests, [("602", None), ("608", "troubles: mains_lost_for_test")], "periodic test reports")


def test_a_change_retried_after_a_recording_failure_records_each_event_once():
    app = _app(inputs=[{"name": "zone6", "kind": "fire", "channel": "in6", "eol": True, "zone": 6}])
    _queued_codes(app)  # the boot report
    spec = [s for s in app.config["inputs"] if s["name"] == "zone6"][0]
    app._on_input(spec, "normal", "open")  # the line broke: 380 told to the centre
    eq(_queued_codes(app), ["380"])
    real_record = app.recorder.record
    calls = []

    def record(code, *args, **kw):
        calls.append(code)
        if len(calls) == 2:  # the second event of the change: fails once
            raise MemoryError("flash busy")
        return real_record(code, *args, **kw)

    app.recorder.record = record
    try:
        app._on_input(spec, "open", "active")  # line repaired while the contact is closed
    except MemoryError:
        pass
    app._on_input(spec, "open", "active")  # the inputs retry the same change
    events = [json.loads(p) for p in _queued_payloads(app)]
    eq([(e["code"], e["q"]) for e in events], [("110", "new"), ("380", "restore")], "each event once, fire first")


async def test_wifi_power_save_follows_mains_and_board_json_is_released_after_start():
    app = _app(inputs=[{"name": "mains", "kind": "mains", "channel": "in5", "contact": "nc", "debounce_ms": 0,
                        "zone": 5}])
    ok(app.board._info is None, "board.json parse released once the parts have read it")
    task = asyncio.create_task(app._supervise("inputs", app.inputs))

    def power_save():
        return json.loads(store.read_bytes("sim/outputs.json") or b"{}").get("wifi_power_save")

    for _ in range(100):
        if app.inputs.started:
            break
        await asyncio.sleep_ms(20)
    write("sim/control.json", json.dumps({"inputs": {"in5": 1}}))  # NC contact opens: mains lost
    for _ in range(100):
        if power_save() is True:
            break
        await asyncio.sleep_ms(20)
    eq(power_save(), True, "on battery: Wi-Fi power save back on")
    write("sim/control.json", json.dumps({"inputs": {"in5": 0}}))
    for _ in range(100):
        if power_save() is False:
            break
        await asyncio.sleep_ms(20)
    eq(power_save(), False, "on mains: power save off (PM_NONE on the ESP32)")
    task.cancel()
