"""Boot order for the heap: the board and the configuration first, the application after.

Validating the configuration is boot-only work and a big piece of code (the schema, the rules,
the strict-JSON checker: ≈16 KB on a 32-bit board, a sixth of the lean board's heap). It runs
before the application's modules are imported and is released before they load, so the boot
peak is the larger of the two, not their sum; afterwards that RAM holds the outbox and buffers.
Anything that imports fl.config again later (provisioning at the REPL) loads it from flash.
"""
import gc
import sys

BOOT_ONLY = ("fl.config", "fl.schema", "fl.jsoncheck")
MQTT_PACKET = 2048  # fl.mqtt's max_packet: one transmit and one receive buffer


def start_buffers_bytes(outbox_capacity):
    """What the app allocates in one piece when it starts: the outbox index (a state byte and a
    4-byte order per slot; the order array is built from a zeroed bytearray, so twice), the MQTT
    packet buffers, the outbox's slot buffers; plus 1 KB of small change."""
    return outbox_capacity * (1 + 4 + 4) + 2 * MQTT_PACKET + 5 + 3 * 256 + 1024


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


def release(names):
    """Forgets modules (sys.modules and the package's attribute) so that their code is freed."""
    import fl
    for name in names:
        sys.modules.pop(name, None)
        attr = name.rsplit(".", 1)[-1]
        if attr in fl.__dict__:
            delattr(fl, attr)
    gc.collect()


def main():
    from fl import hal
    board = hal.load()
    try:
        loaded = load_config(board)
    except Exception as e:  # noqa: BLE001 - App() reads it again, inside its start-failure handling
        from fl.log import Logger
        Logger("boot").error("reading the config failed (%r): the app tries again", e)
        loaded = None
    # The app's modules load as hundreds of small blocks spread over the heap; the buffers it
    # then allocates need kilobytes in one piece. Keep that piece free while the code loads
    # (one block at the bottom of the heap) and hand it back just before the app needs it.
    cap = loaded[0]["outbox_capacity"] if loaded else 1024
    try:
        room = bytearray(start_buffers_bytes(cap))
    except MemoryError:
        room = None
    from fl.app import main as run_app  # only now: the validator's RAM is free again
    room = None  # noqa: F841 - freed for the app's buffers
    gc.collect()
    run_app(board, loaded)
