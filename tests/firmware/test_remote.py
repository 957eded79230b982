# Remote commands from the centre beyond `test` (fl/remote.py through fl/commands.py): ids
# echoed, rate-limited, refused in safe mode except status, changes recorded as 306, config
# validated; random payloads never crash the task, print a secret or lose an event.
import json
import random

from fwtest import eq, ok, write

from fl import store
from fl.app import App
from fl.hal.sim import Board

SECRET = "s3cr3t-Pa55word"


APN_PASSWORD = "apn-Pa55-xyz"


def _app(safe=False):
    write("config.json", json.dumps({"device_id": "fl-rem", "broker": {"host": "127.0.0.1", "port": 9},
                                     "cellular": {"user": "u", "password": APN_PASSWORD}}))
    write("secrets.json", json.dumps({"mqtt_username": "fl-rem", "mqtt_password": SECRET}))
    store.ensure_dir("sim")
    write("sim/control.json", json.dumps({"inputs": {"in4": 0, "in5": 0}}))
    return App(Board(), safe_mode=safe)


def _run(app, doc):
    app.commands._last_remote = None  # not rate-limited here (tested on its own)
    return app.commands.execute(json.dumps(doc).encode())


def _codes(app):
    out = []
    while True:
        item = app.outbox.peek()
        if item is None:
            return out
        ev = json.loads(bytes(item[1]))
        out.append((ev["code"], ev.get("detail", "")))
        app.outbox.remove(item[0])


def test_status_config_walktest_silence_and_reboot_answer_with_their_id():
    app = _app()
    r = _run(app, {"cmd": "status", "id": "r1"})
    ok(r["ok"] and r["id"] == "r1" and "inputs" in r["status"], r)
    r = _run(app, {"cmd": "config get", "id": "r2", "key": "broker.port"})
    eq((r["ok"], r["value"]), (True, 9), "one key")
    r = _run(app, {"cmd": "config get", "id": "r3"})
    ok(SECRET not in json.dumps(r) and r["config"]["secrets"]["mqtt_password"] == "***", "masked")
    r = _run(app, {"cmd": "config get", "id": "r3", "key": "secrets.mqtt_password"})
    ok(not r["ok"], "a secret cannot be read by name: %r" % r)
    r = _run(app, {"cmd": "config get", "id": "r3b", "key": "cellular.password"})
    eq(r.get("value"), "***", "the APN password in config.json is masked too")
    ok(APN_PASSWORD not in json.dumps(_run(app, {"cmd": "config get", "id": "r3c"})), "masked in the whole config")
    r = _run(app, {"cmd": "config set", "id": "r4", "key": "broker.port", "value": 0})
    ok(not r["ok"] and "broker.port" in r["error"], r)
    r = _run(app, {"cmd": "config set", "id": "r5", "key": "broker.port", "value": 1884, "rollback_s": 30})
    ok(r["ok"] and r["restart"], r)
    eq(store.read_bytes("config.rollback").split(b"\n")[0], b"30", "rollback window kept with the old config")
    r = _run(app, {"cmd": "walktest", "id": "r6", "on": True, "seconds": 20})
    ok(r["ok"] and r["walk"]["on"], r)
    r = _run(app, {"cmd": "walktest", "id": "r7", "on": False})
    r = _run(app, {"cmd": "silence", "id": "r8"})
    ok(r["ok"] and app.indicators.silenced, r)
    r = _run(app, {"cmd": "reboot", "id": "r9"})
    ok(r["ok"] and r["restart"], r)
    codes = _codes(app)
    eq([c for c, _ in codes if c == "607"], ["607", "607"], "walk test on and off")
    eq(len([c for c, _ in codes if c == "306"]), 3, "config, silence, reboot recorded: %r" % codes)


def test_rate_limited_and_safe_mode_runs_status_only():
    app = _app()
    app.commands._last_remote = None
    ok(app.commands.execute(b'{"cmd":"status","id":"a"}')["ok"], "first")
    r = app.commands.execute(b'{"cmd":"status","id":"b"}')
    ok(not r["ok"] and "busy" in r["error"] and r["id"] == "b", r)
    safe = _app(safe=True)
    ok(_run(safe, {"cmd": "status", "id": "s"})["ok"], "status in safe mode")
    for doc in ({"cmd": "reboot"}, {"cmd": "silence"}, {"cmd": "test"}, {"cmd": "walktest", "on": True}):
        r = _run(safe, dict(doc, id="s2"))
        ok(not r["ok"] and "safe mode" in r["error"] and r["id"] == "s2", r)


def test_a_command_without_an_id_is_refused_except_test():
    app = _app()
    for doc in ({"cmd": "status"}, {"cmd": "reboot"}, {"cmd": "config set", "key": "site", "value": "x"}):
        r = _run(app, doc)
        ok(not r["ok"] and "id" in r["error"], r)
    ok(_run(app, {"cmd": "test"})["ok"], "test runs without one, as before")
    eq([c for c, _ in _codes(app)], ["305", "601"], "nothing else was done")


def test_fuzz_random_payloads_never_crash_leak_or_lose_an_event():
    app = _app()
    rnd = random.getrandbits
    names = ["status", "config get", "config set", "reboot", "silence", "walktest", "test", "x", None, 5]
    keys = ["broker.port", "broker.host", "site", "log_level", "secrets", "inputs", "device_id", 3, None]
    values = [0, 1, 65536, "a", "", None, True, [], {}, "x" * 300, -1, 1883]
    fires = 0
    for i in range(10000):
        k = i % 3
        if k == 0:
            payload = bytes(rnd(8) for _ in range(rnd(7)))
        else:
            doc = {"cmd": names[rnd(8) % len(names)], "id": ["a", None, 7, "x" * 40][rnd(2)]}
            if rnd(1):
                doc["key"] = keys[rnd(8) % len(keys)]
            if rnd(1):
                doc["value"] = values[rnd(8) % len(values)]
            if rnd(1):
                doc["on"] = [True, False, "yes"][rnd(2) % 3]
            if rnd(2) == 0:
                doc["rollback_s"] = [5, 30, 1000, "x"][rnd(2)]
            payload = json.dumps(doc).encode()
            if k == 2:
                payload = payload[:rnd(7)]  # cut anywhere
        app.commands._last_remote = None
        app.commands._last_test = None
        r = app.commands.execute(payload)
        ok(type(r) is dict and "ok" in r, "an answer for %r" % payload)
        ok(SECRET not in json.dumps(r) and APN_PASSWORD not in json.dumps(r), "no secret for %r" % payload)
        if i % 1000 == 0:  # the alarm path records meanwhile
            app.recorder.record("110", "new" if fires % 2 == 0 else "restore", 1, "panel_fire", "fire")
            fires += 1
    kept = 0
    while True:  # counted one at a time: thousands of 306 events wait beside the fires
        item = app.outbox.peek()
        if item is None:
            break
        kept += b'"code":"110"' in bytes(item[1])
        app.outbox.remove(item[0])
    eq(kept, fires, "every fire kept")
