# What the centre was told, across reboots (fl/reported.py and its wiring in fl/app.py): a new
# App on the same files is a reboot; the outbox's records are what the centre receives.
import json
import os

from fwtest import eq, ok, write

from fl import store
from fl.app import App
from fl.hal.sim import Board

TIMEOUT_S = 60
NORMAL = {"in4": 0, "in5": 0}  # tamper and mains are normally closed


def _boot(inputs=None, secrets=True, **config):
    cfg = {"device_id": "fl-rep", "broker": {"host": "127.0.0.1", "port": 9}}
    cfg.update(config)
    write("config.json", json.dumps(cfg))
    if secrets:
        write("secrets.json", json.dumps({"mqtt_username": "fl-rep", "mqtt_password": "x"}))
    elif store.exists("secrets.json"):
        os.remove("secrets.json")
    store.ensure_dir("sim")
    control = dict(NORMAL)
    control.update(inputs or {})
    write("sim/control.json", json.dumps({"inputs": control}))
    return App(Board())


def _sent(app):
    """Every event waiting, in send order, taken out as the sender would after PUBACK."""
    out = []
    while True:
        item = app.outbox.peek()
        if item is None:
            app.outbox.flush_removals()
            return out
        out.append(json.loads(item[1]))
        app.outbox.remove(item[0])


def _checkpoint():
    """The newest checkpoint file's content."""
    docs = [json.loads(store.read_bytes(p)) for p in ("reported0.json", "reported1.json") if store.exists(p)]
    return max(docs, key=lambda d: d["n"])


def _rows(evs):
    return [(e["code"], e["q"], e["input"]) for e in evs if e["code"] != "305"]


async def test_active_alarm_across_a_reboot_is_not_sent_again():
    app = _boot({"in1": 0})  # panel_fire closed
    await app.start_inputs()
    eq(_rows(_sent(app)), [("110", "new", "panel_fire")])
    for power_cut in (False, True):
        if not power_cut:
            app.recorder.checkpoint()
        app = _boot({"in1": 0})
        await app.start_inputs()
        evs = _sent(app)
        eq(_rows(evs), [], "no second new (checkpoint %s)" % (not power_cut))
        boot = [e for e in evs if e["code"] == "305"][0]
        eq(boot["active"], ["110:panel_fire"], "the 305 lists what stays active")
    # It clears while the device is off: the restore is owed.
    app = _boot()
    await app.start_inputs()
    eq(_rows(_sent(app)), [("110", "restore", "panel_fire")])


async def test_fault_cleared_within_its_debounce_before_a_reset_is_restored():
    app = _boot({"in2": 0})  # panel fault output active
    await app.start_inputs()
    eq(_rows(_sent(app)), [("373", "new", "panel_fault")])
    # The panel fault clears; the reset comes before the debounce confirms it.
    write("sim/control.json", json.dumps({"inputs": NORMAL}))
    app.inputs.scan()
    eq(app.inputs.states()["panel_fault"], "active", "still debouncing")
    app = _boot()  # power cut: nothing flushed
    await app.start_inputs()
    eq(_rows(_sent(app)), [("373", "restore", "panel_fault")])


async def test_line_trouble_and_the_alarm_behind_it_across_reboots():
    app = _boot({"in1": 0})
    await app.start_inputs()
    _sent(app)
    spec = [s for s in app.config["inputs"] if s["name"] == "panel_fire"][0]
    app._on_input(spec, "active", "open")
    eq(_rows(_sent(app)), [("380", "new", "panel_fire")])
    app = _boot()  # the line repaired and the alarm gone during the reboot
    await app.start_inputs()
    eq(sorted(_rows(_sent(app))), [("110", "restore", "panel_fire"), ("380", "restore", "panel_fire")])


