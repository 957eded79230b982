"""Remote commands from the centre on `firelink/<id>/cmd`; results on `firelink/<id>/cmd/result`.

Only the centre can publish there (the broker's ACL). One command so far:

  {"cmd": "test", "id": "<ref>"}   records a Contact ID 601 (manual test) event through the
                                   recorder, so it takes the path of any alarm: flash, outbox,
                                   broker, the centre's ack. Answers
                                   {"id": "<ref>", "cmd": "test", "ok": true, "event": "<event id>", "seq": n}

Anything else is answered `{"id", "cmd", "ok": false, "error": "..."}` and logged. Tests closer
than MIN_TEST_INTERVAL_MS apart are refused ("busy"): a replayed or looping command must not
fill the event log. `handle()` runs inside the MQTT receive loop, so it never waits: the answer
is published by a task of its own (a publish waits for a PUBACK that this loop reads).
"""
import asyncio
import json

from fl import ticks
from fl.log import Logger

_log = Logger("cmd")
MAX_BYTES = 256  # a command is a few dozen bytes; anything larger is refused unparsed
MAX_REF = 32
MIN_TEST_INTERVAL_MS = 2000


class Commands:
    def __init__(self, recorder, mqtt, result_topic):
        self._recorder = recorder
        self._mqtt = mqtt
        self._topic = result_topic
        self._last_test = None  # ticks_ms of the last recorded test
        self.handled = 0
        self.refused = 0

    def handle(self, payload):
        """One message from the cmd topic. Records what it asks for, then answers."""
        ref, name = None, None
        try:
            if len(payload) > MAX_BYTES:
                raise ValueError("command larger than %d bytes" % MAX_BYTES)
            msg = json.loads(payload)
            if type(msg) is not dict:
                raise ValueError("expected a JSON object")
            name = msg.get("cmd")
            ref = msg.get("id")
            if ref is not None and (type(ref) is not str or len(ref) > MAX_REF):
                ref = None
                raise ValueError("id must be a string of at most %d characters" % MAX_REF)
            if name != "test":
                raise ValueError("unknown command %r" % (name,) if type(name) is str else "no command")
            result = self._test(ref)
        except (ValueError, TypeError) as e:
            self.refused += 1
            _log.warn("refused command (%d bytes): %s", len(payload), e)
            result = {"id": ref, "cmd": name if type(name) is str else None, "ok": False, "error": str(e)}
        self.handled += 1
        self._answer(result)
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

    def _answer(self, result):
        asyncio.create_task(self._publish(json.dumps(result).encode()))

    async def _publish(self, body):
        # Best effort: the event itself is already on flash and reaches the centre anyway.
        if not await self._mqtt.publish(self._topic, body, qos=1):
            _log.warn("command result not delivered (%d bytes)", len(body))
