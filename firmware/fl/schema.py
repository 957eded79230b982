"""Validation rules and the messages they produce, for fl.config.

A rule is a tuple: ("int", lo, hi) | ("bool",) | ("one", values) | ("host?",) (a host name
or null) | ("bytes", lo, hi) (a str measured in UTF-8 bytes) | ("str", lo, hi, chars,
chars_text) (chars None: any). Every message reads `<file>: <key path>: expected <what>, got
<value>`; for secrets only the kind of value is shown, never the value itself.
"""
import json

HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:"
R_HOST = ("str", 1, 253, HOST_CHARS, "[A-Za-z0-9.-_:]")


def show(v):
    """A config value as the installer wrote it, shortened."""
    if type(v) is str:
        s = json.dumps(v)
        return s if len(s) <= 40 else s[:36] + '..."'
    if type(v) is dict:
        return "an object"
    if type(v) is list:
        return "a list"
    return json.dumps(v)


def kind(v):
    """What sort of value this is, never the value: for secrets."""
    if type(v) is str:
        return "a string" if v else "an empty string"
    if type(v) is bool:
        return "a boolean"
    if v is None:
        return "null"
    if type(v) in (int, float):
        return "a number"
    return "an object" if type(v) is dict else "a list"


def what(rule):
    t = rule[0]
    if t == "int":
        return "an integer %d..%d" % (rule[1], rule[2])
    if t == "bool":
        return "true or false"
    if t == "one":
        return "one of " + ", ".join('"%s"' % x for x in rule[1])
    if t == "host?":
        return "a host name or null"
    if t == "bytes":
        return "a string of %d..%d bytes" % (rule[1], rule[2])
    n = ("at most %d" % rule[2]) if rule[1] == 0 else "%d..%d" % (rule[1], rule[2])
    return "a string of %s characters" % n + (" from " + rule[4] if rule[4] else "")


def ok(rule, v):
    t = rule[0]
    if t == "int":
        # type() not isinstance(): true must not pass for 1 (CPython counts bool as int).
        return type(v) is int and rule[1] <= v <= rule[2]
    if t == "bool":
        return type(v) is bool
    if t == "one":
        return type(v) is str and v in rule[1]
    if t == "host?":
        return v is None or ok(R_HOST, v)
    if type(v) is not str:
        return False
    if t == "bytes":
        return rule[1] <= len(v.encode()) <= rule[2]
    if not rule[1] <= len(v) <= rule[2]:
        return False
    chars = rule[3]
    if chars:
        for c in v:
            if c not in chars:
                return False
    return True


class Report:
    """Collects one file's problems into a shared list."""

    def __init__(self, file, problems, secret_keys=()):
        self.file = file
        self.problems = problems
        self.secret_keys = secret_keys

    def add(self, path, text):
        self.problems.append("%s: %s: %s" % (self.file, path, text))

    def expected(self, path, rule_or_text, got, then=""):
        w = rule_or_text if type(rule_or_text) is str else what(rule_or_text)
        self.add(path, "expected %s, got %s%s" % (w, show(got), then))

    def take(self, obj, key, path, rule, default):
        """obj[key] if valid, else default (saying why when the key was there)."""
        if key not in obj:
            return default
        v = obj[key]
        if ok(rule, v):
            return v
        self.expected(path + key, rule, v)
        return default

    def unknown(self, obj, known, prefix):
        """Reports keys that are not in `known` (typos), never their values."""
        for k in sorted(obj):
            if k in known or k[:1] == "_":  # "_comment" and the like are allowed as notes
                continue
            if k in self.secret_keys:
                self.add(prefix + k, "belongs in secrets.json (ignored)")
            else:
                self.add(prefix + k, "unknown key (ignored)")

    def section(self, raw, key):
        v = raw.get(key, {})
        if type(v) is dict:
            return v
        self.expected(key, "an object", v, "; using its defaults")
        return {}
