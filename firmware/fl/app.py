"""Builds the transmitter from its parts and runs it: input → event → outbox → link → broker.

Boot order matters: the outbox and sequence numbers come first so that nothing that
happens afterwards can be lost; inputs are watched before any network exists; a bad
config only narrows what runs, never the watching of inputs.
"""
import asyncio
import json
import time

from fl import VERSION, log
from fl.clock import Clock
from fl.commands import Commands
from fl.events import Sequencer
from fl.health import Health
from fl.heartbeat import Heartbeat
from fl.indicators import Indicators
from fl.inputs import Inputs, event_for
from fl.link import LinkManager
from fl.mqtt import MQTTClient
from fl.outbox import Outbox
from fl.recorder import Recorder
from fl.sender import AckWatch, Sender
from fl.store import read_bytes
from fl.watchdog import Watchdog

_log = log.Logger("app")
TOPIC_ROOT = "firelink/"
CONFIG_DETAIL_MAX = 900
CLOCK_RESYNC_MS = 6 * 3600 * 1000  # RTC drift stays far inside a receiver's -40/+20 s window
CLOCK_RETRY_MS = 60 * 1000
TLS_CLOCK_WAIT_MS = 30 * 1000
STORAGE_RETRY_S = 30
# Health faults → the Contact ID code of the event that reports each; `task_<part>` (a part
# that failed and was restarted) is 307 too. Other faults show in the heartbeat only.
FAULT_CODES = {"centre_ack": "354", "path_wifi": "351", "path_cellular": "352"}
FAULT_CODES.update((name, "307") for name in ("safe_mode", "config", "storage", "sequence", "input_read",
                                               "input_event", "unsendable"))
FAULT_CODES.update((name, "350") for name in ("mqtt_auth", "mqtt_tls", "mqtt_refused", "mqtt_subscribe",
                                               "broker_unreachable"))


def fault_code(name):
    return "307" if name.startswith("task_") else FAULT_CODES.get(name)


