"""Slot file: fixed-size records on flash that survive a power cut at any instant.

One record per slot, `slot_size` bytes, little-endian:
    0  u32 order     insertion number (never 0)
    4  u8  priority  0..2
    5  u8  0
    6  u16 length    of the payload
    8  u32 crc32     over bytes 0..7 and the payload
    12 payload, zero padding
    slot_size-4  magic b"FLq1" while live, zeros once removed
A record is one write of the whole slot with the magic last, so a write cut short never shows
the live magic, and one that reached the end but mixes old and new bytes fails the CRC.
Removal overwrites only the magic: a half-cleared magic is no longer the live magic. Removed
records keep their bytes, so the newest record ever written can still be read back.
A torn write touches its own slot only; the slots after it read back normally.

The slots live in files of `segment_bytes` (one 4 KB flash block) in the directory `path`,
not in one big file: littlefs (the ESP32 default) keeps files copy-on-write and a write into
the middle of a file rewrites it from there to its end, so one 256 KB file could cost 256 KB
of flash writes per event. In 4 KB files a slot write costs one block. Files are
pre-allocated (zero-filled) when created, so a write never needs to grow a file.
Removals are marked in batches (`kill_many`): the removals that fall in one file cost that
file's block once.
"""
import binascii
import os
import struct
from micropython import const

from fl import store

MAGIC = b"FLq1"
_DEAD = b"\x00\x00\x00\x00"
HEADER = const(12)

# MicroPython's errno table lacks codes flash filesystems return (ENOSPC is 28 on Linux and
# ESP-IDF alike), and an OSError raised with a bare number prints as just that number.
_ERRNO = {2: "no such file", 5: "I/O error", 13: "permission denied", 20: "not a directory",
          28: "no space left", 30: "read-only filesystem"}


def why(e):
    """A short reason for an OSError, for fault details."""
    code = e.args[0] if e.args else None
    if type(code) is int:
        return "%s (errno %d)" % (_ERRNO.get(code, "error"), code)
    return str(e)


