# fl.config: every message exactly, fallbacks per value and per section, secrets never shown.
# Each test runs in a fresh directory (the device filesystem), so files are written to the cwd.
import json
import os

from fwtest import eq, ok, write
from fl import config, store

# A fixed board, so that messages do not depend on later edits of hardware/board.json.
BOARD = {
    "inputs": {
        "in1": {"adc": True}, "in2": {"adc": True}, "in3": {"adc": False},
        "in4": {"adc": False}, "in5": {"adc": False}, "in6": {"adc": True},
    },
    "eol": {"short_max": 250, "active_max": 1300, "normal_max": 3300},
    "default_inputs": [
        {"name": "panel_fire", "kind": "fire", "channel": "in1", "contact": "no", "zone": 1},
        {"name": "panel_fault", "kind": "fault", "channel": "in2", "contact": "no", "zone": 2},
        {"name": "smoke", "kind": "smoke", "channel": "in3", "contact": "no", "zone": 3},
        {"name": "tamper", "kind": "tamper", "channel": "in4", "contact": "nc", "zone": 4},
        {"name": "mains", "kind": "mains", "channel": "in5", "contact": "nc", "zone": 5},
    ],
}
DEFAULT_INPUTS = [
    {"name": "panel_fire", "kind": "fire", "channel": "in1", "contact": "no", "debounce_ms": 50, "zone": 1, "eol": False},
    {"name": "panel_fault", "kind": "fault", "channel": "in2", "contact": "no", "debounce_ms": 2000, "zone": 2, "eol": False},
    {"name": "smoke", "kind": "smoke", "channel": "in3", "contact": "no", "debounce_ms": 50, "zone": 3, "eol": False},
    {"name": "tamper", "kind": "tamper", "channel": "in4", "contact": "nc", "debounce_ms": 500, "zone": 4, "eol": False},
    {"name": "mains", "kind": "mains", "channel": "in5", "contact": "nc", "debounce_ms": 10000, "zone": 5, "eol": False},
]
NO_SECRETS = "secrets.json: missing; running without credentials"


def load(cfg=None, secrets=None):
    """Writes the files given (a dict is dumped, bytes/str written as is; None: no file) and loads them."""
    for path, content in (("config.json", cfg), ("secrets.json", secrets)):
        if content is None:
            if store.exists(path):
                os.remove(path)
        else:
            write(path, json.dumps(content) if isinstance(content, dict) else content)
    return config.load(BOARD, default_device_id="fl-0211aabbccdd")


def problems_for(cfg):
    """Problems from config.json alone (secrets.json present and empty)."""
    return load(cfg, {})[1]


def test_missing_files_run_on_defaults():
    c, p = config.load(BOARD, default_device_id="fl-0211aabbccdd")
    eq(p, ["config.json: missing; running on defaults", NO_SECRETS], "problems")
    eq(c["device_id"], "fl-0211aabbccdd")
    eq(c["site"], "")
    eq(c["broker"], {"host": "127.0.0.1", "port": 1883, "tls": False, "server_hostname": None, "keepalive_s": 100,
                     "connect_timeout_ms": 10000, "puback_timeout_ms": 10000, "ping_interval_s": 95,
                     "backoff_max_s": 60}, "broker")
    eq(c["wifi"], {"ssid": ""}, "wifi")
    eq(c["cellular"], {"enabled": False, "apn": "", "user": "", "password": "", "auth": "none", "lte_only": True,
                       "backup_test_s": 3600, "failback_stable_s": 60, "max_switches": 6}, "cellular")
    eq(c["paths"], ["wifi", "cellular"], "paths")
    eq((c["heartbeat_s"], c["centre_ack_timeout_s"], c["outbox_capacity"], c["log_level"]), (3600, 100, 1024, "info"))
    eq(c["inputs"], DEFAULT_INPUTS, "inputs")
    eq(c["_secrets"], {}, "secrets")


def test_paths_are_named_in_messages():
    c, p = config.load(BOARD, "etc/fl.json", "etc/s.json")
    eq(p, ["etc/fl.json: missing; running on defaults", "etc/s.json: missing; running without credentials"])
    eq(c["device_id"], "fl-device", "device_id without a default from the app")


