"""Configuration: loads config.json and secrets.json, validates them, falls back to safe defaults.

A bad or missing file never stops the inputs being watched: every value that is wrong is
replaced by its default on its own, and each problem is returned as one specific line
(`config.json: inputs[1].debounce_ms: expected an integer 0..600000, got "fast"`) for the
app to log and report as a configuration fault. Values from secrets.json never appear in
a message: only their key and the kind of value found. Schema and rules: docs/config.md.
"""
import json
import os

from fl import store
from fl.jsoncheck import first_error
from fl.schema import R_HOST, Report, kind as _kind, ok as _ok, show as _show

FIRE_KINDS = ("fire", "smoke", "heat", "manual")
KINDS = FIRE_KINDS + ("supervisory", "fault", "mains", "battery", "tamper")
# Anti-chatter for fire-class inputs; longer confirmation for faults. Mains rides out short
# dips but still reports within the 60 s the standards expect.
DEBOUNCE_MS = {"fire": 50, "smoke": 50, "heat": 50, "manual": 50, "supervisory": 1000,
               "fault": 2000, "tamper": 500, "mains": 10000, "battery": 30000}
SECRET_KEYS = ("mqtt_username", "mqtt_password", "wifi_password", "tls_ca", "tls_cert", "tls_key", "sim_pin")
# Where provisioning puts the DER files when secrets.json does not name them.
TLS_FILES = {"tls_ca": "ca.der", "tls_cert": "device.der", "tls_key": "device.key.der"}
MAX_BYTES = 16384  # far above any real config; keeps a corrupt file from eating the heap
DEFAULT_DEVICE_ID = "fl-device"
NTP_SERVERS = ("pool.ntp.org", "dhcp")

