"""The diagnostics console's answers and actions (fl/diag.py reads and frames; this answers).

Loaded on the first request, not at boot (the lean board's heap). Each verb returns one JSON
object, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`; docs/diag.md lists them. Config
answers come from the validated config the app runs on, without `_secrets`: a secret cannot be
printed because it is never read here. `set` validates through fl.service (fl.config).
"""
import asyncio
import gc
import json
from binascii import crc32

from fl import VERSION, ticks
from fl.diag import LINE_MAX, LOG_LINES, LOG_WIDTH
from fl.inputs import CODES  # the Contact ID code an input's activation is sent with

# fl.service (the actions) and fl.crash load only for the verbs that need them: a query costs
# this module's RAM alone. ServiceError is a ValueError: caught as one here.
ServiceError = ValueError
WALK_DEFAULT_S = 30 * 60

PROTO = 1
CHUNK = 192
PREFIX = "#FL1 "
_TAG_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


async def line(app, console, raw, over=False):
    """One complete request line (bytes-like starting with "?", without its end; `over`: it
    was longer than LINE_MAX and is cut)."""
    if over:
        await overlong(console)
        return
    for c in raw:
        if c < 32 or c > 126:
            console.refused += 1
            await send(console, "-", {"ok": False, "error": "request is not printable ASCII"})
            return
    text = bytes(raw[1:]).decode()
    tag, _, rest = text.partition(" ")
    if not 1 <= len(tag) <= 8 or any(c not in _TAG_OK for c in tag):
        console.refused += 1
        await send(console, "-", {"ok": False, "error": "tag must be 1..8 letters or digits"})
        return
    console.requests += 1
    if rest.strip() == "all":
        await _send_all(app, console, tag)
        return
    if rest.strip() == "selftest crash" and app.board.name == "sim":
        # The simulated board only: a real failure of the task that reads the console, for the HIL suite's
        # crash scenario (fl/app.py records it on flash and restarts the task).
        raise RuntimeError("induced crash (selftest) in the task reading the console")
    try:
        reply = await answer(app, console, rest.strip())
    except ValueError as e:
        reply = _fail(str(e))
    except MemoryError:
        reply = _fail("out of memory: ask for less (e.g. one part)")
    except Exception as e:  # noqa: BLE001 - a bad request or a bug in an answer never ends the console
        console.refused += 1
        reply = {"ok": False, "error": ("%s: %s" % (type(e).__name__, e))[:200]}
    await send(console, tag, reply)


async def overlong(console):
    console.refused += 1
    await send(console, "-", {"ok": False, "error": "line longer than %d bytes: dropped" % LINE_MAX})


class _Stream:
    """Frames written as the text comes (`k/+`, the last `k/n`): an answer is never one big
    string, only one part of it at a time."""

    def __init__(self, console, tag):
        self._console, self._tag, self._k, self._pend = console, tag, 0, ""

    async def write(self, text):
        self._pend += text
        while len(self._pend) > CHUNK:
            chunk, self._pend = self._pend[:CHUNK], self._pend[CHUNK:]
            await self._frame(chunk, "+")

    async def close(self):
        await self._frame(self._pend, str(self._k + 1))

    async def _frame(self, chunk, n):
        self._k += 1
        self._console.out("%s%s %d/%s %08x %s" % (PREFIX, self._tag, self._k, n,
                                                  crc32(chunk.encode()) & 0xFFFFFFFF, chunk))
        await asyncio.sleep_ms(0)


async def _send_all(app, console, tag):
    """`all`: every part, each made and dropped in turn."""
    st = _Stream(console, tag)
    await st.write('{"ok": true')
    for p in PARTS:
        try:
            part = json.dumps(_PART[p](app))
        except MemoryError:
            part = '{"error": "out of memory"}'
        await st.write(', "%s": %s' % (p, part))
        part = None
    await st.write(', "log": %s' % json.dumps(_log_lines(app, LOG_LINES)))
    await st.write(', "console": {"requests": %d, "ignored": %d, "refused": %d}}'
                   % (console.requests, console.ignored, console.refused))
    await st.close()