async def test_faults_from_before_provisioning_are_restored_once_fixed():
    app = _boot(secrets=False)
    ok("config" in app.health.faults, app.health.faults)
    app.health.set_fault("mqtt_auth", True, "not authorized")  # what the broker said
    await app.start_inputs()
    eq(sorted(_rows(_sent(app))), [("307", "new", "config"), ("350", "new", "mqtt_auth")])
    app = _boot()  # provisioned: secrets.json in place
    await app.start_inputs()
    eq(_rows(_sent(app)), [("307", "restore", "config")], "config is decided at boot")
    app.mqtt._connected = True  # the broker took the credentials (CONNACK, SUBACK, birth)
    app._restore_carried_faults()
    eq(_rows(_sent(app)), [("350", "restore", "mqtt_auth")], "350 once connected")
    app._restore_carried_faults()
    eq(_rows(_sent(app)), [], "once")


async def test_fire_awaiting_its_ack_is_supervised_after_a_reboot():
    app = _boot({"in1": 0}, centre_ack_timeout_s=30)
    await app.start_inputs()
    fire = [e for e in _sent(app) if e["code"] == "110"][0]
    eq(app.ack_watch.pending(), 1)
    app.recorder.checkpoint()
    app = _boot({"in1": 0}, centre_ack_timeout_s=30)
    eq(app.ack_watch.pending(), 1, "still awaited after the reboot")
    saved = _checkpoint()["ack"]
    ok(fire["id"] in saved and 0 < saved[fire["id"]][1] <= 30000, saved)
    app.ack_watch.on_ack(json.dumps({"id": fire["id"]}).encode())
    eq(app.ack_watch.pending(), 0)
    app._keep_state()
    for _ in range(3):
        app._keep_state()  # within STATE_FLUSH_S ticks
    eq(_checkpoint()["ack"], {}, "the ack is on flash")
    app = _boot({"in1": 0}, centre_ack_timeout_s=30)
    eq(app.ack_watch.pending(), 0, "acked before the reboot: not supervised again")


async def test_an_idle_device_writes_nothing():
    app = _boot()
    await app.start_inputs()
    _sent(app)
    app.recorder.checkpoint()
    before = store.block_writes
    for _ in range(10):
        app._keep_state()
        app._restore_carried_faults()
        app.recorder.declare_lost()
    app.outbox.flush_removals()
    eq(store.block_writes, before, "no block written while nothing happens")


async def test_fire_awaited_before_a_power_cut_raises_354_after_it():
    import asyncio
    app = _boot({"in1": 0}, centre_ack_timeout_s=5)
    await app.start_inputs()
    app = _boot({"in1": 0}, centre_ack_timeout_s=5)  # power cut: no checkpoint, the outbox replayed
    eq(app.ack_watch.pending(), 1)
    await app.start_inputs()
    t = asyncio.create_task(app.ack_watch.run())
    for _ in range(80):
        await asyncio.sleep_ms(100)
        if "centre_ack" in app.health.faults:
            break
    t.cancel()
    ok("centre_ack" in app.health.faults, "354 raised: %r" % app.health.faults)
    ok(("354", "new", "centre_ack") in _rows(_sent(app)), "and recorded")


async def test_a_torn_checkpoint_falls_back_to_the_other_and_the_outbox():
    app = _boot({"in1": 0, "in2": 0})
    await app.start_inputs()
    _sent(app)
    before = store.block_writes
    ok(app.recorder.checkpoint(), "written")
    eq(store.block_writes - before, 1, "one block: no rename")
    write("sim/control.json", json.dumps({"inputs": dict(NORMAL, in2=0)}))
    app = _boot({"in2": 0})  # panel_fire cleared while off: 110 restore owed
    await app.start_inputs()
    eq(_rows(_sent(app)), [("110", "restore", "panel_fire")])
    ok(app.recorder.checkpoint(), "second file")
    newest = "reported%d.json" % (1 - app.reported._slot)
    with open(newest, "wb") as f:
        f.write(store.read_bytes(newest)[:20])  # cut short by a power cut
    app = _boot({"in2": 0})
    eq(app.reported.recovery, "file", "the older file")
    await app.start_inputs()
    eq(_rows(_sent(app)), [], "nothing owed twice: the outbox replayed what the older file lacks")
