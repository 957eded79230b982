"""Remote commands from the centre on `firelink/<id>/cmd`; results on `firelink/<id>/cmd/result`.

Only the centre can publish there (the broker's ACL). `test` is here; `status`, `config get`,
`config set`, `reboot`, `silence` and `walktest` are in fl/remote.py (loaded on first use), at
most one a second. In safe mode only `status` runs.

  {"cmd": "test", "id": "<ref>"}   records a Contact ID 601 (manual test) event through the
                                   recorder, so it takes the path of any alarm: flash, outbox,
                                   broker, the centre's ack. Answers
                                   {"id": "<ref>", "cmd": "test", "ok": true, "event": "<event id>", "seq": n}

Anything else is answered `{"id", "cmd", "ok": false, "error": "..."}` and logged. Tests closer
than MIN_TEST_INTERVAL_MS apart are refused ("busy"): a replayed or looping command must not
fill the event log.

`handle()` runs inside the MQTT receive loop, so it never waits and, when the device is busy,
never allocates: it copies the command into one of QUEUE_SLOTS buffers made at boot, and one
task (`run()`) parses, executes and answers them one at a time (a publish waits for a PUBACK
that the receive loop reads, so the answer cannot be sent from there). A command arriving
while every slot is full is only counted; once the queue has drained, one answer
`{"id": null, "cmd": null, "ok": false, "error": "busy: n command(s) refused"}` tells the
centre how many were dropped. A burst of a thousand costs a counter, not a thousand tasks.
"""
import asyncio
import json

from fl import ticks
from fl.log import Logger

_log = Logger("cmd")
MAX_BYTES = 256  # a command is a few dozen bytes; anything larger is refused unparsed
MAX_REF = 32
MIN_TEST_INTERVAL_MS = 2000
QUEUE_SLOTS = 4
# An answer whose session dropped before its PUBACK (the backup-path test moving the session, a
# broker restart) is sent again once the session is back, for this long; the next command waits.
ANSWER_WAIT_MS = 30000


class Commands:
    def __init__(self, recorder, mqtt, result_topic, app=None):
        self._app = app  # fl.remote's commands act on the app
        self._last_remote = None
        self._recorder = recorder
        self._mqtt = mqtt
        self._topic = result_topic
        self._last_test = None  # ticks_ms of the last recorded test
        # The queue: QUEUE_SLOTS fixed buffers in a ring; _lens[i] is the command's length
        # (more than MAX_BYTES: too large, not copied).
        self._bufs = [bytearray(MAX_BYTES) for _ in range(QUEUE_SLOTS)]
        self._mvs = [memoryview(b) for b in self._bufs]
        self._lens = [0] * QUEUE_SLOTS
        self._head = 0  # next to run
        self._count = 0  # queued
        self._busy = 0  # refused since the last busy answer
        self._ready = asyncio.Event()
        self.handled = 0
        self.refused = 0
        self.busy = 0  # refused because the queue was full, ever
        self.progress = 0

    def handle(self, payload):
        """One message from the cmd topic: queued, or counted as refused when the queue is full.
        Returns whether it was queued. Allocates nothing when refusing."""
        if self._count >= QUEUE_SLOTS:
            self._busy += 1
            self.busy += 1
            return False
        i = (self._head + self._count) % QUEUE_SLOTS
        n = len(payload)
        if n <= MAX_BYTES:
            self._mvs[i][:n] = payload
        self._lens[i] = n
        self._count += 1
        self._ready.set()
        return True

    async def run(self):
        """Executes the queued commands one at a time and answers each."""
        while True:
            self.progress += 1
            if not self._count:
                if self._busy:
                    n, self._busy = self._busy, 0
                    self.refused += n
                    _log.warn("refused %d command(s): busy", n)
                    await self._answer({"id": None, "cmd": None, "ok": False,
                                        "error": "busy: %d command(s) refused" % n})
                    continue
                self._ready.clear()
                try:
                    # Wake now and then so the watchdog sees progress while nothing comes.
                    await asyncio.wait_for_ms(self._ready.wait(), 5000)
                except asyncio.TimeoutError:
                    pass
                continue
            i = self._head
            n = self._lens[i]
            # The copy frees the slot before anything that waits: the receive loop may fill it.
            payload = bytes(self._mvs[i][:n]) if n <= MAX_BYTES else n
            self._head = (i + 1) % QUEUE_SLOTS
            self._count -= 1
            result = self.execute(payload)
            await self._answer(result)
            if "restart" in result:  # answered first: the centre hears why the device goes away
                from fl.service import restart
                restart(self._app, result["restart"])

    def execute(self, payload):
        """Parses and runs one command (bytes, or the length of one too large to keep); returns
        the answer."""
        ref, name = None, None
        size = payload if type(payload) is int else len(payload)
        try:
            if size > MAX_BYTES:
                raise ValueError("command larger than %d bytes" % MAX_BYTES)
            msg = json.loads(payload)
            if type(msg) is not dict:
                raise ValueError("expected a JSON object")
            name = msg.get("cmd")
            ref = msg.get("id")
            if ref is not None and (type(ref) is not str or len(ref) > MAX_REF):
                ref = None
                raise ValueError("id must be a string of at most %d characters" % MAX_REF)
            if type(name) is not str:
                raise ValueError("no command")
            if self._app is None and name != "test":
                raise ValueError("unknown command %r" % (name,))
            if self._app is not None and (name != "test" or self._app.safe_mode):
                from fl.remote import dispatch  # the rest, and safe mode's refusals (fl/remote.py)
                result = dispatch(self, self._app, name, msg, ref)
            else:
                result = self._test(ref)
        except (ValueError, TypeError) as e:
            self.refused += 1
            _log.warn("refused command (%d bytes): %s", size, e)
            result = {"id": ref, "cmd": name if type(name) is str else None, "ok": False, "error": str(e)}
        self.handled += 1
        return result

    def _test(self, ref):
        now = ticks.ms()
        # recent(): a stamp from days ago (wrapped ticks) is not mistaken for a fresh one.
        if ticks.recent(self._last_test, MIN_TEST_INTERVAL_MS):
            raise ValueError("busy: a test was recorded less than %d ms ago" % MIN_TEST_INTERVAL_MS)
        ev = self._recorder.record("601", "new", 0, "", "status", detail="remote test" + (" " + ref if ref else ""))
        self._last_test = now
        _log.info("test event %s (seq %d) recorded on request %s", ev.id, ev.seq, ref)
        return {"id": ref, "cmd": "test", "ok": True, "event": ev.id, "seq": ev.seq}

    async def _answer(self, result):
        # Not through the outbox: a recorded event is already on flash and reaches the centre
        # anyway, and an answer is worth little once the centre's wait for it is over.
        body = json.dumps(result).encode()
        deadline = ticks.after(ANSWER_WAIT_MS)
        dup = False
        while not await self._mqtt.publish(self._topic, body, qos=1, dup=dup):
            self.progress += 1
            if not await self._session_back(deadline):
                _log.warn("command result not delivered (%d bytes)", len(body))
                return
            dup = True  # under the packet id the session knows it by, if it kept it

    async def _session_back(self, deadline):
        """Whether the MQTT session is up again before `deadline`; wakes every few seconds so
        that the watchdog sees this task make progress while it waits."""
        while True:
            left = ticks.left(deadline)
            if not left:
                return False
            if await self._mqtt.wait_connected(min(left, 5000)):
                return True
            self.progress += 1