def test_valid_full_config_has_no_problems():
    write("ca.der", b"\x30\x00")
    cfg = {"device_id": "site-12_a", "site": "Kho A, 12 Le Loi", "_comment": "notes are allowed",
           "broker": {"host": "mq.example.vn", "port": 8884, "tls": True, "server_hostname": "mq.example.vn",
                      "keepalive_s": 120, "connect_timeout_ms": 5000, "puback_timeout_ms": 8000,
                      "ping_interval_s": 20, "backoff_max_s": 300},
           "wifi": {"ssid": "Văn phòng"}, "cellular": {"apn": "m3-world"},
           "heartbeat_s": 300, "centre_ack_timeout_s": 100, "outbox_capacity": 2048, "log_level": "debug",
           "inputs": [{"name": "fire", "kind": "fire", "channel": "in1", "eol": True, "zone": 7, "debounce_ms": 20},
                      {"name": "batt", "kind": "battery"},
                      {"name": "pump", "kind": "supervisory", "channel": "in3", "contact": "nc"},
                      {"name": "mcp", "kind": "manual", "channel": "in6"}]}
    c, p = load(cfg, {"mqtt_username": "u", "mqtt_password": "p", "tls_ca": "ca.der"})
    eq(p, [], "problems")
    eq(c["broker"]["port"], 8884)
    eq(c["broker"]["ping_interval_s"], 20)
    eq(c["wifi"]["ssid"], "Văn phòng")
    eq(c["inputs"], [
        {"name": "fire", "kind": "fire", "channel": "in1", "contact": "no", "debounce_ms": 20, "zone": 7, "eol": True},
        {"name": "batt", "kind": "battery", "channel": "battery", "contact": "no", "debounce_ms": 30000, "zone": 2,
         "eol": False},
        {"name": "pump", "kind": "supervisory", "channel": "in3", "contact": "nc", "debounce_ms": 1000, "zone": 3,
         "eol": False},
        {"name": "mcp", "kind": "manual", "channel": "in6", "contact": "no", "debounce_ms": 50, "zone": 4,
         "eol": False}], "inputs")
    eq(c["_secrets"], {"mqtt_username": "u", "mqtt_password": "p", "tls_ca": "ca.der"})
    ok("_comment" not in c, "notes are not copied")


def test_invalid_json_names_the_line_and_runs_on_defaults():
    c, p = load('{\n  "site": "a",\n  "heartbeat_s": 6o\n}', {})
    eq(p, ['config.json: line 3: not valid JSON (expected "," or "}"); running on defaults'])
    eq(c["heartbeat_s"], 3600)
    eq(c["inputs"], DEFAULT_INPUTS)


def test_invalid_json_reasons():
    cases = (
        ('{"site": "a"', 'config.json: line 1: not valid JSON (unexpected end of file); running on defaults'),
        ("{'site': 'a'}", 'config.json: line 1: not valid JSON (strings need double quotes); running on defaults'),
        ('{"site": tru}', 'config.json: line 1: not valid JSON (expected a value); running on defaults'),
        ('{}\n\nx', 'config.json: line 3: not valid JSON (unexpected text after the end of the document); '
                    'running on defaults'),
        ('', 'config.json: line 1: not valid JSON (unexpected end of file); running on defaults'),
    )
    for text, want in cases:
        eq(problems_for(text), [want], text)


def test_lenient_json_is_read_but_reported():
    # MicroPython's parser takes a trailing comma; the host tools do not, so it is a problem.
    c, p = load('{\n "heartbeat_s": 90,\n "site": "a",\n}', {})
    eq(p, ['config.json: line 4: not strict JSON (extra "," before "}"); read leniently'])
    eq(c["heartbeat_s"], 90)


def test_not_utf8_and_not_an_object_and_too_large():
    eq(problems_for(b'{"site": "\xff"}'), ["config.json: not valid UTF-8 text; running on defaults"])
    eq(problems_for("[1, 2]"), ["config.json: expected a JSON object at the top level, got a list; running on defaults"])
    eq(problems_for('"x"'), ['config.json: expected a JSON object at the top level, got "x"; running on defaults'])
    eq(problems_for("{}" + " " * 16384), ["config.json: larger than 16384 bytes; running on defaults"])


