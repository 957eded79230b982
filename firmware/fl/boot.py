"""Boot order for the heap: the board and the configuration first, the application after.

Validating the configuration is boot-only work and a big piece of code (the schema, the rules,
the strict-JSON checker: ≈16 KB on a 32-bit board, a sixth of the lean board's heap). It runs
before the application's modules are imported and is released before they load, so the boot
peak is the larger of the two, not their sum; afterwards that RAM holds the outbox and buffers.
Anything that imports fl.config again later (provisioning at the REPL) loads it from flash.
The modules the app loads later are imported once here too, for their names only (LATER).
"""
import gc
import sys

BOOT_ONLY = ("fl.config", "fl.schema", "fl.jsoncheck")
# What the app may load long after boot: a clock to set (fl.sntp, fl.dns), a command from the
# centre (fl.service, fl.remote), a crash to keep (fl.crash). MicroPython never frees an
# interned name, and its name table grows by doubling: the growth a late import can cause is
# one large block (1280 entries, ≈14 KB, on the 64-bit unix port), asked of a heap that the app
# has fragmented by then, so a clock sync or a command could fail with MemoryError, or not,
# by the timing of the run. Loaded once here, before the big buffers, their names are interned
# while the heap is in one piece and their code is released again; later imports add no names.
# (The diagnostics console's modules are not here: boards with the console have PSRAM.)
# tests/host/test_boot_names.py checks that every module imported inside a function is here,
# in BOOT_ONLY or in its list of modules loaded while the app starts.
LATER = ("fl.dns", "fl.sntp", "fl.crash", "fl.service", "fl.remote")
MQTT_PACKET = 2048  # fl.mqtt's max_packet: one transmit buffer, one receive buffer (+5: header)


def reserve_buffers(outbox_capacity):
    """The big buffers of the start (fl.bufpool), made while the heap is still in one piece:
    the outbox index (a state byte and a 4-byte record order per slot) and the MQTT packets."""
    from fl import bufpool
    bufpool.reserve("B", outbox_capacity)
    bufpool.reserve("I", outbox_capacity)
    bufpool.reserve("B", MQTT_PACKET)
    bufpool.reserve("B", MQTT_PACKET + 5)


def load_config(board):
    """(config, problems) as fl.config.load gives them, with the validator released after."""
    mac = board.unique_id()
    info = board.board_info()
    from fl import config
    try:
        return config.load(info, default_device_id="fl-" + "".join("%02x" % b for b in mac))
    finally:
        del config
        release(BOOT_ONLY)


def intern_later():
    """Interns the names of LATER's modules (and their imports) and releases their code."""
    before = set(sys.modules)
    for name in LATER:
        __import__(name)
    release([m for m in sys.modules if m not in before and m.startswith("fl.")])


def release(names):
    """Forgets modules (sys.modules and the package's attribute) so that their code is freed."""
    import fl
    for name in names:
        sys.modules.pop(name, None)
        attr = name.rsplit(".", 1)[-1]
        if attr in fl.__dict__:
            delattr(fl, attr)
    gc.collect()


def start():
    """Everything before the app, in that order: the board, the config (validated, its
    validator released), asyncio's parts, the later modules' names, the big buffers.
    Returns (board, loaded) for fl.app.main."""
    from fl import hal
    board = hal.load()
    try:
        loaded = load_config(board)
    except Exception as e:  # noqa: BLE001 - App() reads it again, inside its start-failure handling
        from fl.log import Logger
        Logger("boot").error("reading the config failed (%r): the app tries again", e)
        loaded = None
    # asyncio loads parts of itself on first use (gather, Event, wait_for_ms, streams): load them
    # now, with the code, not later into a heap the app has filled.
    import asyncio
    asyncio.gather, asyncio.Event, asyncio.StreamReader  # noqa: B018
    try:
        intern_later()
    except Exception as e:  # noqa: BLE001 - the panel is watched all the same; late imports then intern
        from fl.log import Logger
        Logger("boot").error("interning the names of %s failed (%r): the app runs on", LATER, e)
    if loaded:
        reserve_buffers(loaded[0]["outbox_capacity"])
    return board, loaded


def main():
    board, loaded = start()
    from fl.app import main as run_app  # only now: the validator's RAM is free again
    run_app(board, loaded)
