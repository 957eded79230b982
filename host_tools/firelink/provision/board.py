"""The board's side of provisioning: what is asked of it and written to it, through device.py.

The board is asked with its own code: its identity through `fl.VERSION` and the HAL's
`unique_id()` (the Wi-Fi MAC on an ESP32, a stable per-directory id on the virtual device), and
its configuration through `fl.config` (the validator it runs at boot), so what is checked here
is exactly what the firmware will accept. Nothing here renames a file: staging and the one
commit are device.py's (`stage_file`, `commit`); this module only says what and in which order.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from firelink.board.device import Device, DeviceCommandFailed
from firelink.errors import FireLinkError

CERT_FILES = ("ca.der", "device.der", "device.key.der")  # the names fl/config.py looks for
# Renamed into place in this order: config.json last, so the old config rules until the very end.
COMMIT_ORDER = (*CERT_FILES, "secrets.json", "config.json")
# Keys of config.json that provisioning owns; any other key of the board's previous config is kept.
OWNED_KEYS = ("device_id", "site", "broker", "wifi", "paths")
OWNED_BROKER_KEYS = ("host", "port", "tls", "server_hostname")
NEEDED_SECRETS = {"mqtt_username", "mqtt_password", "tls_ca", "tls_cert", "tls_key"}

_VERSION = "import fl\nprint(fl.VERSION)"
_MAC = "import binascii\nfrom fl.hal import load\nprint(binascii.hexlify(load().unique_id()).decode())"
_VALIDATE = """
import json
from fl import config
from fl.hal import load
with open('config.json.tmp') as _f:
    _raw = json.load(_f)
_c, _p = config.validate(_raw, load().board_info())
print(json.dumps({'inputs': _c['inputs'], 'device_id': _c['device_id'], 'max': config.MAX_BYTES, 'problems': _p}))
"""
# As the firmware will at boot; only the names of the secrets it kept are printed, never values.
_LOAD = """
import json
from fl import config
from fl.hal import load
_c, _p = config.load(load().board_info())
print(json.dumps({'device_id': _c['device_id'], 'secrets': sorted(_c['_secrets']), 'problems': _p}))
"""


class BoardRefused(FireLinkError):
    """The board is not fit to be provisioned, or refuses what it was given; the message says why."""


@dataclass(frozen=True)
class Identity:
    platform: str
    micropython: str
    firmware: str
    mac: str  # 12 hex digits

    @property
    def device_id(self) -> str:
        return "fl-" + self.mac

    @property
    def mac_text(self) -> str:
        return ":".join(self.mac[i:i + 2] for i in range(0, 12, 2))


def identify(device: Device) -> Identity:
    info = device.info()
    try:
        firmware = device.run(_VERSION).strip()
    except DeviceCommandFailed as e:
        raise BoardRefused(f"the board runs MicroPython {info.version_text} but not the FireLink app "
                           f"({e.board_traceback.strip().splitlines()[-1]}): install it with "
                           f"`firelink flash --port {device.port} --app-only`, then run this again") from None
    mac = device.run(_MAC).strip()
    if len(mac) != 12 or any(ch not in "0123456789abcdef" for ch in mac):
        raise BoardRefused(f"the board's HAL gave {mac[:40]!r} as its MAC: expected 6 bytes")
    return Identity(info.platform, info.version_text, firmware, mac)


def current_config(device: Device) -> tuple[dict[str, Any] | None, str | None]:
    """The board's config.json as an object (None if absent or unusable), and a warning if unusable."""
    if "config.json" not in device.list_files(["config.json"]):
        return None, None
    try:
        old = json.loads(device.read_file("config.json").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "the board's current config.json is not valid JSON: nothing from it is kept"
    return (old, None) if isinstance(old, dict) else (None, "the board's config.json is not an object: not kept")


def build_config(device_id: str, site: str, host: str, port: int, tls: bool, ssid: str | None, apn: str | None,
                 inputs: list[dict[str, Any]] | None, comment: str,
                 old: dict[str, Any] | None, cellular: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The new config.json and the keys kept from `old` (tuning such as heartbeat_s; pass None to keep nothing).
    ssid None: a site without Wi-Fi, 4G alone (`paths` ["cellular"]). cellular (or an APN): 4G on,
    with the old config's 4G tuning (backup_test_s, ...) kept."""
    config: dict[str, Any] = {"_comment": comment, "device_id": device_id, "site": site,
                              "broker": {"host": host, "port": port, "tls": tls}}
    if ssid is not None:
        config["wifi"] = {"ssid": ssid}
    else:
        config["paths"] = ["cellular"]
    if cellular or apn:
        old_cell = (old or {}).get("cellular")
        config["cellular"] = {**(old_cell if isinstance(old_cell, dict) else {}), "enabled": True}
        if apn:
            config["cellular"]["apn"] = apn
    if inputs is not None:
        config["inputs"] = inputs
    kept = []
    for key, value in (old or {}).items():
        if key.startswith("_") or key in OWNED_KEYS or key in config:
            continue
        config[key] = value
        kept.append(key)
    old_broker = (old or {}).get("broker")
    if isinstance(old_broker, dict):
        for key, value in old_broker.items():
            if key not in OWNED_BROKER_KEYS:
                config["broker"][key] = value
                kept.append(f"broker.{key}")
    return config, kept


def secrets_doc(device_id: str, password: str, wifi_password: str) -> dict[str, str]:
    doc = {"mqtt_username": device_id, "mqtt_password": password}
    if wifi_password:
        doc["wifi_password"] = wifi_password  # omitted for an open network
    return doc


def json_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def check_staged_config(device: Device, data: bytes, device_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Runs the firmware's validator on the staged config.json.tmp: (inputs as the firmware reads
    them, problems)."""
    out = json.loads(device.run(_VALIDATE).strip().splitlines()[-1])
    problems = [str(p) for p in out["problems"]]
    if len(data) > int(out["max"]):
        problems.append(f"config.json: {len(data)} bytes, the firmware reads at most {out['max']}")
    if out["device_id"] != device_id:
        problems.append(f"config.json: device_id became {out['device_id']!r}")
    return list(out["inputs"]), problems


def check_installed(device: Device, files: dict[str, bytes]) -> list[str]:
    """After the commit: each file's hash on the board, then the firmware's own load of them all."""
    have = device.list_files(list(files))
    wrong = [n for n in files if n not in have or have[n].sha256 != hashlib.sha256(files[n]).hexdigest()]
    if wrong:
        return [f"after renaming, {', '.join(wrong)} differ from what was written: run again"]
    out = json.loads(device.run(_LOAD).strip().splitlines()[-1])
    problems = [str(p) for p in out["problems"]]
    missing = NEEDED_SECRETS - set(out["secrets"])
    if missing:
        problems.append(f"the firmware does not pick up {', '.join(sorted(missing))} from the installed files")
    return problems
