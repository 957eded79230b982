"""What a technician (serial console) or the centre (remote commands) may do to the device:
silence the buzzer, test the indications, walk test mode, set one config key, restart.

Loaded when first asked (fl/diag.py keeps the little state that must exist before: the walk
test's end, the rollback watch). Every change made through here is recorded as a 306 event
naming who asked (`by`: "console", "centre" or "device").

Walk test (issue 12): entered and left with a Contact ID 607 event (new, then restore); while it
is on, every input event still goes to the centre, carrying `"test": true` (docs/protocol.md),
and it ends by itself after a bounded time (WALK_DEFAULT_S, at most WALK_MAX_S).

A config change is validated by fl.config (loaded for the moment, released after: it is
boot-only code, fl/boot.py), written atomically and applied by a restart. A
change that breaks the connection is undone by the device itself (from the console or the
centre alike): the old config.json is kept in ROLLBACK_FILE and, if the broker is not reached
within the rollback window (ROLLBACK_S unless the centre gives one) of the restart, it is put
back and the device restarts again (fl/diag.py starts the count at boot, `on_tick()` keeps it).
"""
import asyncio
import json

from fl import log, store, ticks

_log = log.Logger("service")
WALK_DEFAULT_S = 30 * 60
WALK_MAX_S = 4 * 3600
ROLLBACK_FILE = "config.rollback"
ROLLBACK_S = 120
# Keys a technician or the centre may change with `set` (dotted: in a section); the rest
# (inputs, identity, capacities) are provisioning's.
SETTABLE = ("site", "heartbeat_s", "centre_ack_timeout_s", "path_fault_delay_s", "periodic_test_s", "log_level",
            "broker.host", "broker.port", "broker.tls", "broker.server_hostname", "broker.keepalive_s",
            "broker.connect_timeout_ms", "broker.puback_timeout_ms", "broker.backoff_max_s", "wifi.ssid",
            "cellular.apn")


class ServiceError(ValueError):
    """A request that cannot be done; the message says why (sent back as is)."""


# --- indications ---
def silence(app, by):
    """The buzzer stops until the next new fault (fl/indicators.py re-arms it)."""
    app.indicators.silence()
    changed(app, "silence", by)


async def lamp_test(app, ms=1500):
    """Every LED and the buzzer on for ms; the indicators' task sets the LEDs back within 500 ms."""
    for name in ("led_status", "led_fault", "buzzer"):
        app.board.output(name, True)
    await asyncio.sleep_ms(ms)
    app.board.output("buzzer", False)


# --- walk test ---
def walk_on(app, by, seconds=WALK_DEFAULT_S):
    if type(seconds) is not int or not 10 <= seconds <= WALK_MAX_S:
        raise ServiceError("walk test length must be 10..%d s" % WALK_MAX_S)
    con = app.console
    fresh = con.walk is None
    con.walk = ticks.Countdown(seconds * 1000)
    if fresh:
        app.recorder.record("607", "new", 0, "", "status", detail="walk test %d s by %s" % (seconds, by))
        _log.warn("walk test on for %d s (%s): alarms go to the centre flagged as test", seconds, by)


def walk_off(app, by, why="ended"):
    if app.console.walk is None:
        return False
    app.console.walk = None
    app.recorder.record("607", "restore", 0, "", "status", detail="walk test %s by %s" % (why, by))
    _log.warn("walk test off (%s, %s)", why, by)
    return True