def test_scalar_messages_exactly():
    cases = (
        ("device_id", "Fl-1", 'device_id: expected a string of 1..32 characters from [a-z0-9-_], got "Fl-1"'),
        ("device_id", "", 'device_id: expected a string of 1..32 characters from [a-z0-9-_], got ""'),
        ("device_id", "a" * 33, 'device_id: expected a string of 1..32 characters from [a-z0-9-_], '
                                'got "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"'),
        ("site", 5, "site: expected a string of at most 64 characters, got 5"),
        ("site", "x" * 65, 'site: expected a string of at most 64 characters, got "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."'),
        ("heartbeat_s", "fast", 'heartbeat_s: expected an integer 5..86400, got "fast"'),
        ("heartbeat_s", 4, "heartbeat_s: expected an integer 5..86400, got 4"),
        ("heartbeat_s", 60.0, "heartbeat_s: expected an integer 5..86400, got 60.0"),
        ("heartbeat_s", True, "heartbeat_s: expected an integer 5..86400, got true"),
        ("centre_ack_timeout_s", 3601, "centre_ack_timeout_s: expected an integer 5..3600, got 3601"),
        ("outbox_capacity", 999, "outbox_capacity: expected an integer 1000..4096, got 999"),
        ("outbox_capacity", None, "outbox_capacity: expected an integer 1000..4096, got null"),
        ("log_level", "verbose", 'log_level: expected one of "debug", "info", "warn", "error", got "verbose"'),
        ("log_level", [], 'log_level: expected one of "debug", "info", "warn", "error", got a list'),
        ("broker", "mq", 'broker: expected an object, got "mq"; using its defaults'),
        ("wifi", [], "wifi: expected an object, got a list; using its defaults"),
        ("cellular", 1, "cellular: expected an object, got 1; using its defaults"),
    )
    for key, value, want in cases:
        eq(problems_for({key: value}), ["config.json: " + want], key)


def test_section_messages_exactly():
    cases = (
        ({"host": ""}, 'broker.host: expected a string of 1..253 characters from [A-Za-z0-9.-_:], got ""'),
        ({"host": "mq example"}, 'broker.host: expected a string of 1..253 characters from [A-Za-z0-9.-_:], '
                                 'got "mq example"'),
        ({"port": 0}, "broker.port: expected an integer 1..65535, got 0"),
        ({"port": "1883"}, 'broker.port: expected an integer 1..65535, got "1883"'),
        ({"tls": "yes"}, 'broker.tls: expected true or false, got "yes"'),
        ({"server_hostname": 3}, "broker.server_hostname: expected a host name or null, got 3"),
        ({"keepalive_s": 0}, "broker.keepalive_s: expected an integer 10..1200, got 0"),
        ({"connect_timeout_ms": 999}, "broker.connect_timeout_ms: expected an integer 1000..120000, got 999"),
        ({"puback_timeout_ms": 120001}, "broker.puback_timeout_ms: expected an integer 1000..120000, got 120001"),
        ({"backoff_max_s": 0}, "broker.backoff_max_s: expected an integer 1..3600, got 0"),
        ({"ping_interval_s": 101}, "broker.ping_interval_s: expected an integer 1..100 (at most broker.keepalive_s), "
                                   "got 101"),
        ({"keepalive_s": 20, "ping_interval_s": 30}, "broker.ping_interval_s: expected an integer 1..20 "
                                                     "(at most broker.keepalive_s), got 30"),
    )
    for broker, want in cases:
        eq(problems_for({"broker": broker}), ["config.json: " + want], want)
    eq(problems_for({"wifi": {"ssid": "x" * 33}}), ['config.json: wifi.ssid: expected a string of 1..32 bytes, got '
                                                    '"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"'])
    # 11 two-byte characters are 22 bytes: fine; 17 are 34 bytes: too long for an SSID.
    eq(problems_for({"wifi": {"ssid": "ă" * 11}}), [])
    eq(len(problems_for({"wifi": {"ssid": "ă" * 17}})), 1, "ssid measured in bytes")
    eq(problems_for({"cellular": {"apn": "m3 world"}}),
       ['config.json: cellular.apn: expected a string of 1..100 characters from [A-Za-z0-9.-], got "m3 world"'])


