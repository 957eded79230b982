"""What a technician (serial console) or the centre (remote commands) may do to the device:
silence the buzzer, test the indications, walk test mode, set one config key, reboot.

Walk test (issue 12): entered and left with a Contact ID 607 event (new, then restore); while it
is on, every input event still goes to the centre, carrying `"test": true` (docs/protocol.md),
and it ends by itself after a bounded time (WALK_DEFAULT_S, at most WALK_MAX_S). Every change
made through here is recorded as a 306 event naming who asked (`by`: "console" or "centre").

A config change is validated by fl.config (loaded for the moment, released after: it is
boot-only code, fl/boot.py), written atomically and applied by a restart. From the centre, a
change that breaks the connection is undone by the device itself: the old config.json is kept
as ROLLBACK_FILE and, if the broker is not reached within ROLLBACK_S of the restart, put back
and the device restarts again (`confirm_online()` / `rollback_due()`, called by housekeeping).
"""
import asyncio
import json

from fl import log, store, ticks

_log = log.Logger("service")
WALK_DEFAULT_S = 30 * 60
WALK_MAX_S = 4 * 3600
ROLLBACK_FILE = "config.rollback"
ROLLBACK_S = 120
# Keys a technician or the centre may change with `set` (dotted for sections); the rest
# (inputs, identity) are provisioning's.
SETTABLE = ("site", "heartbeat_s", "centre_ack_timeout_s", "path_fault_delay_s", "periodic_test_s", "log_level",
            "broker.host", "broker.port", "broker.tls", "broker.server_hostname", "broker.keepalive_s",
            "broker.connect_timeout_ms", "broker.puback_timeout_ms", "broker.backoff_max_s", "wifi.ssid",
            "cellular.apn")


class ServiceError(ValueError):
    """A request that cannot be done; the message says why (sent back as is)."""


class Service:
    def __init__(self, app):
        self._app = app
        self.walk = None  # ticks.Countdown while walk test mode is on
        self.walk_s = 0
        self.walk_by = None
        self._offline_s = 0

    # --- indications ---
    def silence(self, by):
        self._app.indicators.silence()
        self._changed("silence", by)

    async def lamp_test(self, ms=1500):
        """Every LED and the buzzer on for ms, then back to what the indicators show."""
        board = self._app.board
        for name in ("led_status", "led_fault", "buzzer"):
            board.output(name, True)
        await asyncio.sleep_ms(ms)
        board.output("buzzer", False)  # the indicators' task sets the LEDs again within 500 ms

    # --- walk test ---
    def walk_on(self, by, seconds=WALK_DEFAULT_S):
        if type(seconds) is not int or not 60 <= seconds <= WALK_MAX_S:
            raise ServiceError("walk test length must be 60..%d s" % WALK_MAX_S)
        fresh = self.walk is None
        self.walk = ticks.Countdown(seconds * 1000)
        self.walk_s = seconds
        self.walk_by = by
        if fresh:
            self._app.recorder.record("607", "new", 0, "", "status", detail="walk test %d s by %s" % (seconds, by))
            _log.warn("walk test on for %d s (%s): alarms go to the centre flagged as test", seconds, by)

    def walk_off(self, by, why="ended"):
        if self.walk is None:
            return False
        self.walk = None
        self._app.recorder.record("607", "restore", 0, "", "status", detail="walk test %s by %s" % (why, by))
        _log.warn("walk test off (%s, %s)", why, by)
        return True

    def walk_left_s(self):
        return None if self.walk is None else max(0, self.walk.left() // 1000)

    def test_flag(self):
        """The JSON to add to an input event (fl/app.py): `"test": true` in walk test."""
        return ',"test":true' if self.walk is not None else None

    def tick(self):
        """Housekeeping's, every second: the walk test's own end, the rollback watch."""
        if self.walk is not None and self.walk.due():
            self.walk_off("timer", "timed out")
        if store.exists(ROLLBACK_FILE):
            self._watch_rollback()

    # --- config ---
    def config_set(self, key, value, by):
        """Validates `key` = value (already parsed JSON) against fl.config and writes config.json.
        Returns the value as validated. The caller restarts the device to apply it."""
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
        problems = _validate(cfg, self._app.board)
        mine = [p for p in problems if (": " + key + ":") in p or (": " + key + " ") in p]
        if mine:
            raise ServiceError(mine[0])
        if by == "centre":
            # Kept for the device's own rollback; ROLLBACK_FILE present means "watching".
            store.write_atomic(ROLLBACK_FILE, raw or b"{}")
        store.write_atomic("config.json", json.dumps(cfg).encode())
        self._changed("config %s %s -> %s" % (key, _short(old), _short(value)), by)
        return value

    def _watch_rollback(self):
        mqtt = self._app.mqtt
        if mqtt.connected:
            self._offline_s = 0
            import os
            try:
                os.remove(ROLLBACK_FILE)
                store.charge()
            except OSError:
                pass
            _log.info("online after the config change: kept")
            return
        self._offline_s += 1
        if self._offline_s >= ROLLBACK_S:
            old = store.read_bytes(ROLLBACK_FILE)
            _log.error("not online %d s after a config change from the centre: rolling back", ROLLBACK_S)
            if old:
                store.write_atomic("config.json", old)
            import os
            os.remove(ROLLBACK_FILE)
            self._changed("config rolled back: not online within %d s" % ROLLBACK_S, "device")
            self.restart("config rollback")

    # --- restart ---
    def restart(self, why):
        """Flushes what must survive and resets the board (the new config applies on the boot)."""
        _log.warn("restarting: %s", why)
        app = self._app
        try:
            app.outbox.flush_removals()
            app.recorder.checkpoint()
        except Exception as e:  # noqa: BLE001 - restart anyway: nothing recorded is lost (outbox on flash)
            _log.error("before restart: %r", e)
        app.board.reset("software")

    def _changed(self, what, by):
        self._app.recorder.record("306", "new", 0, "", "status", detail=("%s by %s" % (what, by))[:120])


def _short(v):
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _validate(cfg, board):
    """The problems fl.config finds in cfg; the validator is loaded for this and released."""
    from fl.boot import BOOT_ONLY, release
    try:
        from fl import config
        _, problems = config.validate(cfg, board.board_info())
    finally:
        board.release_info()
        release(BOOT_ONLY)
    return problems