class SlotFile:
    def __init__(self, path, capacity, slot_size=256, segment_bytes=4096, opener=open):
        if slot_size < 32:
            raise ValueError("slot_size must be >= 32")
        self.path = path
        self.capacity = capacity
        self.slot_size = slot_size
        self.max_payload = min(slot_size - HEADER - len(MAGIC), 0xFFFF)
        self.per_segment = max(1, segment_bytes // slot_size)
        self.segments = (capacity + self.per_segment - 1) // self.per_segment
        self._open = opener
        self._buf = bytearray(slot_size)
        self._mv = memoryview(self._buf)
        self._zero = memoryview(bytes(slot_size))

    def segment(self, seg):
        """(first slot, end slot) of a segment file."""
        first = seg * self.per_segment
        return first, min(first + self.per_segment, self.capacity)

    def location(self, slot):
        """(file path, byte offset) of a slot."""
        seg = slot // self.per_segment
        return "%s/%d" % (self.path, seg), (slot - seg * self.per_segment) * self.slot_size

    def load(self, seg, found):
        """Creates or completes a segment file, then calls found(slot, order, priority, live)
        for every slot holding a whole record, live or removed. OSError if the file fails."""
        first, end = self.segment(seg)
        fpath = "%s/%d" % (self.path, seg)
        want = (end - first) * self.slot_size
        store.ensure_dir(self.path)
        try:
            have = os.stat(fpath)[6]
        except OSError:
            have = -1
        if have < want:
            # Also completes a file cut short by a power cut during pre-allocation.
            f = self._open(fpath, "wb" if have < 0 else "ab")
            try:
                n = max(have, 0)
                while n < want:
                    k = min(self.slot_size, want - n)
                    if f.write(self._zero[:k]) != k:
                        raise OSError(28)
                    n += k
            finally:
                f.close()
                store.charge(store.blocks_for(want - max(have, 0)))
        f = self._open(fpath, "rb")
        try:
            for i in range(first, end):
                if f.readinto(self._buf) != self.slot_size:
                    raise OSError(5)
                if self._check() >= 0:
                    order, p = struct.unpack_from("<IB", self._buf, 0)
                    found(i, order, p, self._live())
        finally:
            f.close()

    def extra(self):
        """True if files hold slots beyond the capacity (it was made smaller since)."""
        if store.exists("%s/%d" % (self.path, self.segments)):
            return True
        first, end = self.segment(self.segments - 1)
        try:
            return os.stat("%s/%d" % (self.path, self.segments - 1))[6] > (end - first) * self.slot_size
        except OSError:
            return False

    def _check(self):
        """Payload length of the record in the buffer, or -1 if it is not a whole record."""
        buf, mv = self._buf, self._mv
        order, p, _, n = struct.unpack_from("<IBBH", buf, 0)
        if n > self.max_payload or p > 2 or order == 0:
            return -1
        if binascii.crc32(mv[HEADER:HEADER + n], binascii.crc32(mv[0:8])) != struct.unpack_from("<I", buf, 8)[0]:
            return -1
        return n

    def _live(self):
        b, s, m = self._buf, self.slot_size - 4, MAGIC
        return b[s] == m[0] and b[s + 1] == m[1] and b[s + 2] == m[2] and b[s + 3] == m[3]

    def read(self, slot):
        """(order, payload) of the whole record in a slot, live or removed, or None."""
        path, off = self.location(slot)
        f = self._open(path, "rb")
        try:
            f.seek(off)
            if f.readinto(self._buf) != self.slot_size:
                return None
        finally:
            f.close()
        n = self._check()
        if n < 0:
            return None
        return struct.unpack_from("<I", self._buf, 0)[0], bytes(self._mv[HEADER:HEADER + n])

    def _write_at(self, slot, offset, data):
        path, off = self.location(slot)
        f = self._open(path, "r+b")
        try:
            f.seek(off + offset)
            if f.write(data) != len(data):
                raise OSError(28)
        finally:
            f.close()  # littlefs commits the block here
            store.charge()

    def write(self, slot, order, priority, payload):
        """Writes a record in one write; OSError if flash refuses it."""
        self._fill(order, priority, payload)
        self._write_at(slot, 0, self._buf)

    def kill(self, slot):
        """Marks the record in a slot removed (one 4-byte write); OSError if flash refuses it."""
        self._write_at(slot, self.slot_size - 4, _DEAD)

    def kill_many(self, slots):
        """Marks several records removed, one file (one block rewrite) at a time; `slots` must
        be sorted. OSError if flash refuses (some may be marked, a removed record that is not
        is only sent again after a reboot: receivers de-duplicate by event id)."""
        done = 0
        n = len(slots)
        while done < n:
            seg = slots[done] // self.per_segment
            end = done
            while end < n and slots[end] // self.per_segment == seg:
                end += 1
            f = self._open("%s/%d" % (self.path, seg), "r+b")
            try:
                for k in range(done, end):
                    f.seek((slots[k] - seg * self.per_segment) * self.slot_size + self.slot_size - 4)
                    if f.write(_DEAD) != 4:
                        raise OSError(28)
            finally:
                f.close()
                store.charge()
            done = end

    def image(self, order, priority, payload):
        """The bytes a record occupies in its slot (tests tear these on purpose)."""
        self._fill(order, priority, payload)
        return bytes(self._buf)

    def _fill(self, order, priority, payload):
        buf, mv, n, s = self._buf, self._mv, len(payload), self.slot_size
        struct.pack_into("<IBBH", buf, 0, order, priority, 0, n)
        mv[HEADER:HEADER + n] = payload
        mv[HEADER + n:s - 4] = self._zero[:s - 4 - HEADER - n]
        struct.pack_into("<I", buf, 8, binascii.crc32(mv[HEADER:HEADER + n], binascii.crc32(mv[0:8])))
        mv[s - 4:s] = MAGIC
