"""Outbox: the persisted, prioritised queue of events waiting for the broker's PUBACK.

Every event is on flash before a send is tried and leaves only after PUBACK; fire goes out
before any queued fault or status event, and within a priority the oldest goes first.
Records live in a `SlotFile` (fl/slotfile.py: fixed slots in pre-allocated 4 KB files, safe
against a power cut at any instant); opening scans it slot by slot and rebuilds the index.

In RAM: a bytearray of slot states (priority 0..2, 0xFF free, 0xFE unusable; bit 7 = sent
once, kept in RAM only) and an array of insertion numbers: ~5 bytes per slot. A record's
handle is its insertion number, so a handle stays valid while the record moves from RAM to
flash, and a handle to a record dropped to make room matches nothing. `peek` scans the index
for the best record and caches the answer until something could change it.

When flash fails (no space, write error, unusable file) records are held in RAM (at most
`ram_capacity` non-fire ones; fire is never dropped) and `storage_fault` says why; a later
successful write, a removal or `retry_storage()` moves them to flash.

When full, the oldest non-fire record gives up its slot to the new one (the newest state is
worth more than an old one). If every slot holds fire, a new non-fire record is dropped and a
new fire record is held in RAM until a slot frees: fire is never dropped. `dropped` counts.

A caller may give each record its own insertion number (`put(..., order=seq)`: the recorder
passes the event's sequence number), so handles, the newest record (`newest_order`) and the
records dropped (`lost`, inclusive ranges) are in the caller's numbering.

Removals are batched: `remove` takes the record out of the index at once and marks it removed
on flash later, a file's pending removals in one write (`flush_removals`; when REMOVE_BATCH are
pending, when the slot is reused, or when the sender finds nothing to send for a while). A
power cut before the flush only sends those records again (receivers de-duplicate by id).

Removed records keep their bytes until their slot is reused, and the index keeps their numbers:
`records_after(n)` reads back every whole record newer than n (the reported-state checkpoint
replays them at boot), and `on_overwrite` (if set) is called before a put reuses a slot whose
record is newer than `keep_after`, so that checkpoint can be written before it is lost.

`put` returns the Contact ID codes its caller must raise: "622" when fill reaches 50 %,
"623" at 90 %, "624" when a record had to be dropped. Each fires once, then re-arms with
hysteresis: 622 below 40 %, 623 below 80 %, and an overflow episode ends below 50 %. On
re-arming `on_restore(code)` (if set) is called so that the restore can be reported.
"""
from micropython import const

from fl.bufpool import take
from fl.log import Logger
from fl.slotfile import SlotFile, why

_log = Logger("outbox")

FIRE = const(0)
FAULT = const(1)
STATUS = const(2)
_FREE = const(0xFF)
_BAD = const(0xFE)
_SENT = const(0x80)
_PRIO = const(0x7F)
REMOVE_BATCH = const(32)