_ID = ("str", 1, 32, "abcdefghijklmnopqrstuvwxyz0123456789-_", "[a-z0-9-_]")
_NAME = ("str", 1, 24, "abcdefghijklmnopqrstuvwxyz0123456789_", "[a-z0-9_]")
_APN = ("str", 1, 100, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", "[A-Za-z0-9.-]")
_FILE = ("str", 1, 64, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/", None)
_HEX64 = ("str", 64, 64, "0123456789abcdefABCDEF", None)
_TOP = (
    ("device_id", _ID, None),
    ("site", ("str", 0, 64, None, None), ""),
    ("heartbeat_s", ("int", 5, 86400), 3600),  # full health hourly; liveness is keepalive + will
    ("centre_ack_timeout_s", ("int", 5, 3600), 100),
    ("path_fault_delay_s", ("int", 5, 3600), 90),
    ("periodic_test_s", ("int", 60, 604800), 86400),
    ("outbox_capacity", ("int", 1000, 4096), 1024),
    ("log_level", ("one", ("debug", "info", "warn", "error")), "info"),
)
_BROKER = (
    ("host", R_HOST, "127.0.0.1"),
    ("tls", ("bool",), False),
    ("server_hostname", ("host?",), None),
    ("keepalive_s", ("int", 10, 1200), 100),  # the broker's will fires after 1.5x: 150 s < 3 min
    ("connect_timeout_ms", ("int", 1000, 120000), 10000),
    ("puback_timeout_ms", ("int", 1000, 120000), 10000),
    ("backoff_max_s", ("int", 1, 3600), 60),
)
_TOP_KEYS = ("device_id", "site", "heartbeat_s", "centre_ack_timeout_s", "path_fault_delay_s", "periodic_test_s", "outbox_capacity",
             "log_level", "ntp_servers", "paths",
             "broker", "wifi", "cellular", "inputs")
_BROKER_KEYS = ("host", "port", "tls", "server_hostname", "keepalive_s", "connect_timeout_ms",
                "puback_timeout_ms", "ping_interval_s", "backoff_max_s")
_INPUT_KEYS = ("name", "kind", "channel", "contact", "debounce_ms", "zone", "eol")


def load(board_info, path="config.json", secrets_path="secrets.json", default_device_id=None):
    """(config, problems). Never raises on bad content; problems are ready-made messages."""
    problems = []
    raw = _read_json(path, problems, "running on defaults", False)
    config = _validate(raw or {}, board_info, default_device_id, path, problems)
    sraw = _read_json(secrets_path, problems, "running without credentials", True)
    config["_secrets"] = _secrets(sraw or {}, config, secrets_path, problems)
    return config, problems


def validate(raw, board_info, default_device_id=None, file="config.json"):
    """(config without _secrets, problems) for an already parsed object (e.g. one to install)."""
    problems = []
    if type(raw) is not dict:
        problems.append("%s: expected a JSON object at the top level, got %s; running on defaults"
                        % (file, _show(raw)))
        raw = {}
    return _validate(raw, board_info, default_device_id, file, problems), problems


def _read_json(path, problems, fallback, secret):
    try:
        size = os.stat(path)[6]
    except OSError:
        problems.append("%s: missing; %s" % (path, fallback))
        return None
    if size > MAX_BYTES:
        problems.append("%s: larger than %d bytes; %s" % (path, MAX_BYTES, fallback))
        return None
    data = store.read_bytes(path) or b""
    try:
        raw = json.loads(data.decode())
    except UnicodeError:
        problems.append("%s: not valid UTF-8 text; %s" % (path, fallback))
        return None
    except (ValueError, RuntimeError):
        where = first_error(data)
        if where:
            problems.append("%s: line %d: not valid JSON (%s); %s" % (path, where[0], where[1], fallback))
        else:
            problems.append("%s: not valid JSON; %s" % (path, fallback))
        return None
    # MicroPython's parser also takes text that is not JSON (a missing comma or colon, a
    # trailing comma). Keep what it read, so a stray comma does not cost the broker settings,
    # but say so: the host tools reject such a file, and a missing comma can shift values.
    where = first_error(data)
    if where:
        problems.append("%s: line %d: not strict JSON (%s); read leniently" % (path, where[0], where[1]))
    if type(raw) is not dict:
        problems.append("%s: expected a JSON object at the top level, got %s; %s"
                        % (path, _kind(raw) if secret else _show(raw), fallback))
        return None
    return raw


# --- config.json ---

def _validate(raw, board_info, default_device_id, file, problems):
    rep = Report(file, problems, SECRET_KEYS)
    rep.unknown(raw, _TOP_KEYS, "")
    config = {}
    for key, rule, default in _TOP:
        config[key] = rep.take(raw, key, "", rule, default)
    if config["device_id"] is None:
        config["device_id"] = default_device_id or DEFAULT_DEVICE_ID
    config["ntp_servers"] = _ntp_servers(raw, rep)
    config["broker"] = _broker(rep.section(raw, "broker"), rep)
    wifi = rep.section(raw, "wifi")
    rep.unknown(wifi, ("ssid",), "wifi.")
    config["wifi"] = {"ssid": rep.take(wifi, "ssid", "wifi.", ("bytes", 1, 32), "")}
    config["cellular"] = _cellular(rep.section(raw, "cellular"), rep)
    config["paths"] = _paths(raw, rep)
    config["inputs"] = _inputs(raw, board_info, rep)
    return config


_CELL = (
    ("enabled", ("bool",), False),
    ("apn", _APN, ""),  # "": from the SIM's operator (Vietnam's carriers), else the network's default
    ("user", ("str", 1, 64, None, None), ""),
    ("password", ("str", 1, 64, None, None), ""),
    ("auth", ("one", ("none", "pap", "chap")), "none"),
    ("lte_only", ("bool",), True),  # 2G is gone in Vietnam; 3G goes by 2028
    ("backup_test_s", ("int", 300, 86400), 3600),
    ("failback_stable_s", ("int", 10, 3600), 60),
    ("max_switches", ("int", 1, 100), 6),  # per 10 minutes
)


def _cellular(cell, rep):
    rep.unknown(cell, [k for k, _, _ in _CELL], "cellular.")
    out = {}
    for key, rule, default in _CELL:
        out[key] = rep.take(cell, key, "cellular.", rule, default)
    if out["auth"] != "none" and not out["user"]:
        rep.add("cellular.auth", "%s needs cellular.user (authentication off)" % out["auth"])
        out["auth"] = "none"
    return out


def _paths(raw, rep):
    """Path priority: the first that works carries the session."""
    v = raw.get("paths", ["wifi", "cellular"])
    if type(v) is list and 1 <= len(v) <= 2 and len(set(v)) == len(v) and all(p in ("wifi", "cellular") for p in v):
        return v
    rep.add("paths", "expected a list of distinct path names from wifi, cellular; using wifi then cellular")
    return ["wifi", "cellular"]


def default_ping_s(keepalive_s):
    return keepalive_s - max(1, keepalive_s // 20)


def _ntp_servers(raw, rep):
    """1..4 NTP servers tried in order: host names, IPv4 addresses (host:port allowed) or
    "dhcp" (the path's own, see fl.link.Path.dhcp_ntp)."""
    if "ntp_servers" not in raw:
        return list(NTP_SERVERS)
    v = raw["ntp_servers"]
    if type(v) is list and 0 < len(v) <= 4 and all(_ok(R_HOST, s) for s in v):
        return v
    rep.expected("ntp_servers", 'a list of 1..4 host names, IPv4 addresses or "dhcp"', v, "; using the default")
    return list(NTP_SERVERS)


def _broker(raw, rep):
    rep.unknown(raw, _BROKER_KEYS, "broker.")
    b = {}
    for key, rule, default in _BROKER:
        b[key] = rep.take(raw, key, "broker.", rule, default)
    b["port"] = rep.take(raw, "port", "broker.", ("int", 1, 65535), 8883 if b["tls"] else 1883)
    # A ping after this long without sending anything keeps the session within its keepalive
    # (a margin for the board's timers) and finds a dead broker in bounded time.
    ka = b["keepalive_s"]
    ping = raw.get("ping_interval_s", default_ping_s(ka))
    if not _ok(("int", 1, ka), ping):
        rep.expected("broker.ping_interval_s", "an integer 1..%d (at most broker.keepalive_s)" % ka, ping)
        ping = default_ping_s(ka)
    b["ping_interval_s"] = ping
    return b


def _inputs(raw, board_info, rep):
    board_channels = board_info.get("inputs", {})
    board_rep = Report("board.json", rep.problems)
    defaults = []
    for i, entry in enumerate(board_info.get("default_inputs", ())):
        spec = _input(entry, i, board_channels, board_rep, "default_inputs")[0]
        if spec:
            defaults.append(spec)
    if "inputs" not in raw:
        return defaults
    entries = raw["inputs"]
    if type(entries) is not list or not entries:
        rep.expected("inputs", "a non-empty list of inputs", entries, "; using the board's default inputs")
        return defaults
    kept, names, channels, lost = [], {}, {}, []
    for i, entry in enumerate(entries):
        spec, named_channel = _input(entry, i, board_channels, rep, "inputs")
        p = "inputs[%d]." % i
        if spec is None:
            if named_channel:
                lost.append(named_channel)
        elif spec["name"] in names:
            rep.add(p + "name", '"%s" already used by inputs[%d]; entry dropped' % (spec["name"], names[spec["name"]]))
        elif spec["channel"] in channels:
            rep.add(p + "channel", '"%s" already used by inputs[%d]; entry dropped'
                    % (spec["channel"], channels[spec["channel"]]))
        else:
            names[spec["name"]] = channels[spec["channel"]] = i
            kept.append(spec)
    if not kept:
        rep.add("inputs", "no usable entry; using the board's default inputs")
        return defaults
    # A channel whose entry was unusable keeps its board default; a channel with a fire-class
    # default is always watched, whatever the config says: losing a fire input is never safe.
    for d in defaults:
        ch = d["channel"]
        if ch in channels:
            continue
        if ch in lost:
            why = "has no usable entry"
        elif d["kind"] in FIRE_KINDS:
            why = "is not configured"
        else:
            continue
        if d["name"] in names:
            d = dict(d)
            d["name"] = (d["name"] + "_" + ch)[-24:]
        rep.add("inputs", 'channel %s %s; watching it as the board default "%s" (%s)' % (ch, why, d["name"], d["kind"]))
        names[d["name"]] = channels[ch] = -1
        kept.append(d)
    return kept


def _input(e, i, board_channels, rep, prefix):
    """(spec or None when unusable, the channel the entry named if any). Every problem of an
    entry is reported, not only the first."""
    p = "%s[%d]" % (prefix, i)
    if type(e) is not dict:
        rep.expected(p, "an object", e, "; entry dropped")
        return None, None
    p += "."
    rep.unknown(e, _INPUT_KEYS, p)
    named = e.get("channel") if type(e.get("channel")) is str else None
    usable = True
    spec = {}
    for key, rule in (("name", _NAME), ("kind", ("one", KINDS))):
        if key not in e:
            rep.add(p + key, "missing; entry dropped")
            usable = False
        elif not _ok(rule, e[key]):
            rep.expected(p + key, rule, e[key], "; entry dropped")
            usable = False
        else:
            spec[key] = e[key]
    kind = spec.get("kind")
    if kind == "battery":
        spec["channel"] = ch = e.get("channel", "battery")
        if ch != "battery":
            rep.expected(p + "channel", '"battery" for kind battery', ch, "; entry dropped")
            usable = False
    elif "channel" not in e:
        rep.add(p + "channel", "missing; entry dropped")
        usable = False
    elif named not in board_channels:
        rep.expected(p + "channel", ("one", sorted(board_channels)), e["channel"], "; entry dropped")
        usable = False
    else:
        spec["channel"] = named
    contact = e.get("contact", "no")
    if not _ok(("one", ("no", "nc")), contact):
        rep.expected(p + "contact", ("one", ("no", "nc")), contact, "; entry dropped")
        usable = False
    if not usable:
        return None, named
    spec["contact"] = contact
    spec["debounce_ms"] = rep.take(e, "debounce_ms", p, ("int", 0, 600000), DEBOUNCE_MS[kind])
    spec["zone"] = rep.take(e, "zone", p, ("int", 0, 999), i + 1)
    eol = rep.take(e, "eol", p, ("bool",), False)
    if eol and (kind == "battery" or not board_channels[spec["channel"]].get("adc")):
        rep.add(p + "eol", "channel %s has no ADC; expected false, got true" % spec["channel"])
        eol = False
    if eol and contact == "nc":
        # The board's end-of-line circuit switches the alarm resistor in when the contact
        # closes: only a normally open contact can be supervised this way.
        rep.add(p + "contact", 'expected "no" with eol (the end-of-line circuit is normally open), got "nc"')
        spec["contact"] = "no"
    spec["eol"] = eol
    return spec, named


# --- secrets.json ---

def _secrets(raw, config, file, problems):
    """Only key names and kinds of value ever reach a message, never a value."""
    rep = Report(file, problems)
    rep.unknown(raw, SECRET_KEYS, "")
    out = {}
    for key in SECRET_KEYS:
        if key not in raw:
            continue
        v = raw[key]
        if key in TLS_FILES:
            expect, good = "a file name of 1..64 characters", _ok(_FILE, v)
        elif key == "sim_pin":
            expect, good = "4..8 digits", type(v) is str and 4 <= len(v) <= 8 and v.isdigit()
        elif key == "wifi_password":
            # WPA2: a passphrase of 8..63 characters or the 256-bit key as 64 hex digits.
            expect = "a string of 8..63 characters (or 64 hex digits)"
            good = type(v) is str and (8 <= len(v) <= 63 or _ok(_HEX64, v))
        else:
            expect, good = "a string of 1..256 characters", _ok(("str", 1, 256, None, None), v)
        if not good:
            rep.add(key, "expected %s, got %s" % (expect, _kind(v)))
        elif key in TLS_FILES and not store.exists(v):
            rep.add(key, "names a file that does not exist")
        else:
            out[key] = v
    # Files provisioned under their usual names count as named (the client cert only as a pair).
    if "tls_ca" not in raw and store.exists(TLS_FILES["tls_ca"]):
        out["tls_ca"] = TLS_FILES["tls_ca"]
    if "tls_cert" not in raw and "tls_key" not in raw and store.exists(TLS_FILES["tls_cert"]) \
            and store.exists(TLS_FILES["tls_key"]):
        out["tls_cert"], out["tls_key"] = TLS_FILES["tls_cert"], TLS_FILES["tls_key"]
    if ("tls_cert" in out) != ("tls_key" in out):
        has, needs = ("tls_cert", "tls_key") if "tls_cert" in out else ("tls_key", "tls_cert")
        rep.add(needs, "missing; %s needs it (client certificate not used)" % has)
        out.pop(has)
    if "mqtt_password" in out and "mqtt_username" not in out:
        rep.add("mqtt_username", "missing; mqtt_password needs it (password not used)")
        out.pop("mqtt_password")
    if config["broker"]["tls"] and "tls_ca" not in out:
        rep.add("tls_ca", "missing (and no %s on the device); broker.tls is true, so the broker cannot be verified"
                % TLS_FILES["tls_ca"])
    return out