def walk_state(app):
    w = app.console.walk
    return {"on": w is not None, "left_s": None if w is None else max(0, w.left() // 1000)}


def on_tick(app):
    con = app.console
    if con.walk is not None and con.walk.due():
        walk_off(app, "device", "timed out")
    if con.rollback_s >= 0:
        _watch_rollback(app)


# --- config ---
def config_set(app, key, value, by, rollback_s=ROLLBACK_S):
    """Validates `key` = value (parsed JSON) with fl.config and writes config.json atomically;
    returns the value. The caller restarts the device to apply it; if the broker is not reached
    within rollback_s of that restart, the old config comes back by itself."""
    if key not in SETTABLE:
        raise ServiceError("%s cannot be set here (settable: %s)" % (key, ", ".join(SETTABLE)))
    raw = store.read_bytes("config.json")
    try:
        cfg = json.loads(raw) if raw else {}
    except ValueError:
        cfg = None
    if type(cfg) is not dict:
        raise ServiceError("config.json on the device is not a JSON object: provision it again")
    section, _, name = key.rpartition(".")
    target = cfg
    if section:
        target = cfg.get(section)
        if target is None:
            target = cfg[section] = {}
        if type(target) is not dict:
            raise ServiceError("config.json: %s is not an object" % section)
    old = target.get(name)
    target[name] = value
    for p in _validate(cfg):
        if (": " + key + ":") in p:
            raise ServiceError(p)
    # The device's own way back: the window, then the old config; its presence at boot starts
    # the watch (fl/diag.py), reaching the broker ends it.
    store.write_atomic(ROLLBACK_FILE, str(rollback_s).encode() + b"\n" + (raw or b"{}"))
    store.write_atomic("config.json", json.dumps(cfg).encode())
    changed(app, "config %s %s -> %s" % (key, _short(old), _short(value)), by)
    return value


def _watch_rollback(app):
    con = app.console
    if app.mqtt.connected:
        con.rollback_s = -1
        store.remove(ROLLBACK_FILE)
        changed(app, "config change confirmed online", "device")
        return
    con.rollback_s += 1
    kept = store.read_bytes(ROLLBACK_FILE) or b""
    window, _, old = kept.partition(b"\n")
    try:
        window = int(window)
    except ValueError:
        window = ROLLBACK_S
    if con.rollback_s == 1:
        _log.warn("config changed: kept once the broker is reached, rolled back after %d s without", window)
    if con.rollback_s >= window:
        con.rollback_s = -1
        _log.error("not online %d s after a config change: rolling back", window)
        if old:
            store.write_atomic("config.json", old)
        store.remove(ROLLBACK_FILE)
        changed(app, "config rolled back: not online within %d s" % window, "device")
        restart(app, "config rollback")


# --- restart ---
def restart(app, why):
    """Puts what must survive on flash and resets the board (a new config applies at the boot)."""
    _log.warn("restarting: %s", why)
    try:
        app.outbox.flush_removals()
        app.recorder.checkpoint()
    except Exception as e:  # noqa: BLE001 - restart anyway: what was recorded is on flash
        _log.error("before restart: %r", e)
    app.board.reset("software")


def changed(app, what, by):
    app.recorder.record("306", "new", 0, "", "status", detail=("%s by %s" % (what, by))[:120])


def masked_config(cfg):
    """The running config without `_secrets`: secrets.json's keys are named, never shown. A
    password kept in config.json itself (the APN's login, `cellular.password`) is masked too."""
    out = {}
    for k, v in cfg.items():
        if k == "_secrets":
            out["secrets"] = dict((name, "***") for name in v if v[name])
        elif type(v) is dict and v.get("password"):
            v = dict(v)
            v["password"] = "***"
            out[k] = v
        else:
            out[k] = v
    return out


def _short(v):
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _validate(cfg):
    """The problems fl.config finds in cfg, loaded for this and released after. The inputs are
    not settable here and are left out: their check needs board.json's parse too (≈11 KB)."""
    import gc
    from fl.boot import BOOT_ONLY, release
    rest = {}
    for k in cfg:
        if k != "inputs":
            rest[k] = cfg[k]
    gc.collect()
    try:
        from fl import config
        return config.validate(rest, {})[1]
    except MemoryError:
        raise ServiceError("not enough free memory to validate the change now; try again in a minute")
    finally:
        release(BOOT_ONLY)
