"""Inputs: reads every configured input through the board, debounces it, supervises EOL lines,
and says which Contact ID events each change means (event_for).

Each input has a definite state from boot: "normal" | "active" | "open" | "short" ("active"
is the abnormal condition of its kind; open/short only on end-of-line inputs). A new
reading must persist for the input's debounce_ms before it is reported, and a bounce back
cancels it; fire-class inputs have only a short anti-chatter filter, faults a longer
confirmation. One scan task samples everything: every SETTLE_MS while something is
settling, else it sleeps until the board signals an edge or IDLE_MS passes (analogue lines
raise no interrupt, so they are polled at that rate).
"""
import asyncio

from fl import ticks
from fl.log import Logger

NORMAL = "normal"
ACTIVE = "active"
OPEN = "open"
SHORT = "short"
BOOT = "boot"
SETTLE_MS = 5
IDLE_MS = 100
MIN_GAP_MS = 2  # a contact chattering faster than this cannot starve the other tasks
BOOT_SETTLE_MS = 200  # start() waits at most this long for inputs to read steadily
BOOT_STABLE_MS = 50
LINE_FAULT_MS = 1000  # open/short must last this long: a flickering wire is one fault, not fifty
BATTERY_HYSTERESIS_MV = 100  # a loaded cell recovers a little: do not flap around low_mv
BATTERY_EVERY_MS = 1000  # a slow quantity with a 30 s debounce: no need to hit the ADC each scan

# Contact ID codes by kind (str, as fl.events wants them); 380 is line trouble, always a fault.
CODES = {"fire": "110", "smoke": "111", "heat": "114", "manual": "115", "supervisory": "200",
         "fault": "373", "mains": "301", "battery": "302", "tamper": "383"}
FIRE_KINDS = ("fire", "smoke", "heat", "manual")
LINE_TROUBLE = "380"

_log = Logger("inputs")
_now = ticks.ms  # tests replace it with a fake clock
_DIGITAL = 0
_EOL = 1
_BATTERY = 2


