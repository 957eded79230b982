"""Builds the transmitter from its parts and runs it: input → event → outbox → link → broker.

Boot order matters: the outbox and sequence numbers come first so that nothing that
happens afterwards can be lost; inputs are watched before any network exists; a bad
config only narrows what runs, never the watching of inputs.

What the centre has been told is kept across reboots (fl/reported.py): every input change
and fault is reported as the difference between that and what the device sees now, so a
reboot sends the restore of what cleared meanwhile and never a second `new` for what is
still active. A fault carried over from before the reboot is restored once this boot has
shown it gone: at once for what boot decides (configuration, storage, ...), after the first
connection for the broker's faults, when the path is up for a path fault, once no fire
awaits its ack for 354.
"""
import asyncio
import json
import time

from fl import VERSION, log, ticks
from fl.boot import release
from fl.clock import Clock
from fl.commands import Commands
from fl.events import Sequencer
from fl.health import Health
from fl.heartbeat import Heartbeat
from fl.indicators import Indicators
from fl.inputs import CODES, FIRE_KINDS, LINE_TROUBLE, NORMAL, ACTIVE, OPEN, SHORT, Inputs
from fl.link import LinkManager
from fl.mqtt import MQTTClient
from fl.outbox import Outbox
from fl.recorder import Recorder
from fl.reported import Reported
from fl.sender import AckWatch, Sender
from fl.store import read_bytes
from fl.watchdog import Watchdog

_log = log.Logger("app")
TOPIC_ROOT = "firelink/"
CONFIG_DETAIL_MAX = 900
CLOCK_RESYNC_MS = 6 * 3600 * 1000  # RTC drift stays far inside a receiver's -40/+20 s window
CLOCK_RETRY_MS = 60 * 1000
TLS_CLOCK_WAIT_MS = 30 * 1000
CLOCK_SYNC_MS = 5000  # one clock sync, lookups included
CLOCK_PAUSE_MS = 1000
STORAGE_RETRY_S = 30
SEQ_BLOCK = 256  # the floor on flash for when the outbox cannot tell: one write per 256 events
STATE_FLUSH_S = 3  # an ack (not in the outbox's journal) is on flash within this
# Health faults → the Contact ID code of the event that reports each; `task_<part>` (a part
# that failed and was restarted) is 307 too. Other faults show in the heartbeat only.
FAULT_CODES = {"centre_ack": "354", "path_wifi": "351", "path_cellular": "352", "backup_test": "352",
               "paths_all": "350"}