def test_bad_values_fall_back_one_by_one():
    c, p = load({"heartbeat_s": "fast", "site": "ok", "broker": {"host": "mq", "port": 70000, "keepalive_s": 40}}, {})
    eq(len(p), 2, "problems")
    eq(c["heartbeat_s"], 3600, "bad value -> default")
    eq(c["site"], "ok", "good value kept")
    eq((c["broker"]["host"], c["broker"]["port"], c["broker"]["keepalive_s"]), ("mq", 1883, 40))
    eq(c["broker"]["ping_interval_s"], 38, "ping default follows keepalive (less 5 %, at least 1 s)")


def test_tls_changes_the_default_port():
    write("ca.der", b"0")
    c, p = load({"broker": {"tls": True}}, {"tls_ca": "ca.der"})
    eq(p, [])
    eq(c["broker"]["port"], 8883)
    c, p = load({"broker": {"tls": True, "port": "x"}}, {"tls_ca": "ca.der"})
    eq(c["broker"]["port"], 8883, "bad port falls back to the TLS default")


def test_bad_sections_fall_back_independently():
    c, p = load({"broker": 7, "wifi": {"ssid": "site"}, "cellular": "apn",
                 "inputs": [{"name": "f", "kind": "fire", "channel": "in1"}]}, {})
    eq(p, ["config.json: broker: expected an object, got 7; using its defaults",
           'config.json: cellular: expected an object, got "apn"; using its defaults',
           'config.json: inputs: channel in3 is not configured; watching it as the board default "smoke" (smoke)'])
    eq(c["broker"]["host"], "127.0.0.1")
    eq(c["wifi"]["ssid"], "site", "wifi kept")
    eq(c["cellular"]["apn"], "")
    eq([s["name"] for s in c["inputs"]], ["f", "smoke"], "inputs kept (plus the unconfigured fire-class default)")


def test_unknown_keys_reported_and_ignored():
    c, p = load({"heartbeat": 30, "_note": "ok", "mqtt_password": "hunter2",
                 "broker": {"hots": "mq", "_why": "ok"}, "wifi": {"password": "x", "ssid": "s"},
                 "cellular": {"pin": 1234},
                 "inputs": [{"name": "f", "kind": "fire", "channel": "in1", "debounce": 5}]}, {})
    eq(p, ["config.json: heartbeat: unknown key (ignored)",
           "config.json: mqtt_password: belongs in secrets.json (ignored)",
           "config.json: broker.hots: unknown key (ignored)",
           "config.json: wifi.password: unknown key (ignored)",
           "config.json: cellular.pin: unknown key (ignored)",
           "config.json: inputs[0].debounce: unknown key (ignored)",
           'config.json: inputs: channel in3 is not configured; watching it as the board default "smoke" (smoke)'])
    ok("hunter2" not in repr(p), "a secret misplaced in config.json is never echoed")
    ok("mqtt_password" not in c and "heartbeat" not in c, "unknown keys are not copied")
    eq(c["heartbeat_s"], 3600)
    eq(c["wifi"], {"ssid": "s"})


def test_validate_takes_a_parsed_object():
    c, p = config.validate({"heartbeat_s": 30}, BOARD, "fl-x", file="new.json")
    eq(p, [])
    eq(c["heartbeat_s"], 30)
    c, p = config.validate([1], BOARD)
    eq(p, ["config.json: expected a JSON object at the top level, got a list; running on defaults"])
    eq(c["inputs"], DEFAULT_INPUTS)


# --- inputs ---

def names(c):
    return [s["name"] for s in c["inputs"]]


def test_inputs_absent_uses_board_defaults_silently():
    c, p = load({}, {})
    eq(p, [])
    eq(c["inputs"], DEFAULT_INPUTS)


def test_inputs_not_a_list_or_empty_uses_board_defaults():
    for value, got in (({"name": "x"}, "an object"), ([], "a list"), ("in1", '"in1"')):
        c, p = load({"inputs": value}, {})
        eq(p, ["config.json: inputs: expected a non-empty list of inputs, got %s; using the board's default inputs"
               % got], got)
        eq(c["inputs"], DEFAULT_INPUTS)


