# MicroPython module, copied as esp32.py into a test board's filesystem (tests/host/test_romdeploy.py):
# the part of MicroPython's esp32.Partition (ports/esp32/esp32_partition.c) that firelink.board.romdeploy
# uses, over a file standing for the flash partition labelled "romfs" (romfs.part beside it, its size
# the partition's). Erasing fills with 0xff as NOR flash does; a write without erase ANDs bits in,
# as NOR programming does, so a missing erase shows as corrupted data.
PART_FILE = "romfs.part"


class Partition:
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, path, block_size):
        self._path = path
        self._bs = block_size
        with open(path, "rb") as f:
            self._size = len(f.read())

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        if type != cls.TYPE_DATA or label != "romfs":
            return []
        try:
            return [cls(PART_FILE, block_size)]
        except OSError:
            return []

    def _check(self, offset, n):
        if offset < 0 or offset + n > self._size:
            raise OSError(22, "outside the partition")

    def readblocks(self, block, buf, offset=0):
        at = block * self._bs + offset
        self._check(at, len(buf))
        with open(self._path, "rb") as f:
            f.seek(at)
            f.readinto(buf)

    def _erase(self, at, n):
        with open(self._path, "r+b") as f:
            f.seek(at)
            f.write(b"\xff" * n)

    def writeblocks(self, block, buf, offset=None):
        at = block * self._bs + (offset or 0)
        self._check(at, len(buf))
        if offset is None:  # a simple write erases the blocks it covers first
            self._erase(at, (len(buf) + self._bs - 1) // self._bs * self._bs)
        with open(self._path, "r+b") as f:
            f.seek(at)
            old = f.read(len(buf))
            f.seek(at)
            f.write(bytes(a & b for a, b in zip(old, buf)))

    def ioctl(self, cmd, arg):
        if cmd == 4:
            return self._size // self._bs
        if cmd == 5:
            return self._bs
        if cmd == 6:
            self._erase(arg * self._bs, self._bs)
            return 0
        return None