FAULT_CODES.update((name, "353") for name in ("modem_sim", "modem_service", "modem_signal", "modem_dead"))
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
        self.reset_cause = board.reset_cause()
        self.console = None  # the serial diagnostics (issue 12), where the board has the heap for it
        if loaded is None:
            from fl.boot import load_config
            loaded = load_config(board)
        info = board.board_info()
        self.config, problems = loaded
        if info.get("diag_console", True):
            from fl.diag import Console
            self.console = Console(self)  # keeps the log lines from here on
        cfg = self.config
        log.level = {"debug": log.DEBUG, "info": log.INFO, "warn": log.WARN, "error": log.ERROR}[cfg["log_level"]]
        self.device_id = cfg["device_id"]
        self.prefix = TOPIC_ROOT + self.device_id + "/"
        self.clock = Clock(board)

        # Nothing may be recorded before these exist.
        self.outbox = Outbox(capacity=cfg["outbox_capacity"])
        self.reported = Reported()
        self.recorder = Recorder(self.outbox, Sequencer(block=SEQ_BLOCK), self.clock, self.health, self.reported)
        self.ack_watch = AckWatch(cfg["centre_ack_timeout_s"], self.health)
        ts, synced = self.clock.now()
        self.ack_watch.restore(self.reported.acks, ts, synced is True)
        for event_id, ets, esynced in self.recorder.replayed_fires:
            self.ack_watch.restore({event_id: [ets + cfg["centre_ack_timeout_s"] if esynced else 0,
                                               cfg["centre_ack_timeout_s"] * 1000]}, ts, synced is True)
        self.recorder.before_checkpoint = self._snapshot_acks
        self._state_dirty_s = 0
        self._input_names = set(s["name"] for s in cfg["inputs"])
        self._carried = None  # faults reported before the reboot, not yet shown gone or active
        self.health.listen(self._on_fault)
        for name, detail in list(self.health.faults.items()):  # raised while the recorder opened
            self._on_fault(name, True, detail)
        _log.info("FireLink %s on %s as %s, reset cause %s, %d events waiting", VERSION, board.name,
                  self.device_id, self.reset_cause, len(self.outbox))
        # What stays active as the centre was told: no second `new` follows for these.
        from fl import recovery
        self.recorder.record("305", "new", 0, "", "status", detail=self.reset_cause,
                             more=recovery.active_json(self.outbox, self.reported))
        del recovery
        release(("fl.recovery",))  # boot-only: its heap goes to what runs
        self.recorder.restore_levels()
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
        # goes before the MQTT client and the rest are built; its name stays (the console's `id`).
        self.board_name = info.get("name")
        info = None
        board.release_info()
        paths = board.paths(cfg)
        for p in paths:
            p.fault_delay_ms = cfg["path_fault_delay_s"] * 1000
        # Wi-Fi and 4G, or 4G alone (a site without Wi-Fi): the path manager, which also
        # reports the modem's faults, resets and health.
        managed = len(paths) > 1 or any(getattr(p, "modem", None) is not None for p in paths)
        if managed:
            from fl.pathmgr import PathManager  # which path carries the session

            self.links = PathManager(paths, self.health, cfg["cellular"], (cfg["broker"]["host"], cfg["broker"]["port"]),
                                     self.recorder.record)
        else:
            self.links = LinkManager(paths, health=self.health)
        self.mqtt = self._make_mqtt(cfg)
        self.commands = Commands(self.recorder, self.mqtt, self.prefix + "cmd/result", app=self)
        self.sender = Sender(self.outbox, self.mqtt, self.prefix + "event", self.recorder.queued, self.health)
        if managed:
            self.sender.tag_path = True
            self.links.mqtt = self.mqtt
        self.heartbeat = Heartbeat(board, self.clock, self.health, self.inputs, self.links, self.outbox, self.mqtt,
                                   self.prefix + "heartbeat", cfg["heartbeat_s"], self.reset_cause)
        if managed:
            self.links.heartbeat = self.heartbeat  # the backup test is a heartbeat over the backup
            self.links.fire_waiting = self._fire_waiting
        self.indicators = Indicators(board, self.health, self.mqtt, console=self.console or False)
        self.watchdog = Watchdog(board)

    def _fire_waiting(self):
        return self.outbox.depth_by_priority()[0] > 0

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
        """Reports what the input's new state means that the centre was not told: line trouble
        (380) and the input's own condition are each reported on change only. One change can
        mean two events (380 restore, then the fire); if recording raises, the inputs retry
        the change and what was recorded already is not recorded again."""
        name, kind = spec["name"], spec["kind"]
        if kind == "mains":
            self.board.on_mains(new != "active")
        if old != new and not (old == "boot" and new == NORMAL):
            _log.info("input %s: %s -> %s", name, old, new)
        own = CODES[kind]
        own_cls = "fire" if kind in FIRE_KINDS else "fault"
        rep = self.reported
        trouble = new == OPEN or new == SHORT
        told_trouble = rep.is_active(LINE_TROUBLE, name)
        told_own = rep.is_active(own, name)
        # In line trouble the input's own condition is unknown: it stays as told.
        own_now = told_own if trouble else new == ACTIVE
        if told_trouble and not trouble:
            self.recorder.record(LINE_TROUBLE, "restore", spec["zone"], name, "fault")
        if own_now != told_own:
            event = self.recorder.record(own, "new" if own_now else "restore", spec["zone"], name, own_cls,
                                         more=self.console and self.console.test_flag())
            if own_cls == "fire" and own_now:
                self.ack_watch.expect(event.id)
        if trouble and not told_trouble:
            self.recorder.record(LINE_TROUBLE, "new", spec["zone"], name, "fault")

    def _on_fault(self, name, active, detail):
        code = fault_code(name)
        if code and self.reported.is_active(code, name) != active:
            self.recorder.record(code, "new" if active else "restore", 0, name, "fault", detail=detail or None)

    def _restore_carried_faults(self):
        """Restores each fault the centre was told of before the reboot once this boot has
        shown it gone (see the module's doc). Housekeeping asks every second; nothing to look
        at (and nothing allocated) once each is settled."""
        if self._carried is None:
            self._carried = [(code, name) for code, name, _, cls in self.reported.active()
                             if cls == "fault" and name not in self._input_names and fault_code(name) == code]
        k = 0
        while k < len(self._carried):
            code, name = self._carried[k]
            if name in self.health.faults or not self.reported.is_active(code, name):
                self._carried.pop(k)  # active again, or restored: reported as it changes from now on
                continue
            k += 1
            if name.startswith("mqtt_") or name == "broker_unreachable":
                gone = self.mqtt.connected
            elif name.startswith("path_"):
                gone = False
                for p in self.links.paths:
                    if "path_" + p.name == name:
                        gone = p.is_up()
            elif name == "centre_ack":
                gone = self.ack_watch.pending() == 0
            else:
                gone = True
            if gone:
                _log.info("%s cleared since the reboot: restore", name)
                self.recorder.record(code, "restore", 0, name, "fault")

    def _snapshot_acks(self):
        ts, synced = self.clock.now()
        self.reported.acks = self.ack_watch.snapshot(ts, synced is True)
        self.ack_watch.changed = False

    def _keep_state(self):
        """Checkpoints the reported state when due: what the outbox cannot replay (acks, lost
        ranges not yet declared) within STATE_FLUSH_S, the rest every CHECKPOINT_EVERY events."""
        rep = self.reported
        if self.ack_watch.changed or self.outbox.lost != rep.lost:
            rep.dirty = True
        if not rep.due():
            self._state_dirty_s = 0
            return
        self._state_dirty_s += 1
        if self._state_dirty_s >= STATE_FLUSH_S or not rep.dirty:
            self._state_dirty_s = 0
            self.recorder.checkpoint()

    def _on_message(self, topic, payload):
        if topic == self.prefix + "ack":
            self.ack_watch.on_ack(payload)
        elif topic == self.prefix + "cmd":
            self.commands.handle(payload)
        else:
            _log.warn("ignoring message on unexpected topic %s", topic)

    # --- running ---
    async def run(self):
        await self.start_inputs()
        await self._run_parts()

    async def start_inputs(self):
        """Inputs read steadily, reported against what the centre was told before the boot."""
        await self.inputs.start()
        _log.info("inputs: %s", self.inputs.states())
        # Abnormal inputs were reported from boot; normal ones may owe the centre a restore.
        for spec in self.inputs.specs:
            if self.inputs.states()[spec["name"]] == NORMAL:
                try:
                    self._on_input(spec, "boot", NORMAL)
                except Exception as e:  # noqa: BLE001 - the next change or boot reports it
                    _log.error("restore of %s at boot failed: %r", spec["name"], e)
        self._restore_carried_faults()

    async def _run_parts(self):
        b = self.config["broker"]
        # A task may legitimately sit in one bounded wait this long (a connect, a PUBACK, a
        # Wi-Fi association); longer without progress means it is stuck.
        publish_ms = b["puback_timeout_ms"] + 5000 + 15000
        allowances = {"inputs": 5000, "sender": publish_ms, "heartbeat": publish_ms, "links": 60000,
                      "mqtt": b["connect_timeout_ms"] + 2 * b["puback_timeout_ms"] + 15000, "ack_watch": 5000,
                      "indicators": 5000, "housekeeping": 30000, "commands": publish_ms}
        parts = (("inputs", self.inputs), ("links", self.links), ("mqtt", self.mqtt), ("sender", self.sender),
                 ("ack_watch", self.ack_watch), ("heartbeat", self.heartbeat), ("indicators", self.indicators),
                 ("commands", self.commands), ("housekeeping", self))
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
                    _crashed(name, e, self.heartbeat.uptime_s(), self.console and self.console.boot)
                except Exception:  # noqa: BLE001 - reporting failed too (a full heap): restart it anyway
                    pass  # an exception here would end gather(), i.e. every part: a dead transmitter
            await asyncio.sleep_ms(delay_ms)
            delay_ms = min(delay_ms * 2, 30000)

    async def _mqtt_run(self):
        """TLS verification on the ESP32 needs a set clock (certificate validity dates): give the
        first connection a bounded chance to sync it, then connect whatever happened (a
        refused certificate is reported as a fault and retried)."""
        if self.config["broker"]["tls"] and not self.board.clock_synced():
            deadline = ticks.after(TLS_CLOCK_WAIT_MS)
            while not self.board.clock_synced() and not ticks.due(deadline):
                path = self.links.current()
                if path is None or not await self._sync_clock(path, min(CLOCK_SYNC_MS, ticks.left(deadline))):
                    # Paced whatever happened: an attempt that fails at once (no server, a
                    # refusal) must not turn this into a loop that never yields.
                    await asyncio.sleep_ms(CLOCK_PAUSE_MS)
        await self.mqtt.run()

    async def _sync_clock(self, path, timeout_ms):
        """SNTP over path, on the event loop and bounded by timeout_ms (fl.sntp)."""
        return await self.board.sync_clock(path, self.config["ntp_servers"], timeout_ms)

    async def _housekeeping(self):
        """Slow chores: set the clock once a path is up (TLS verification and event times need
        it) and again every CLOCK_RESYNC_MS; mark the boot healthy once the alarm path has
        worked for a while; keep trying to move RAM-held events back to a flash that refused them."""
        connected_ms = 0
        offline_ms = 0
        storage_retry_s = 0
        test_every_ms = self.config["periodic_test_s"] * 1000
        # Up to a week: beyond what ticks.add accepts on the board (2^29 ms), so a countdown.
        next_test = ticks.Countdown(test_every_ms)
        next_sync = ticks.Countdown(0)  # may wait days for a path: a deadline's age would wrap
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
            path = self.links.current()
            if next_sync.due() and path is not None:
                synced = await self._sync_clock(path, CLOCK_SYNC_MS)
                next_sync.start(CLOCK_RESYNC_MS if synced else CLOCK_RETRY_MS)
            if self._guard is not None and connected_ms < self._healthy_after_ms:
                connected_ms = connected_ms + 1000 if self.mqtt.connected else 0
                if connected_ms >= self._healthy_after_ms:
                    self._guard.healthy()
                    _log.info("healthy: boot counter cleared")
            if next_test.due():
                next_test.extend(test_every_ms)
                self._periodic_test()
            self._restore_carried_faults()
            if self.console:
                self.console.tick()
            self.recorder.declare_lost()
            self._keep_state()
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
        self.outbox.flush_removals()
        self.recorder.checkpoint()
        try:
            await asyncio.wait_for_ms(self.mqtt.disconnect(self._status("offline")), timeout_ms)
        except (asyncio.TimeoutError, OSError) as e:
            _log.warn("clean shutdown incomplete: %s", e)


def _crashed(part, e, uptime_s, boot):
    """Keeps the failure on flash for `firelink diag report` (fl/crash.py, loaded for this only)."""
    try:
        from fl import crash
        crash.record(part, e, VERSION, uptime_s, boot)
    except Exception:  # noqa: BLE001 - a full heap: the fault is reported anyway
        pass


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
        if app.console is not None:
            # The clean stop below runs the app's other tasks for up to 2 s, the console's
            # reader among them: the bytes after Ctrl-C (mpremote's Ctrl-A) are the REPL's.
            app.console.release()
        board.relax_watchdog()
        asyncio.run(app.shutdown())
    except Exception as e:  # noqa: BLE001 - kept for `firelink diag report`, then a fresh start
        _log.error("the app failed (%r): restarting", e)
        _crashed("app", e, app.heartbeat.uptime_s(), app.console and app.console.boot)
        board.reset("software")
    finally:
        asyncio.new_event_loop()