def test_input_entry_messages_exactly():
    f = {"name": "f", "kind": "fire", "channel": "in1"}

    def entry(**kw):
        e = dict(f)
        for k, v in kw.items():
            if v is None:
                del e[k]
            else:
                e[k] = v
        # A valid first entry keeps the list usable, so only the second entry's problems show.
        return problems_for({"inputs": [{"name": "keep", "kind": "smoke", "channel": "in3"}, e]})

    dropped_in1 = 'config.json: inputs: channel in1 has no usable entry; watching it as the board default ' \
                  '"panel_fire" (fire)'
    cases = (
        (dict(name=None), ["config.json: inputs[1].name: missing; entry dropped", dropped_in1]),
        (dict(name="Fire"), ['config.json: inputs[1].name: expected a string of 1..24 characters from [a-z0-9_], '
                             'got "Fire"; entry dropped', dropped_in1]),
        (dict(name="a" * 25), ['config.json: inputs[1].name: expected a string of 1..24 characters from [a-z0-9_], '
                               'got "aaaaaaaaaaaaaaaaaaaaaaaaa"; entry dropped', dropped_in1]),
        (dict(kind=None), ["config.json: inputs[1].kind: missing; entry dropped", dropped_in1]),
        (dict(kind="flame"), ['config.json: inputs[1].kind: expected one of "fire", "smoke", "heat", "manual", '
                              '"supervisory", "fault", "mains", "battery", "tamper", got "flame"; entry dropped',
                              dropped_in1]),
        (dict(channel=None), ["config.json: inputs[1].channel: missing; entry dropped",
                              'config.json: inputs: channel in1 is not configured; watching it as the board default '
                              '"panel_fire" (fire)']),
        (dict(channel="in9"), ['config.json: inputs[1].channel: expected one of "in1", "in2", "in3", "in4", "in5", '
                               '"in6", got "in9"; entry dropped', 'config.json: inputs: channel in1 is not '
                               'configured; watching it as the board default "panel_fire" (fire)']),
        (dict(channel="battery"), ['config.json: inputs[1].channel: expected one of "in1", "in2", "in3", "in4", '
                                   '"in5", "in6", got "battery"; entry dropped', 'config.json: inputs: channel in1 '
                                   'is not configured; watching it as the board default "panel_fire" (fire)']),
        (dict(contact="NO"), ['config.json: inputs[1].contact: expected one of "no", "nc", got "NO"; entry dropped',
                              dropped_in1]),
        (dict(debounce_ms="fast"), ['config.json: inputs[1].debounce_ms: expected an integer 0..600000, got "fast"']),
        (dict(debounce_ms=600001), ["config.json: inputs[1].debounce_ms: expected an integer 0..600000, got 600001"]),
        (dict(zone=1000), ["config.json: inputs[1].zone: expected an integer 0..999, got 1000"]),
        (dict(zone=-1), ["config.json: inputs[1].zone: expected an integer 0..999, got -1"]),
        (dict(eol="yes"), ['config.json: inputs[1].eol: expected true or false, got "yes"']),
        (dict(eol=True, contact="nc"), ['config.json: inputs[1].contact: expected "no" with eol (the end-of-line '
                                        'circuit is normally open), got "nc"']),
    )
    for kw, want in cases:
        eq(entry(**kw), want, repr(kw))
    keep = {"name": "keep", "kind": "smoke", "channel": "in3"}
    eq(problems_for({"inputs": [keep, f, "x"]}), ['config.json: inputs[2]: expected an object, got "x"; entry dropped'])
    eq(problems_for({"inputs": [keep, f, {"name": "t", "kind": "tamper", "channel": "in4", "eol": True}]}),
       ["config.json: inputs[2].eol: channel in4 has no ADC; expected false, got true"])
    eq(problems_for({"inputs": [keep, f, {"name": "b", "kind": "battery", "channel": "in2"}]}),
       ['config.json: inputs[2].channel: expected "battery" for kind battery, got "in2"; entry dropped',
        'config.json: inputs: channel in2 has no usable entry; watching it as the board default "panel_fault" '
        '(fault)'])


def test_every_problem_of_an_entry_is_reported():
    p = problems_for({"inputs": [{"name": "X", "kind": "x", "channel": "in9", "contact": 1}]})
    eq(p, ['config.json: inputs[0].name: expected a string of 1..24 characters from [a-z0-9_], got "X"; entry dropped',
           'config.json: inputs[0].kind: expected one of "fire", "smoke", "heat", "manual", "supervisory", "fault", '
           '"mains", "battery", "tamper", got "x"; entry dropped',
           'config.json: inputs[0].channel: expected one of "in1", "in2", "in3", "in4", "in5", "in6", got "in9"; '
           'entry dropped',
           'config.json: inputs[0].contact: expected one of "no", "nc", got 1; entry dropped',
           "config.json: inputs: no usable entry; using the board's default inputs"])


