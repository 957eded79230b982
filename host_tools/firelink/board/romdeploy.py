"""Puts a ROM build (firelink.board.romfs) on a board whose MicroPython has ROMFS: the image on the
partition labelled `romfs`, then the littlefs files, then the littlefs copy of fl/ removed.

The board-side API is MicroPython's `esp32.Partition` (ports/esp32/esp32_partition.c): `find(
TYPE_DATA, label="romfs")` is the partition the firmware maps and mounts at /rom at start-up;
`ioctl(4)`/`ioctl(5)` give its block count and size; `writeblocks(n, buf)` erases the blocks it
covers and writes them; `readblocks(n, buf)` reads without the flash cache. The image goes over
the raw REPL in 4 KB blocks (base64), and its sha256 is then computed on the board from the
partition itself. An image already there (same sha256) is not written again.

Order, so that an interruption loses as little as possible: the image is written and checked
while the old application still runs from littlefs (an `fl/` there is found before /rom); only
then are main.py and board.json put in place and littlefs's `fl/` removed. A board that already
ran from ROMFS has no older copy: a write cut short leaves it without an application until the
next `firelink flash --app-only` (one partition; an A/B pair would need twice the flash).
"""
from __future__ import annotations

import ast
import binascii
import hashlib
from dataclasses import dataclass

from firelink.board.deploy import DeployError
from firelink.board.device import Device, DeviceError
from firelink.board.romfs import MOUNT_POINT, ROM_DIRS, RomBuild
from firelink.progress import Reporter

BLOCK_TIMEOUT_S = 20.0  # one 4 KB erase + write: ≈0.05-0.4 s on SPI NOR, the rest is the serial line
LEAN_IMAGE = "the lean board's MicroPython (hardware/micropython/FIRELINK_LEAN, hardware/README.md)"

_PROBE = """
import vfs
try:
    import esp32
    _fl_p = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='romfs')
    _fl_p = _fl_p[0] if _fl_p else None
except ImportError:
    _fl_p = None
print(repr((hasattr(vfs, 'VfsRom'), _fl_p.ioctl(4, 0) if _fl_p else 0, _fl_p.ioctl(5, 0) if _fl_p else 0)))
"""

_SHA = """
import hashlib, binascii
def _fl_romsha(n, bs):
    h = hashlib.sha256()
    b = bytearray(bs)
    i = 0
    while n > 0:
        _fl_p.readblocks(i, b)
        k = min(n, bs)
        h.update(memoryview(b)[:k])
        n -= k
        i += 1
    return binascii.hexlify(h.digest()).decode()
print(_fl_romsha({n}, {bs}))
"""

_UNMOUNT = """
import vfs
try:
    vfs.umount({mount!r})
except OSError:
    pass
"""

_REMOVE_TREES = """
import os
def _fl_rm(p):
    try:
        m = os.stat(p)[0]
    except OSError:
        return
    if m & 0x4000:
        for e in list(os.ilistdir(p)):
            _fl_rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
for _p in {paths!r}:
    _fl_rm(_p)
"""


class RomDeployError(DeployError):
    """The image could not be put on the board; the message says what to do."""


@dataclass
class Partition:
    blocks: int
    block_size: int

    @property
    def size(self) -> int:
        return self.blocks * self.block_size


@dataclass
class RomReport:
    written: bool  # False: the partition already held this image
    image_bytes: int
    partition_bytes: int
    removed_from_littlefs: bool = False


def probe(device: Device) -> Partition:
    """The board's ROMFS partition; RomDeployError if its MicroPython has no ROMFS."""
    out = device.run(_PROBE)
    try:
        has_vfsrom, blocks, block_size = ast.literal_eval(out.strip().splitlines()[-1])
    except (ValueError, SyntaxError, IndexError):
        raise RomDeployError(f"the board answered {out.strip()[:80]!r} when asked for its ROMFS partition") from None
    if not has_vfsrom:
        raise RomDeployError(f"the MicroPython on {device.port} has no ROMFS (vfs.VfsRom: MICROPY_VFS_ROM is off, "
                             f"as in every micropython.org ESP32 image): flash {LEAN_IMAGE}")
    if not blocks or not block_size:
        raise RomDeployError(f"the board on {device.port} has no flash partition labelled 'romfs': flash "
                             f"{LEAN_IMAGE}, whose partition table has one")
    return Partition(int(blocks), int(block_size))


def _board_sha(device: Device, n: int, block_size: int) -> str:
    out = device.run(_SHA.format(n=n, bs=block_size), timeout_s=BLOCK_TIMEOUT_S * 4)
    return out.strip().splitlines()[-1] if out.strip() else ""


def write_image(device: Device, rom: RomBuild, reporter: Reporter | None = None) -> RomReport:
    """Makes the board's ROMFS partition hold `rom.image`; checks it on the board."""
    reporter = reporter or Reporter()
    img = rom.image.read_bytes()
    part = probe(device)
    if len(img) > part.size:
        raise RomDeployError(f"the application's ROMFS image is {len(img)} bytes, the board's 'romfs' partition "
                             f"{part.size}: give the partition more room in the firmware's partition table, "
                             "or leave modules out of the lean build")
    want = hashlib.sha256(img).hexdigest()
    reporter.start("compare the ROMFS partition")
    if _board_sha(device, len(img), part.block_size) == want:
        reporter.finish("already holds this application")
        return RomReport(False, len(img), part.size)
    reporter.finish("to write")
    device.run(_UNMOUNT.format(mount=MOUNT_POINT))
    reporter.start(f"write ROMFS image ({len(img)} bytes)", total=len(img), unit="B")
    bs = part.block_size
    for n, at in enumerate(range(0, len(img), bs)):
        block = img[at:at + bs]
        padded = block + bytes(bs - len(block))
        try:
            device.run("import binascii\n_fl_p.writeblocks(%d, binascii.a2b_base64(%r))"
                       % (n, binascii.b2a_base64(padded, newline=False)), timeout_s=BLOCK_TIMEOUT_S)
        except DeviceError as e:
            raise RomDeployError(f"writing block {n} of the ROMFS partition failed ({e}): run again; the board has "
                                 "no application from ROMFS until the image is complete") from e
        reporter.advance(len(block))
    reporter.finish()
    reporter.start("check the ROMFS partition")
    got = _board_sha(device, len(img), bs)
    if got != want:
        raise RomDeployError(f"the ROMFS partition reads back sha256 {got[:12]}…, expected {want[:12]}…: run again; "
                             "if it repeats, the flash may be worn or the cable poor")
    reporter.finish()
    return RomReport(True, len(img), part.size)


def remove_littlefs_copy(device: Device, report: RomReport, reporter: Reporter | None = None) -> None:
    """Removes fl/ (ROM_DIRS) from littlefs, where MicroPython would find it before /rom."""
    reporter = reporter or Reporter()
    reporter.start(f"remove {', '.join(d + '/' for d in ROM_DIRS)} from littlefs (the app runs from {MOUNT_POINT})")
    out = device.run(_REMOVE_TREES.format(paths=list(ROM_DIRS))
                     + "print([d for d in %r if d in os.listdir()])" % (list(ROM_DIRS),))
    left = ast.literal_eval(out.strip().splitlines()[-1]) if out.strip() else ["?"]
    if left:
        raise RomDeployError(f"could not remove {left} from the board's filesystem: they would hide the ROMFS "
                             "application; run again")
    report.removed_from_littlefs = True
    reporter.finish()