class Outbox:
    def __init__(self, path="outbox", capacity=1024, slot_size=256, segment_bytes=4096, ram_capacity=32):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._file = SlotFile(path, capacity, slot_size, segment_bytes, self._open)
        self.path = path
        self.capacity = capacity
        self.slot_size = slot_size
        self.max_payload = self._file.max_payload
        self.ram_capacity = ram_capacity
        self._state = take("B", capacity)  # fl.bufpool: reserved at boot, in one piece
        for i in range(capacity):
            self._state[i] = 0xFE  # unusable until its segment loads
        self._order = take("I", capacity)
        self._ram = []  # [order, priority | _SENT, payload] while flash cannot take them
        self._n_file = 0
        self._usable = 0
        self._depth = [0, 0, 0]
        self._next_order = 1
        self._cursor = 0
        self._newest_slot = -1
        self._newest_order = 0
        self._head_invalidate()
        self.dropped = 0
        self.storage_fault = None
        self._bad_detail = None
        self.on_restore = None
        self.on_drop = None  # on_drop(order): a record was dropped (the recorder re-declares what it carried)
        self.on_overwrite = None
        self.keep_after = 0
        self.lost = []  # [first, last] ranges of dropped record numbers not yet declared
        self._dead = []  # slots removed from the index, not yet marked removed on flash
        self._overflow = False
        for seg in range(self._file.segments):
            self._load(seg)
        n100 = len(self) * 100
        # Levels reached before the reboot were reported then (or are still queued).
        self._raised50 = n100 >= 50 * capacity
        self._raised90 = n100 >= 90 * capacity

    def _open(self, path, mode):
        """Every file access goes through here (tests inject failures by overriding it)."""
        return open(path, mode)

    def location(self, slot):
        return self._file.location(slot)

    def image(self, order, priority, payload):
        return self._file.image(order, priority, payload)

    # --- loading --------------------------------------------------------------------

    def _load(self, seg):
        """(Re)loads one segment file into the index; its slots are unusable if it fails."""
        first, end = self._file.segment(seg)
        st = self._state
        for i in range(first, end):
            if st[i] != _BAD:
                self._usable -= 1
                if st[i] & _PRIO <= STATUS:
                    self._unindex(i)
            st[i] = _FREE
            self._order[i] = 0
        try:
            self._file.load(seg, self._found)
        except OSError as e:
            for i in range(first, end):
                if st[i] & _PRIO <= STATUS:
                    self._unindex(i)
                st[i] = _BAD
            self._fault("outbox file %s/%d unusable: %s" % (self.path, seg, why(e)), True)
            return
        self._usable += end - first

    def _found(self, i, order, priority, live):
        # Removed records count too: for the next insertion number and the newest payload.
        if order >= self._next_order:
            self._next_order = order + 1
        if order > self._newest_order:
            self._newest_order = order
            self._newest_slot = i
        if live:
            self._index(i, order, priority)
        else:
            self._order[i] = order  # kept: records_after() and on_overwrite look at removed ones too

    def _index(self, i, order, priority):
        self._state[i] = priority
        self._order[i] = order
        self._n_file += 1
        self._depth[priority] += 1

    def _unindex(self, i):
        p = self._state[i] & _PRIO
        if self._head_ok and self._head_slot == i:
            self._head_invalidate()
        self._state[i] = _FREE
        self._n_file -= 1
        self._depth[p] -= 1
        return p

    def _fault(self, detail, persistent=False):
        """Sets storage_fault; None clears a passing fault (not an unusable file)."""
        if persistent:
            self._bad_detail = detail
        elif detail is None and self._usable == self.capacity:
            self._bad_detail = None
        now = detail or self._bad_detail
        if now != self.storage_fault:
            if now:
                _log.warn("%s", now)
            else:
                _log.info("storage recovered")
            self.storage_fault = now

    # --- queries --------------------------------------------------------------------

    def __len__(self):
        return self._n_file + len(self._ram)

    def fill_percent(self):
        return len(self) * 100 // self.capacity

    def depth_by_priority(self):
        """(fire, fault, status) records held, on flash and in RAM."""
        return tuple(self._depth)

    def complete(self):
        """True when every slot file loaded and no file lies beyond them (a capacity made
        smaller): the newest record found is then the newest ever stored."""
        return self._usable == self.capacity and not self._file.extra()

    @property
    def newest_order(self):
        return self._newest_order

    def records_after(self, order):
        """Yields (order, payload) of every whole record (live or removed) numbered above
        `order`, oldest first, one payload in RAM at a time; unreadable ones are left out."""
        st, orders = self._state, self._order
        found = []
        for i in range(self.capacity):
            if orders[i] > order and st[i] != _BAD:
                found.append((orders[i], i))
        found.sort()
        for o, i in found:
            try:
                rec = self._file.read(i)
            except OSError:
                rec = None
            if rec is not None and rec[0] == o:
                yield rec
        for r in self._ram:
            if r[0] > order:
                yield r[0], r[2]

    def _lose(self, order):
        """Notes a dropped record's number in the pending `lost` ranges."""
        self.lose_range(order, order)
        if self.on_drop is not None:
            self.on_drop(order)

    def lose_range(self, first, last):
        """Adds first..last to the pending `lost` ranges, merged with what touches it."""
        lost = self.lost
        lost.append([first, last])
        lost.sort()
        k = 0
        while k + 1 < len(lost):
            if lost[k][1] + 1 >= lost[k + 1][0]:
                if lost[k + 1][1] > lost[k][1]:
                    lost[k][1] = lost[k + 1][1]
                lost.pop(k + 1)
            else:
                k += 1

    def declared(self, first, last):
        """first..last was declared lost in an event: no longer pending."""
        out = []
        for a, b in self.lost:
            if b < first or a > last:
                out.append([a, b])
                continue
            if a < first:
                out.append([a, first - 1])
            if b > last:
                out.append([last + 1, b])
        self.lost = out

    def held(self, order):
        """True while record `order` is held in RAM (flash refused it)."""
        return self._ram_find(order) is not None

    def levels(self):
        """(50 % raised, 90 % raised, in an overflow episode): kept by the reported state."""
        return self._raised50, self._raised90, self._overflow

    def set_levels(self, raised50, raised90, overflow):
        """Restores what was reported before a reboot, so a level's restore is still sent."""
        self._raised50, self._raised90, self._overflow = raised50, raised90, overflow

    def begin_overflow(self):
        """Starts an overflow episode (records were lost outside a put); False if in one."""
        if self._overflow:
            return False
        self._overflow = True
        return True

    def in_ram(self):
        """Records held in RAM only, which a power cut would lose."""
        return len(self._ram)

    def newest_payload(self):
        """Payload of the newest record ever stored that can still be read, delivered or not,
        or None: lets the sequencer resume past it even if its own file was lost."""
        best, payload = self._newest_order, None
        for r in self._ram:
            if r[0] >= best:
                best, payload = r[0], r[2]
        if payload is None and self._newest_slot >= 0:
            try:
                rec = self._file.read(self._newest_slot)
            except OSError:
                rec = None
            if rec is not None and rec[0] == self._newest_order:
                payload = rec[1]
        return payload

    # --- put ------------------------------------------------------------------------

    def put(self, priority, payload, order=None):
        """Stores a record durably; returns the Contact ID codes the caller must raise.
        `order`: the record's number (above every number stored before), by default the next."""
        if type(priority) is not int or not FIRE <= priority <= STATUS:
            raise ValueError("bad priority %r: want 0 fire, 1 fault or 2 status" % (priority,))
        if not isinstance(payload, (bytes, bytearray)):
            raise TypeError("payload must be bytes, not %s" % type(payload).__name__)
        if len(payload) > self.max_payload:
            raise ValueError("payload of %d bytes exceeds the %d a %d-byte slot holds"
                             % (len(payload), self.max_payload, self.slot_size))
        if order is None:
            order = self._next_order
        elif order < self._next_order:
            # The caller's numbering fell behind ours (an outbox from older firmware): keep the
            # index consistent rather than reuse a number.
            _log.warn("record number %d below %d: renumbered", order, self._next_order)
            order = self._next_order
        self._next_order = order + 1
        overflow = placed = False
        if self._n_file < self._usable:
            placed = self._store(self._free_slot(), order, priority, payload)
        elif self._usable == self.capacity:
            victim = self._oldest_nonfire()
            if victim >= 0:
                self._drop(victim)
                overflow = True
                placed = self._store(victim, order, priority, payload)
            elif priority != FIRE:
                if not self._overflow:
                    _log.warn("full of fire events: dropping new non-fire events")
                self.dropped += 1
                self._lose(order)
                overflow = placed = True
        if not placed:
            overflow = self._hold(order, priority, payload) or overflow
        elif self._ram:
            self._drain_ram()
        if self._head_ok and priority < self._head_prio:
            self._head_invalidate()
        return self._raise_levels(overflow)

    def _store(self, i, order, priority, payload):
        """Writes a record into slot i; False (and a storage fault) if flash refused it."""
        if self._order[i] > self.keep_after and self.on_overwrite is not None:
            self.on_overwrite()
        if i in self._dead:
            self._dead.remove(i)  # the new record replaces the removed one: no mark needed
        try:
            self._file.write(i, order, priority, payload)
        except OSError as e:
            self._order[i] = 0  # what is left in the slot is not a whole record
            self._fault("outbox write failed: %s; events held in RAM" % why(e))
            return False
        self._index(i, order, priority)
        if order > self._newest_order:
            self._newest_order = order
            self._newest_slot = i
        self._fault(None)
        return True

    def _free_slot(self):
        st, cap, i = self._state, self.capacity, self._cursor
        for _ in range(cap):
            if st[i] == _FREE:
                self._cursor = i + 1 if i + 1 < cap else 0
                return i
            i = i + 1 if i + 1 < cap else 0
        raise RuntimeError("outbox index out of step")

    def _oldest_nonfire(self):
        st, order = self._state, self._order
        best, best_o = -1, 0
        for i in range(self.capacity):
            p = st[i] & _PRIO
            if (p == FAULT or p == STATUS) and (best < 0 or order[i] < best_o):
                best, best_o = i, order[i]
        return best

    def _drop(self, i):
        """Forgets the record in slot i, which the new one overwrites next."""
        p = self._unindex(i)
        if not self._overflow:
            _log.warn("full: dropping the oldest non-fire events (first: priority %d)", p)
        self.dropped += 1
        self._lose(self._order[i])

    def _hold(self, order, priority, payload):
        """Keeps a record in RAM; True if another had to be dropped for it."""
        ram = self._ram
        dropped = False
        if priority != FIRE:
            nonfire, oldest = 0, -1
            for k in range(len(ram)):
                if ram[k][1] & _PRIO != FIRE:
                    nonfire += 1
                    if oldest < 0:
                        oldest = k
            if nonfire >= self.ram_capacity:
                r = ram.pop(oldest)
                self._depth[r[1] & _PRIO] -= 1
                if self._head_order == r[0]:
                    self._head_invalidate()
                if not self._overflow:
                    _log.warn("RAM hold full: dropping the oldest non-fire events")
                self.dropped += 1
                self._lose(r[0])
                dropped = True
        ram.append([order, priority, bytes(payload)])
        self._depth[priority] += 1
        return dropped

    def _drain_ram(self):
        """Moves RAM-held records to free slots, best first, while flash takes them."""
        ram = self._ram
        while ram and self._n_file < self._usable:
            k = 0
            for j in range(1, len(ram)):
                if (ram[j][1] & _PRIO, ram[j][0]) < (ram[k][1] & _PRIO, ram[k][0]):
                    k = j
            r = ram[k]
            p = r[1] & _PRIO
            self._depth[p] -= 1  # _store counts it again
            i = self._free_slot()
            if not self._store(i, r[0], p, r[2]):
                self._depth[p] += 1
                return
            self._state[i] |= r[1] & _SENT
            ram.pop(k)
            if self._head_order == r[0]:
                self._head_invalidate()

    def _raise_levels(self, overflow):
        n100, cap = len(self) * 100, self.capacity
        codes = []
        if not self._raised50 and n100 >= 50 * cap:
            self._raised50 = True
            codes.append("622")
        if not self._raised90 and n100 >= 90 * cap:
            self._raised90 = True
            codes.append("623")
        if overflow and not self._overflow:
            self._overflow = True
            codes.append("624")
        return tuple(codes)

    def rearm(self):
        """Reports (on_restore) each level that no longer holds; remove() calls it too."""
        self._rearm()

    def _rearm(self):
        n100, cap = len(self) * 100, self.capacity
        restored = []
        if self._raised50 and n100 < 40 * cap:
            self._raised50 = False
            restored.append("622")
        if self._raised90 and n100 < 80 * cap:
            self._raised90 = False
            restored.append("623")
        if self._overflow and n100 < 50 * cap:
            self._overflow = False
            restored.append("624")
        if self.on_restore is not None:
            for code in restored:
                self.on_restore(code)

    # --- sending --------------------------------------------------------------------

    def _head_invalidate(self):
        self._head_ok = False
        self._head_slot = -1
        self._head_order = 0
        self._head_prio = 3
        self._head_payload = None

    def peek(self):
        """(handle, payload, sent_before) of the record that must go next, or None."""
        while not self._head_ok:
            if not self._find_head():
                return None
        i = self._head_slot
        if i >= 0:
            sent = self._state[i] & _SENT
        else:
            sent = self._ram_find(self._head_order)[1] & _SENT
        return self._head_order, self._head_payload, sent != 0

    def priority(self, handle):
        """Priority (FIRE, FAULT, STATUS) of the record `handle`, or None if it is gone. Cheap
        for the handle peek() just returned (the sender asks on every pass)."""
        if self._head_ok and self._head_order == handle:
            return self._head_prio
        i = self._slot_of(handle)
        if i >= 0:
            return self._state[i] & _PRIO
        r = self._ram_find(handle)
        return None if r is None else r[1] & _PRIO

    def _find_head(self):
        """Finds the best record and loads its payload; False if there is none."""
        target = 0
        while target <= STATUS and self._depth[target] == 0:
            target += 1
        if target > STATUS:
            return False
        st, order = self._state, self._order
        best, best_o = -1, 0
        for i in range(self.capacity):
            if st[i] & _PRIO == target and (best < 0 or order[i] < best_o):
                best, best_o = i, order[i]
        for r in self._ram:
            if r[1] & _PRIO == target and (best_o == 0 or r[0] < best_o):
                best, best_o = -1, r[0]
        if best_o == 0:
            raise RuntimeError("outbox index out of step")
        if best < 0:
            payload = self._ram_find(best_o)[2]
        else:
            try:
                rec = self._file.read(best)
            except OSError as e:
                rec = None
                self._fault("outbox read failed: %s" % why(e))
            if rec is None or rec[0] != best_o:
                # Flash changed since it was written: the record cannot be sent as stored.
                _log.error("slot %d unreadable or corrupt: record %d lost", best, best_o)
                self._unindex(best)
                self._state[best] = _BAD
                self._usable -= 1
                self.dropped += 1
                self._lose(best_o)
                self._fault("outbox slot %d corrupt" % best, True)
                return True  # look again
            payload = rec[1]
        self._head_ok = True
        self._head_slot = best
        self._head_order = best_o
        self._head_prio = target
        self._head_payload = payload
        return True

    def _ram_find(self, handle):
        for r in self._ram:
            if r[0] == handle:
                return r
        return None

    def _slot_of(self, handle):
        i = self._head_slot
        if self._head_ok and i >= 0 and self._head_order == handle:
            return i
        st, order = self._state, self._order
        for i in range(self.capacity):
            if order[i] == handle and st[i] & _PRIO <= STATUS:
                return i
        return -1

    def mark_sent(self, handle):
        """The record went out once, so a resend carries the MQTT DUP flag. RAM only."""
        i = self._slot_of(handle)
        if i >= 0:
            self._state[i] |= _SENT
            return True
        r = self._ram_find(handle)
        if r is not None:
            r[1] |= _SENT
            return True
        return False

    def remove(self, handle):
        """After PUBACK. False if the record is gone already (dropped to make room)."""
        i = self._slot_of(handle)
        if i >= 0:
            self._unindex(i)
            self._dead.append(i)
            if len(self._dead) >= REMOVE_BATCH:
                self.flush_removals()
        else:
            r = self._ram_find(handle)
            if r is None:
                return False
            self._ram.remove(r)
            self._depth[r[1] & _PRIO] -= 1
        if self._head_order == handle:
            self._head_invalidate()
        if self._ram:
            self._drain_ram()
        self._rearm()
        return True

    def removals_pending(self):
        return len(self._dead)

    def flush_removals(self):
        """Marks the pending removals on flash, one write per file; False if flash refused."""
        if not self._dead:
            return True
        dead = sorted(self._dead)
        self._dead = []
        try:
            self._file.kill_many(dead)
        except OSError as e:
            # They may be sent again after a reboot; receivers de-duplicate by event id.
            self._fault("outbox remove failed: %s" % why(e))
            return False
        return True

    def retry_storage(self):
        """Tries unusable segment files again, then moves RAM-held records to flash.
        True when storage is healthy again; the app may call this from its heartbeat."""
        for seg in range(self._file.segments):
            first, end = self._file.segment(seg)
            if self._state.find(b"\xfe", first, end) >= 0:
                self._head_invalidate()
                self._load(seg)
        if self._usable == self.capacity:
            self._fault(None)
        self._drain_ram()  # sets the fault again if flash still refuses
        return self.storage_fault is None