def test_bad_optional_fields_fall_back_to_their_defaults():
    c, p = load({"inputs": [{"name": "f", "kind": "fire", "channel": "in3", "debounce_ms": "fast", "zone": "a"},
                            {"name": "t", "kind": "tamper", "channel": "in4", "eol": True},
                            {"name": "z", "kind": "smoke", "channel": "in6", "eol": True, "contact": "nc"},
                            {"name": "w", "kind": "fault", "channel": "in2", "zone": 0}]}, {})
    eq(len(p), 5, "problems")
    f, t, z, w = c["inputs"][:4]
    eq((f["debounce_ms"], f["zone"]), (50, 1), "kind default debounce, zone = index + 1")
    eq(t["eol"], False, "eol off on a channel without ADC")
    eq((z["eol"], z["contact"]), (True, "no"), "eol kept, contact forced to no")
    eq(w["zone"], 0)


def test_debounce_defaults_by_kind():
    kinds = ("fire", "smoke", "heat", "manual", "supervisory", "fault", "tamper", "mains")
    entries = [{"name": k, "kind": k, "channel": "in%d" % (i % 6 + 1)} for i, k in enumerate(kinds[:6])]
    c, p = load({"inputs": entries}, {})
    eq(p, [])
    eq([s["debounce_ms"] for s in c["inputs"]], [50, 50, 50, 50, 1000, 2000])
    c, p = load({"inputs": [{"name": "t", "kind": "tamper", "channel": "in1"},
                            {"name": "m", "kind": "mains", "channel": "in2"},
                            {"name": "b", "kind": "battery"}]}, {})
    eq([s["debounce_ms"] for s in c["inputs"]], [500, 10000, 30000, 50], "plus the restored smoke default")


def test_duplicate_names_and_channels_are_dropped():
    c, p = load({"inputs": [{"name": "a", "kind": "fire", "channel": "in1"},
                            {"name": "a", "kind": "smoke", "channel": "in3"},
                            {"name": "b", "kind": "fault", "channel": "in1"},
                            {"name": "smoke", "kind": "heat", "channel": "in6"}]}, {})
    eq(p, ['config.json: inputs[1].name: "a" already used by inputs[0]; entry dropped',
           'config.json: inputs[2].channel: "in1" already used by inputs[0]; entry dropped',
           'config.json: inputs: channel in3 is not configured; watching it as the board default "smoke_in3" (smoke)'])
    eq(names(c), ["a", "smoke", "smoke_in3"], "restored default renamed to stay unique")
    eq(c["inputs"][2]["channel"], "in3")


def test_fire_default_channels_always_watched():
    # Configured without in1 (fire) and in3 (smoke): both come back; in2/in4/in5 stay out.
    c, p = load({"inputs": [{"name": "pump", "kind": "supervisory", "channel": "in6"}]}, {})
    eq(p, ['config.json: inputs: channel in1 is not configured; watching it as the board default "panel_fire" (fire)',
           'config.json: inputs: channel in3 is not configured; watching it as the board default "smoke" (smoke)'])
    eq(names(c), ["pump", "panel_fire", "smoke"])
    # A channel used for something else is watched as configured, not as its default.
    c, p = load({"inputs": [{"name": "mcp", "kind": "manual", "channel": "in1"},
                            {"name": "heat", "kind": "heat", "channel": "in3"}]}, {})
    eq(p, [])
    eq(names(c), ["mcp", "heat"])


def test_no_usable_entry_uses_all_board_defaults():
    c, p = load({"inputs": [{"name": "f"}, 5]}, {})
    eq(p, ["config.json: inputs[0].kind: missing; entry dropped",
           "config.json: inputs[0].channel: missing; entry dropped",
           "config.json: inputs[1]: expected an object, got 5; entry dropped",
           "config.json: inputs: no usable entry; using the board's default inputs"])
    eq(c["inputs"], DEFAULT_INPUTS)


def test_real_board_json_defaults_are_valid():
    from fl.hal.sim import Board
    info = Board().board_info()
    c, p = config.load(info)
    eq(p, ["config.json: missing; running on defaults", NO_SECRETS])
    eq([s["channel"] for s in c["inputs"]], [d["channel"] for d in info["default_inputs"]])
    for s in c["inputs"]:
        ok(s["channel"] in info["inputs"] or (s["kind"], s["channel"]) == ("battery", "battery"), s["name"])