class Inputs:
    def __init__(self, board, specs, eol_thresholds=None, on_change=None, battery_low_mv=None, health=None):
        self.specs = specs
        self._board = board
        self._on_change = on_change
        self._health = health
        n = len(specs)
        self._how = [0] * n
        self._src = [None] * n
        self._nc = [False] * n
        for i, s in enumerate(specs):
            if s["kind"] == "battery":
                self._how[i] = _BATTERY
            elif s.get("eol"):
                self._how[i] = _EOL
                # Made once: on the ESP32 each call configures the pin (and its IRQ) again.
                self._src[i] = board.analog_input(s["channel"])
            else:
                self._src[i] = board.digital_input(s["channel"])
                self._nc[i] = s.get("contact") == "nc"
        if eol_thresholds is None and _EOL in self._how:
            eol_thresholds = board.board_info()["eol"]
        t = eol_thresholds or {}
        self._short_max = t.get("short_max", 0)
        self._active_max = t.get("active_max", 0)
        self._normal_max = t.get("normal_max", 0)
        if battery_low_mv is None and _BATTERY in self._how:
            battery_low_mv = board.board_info()["battery"]["low_mv"]
        self._low_mv = battery_low_mv or 0
        self._state = [None] * n
        self._prior = [NORMAL] * n
        self._cand = [None] * n
        self._since = [0] * n
        self._hold = [0] * n
        self._bad = [False] * n
        # A confirmed change whose on_change raised (e.g. MemoryError in the recorder): (old, new),
        # retried on every scan until it is reported. Not committed until then, so a fire is
        # never shown as active without its event existing, and never forgotten.
        self._owed = [None] * n
        self._batt_at = None  # when the battery was last read (channels are unique: one at most)
        self._batt = None
        self.progress = 0
        self.read_errors = 0
        self.event_errors = 0
        self.started = False

    # --- reading ---
    def _read(self, i):
        """The state the input shows right now, or None when it could not be read (the
        state then stays as it was, and the health fault "input_read" names the input)."""
        if self._bad[i]:
            s = self._sample(i)
            if s is not None:
                self._read_ok(i)
            return s
        return self._sample(i)

    def _sample(self, i):
        how = self._how[i]
        try:
            if how == _DIGITAL:
                closed = self._src[i].value() == 0  # pull-up: a closed contact reads 0
                return ACTIVE if closed != self._nc[i] else NORMAL
            if how == _EOL:
                raw = self._src[i].read_raw()
                if raw < self._short_max:
                    return SHORT
                if raw < self._active_max:
                    return ACTIVE
                return NORMAL if raw < self._normal_max else OPEN
            now = _now()
            if self._batt_at is not None and ticks.diff(now, self._batt_at) < BATTERY_EVERY_MS:
                return self._batt
            mv = self._board.battery_mv()
            if mv < self._low_mv:
                s = ACTIVE
            elif mv >= self._low_mv + BATTERY_HYSTERESIS_MV or self._state[i] is None:
                s = NORMAL
            else:
                s = self._state[i]
            self._batt_at, self._batt = now, s
            return s
        except Exception as e:  # noqa: B902 - one bad reader must not stop the others
            self.read_errors += 1
            if not self._bad[i]:  # log and raise the fault once, not on every scan
                self._bad[i] = True
                _log.error("%s: read failed: %r", self.specs[i]["name"], e)
                if self._health:
                    self._health.set_fault("input_read", True, self.specs[i]["name"])
            return None

    def _read_ok(self, i):
        self._bad[i] = False
        if self._health and True not in self._bad:
            self._health.set_fault("input_read", False)

    # --- boot ---
    def prime(self):
        """Settles every state from one sample and reports the abnormal ones from "boot"."""
        now = _now()
        for i in range(len(self.specs)):
            s = self._read(i)
            self._state[i] = s or NORMAL
            self._since[i] = now
        self._report_boot()

    async def start(self, settle_ms=BOOT_SETTLE_MS):
        """Samples until every input has read the same for min(debounce_ms, BOOT_STABLE_MS) or
        settle_ms passes, so a power-up glitch is not reported; then reports from "boot"."""
        t0 = _now()
        for i in range(len(self.specs)):
            self._state[i] = self._read(i) or NORMAL
            self._since[i] = t0
        while True:
            now = _now()
            steady = True
            for i in range(len(self.specs)):
                s = self._read(i)
                if s is not None and s != self._state[i]:
                    self._state[i] = s
                    self._since[i] = now
                if ticks.diff(now, self._since[i]) < min(self.specs[i]["debounce_ms"], BOOT_STABLE_MS):
                    steady = False
            if steady or ticks.diff(now, t0) >= settle_ms:
                break
            try:
                await self._board.wait_inputs(SETTLE_MS)
            except Exception as e:  # noqa: B902 - boot must go on to report definite states
                _log.error("wait_inputs failed at start: %r", e)
                await asyncio.sleep_ms(SETTLE_MS)
        self._report_boot()

    def _report_boot(self):
        for i in range(len(self.specs)):
            self._cand[i] = None
            if self._state[i] != NORMAL:
                # If this raises, the state read at boot stays (scan needs a definite one) and
                # the report is owed, retried by scan() like any other.
                self._notify(i, BOOT, self._state[i])
        self.started = True

    # --- scanning ---
    def scan(self):
        """One pass over every input; returns how long to wait (ms) before the next pass."""
        now = _now()
        settling = False
        for i in range(len(self.specs)):
            if self._owed[i] is not None:
                # Retried at the scan's own pace (never a faster loop): the same transition,
                # whatever the input shows now; a confirmed fire is reported even if it ended.
                old, new = self._owed[i]
                if not self._notify(i, old, new):
                    continue
                self._state[i] = new
                self._cand[i] = None
            s = self._read(i)
            if s is None:
                continue
            state = self._state[i]
            if s == state:
                self._cand[i] = None  # bounced back: nothing to report
                continue
            if s != self._cand[i]:
                self._cand[i] = s
                self._since[i] = now
                hold = self.specs[i]["debounce_ms"]
                if s == OPEN or s == SHORT:
                    hold = max(hold, LINE_FAULT_MS)
                self._hold[i] = hold
            if ticks.diff(now, self._since[i]) >= self._hold[i]:
                self._cand[i] = None
                # Committed only once reported: if on_change raised, the change is owed and
                # retried on the next scan (no `settling`: no 5 ms hot loop).
                if self._notify(i, state, s):
                    self._state[i] = s
            else:
                settling = True
        self.progress += 1
        return SETTLE_MS if settling else IDLE_MS

    async def run(self):
        """The scan task. Never returns; never waits unbounded."""
        if not self.started:
            await self.start()
        while True:
            try:
                wait_ms = self.scan()
                t0 = _now()
                await self._board.wait_inputs(wait_ms)
                if ticks.diff(_now(), t0) < MIN_GAP_MS:
                    await asyncio.sleep_ms(MIN_GAP_MS)
            except Exception as e:  # noqa: B902 - the inputs must keep being watched
                if self._health:
                    self._health.count("input_scan_error")
                _log.error("scan failed: %r", e)
                await asyncio.sleep_ms(IDLE_MS)

    def _notify(self, i, old, new):
        """Reports one change; True when on_change returned. On an exception the change is
        recorded as owed (the caller keeps the old state), counted, and the health fault
        "input_event" stays raised until every owed change has been reported."""
        spec = self.specs[i]
        if self._on_change is not None:
            try:
                self._on_change(spec, old, new)
            except Exception as e:  # noqa: B902 - the app's error must not stop the scan
                self.event_errors += 1
                if self._health:
                    self._health.count("input_callback_error")
                if self._owed[i] is None:  # log and raise once per episode, not every scan
                    first = self._owed.count(None) == len(self._owed)
                    self._owed[i] = (old, new)
                    _log.error("%s: on_change failed, will retry: %r", spec["name"], e)
                    if first:
                        self._event_fault(True, spec["name"])
                return False
        if self._owed[i] is not None:
            self._owed[i] = None
            _log.info("%s: %s -> %s reported after retrying", spec["name"], old, new)
            if self._owed.count(None) == len(self._owed):
                self._event_fault(False)
        # Updated after the callback, so prior() inside it still tells the state before trouble.
        if new == NORMAL or new == ACTIVE:
            self._prior[i] = new
        return True

    def _event_fault(self, active, detail=""):
        # Fault listeners record events too: the same trouble may make them raise, and that
        # must not cut this scan short (the other inputs are still to be looked at).
        if self._health:
            try:
                self._health.set_fault("input_event", active, detail)
            except Exception as e:  # noqa: B902
                _log.error("input_event fault listener failed: %r", e)

    # --- queries ---
    def states(self):
        """{name: state} for every input."""
        return {s["name"]: self._state[i] for i, s in enumerate(self.specs)}

    def prior(self, name):
        """The last normal/active state reported for `name` before the current change (for
        event_for: what leaving a line trouble means); "normal" from boot."""
        for i, s in enumerate(self.specs):
            if s["name"] == name:
                return self._prior[i]
        raise KeyError(name)


