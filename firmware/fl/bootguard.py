"""Boot counter and safe mode.

Every boot increments a counter on flash; reaching a healthy state (inputs watched and the
broker connected for a while) sets it back to zero. After SAFE_AFTER boots in a row that never
got healthy, the device starts in safe mode: inputs, the outbox, the alarm path and the
serial console keep running, everything optional is off, and the device says so. Unlike
peers' safe modes, this one never stops watching the panel, and nothing is ever erased
(brown-outs at a site must not look like a request for a factory reset).
"""
import struct

from fl import store

PATH = "boot.dat"
SAFE_AFTER = 5
_MAGIC = 0xB007


class BootGuard:
    def __init__(self, path=PATH, safe_after=SAFE_AFTER):
        self._path = path
        self.safe_after = safe_after
        self.failed_boots = 0

    def _read(self):
        raw = store.read_bytes(self._path)
        if raw is None or len(raw) != 6:
            return 0
        magic, count, check = struct.unpack("<HHH", raw)
        if magic != _MAGIC or check != (count ^ 0xFFFF):
            return 0  # unreadable counter: assume a fresh start rather than a safe-mode loop
        return count

    def _write(self, count):
        store.write_atomic(self._path, struct.pack("<HHH", _MAGIC, count, count ^ 0xFFFF))

    def begin(self):
        """Counts this boot; returns True when the device must start in safe mode."""
        self.failed_boots = self._read()
        try:
            self._write(min(self.failed_boots + 1, 0xFFFE))
        except OSError:
            pass  # a full or failing flash must not stop the boot; the outbox reports storage faults
        return self.failed_boots >= self.safe_after

    def healthy(self):
        """The device reached a healthy state: the next boot starts normally."""
        if self._read() != 0:
            self._write(0)