# --- secrets.json ---

SECRET = "s3cr3t-Value"


def secret_problems(secrets, cfg=None):
    p = load(cfg or {}, secrets)[1]
    blob = repr(p)
    ok(SECRET not in blob and "hunter2" not in blob, "a secret value leaked into: " + blob)
    return p


def test_secrets_loaded_under_underscore_secrets():
    for f in ("ca.der", "dev.der", "dev.key.der"):
        write(f, b"0")
    s = {"mqtt_username": "dev1", "mqtt_password": SECRET, "wifi_password": "hunter2hunter2",
         "tls_ca": "ca.der", "tls_cert": "dev.der", "tls_key": "dev.key.der"}
    c, p = load({"broker": {"tls": True}}, s)
    eq(p, [])
    eq(c["_secrets"], s)


def test_secret_messages_never_show_values():
    cases = (
        ({"mqtt_password": 12345}, ["secrets.json: mqtt_password: expected a string of 1..256 characters, "
                                    "got a number"]),
        ({"mqtt_username": "u", "mqtt_password": ""},
         ["secrets.json: mqtt_password: expected a string of 1..256 characters, got an empty string"]),
        ({"mqtt_username": ["hunter2"]}, ["secrets.json: mqtt_username: expected a string of 1..256 characters, "
                                          "got a list"]),
        ({"wifi_password": "hunter2"}, ["secrets.json: wifi_password: expected a string of 8..63 characters "
                                        "(or 64 hex digits), got a string"]),
        ({"wifi_password": "g" * 64}, ["secrets.json: wifi_password: expected a string of 8..63 characters "
                                       "(or 64 hex digits), got a string"]),
        ({"wifi_password": True}, ["secrets.json: wifi_password: expected a string of 8..63 characters "
                                   "(or 64 hex digits), got a boolean"]),
        ({"tls_ca": SECRET}, ["secrets.json: tls_ca: names a file that does not exist"]),
        ({"tls_ca": None}, ["secrets.json: tls_ca: expected a file name of 1..64 characters, got null"]),
        ({"tls_ca": "a b.der"}, ["secrets.json: tls_ca: expected a file name of 1..64 characters, got a string"]),
        ({"mqtt_pasword": SECRET}, ["secrets.json: mqtt_pasword: unknown key (ignored)"]),
        ({"mqtt_password": SECRET}, ["secrets.json: mqtt_username: missing; mqtt_password needs it "
                                     "(password not used)"]),
    )
    for secrets, want in cases:
        eq(secret_problems(secrets), want, repr(list(secrets)))
    eq(secret_problems({"wifi_password": "ab" * 32}), [], "64 hex digits are a raw WPA key")


def test_secret_file_problems_never_show_content():
    eq(secret_problems('{"mqtt_password": "%s",\n "x": hunter2}' % SECRET),
       ["secrets.json: line 2: not valid JSON (expected a value); running without credentials"])
    eq(secret_problems('["%s"]' % SECRET),
       ["secrets.json: expected a JSON object at the top level, got a list; running without credentials"])
    eq(secret_problems('"%s"' % SECRET),
       ["secrets.json: expected a JSON object at the top level, got a string; running without credentials"])
    eq(secret_problems('{"mqtt_username": "u" "mqtt_password": "%s"}' % SECRET),
       ['secrets.json: line 1: not strict JSON (expected "," or "}"); read leniently'])


def test_secret_cross_checks():
    write("dev.der", b"0")
    write("my-ca.der", b"0")
    c, p = load({}, {"tls_cert": "dev.der"})
    eq(p, ["secrets.json: tls_key: missing; tls_cert needs it (client certificate not used)"])
    eq(c["_secrets"], {})
    c, p = load({}, {"tls_key": "dev.der", "tls_ca": "my-ca.der"})
    eq(p, ["secrets.json: tls_cert: missing; tls_key needs it (client certificate not used)"])
    eq(c["_secrets"], {"tls_ca": "my-ca.der"})
    tls_ca = "secrets.json: tls_ca: missing (and no ca.der on the device); broker.tls is true, so the broker " \
             "cannot be verified"
    c, p = load({"broker": {"tls": True}}, {})
    eq(p, [tls_ca])
    c, p = load({"broker": {"tls": True}}, None)
    eq(p, [NO_SECRETS, tls_ca])