def _own(kind, q):
    return CODES[kind], q, "fire" if kind in FIRE_KINDS else "fault"


def event_for(kind, old, new, prior=NORMAL):
    """The events one state change means, in the order to record them: a list of
    (code, q, cls), q "new" | "restore", cls "fire" | "fault"; old is "boot" at start.

    Line trouble (open/short) is code 380, class fault, never fire: a cut wire must not call
    the fire brigade. prior is the input's last normal/active state before the trouble
    began (Inputs.prior(name) inside on_change); it decides what leaving the trouble means
    for the kind's own condition, so that a fire active when the wire broke is neither
    reported twice nor left uncleared. Without it, "normal" is assumed.
    """
    if new == old:
        return []
    if new == OPEN or new == SHORT:
        if old == OPEN or old == SHORT:
            return []  # open <-> short: still the same trouble, already reported
        return [(LINE_TROUBLE, "new", "fault")]
    if old == OPEN or old == SHORT:
        out = [(LINE_TROUBLE, "restore", "fault")]
        if new != prior:
            out.append(_own(kind, "new" if new == ACTIVE else "restore"))
        return out
    if new == ACTIVE:
        return [_own(kind, "new")]
    if old == ACTIVE:
        return [_own(kind, "restore")]
    return []  # boot -> normal: nothing to report