class App:
    def __init__(self, board, safe_mode=False, guard=None, healthy_after_s=60, loaded=None):
        """loaded: (config, problems) from fl.boot.load_config, read before the app's modules
        were imported; None reads it here."""
        self.board = board
        self.safe_mode = safe_mode
        self._guard = guard
        self._healthy_after_ms = healthy_after_s * 1000
        self.health = Health()
        self.progress = 0  # housekeeping's, for the watchdog
        self._partial = {}  # input name -> ((old, new), events already recorded for that change)
        self.reset_cause = board.reset_cause()
        if loaded is None:
            from fl.boot import load_config
            loaded = load_config(board)
        info = board.board_info()
        self.config, problems = loaded
        cfg = self.config
        log.level = {"debug": log.DEBUG, "info": log.INFO, "warn": log.WARN, "error": log.ERROR}[cfg["log_level"]]
        self.device_id = cfg["device_id"]
        self.prefix = TOPIC_ROOT + self.device_id + "/"
        self.clock = Clock(board)

        # Nothing may be recorded before these two exist.
        self.outbox = Outbox(capacity=cfg["outbox_capacity"])
        self.recorder = Recorder(self.outbox, Sequencer(), self.clock, self.health)
        self.health.listen(self._on_fault)
        for name, detail in list(self.health.faults.items()):  # raised while the recorder opened
            self._on_fault(name, True, detail)
        _log.info("FireLink %s on %s as %s, reset cause %s, %d events waiting", VERSION, board.name,
                  self.device_id, self.reset_cause, len(self.outbox))
        self.recorder.record("305", "new", 0, "", "status", detail=self.reset_cause)
        if safe_mode:
            failed = guard.failed_boots if guard else 0
            _log.error("SAFE MODE after %d boots that never got healthy: alarm path only", failed)
            self.health.set_fault("safe_mode", True, "%d failed boots" % failed)
        for p in problems:
            _log.error("%s", p)
        if problems:
            # The 307 event carries what fits one outbox slot; the heartbeat carries the whole
            # list (bounded so the heartbeat stays one packet).
            self.health.set_fault("config", True, ("%d problem%s: " % (len(problems), "s" if len(problems) > 1 else ""))
                                  + "; ".join(problems)[:CONFIG_DETAIL_MAX])

        self.inputs = Inputs(board, cfg["inputs"], info["eol"], self._on_input,
                             battery_low_mv=info["battery"]["low_mv"], health=self.health)
        # The inputs were the last to read board.json: its parse (≈11 KB on the 64-bit port)
        # goes before the MQTT client and the rest are built.
        info = None
        board.release_info()
        paths = board.paths(cfg)
        for p in paths:
            p.fault_delay_ms = cfg["path_fault_delay_s"] * 1000
        self.links = LinkManager(paths, health=self.health)
        self.ack_watch = AckWatch(cfg["centre_ack_timeout_s"], self.health)
        self.mqtt = self._make_mqtt(cfg)
        self.commands = Commands(self.recorder, self.mqtt, self.prefix + "cmd/result")
        self.sender = Sender(self.outbox, self.mqtt, self.prefix + "event", self.recorder.queued, self.health)
        self.heartbeat = Heartbeat(board, self.clock, self.health, self.inputs, self.links, self.outbox, self.mqtt,
                                   self.prefix + "heartbeat", cfg["heartbeat_s"], self.reset_cause)
        self.indicators = Indicators(board, self.health, self.mqtt)
        self.watchdog = Watchdog(board)

    def _status(self, state):
        ts, _ = self.clock.now()
        return json.dumps({"state": state, "fw": VERSION, "reset": self.reset_cause, "ts": ts,
                           "safe_mode": self.safe_mode}, separators=(",", ":")).encode()

    def _make_mqtt(self, cfg):
        b = cfg["broker"]
        secrets = cfg["_secrets"]
        ssl_params = None
        if b["tls"]:
            ssl_params = {"ca_der": read_bytes(secrets.get("tls_ca") or "ca.der"),
                          "cert_der": read_bytes(secrets.get("tls_cert") or "device.der"),
                          "key_der": read_bytes(secrets.get("tls_key") or "device.key.der"),
                          "server_hostname": b["server_hostname"] or b["host"]}
        return MQTTClient(
            self.links, self.device_id, b["host"], b["port"],
            username=secrets.get("mqtt_username") or self.device_id, password=secrets.get("mqtt_password"),
            keepalive_s=b["keepalive_s"], ping_interval_s=b["ping_interval_s"],
            connect_timeout_ms=b["connect_timeout_ms"], puback_timeout_ms=b["puback_timeout_ms"],
            ssl_params=ssl_params, will=(self.prefix + "status", self._status("offline"), True, 1),
            birth=(self.prefix + "status", self._status("online")),
            subscriptions=[(self.prefix + "ack", 1), (self.prefix + "cmd", 1)],
            on_message=self._on_message, backoff_max_s=b["backoff_max_s"], health=self.health)

    # --- what flows in ---
    def _on_input(self, spec, old, new):
        name = spec["name"]
        _log.info("input %s: %s -> %s", name, old, new)
        if spec["kind"] == "mains":
            self.board.on_mains(new != "active")
        # One change can mean two events (380 restore, then the fire). If recording raises, the
        # inputs retry the whole change: skip what an earlier try already recorded.
        done = self._partial.pop(name, (None, 0))
        skip = done[1] if done[0] == (old, new) else 0
        for i, (code, q, cls) in enumerate(event_for(spec["kind"], old, new, self.inputs.prior(name))):
            if i < skip:
                continue
            try:
                event = self.recorder.record(code, q, spec["zone"], name, cls)
            except Exception:
                self._partial[name] = ((old, new), i)
                raise
            if cls == "fire" and q == "new":
                self.ack_watch.expect(event.id)

    def _on_fault(self, name, active, detail):
        code = fault_code(name)
        if code:
            self.recorder.record(code, "new" if active else "restore", 0, name, "fault", detail=detail or None)

    def _on_message(self, topic, payload):
        if topic == self.prefix + "ack":
            self.ack_watch.on_ack(payload)
        elif topic == self.prefix + "cmd" and self.safe_mode:
            _log.warn("safe mode: remote commands are off; ignoring %d bytes", len(payload))
        elif topic == self.prefix + "cmd":
            self.commands.handle(payload)
        else:
            _log.warn("ignoring message on unexpected topic %s", topic)

    # --- running ---
    async def run(self):
        await self.inputs.start()
        _log.info("inputs: %s", self.inputs.states())
        b = self.config["broker"]
        # A task may legitimately sit in one bounded wait this long (a connect, a PUBACK, a
        # Wi-Fi association); longer without progress means it is stuck.
        publish_ms = b["puback_timeout_ms"] + 5000 + 15000
        allowances = {"inputs": 5000, "sender": publish_ms, "heartbeat": publish_ms, "links": 60000,
                      "mqtt": b["connect_timeout_ms"] + 2 * b["puback_timeout_ms"] + 15000, "ack_watch": 5000,
                      "indicators": 5000, "housekeeping": 30000}
        parts = (("inputs", self.inputs), ("links", self.links), ("mqtt", self.mqtt), ("sender", self.sender),
                 ("ack_watch", self.ack_watch), ("heartbeat", self.heartbeat), ("indicators", self.indicators),
                 ("housekeeping", self))
        for name, obj in parts:
            self.watchdog.watch(name, obj, allowances[name])
        tasks = [asyncio.create_task(self._supervise(name, obj)) for name, obj in parts]
        tasks.append(asyncio.create_task(self.watchdog.run()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _supervise(self, name, part):
        """Runs one part; if it raises, reports it as a fault and starts it again. One bug in a
        part must not take down the others (MicroPython's gather ends them all); if the part
        keeps failing, the watchdog sees no progress and resets the board."""
        runner = self._housekeeping if part is self else self._mqtt_run if part is self.mqtt else part.run
        delay_ms = 1000
        while True:
            try:
                await runner()
                _log.error("task %s ended; starting it again", name)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - anything, reported and restarted
                try:
                    _log.error("task %s failed: %r; starting it again in %d ms", name, e, delay_ms)
                    self.health.count("task_" + name + "_failed")
                    self.health.set_fault("task_" + name, True, repr(e)[:80])
                except Exception:  # noqa: BLE001 - reporting failed too (a full heap): restart it anyway
                    pass  # an exception here would end gather(), i.e. every part: a dead transmitter
            await asyncio.sleep_ms(delay_ms)
            delay_ms = min(delay_ms * 2, 30000)

    async def _mqtt_run(self):
        """TLS verification on the ESP32 needs a set clock (certificate validity dates): give the
        first connection a bounded chance to sync it, then connect whatever happened (a
        refused certificate is reported as a fault and retried)."""
        if self.config["broker"]["tls"] and not self.board.clock_synced():
            deadline = time.ticks_add(time.ticks_ms(), TLS_CLOCK_WAIT_MS)
            while not self.board.clock_synced() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
                if self.links.current() is not None:
                    await self.board.sync_clock(5000)
                else:
                    await asyncio.sleep_ms(500)
        await self.mqtt.run()

    async def _housekeeping(self):
        """Slow chores: set the clock once a path is up (TLS verification and event times need
        it) and again every CLOCK_RESYNC_MS; mark the boot healthy once the alarm path has
        worked for a while; keep trying to move RAM-held events back to a flash that refused them."""
        connected_ms = 0
        offline_ms = 0
        storage_retry_s = 0
        test_every_ms = self.config["periodic_test_s"] * 1000
        next_test = time.ticks_add(time.ticks_ms(), test_every_ms)
        next_sync = time.ticks_ms()
        fault_delay_ms = self.config["path_fault_delay_s"] * 1000
        while True:
            await asyncio.sleep_ms(1000)
            self.progress += 1
            # A path can be up while the broker is not reachable through it (WAN down, broker
            # gone): that is communication trouble too, reported after the same delay.
            offline_ms = 0 if self.mqtt.connected or self.links.current() is None else offline_ms + 1000
            if offline_ms >= fault_delay_ms:
                self.health.set_fault("broker_unreachable", True, self.mqtt.last_error[:80])
            elif self.mqtt.connected:
                self.health.set_fault("broker_unreachable", False)
            if time.ticks_diff(time.ticks_ms(), next_sync) >= 0 and self.links.current() is not None:
                synced = await self.board.sync_clock(5000)
                next_sync = time.ticks_add(time.ticks_ms(), CLOCK_RESYNC_MS if synced else CLOCK_RETRY_MS)
            if self._guard is not None and connected_ms < self._healthy_after_ms:
                connected_ms = connected_ms + 1000 if self.mqtt.connected else 0
                if connected_ms >= self._healthy_after_ms:
                    self._guard.healthy()
                    _log.info("healthy: boot counter cleared")
            if time.ticks_diff(time.ticks_ms(), next_test) >= 0:
                next_test = time.ticks_add(next_test, test_every_ms)
                self._periodic_test()
            if not self.outbox.storage_fault:
                storage_retry_s = 0
            elif storage_retry_s > 0:
                storage_retry_s -= 1
            elif self.outbox.retry_storage():
                _log.info("flash accepts writes again: events moved back from RAM")
                self.health.set_fault("storage", False)
            else:
                # A failing chip is not rewritten every second; new events still try it anyway.
                storage_retry_s = STORAGE_RETRY_S

    def _periodic_test(self):
        """The periodic test report proves the whole path end to end even when nothing happens;
        608 instead of 602 tells the centre that some trouble is present (named in detail)."""
        troubles = sorted(self.health.faults)
        if troubles:
            self.recorder.record("608", "new", 0, "", "status", detail="troubles: " + ", ".join(troubles))
        else:
            self.recorder.record("602", "new", 0, "", "status")

    async def shutdown(self, timeout_ms=2000):
        """Clean stop: says `offline` itself so the centre does not wait for the will."""
        try:
            await asyncio.wait_for_ms(self.mqtt.disconnect(self._status("offline")), timeout_ms)
        except (asyncio.TimeoutError, OSError) as e:
            _log.warn("clean shutdown incomplete: %s", e)


def main(board=None, loaded=None):
    """Runs the transmitter; `board` and `loaded` (config, problems) as fl.boot.main made them."""
    from fl.bootguard import BootGuard

    if board is None:
        from fl import hal
        board = hal.load()
    guard = BootGuard()
    safe = guard.begin()
    try:
        app = App(board, safe_mode=safe, guard=guard, loaded=loaded)
    except Exception as e:  # noqa: BLE001 - a bug at start must not leave the panel unwatched
        _log.error("start failed (%r): retrying in safe mode", e)
        try:
            app = App(board, safe_mode=True, guard=guard, loaded=loaded)
        except Exception as e2:  # noqa: BLE001
            # Nothing watches the panel now: a board left at the REPL would be a silent dead
            # transmitter. Restart (the boot counter shows the loop) rather than sit here.
            _log.error("safe mode failed too (%r): restarting", e2)
            time.sleep_ms(2000)
            board.reset("software")
            return
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        _log.info("stopping (Ctrl-C)")
        board.relax_watchdog()
        asyncio.run(app.shutdown())
    finally:
        asyncio.new_event_loop()
