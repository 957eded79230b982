# fl/boot.py's order before the app: the config read and its validator released, the later
# modules' names interned and their code released; and a failure there never stops the boot.
import json
import sys

from fwtest import eq, ok, write

from fl import boot, store


def _site():
    write("config.json", json.dumps({"device_id": "fl-boot", "broker": {"host": "127.0.0.1", "port": 9}}))
    write("secrets.json", json.dumps({"mqtt_username": "fl-boot", "mqtt_password": "x"}))
    store.ensure_dir("sim")


def test_start_reads_the_config_and_releases_what_only_boot_needs():
    _site()
    board, loaded = boot.start()
    config, problems = loaded
    eq((config["device_id"], problems), ("fl-boot", []), "config read")
    for name in boot.BOOT_ONLY + boot.LATER:
        ok(name not in sys.modules, "%s released" % name)


def test_boot_runs_on_when_the_later_modules_cannot_be_interned():
    _site()
    saved = boot.LATER
    boot.LATER = ("fl.no_such_module",)
    try:
        board, loaded = boot.start()
    finally:
        boot.LATER = saved
    ok(board is not None, "the board")
    eq(loaded[0]["device_id"], "fl-boot", "and the config, for the app to start")
