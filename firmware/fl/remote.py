"""Remote commands beyond `test` (issue 12), loaded when the first one arrives (fl/commands.py
keeps the queue, the parsing and `test`; this keeps its RAM off the lean board until used).

  {"cmd": "status", "id": r}                          the health snapshot (the heartbeat's)
  {"cmd": "config get", "id": r, "key": "broker.port"}   one key, or the whole config without
                                                          `key`; secrets are never sent
  {"cmd": "config set", "id": r, "key": K, "value": V, "rollback_s": 120}
        validated by fl.config, written atomically, applied by a restart; if the device does not
        reach the broker within rollback_s (20..900, default 120) after it, it puts the old
        config back and restarts again (fl/service.py)
  {"cmd": "reboot", "id": r}    {"cmd": "silence", "id": r}
  {"cmd": "walktest", "id": r, "on": true, "minutes": 30}   (on false: ends it)

In safe mode only `status` runs (fl/commands.py). Every change is recorded as a 306 event.
A result that asks for a restart carries `restart` (fl/commands.py resets after answering).
"""
import json

from fl import service, ticks
from fl.log import Logger
from fl.service import ServiceError

_log = Logger("cmd")
NAMES = ("status", "config get", "config set", "reboot", "silence", "walktest", "test")
MIN_INTERVAL_MS = 1000


def dispatch(commands, app, name, msg, ref):
    """fl/commands.py's entry: rate limit, run, the answer's common keys. ValueError refuses."""
    if ref is None:  # `test` alone runs without one, as before these commands existed
        raise ValueError("no \"id\": every command carries one (a string), and its result echoes it")
    if ticks.recent(commands._last_remote, MIN_INTERVAL_MS):
        raise ValueError("busy: one command per %d ms" % MIN_INTERVAL_MS)
    commands._last_remote = ticks.ms()
    try:
        result = run(app, name, msg, ref)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - a failing command is answered, never ends the task
        raise ValueError("failed: %r" % (e,))
    result["id"], result["cmd"], result["ok"] = ref, name, True
    _log.info("command %s (%s) done", name, ref)
    return result


def run(app, name, msg, ref):
    """The result (dict) of one command; ServiceError/ValueError for a refused one."""
    if name == "status":
        return {"status": json.loads(app.heartbeat.payload(counters=True))}
    if name not in NAMES:
        raise ServiceError("unknown command %r" % (name,))
    if app.safe_mode:
        raise ServiceError("refused in safe mode (only status runs)")
    if app.console is None and name in ("walktest", "config set"):
        # Both keep their state in the console (the walk test's end, the rollback watch).
        raise ServiceError("not on this board: it runs without the diagnostics console (docs/diag.md)")
    if name == "silence":
        service.silence(app, "centre")
        return {}
    if name == "reboot":
        service.changed(app, "reboot", "centre")
        return {"restart": "reboot asked by the centre"}
    if name == "walktest":
        on = msg.get("on")
        if on is True:
            secs = msg.get("seconds", 60 * msg.get("minutes", 30) if type(msg.get("minutes", 30)) is int else None)
            if type(secs) is not int:
                raise ServiceError("minutes (or seconds) must be an integer")
            service.walk_on(app, "centre", secs)
        elif on is False:
            service.walk_off(app, "centre")
        else:
            raise ServiceError("walktest needs \"on\": true or false")
        return {"walk": service.walk_state(app)}
    if name == "config get":
        cfg = service.masked_config(app.config)
        key = msg.get("key")
        if key is None:
            # One MQTT packet (fl/boot.py MQTT_PACKET): the inputs by name when all would not fit.
            if len(json.dumps(cfg)) > 1500:
                cfg["inputs"] = [i["name"] for i in cfg["inputs"]]
            return {"config": cfg}
        v = cfg
        for part in str(key).split("."):
            if type(v) is not dict or part not in v or part == "secrets":
                raise ServiceError("no config key %r" % (str(key)[:40],))
            v = v[part]
        return {"key": key, "value": v}
    if name == "config set":
        key, rollback = msg.get("key"), msg.get("rollback_s", service.ROLLBACK_S)
        if type(key) is not str or "value" not in msg:
            raise ServiceError("config set needs \"key\" and \"value\"")
        if type(rollback) is not int or not 20 <= rollback <= 900:
            raise ServiceError("rollback_s must be 20..900")
        v = service.config_set(app, key, msg["value"], "centre", rollback)
        return {"key": key, "value": v, "rollback_s": rollback, "restart": "config %s changed by the centre" % key}
    raise ServiceError("unknown command %r" % (name,))