async def send(console, tag, obj):
    """Prints obj as frames of CHUNK characters, yielding between them: the alarm path runs in
    between, and a log line falls between two frames, never inside one."""
    body = json.dumps(obj)
    obj = None
    n = (len(body) + CHUNK - 1) // CHUNK or 1
    for k in range(n):
        chunk = body[k * CHUNK:(k + 1) * CHUNK]
        console.out("%s%s %d/%d %08x %s" % (PREFIX, tag, k + 1, n, crc32(chunk.encode()) & 0xFFFFFFFF, chunk))
        await asyncio.sleep_ms(0)
PARTS = ("id", "inputs", "paths", "outbox", "faults", "counters", "mem", "clock", "walk")


async def answer(app, console, text):
    verb, _, arg = text.partition(" ")
    arg = arg.strip()
    if verb == "walk":
        return _walk(app, arg)
    if verb in PARTS:
        return _ok({verb: _PART[verb](app)})
    if verb == "hello":
        return _ok({"proto": PROTO, "fw": VERSION, "id": app.device_id, "verbs": VERBS})
    if verb == "log":
        return _ok({"log": _log_lines(app, _int(arg or "10", 1, 1000, "line count"))})  # as many as kept
    if verb == "crash":
        from fl import crash
        if arg == "clear":
            crash.clear()
            return _ok({})
        return _ok({"crash": crash.read()})
    from fl import service  # every verb below acts
    if verb == "config":
        return _ok({"config": service.masked_config(app.config), "settable": service.SETTABLE})
    if verb == "leds":
        await service.lamp_test(app)
        return _ok({"tested": ["led_status", "led_fault", "buzzer"]})
    if verb == "silence":
        service.silence(app, "console")
        return _ok({"silenced": True})
    if verb == "set":
        key, _, value = arg.partition(" ")
        value = value.strip()
        try:
            v = json.loads(value)
        except ValueError:
            return _fail("set KEY VALUE: VALUE must be JSON (a number, true/false, \"text\")")
        return _do(lambda: {"set": key, "value": service.config_set(app, key, v, "console"),
                            "applies": "after reboot"})
    if verb == "reboot":
        service.changed(app, "reboot", "console")  # a 306, as from the centre
        await send(console, "-", {"ok": True, "rebooting": True})
        service.restart(app, "reboot asked on the console")
        return _ok({})  # on the unix port a test harness may catch the exit
    return _fail("unknown verb %r; try: %s" % (verb[:20], " ".join(VERBS)))


VERBS = ("hello", "all") + PARTS + ("log", "crash", "config", "leds", "silence", "walk", "set", "reboot")


def _ok(d):
    d["ok"] = True
    return d


def _fail(msg):
    return {"ok": False, "error": msg}


def _do(fn):
    try:
        return _ok(fn())
    except ValueError as e:
        return _fail(str(e))


def _int(s, lo, hi, what):
    try:
        v = int(s)
    except ValueError:
        raise ServiceError("%s must be an integer" % what)
    if not lo <= v <= hi:
        raise ServiceError("%s must be %d..%d" % (what, lo, hi))
    return v


def _walk(app, arg):
    from fl import service
    if arg.startswith("on"):
        rest = arg[2:].strip()
        try:
            if rest.endswith("s"):  # seconds: a short walk test (the HIL suite's)
                secs = _int(rest[:-1], 10, 14400, "seconds")
            else:
                secs = _int(rest, 1, 240, "minutes") * 60 if rest else WALK_DEFAULT_S
            service.walk_on(app, "console", secs)
        except ValueError as e:
            return _fail(str(e))
    elif arg == "off":
        service.walk_off(app, "console")
    elif arg:
        return _fail("walk [on [MINUTES | SECONDSs] | off]")
    return _ok({"walk": _walk_state(app)})