def test_tls_files_under_their_usual_names_need_no_secrets_entry():
    write("ca.der", b"0")
    write("device.der", b"0")
    c, p = load({"broker": {"tls": True}}, {})
    eq(p, [])
    eq(c["_secrets"], {"tls_ca": "ca.der"}, "client certificate only as a pair")
    write("device.key.der", b"0")
    c, p = load({"broker": {"tls": True}}, None)
    eq(p, [NO_SECRETS])
    eq(c["_secrets"], {"tls_ca": "ca.der", "tls_cert": "device.der", "tls_key": "device.key.der"})
    c, p = load({}, {"tls_cert": "device.der"})
    eq(p, ["secrets.json: tls_key: missing; tls_cert needs it (client certificate not used)"],
       "a named cert is not paired with a default key")


def test_bad_secret_is_dropped_alone():
    c, p = load({}, {"mqtt_username": "dev1", "mqtt_password": SECRET, "wifi_password": 5})
    eq(len(p), 1)
    eq(c["_secrets"], {"mqtt_username": "dev1", "mqtt_password": SECRET})


def test_json_checker_reasons():
    from fl.jsoncheck import first_error
    cases = (
        (b'{"a": 1}', None),
        (b'{"a": [1, -2.5e+3, true, null, "\\u00e9\\n"]}', None),
        (b'{\n"a": 1\n"b": 2}', (3, 'expected "," or "}"')),
        (b'{"a" 1}', (1, 'expected ":" after the key')),
        (b'{"a": [1 2]}', (1, 'expected "," or "]"')),
        (b'{"a": [1,]}', (1, 'extra "," before "]"')),
        (b'{a: 1}', (1, "expected a key in double quotes")),
        (b'{"a": "x\n"}', (1, "string not closed before the end of the line")),
        (b'{"a": "x\t"}', (1, "control character inside a string")),
        (b'{"a": "\\q"}', (1, "unknown escape after a backslash (a backslash itself is written \\\\)")),
        (b'{"a": "\\u12g4"}', (1, "\\u needs four hex digits")),
        (b'{"a": 01}', (1, "numbers do not start with 0")),
        (b'{"a": 1.}', (1, "expected a digit")),
        (b'{"a": "x', (1, "unexpected end of file")),
        (b'\n\n[', (3, "unexpected end of file")),
    )
    for data, want in cases:
        eq(first_error(data), want, repr(data))


def test_docs_example_is_valid():
    import fl
    from fl.hal.sim import Board
    root = fl.__file__.rsplit("/", 3)[0]
    with open(root + "/docs/config.md") as f:
        doc = f.read()
    blocks = [b.split("```", 1)[0] for b in doc.split("```json\n")[1:]]
    eq(len(blocks), 2, "config.json and secrets.json examples")
    for name in ("ca.der", "device.der", "device.key.der"):
        write(name, b"0")
    write("config.json", blocks[0])
    write("secrets.json", blocks[1])
    c, p = config.load(Board().board_info(), default_device_id="fl-x")
    eq(p, [], "problems")
    eq(len(c["inputs"]), 7)
    eq(sorted(c["_secrets"]), ["mqtt_password", "mqtt_username", "tls_ca", "tls_cert", "tls_key", "wifi_password"])


def test_cellular_keys():
    c, p = load({"cellular": {"enabled": True, "apn": "m-wap", "user": "mms", "password": "mms", "auth": "pap",
                              "lte_only": False, "backup_test_s": 600}, "paths": ["cellular", "wifi"]}, {"sim_pin": "1234"})
    eq(p, [], "problems")
    eq((c["cellular"]["auth"], c["cellular"]["lte_only"], c["paths"]), ("pap", False, ["cellular", "wifi"]), "cellular")
    eq(problems_for({"cellular": {"auth": "chap"}}),
       ["config.json: cellular.auth: chap needs cellular.user (authentication off)"])
    eq(problems_for({"paths": ["wifi", "wifi"]}),
       ["config.json: paths: expected a list of distinct path names from wifi, cellular; using wifi then cellular"])
    eq(problems_for({"cellular": {"auth": "md5"}})[0][:34], "config.json: cellular.auth: expect", "auth")