def _walk_state(app):
    w = app.console.walk
    return {"on": w is not None, "left_s": None if w is None else max(0, w.left() // 1000)}


def _id(app):
    hb = app.heartbeat
    return {"id": app.device_id, "fw": VERSION, "board": app.board_name, "hal": app.board.name, "boot": app.console.boot,
            "reset": app.reset_cause, "uptime_s": hb.uptime_s(), "safe_mode": app.safe_mode,
            "site": app.config.get("site", "")}


def _inputs(app):
    inp = app.inputs
    now = ticks.ms()
    out = []
    states = inp.states()
    for i, spec in enumerate(inp.specs):
        d = {"name": spec["name"], "kind": spec["kind"], "zone": spec["zone"], "state": states.get(spec["name"]),
             "code": CODES.get(spec["kind"]), "debouncing": inp._cand[i] is not None}
        if d["debouncing"]:
            d["candidate"] = inp._cand[i]
            d["for_ms"] = ticks.diff(now, inp._since[i])
        src = inp._src[i]
        try:
            if src is not None and hasattr(src, "read_raw"):
                d["raw"] = src.read_raw()
                d["eol_v"] = src.read_mv() / 1000
            elif src is not None:
                d["raw"] = src.value()
            else:
                d["battery_mv"] = app.board.battery_mv()
        except Exception as e:  # noqa: BLE001 - a failing reader is shown, not fatal
            d["read_error"] = repr(e)[:60]
        out.append(d)
    return out


def _paths(app):
    out = []
    cur = app.links.current()
    for p in app.links.paths:
        d = {"name": p.name, "up": p.is_up(), "current": p is cur, "failures": p.failures}
        try:
            d["signal_dbm"] = p.signal_dbm()
            ip = getattr(p, "ip", None)
            d["ip"] = ip() if callable(ip) else ip
        except Exception as e:  # noqa: BLE001
            d["error"] = repr(e)[:60]
        out.append(d)
    m = app.mqtt.stats()
    m["broker"] = "%s:%s" % (app.config["broker"]["host"], app.config["broker"]["port"])
    return {"paths": out, "mqtt": m}


def _outbox(app):
    ob = app.outbox
    fire, fault, status = ob.depth_by_priority()
    d = {"fire": fire, "fault": fault, "status": status, "depth": len(ob), "capacity": ob.capacity,
         "in_ram": ob.in_ram(), "dropped": ob.dropped, "storage_fault": bool(ob.storage_fault),
         "acks_pending": app.ack_watch.pending()}
    d.update(_oldest(app, ob))
    return d


def _oldest(app, ob):
    """The oldest record still waiting (the lowest number, whatever its class) and its age from
    its own timestamp. Found on request (one pass over the outbox's index, one slot read),
    so the outbox keeps no time per record: its index stays ≈5 bytes a slot (fl/outbox.py).
    The age is unknown (null) when the record was stamped on another clock basis than now
    (before the clock was set, or the other way round)."""
    st, orders = ob._state, ob._order
    slot, order, payload = -1, 0, None
    for i in range(ob.capacity):
        if st[i] & 0x7F <= 2 and (not order or orders[i] < order):  # fire, fault or status: live
            slot, order = i, orders[i]
    for r in ob._ram:  # flash refused them: held in RAM
        if not order or r[0] < order:
            slot, order, payload = -1, r[0], r[2]
    if not order:
        return {"oldest_seq": None, "oldest_age_s": None}
    if slot >= 0:
        try:
            rec = ob._file.read(slot)
        except OSError:
            rec = None
        payload = rec[1] if rec is not None and rec[0] == order else None
    d = {"oldest_seq": order, "oldest_age_s": None}
    try:
        ev = json.loads(bytes(payload))
        d["oldest_code"], d["oldest_class"] = ev["code"], ev["class"]
        t, ms, synced = app.clock.stamp()
        if ev["tsync"] is synced:
            d["oldest_age_s"] = max(0, (t - ev["ts"]) * 1000 + ms - ev.get("ms", 0)) / 1000
    except (TypeError, ValueError, KeyError):
        pass  # unreadable now (the sender will say so when it gets there): number only
    return d


def _mem(app):
    gc.collect()
    return {"heap_free": app.board.free_heap(), "flash_free": app.board.storage_free()}


def _clock(app):
    ts, synced = app.clock.now()
    return {"ts": ts, "synced": synced is True}


def _log_lines(app, n):
    """The console's last n log lines, oldest first (fl/diag.py keeps them in one buffer)."""
    con = app.console
    ring, lens, w = con.ring, con.lens, LOG_WIDTH
    n = max(0, min(n, LOG_LINES))
    out = []
    for k in range(n):
        i = (con.next - n + k) % LOG_LINES
        if lens[i]:
            b = bytes(ring[i * w:i * w + lens[i]])
            try:
                out.append(b.decode())
            except UnicodeError:  # cut inside a character
                out.append(bytes(c if c < 128 else 63 for c in b).decode())
    return out


_PART = {"id": _id, "inputs": _inputs, "paths": _paths, "outbox": _outbox, "faults": lambda app: app.health.faults,
         "counters": lambda app: app.health.counters, "mem": _mem, "clock": _clock, "walk": _walk_state}
