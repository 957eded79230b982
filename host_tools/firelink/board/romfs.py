"""The lean board's application as a ROMFS image: the `.mpy` files that MicroPython imports in
place from memory-mapped flash instead of copying them into the heap.

Why: a `.mpy` imported from littlefs is read into RAM (bytecode, string constants, the names'
text); the same file on a ROMFS partition is memory-mapped, and MicroPython (py/persistentcode.c
with MICROPY_VFS_ROM, ≥ 1.25) keeps pointers into flash for the bytecode, the str/bytes constants
and the interned names' text. Only the objects around them (functions, classes, dictionaries,
qstr pool entries) are made in RAM. docs/memory.md has the figures and what only a board proves.

The image format is MicroPython's (documented at the top of extmod/vfs_rom.c): a tree of records,
each `varuint kind, varuint length, payload`, varuints big-endian with the high bit set on every
byte but the last; the filesystem record (kind 0x14a6b1, bytes "\\xd2\\xcd1") holds directory
(4) and file (5) records, a file's payload its name and a verbatim-data record (2). The image's
size must be even. Written here from that description.

What goes where on a board with ROMFS (`romfs_split`):
- the ROMFS partition: the application package `fl/**.mpy` (ROM_DIRS);
- littlefs, as before: main.py, boot.py, board.json (and the device's own files). MicroPython
  searches '' (littlefs) before /rom, so `fl/` must not be left on littlefs (deploy removes it).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from firelink.board.build import AppBuild, AppFile, BuildError

IMAGE_NAME = "romfs.img"  # beside main.py in a ROM build's directory; never copied to littlefs
ROM_DIRS = ("fl",)  # top-level directories of the build that go into the image
MOUNT_POINT = "/rom"  # where MicroPython mounts the first ROMFS partition at boot

_KIND_DATA = 2
_KIND_DIR = 4
_KIND_FILE = 5
_KIND_FILESYSTEM = 0x14A6B1
HEADER = b"\xd2\xcd\x31"  # the filesystem record's kind, encoded


class RomfsError(BuildError):
    """The ROMFS image cannot be made or does not fit; the message says what to do."""


def _uint(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _record(kind: int, payload: bytes) -> bytes:
    return _uint(kind) + _uint(len(payload)) + payload


def _named(kind: int, name: str, body: bytes) -> bytes:
    raw = name.encode("ascii")
    return _record(kind, _uint(len(raw)) + raw + body)


def image(files: dict[str, bytes]) -> bytes:
    """A ROMFS image holding `files` ("/"-separated path -> contents); deterministic (sorted)."""
    tree: dict[str, object] = {}
    for path, data in files.items():
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") for p in parts) or not path.isascii():
            raise RomfsError(f"cannot put {path!r} in a ROMFS image: paths are relative, ASCII, no empty parts")
        node = tree
        for p in parts[:-1]:
            sub = node.setdefault(p, {})
            if not isinstance(sub, dict):
                raise RomfsError(f"{path!r}: {p!r} is both a file and a directory")
            node = sub
        if parts[-1] in node:
            raise RomfsError(f"{path!r} is given twice")
        node[parts[-1]] = bytes(data)

    def encode(node: dict[str, object]) -> bytes:
        out = b""
        for name in sorted(node):
            child = node[name]
            if isinstance(child, dict):
                out += _named(_KIND_DIR, name, encode(child))
            else:
                assert isinstance(child, bytes)
                out += _named(_KIND_FILE, name, _record(_KIND_DATA, child))
        return out

    body = encode(tree)
    length = _uint(len(body))
    if (len(HEADER) + len(length) + len(body)) % 2:
        length = b"\x80" + length  # a leading 0x80 pads a varuint without changing it
    return HEADER + length + body


def listing(img: bytes) -> dict[str, bytes]:
    """The files in an image (the reverse of `image`), for checks and tests; raises RomfsError
    for anything that is not a well-formed image."""
    def uint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
        value = 0
        while True:
            if pos >= end:
                raise RomfsError("truncated ROMFS image")
            b = buf[pos]
            pos += 1
            value = (value << 7) | (b & 0x7F)
            if not b & 0x80:
                return value, pos

    def walk(pos: int, end: int, prefix: str, out: dict[str, bytes]) -> None:
        while pos < end:
            kind, pos = uint(img, pos, end)
            size, pos = uint(img, pos, end)
            nxt = pos + size
            if nxt > end:
                raise RomfsError("a ROMFS record runs past its parent")
            if kind in (_KIND_DIR, _KIND_FILE):
                n, p = uint(img, pos, nxt)
                name = img[p:p + n].decode("ascii")
                if kind == _KIND_DIR:
                    walk(p + n, nxt, prefix + name + "/", out)
                else:
                    k, q = uint(img, p + n, nxt)
                    m, q = uint(img, q, nxt)
                    if k != _KIND_DATA or q + m > nxt:
                        raise RomfsError(f"file {prefix + name} has no verbatim data record")
                    out[prefix + name] = bytes(img[q:q + m])
            pos = nxt

    if not img.startswith(HEADER):
        raise RomfsError("not a ROMFS image (no RM1 header)")
    size, pos = uint(img, len(HEADER), len(img))
    if pos + size > len(img):
        raise RomfsError("truncated ROMFS image")
    files: dict[str, bytes] = {}
    walk(pos, pos + size, "", files)
    return files


@dataclass
class RomBuild:
    """A ROM build: `littlefs` is what deploy writes to the board's filesystem (main.py, boot.py,
    board.json: no fl/), `image` what goes on the ROMFS partition. Its directory holds both
    (the image as IMAGE_NAME), which is what a virtual device runs."""
    littlefs: AppBuild
    image: Path
    image_bytes: int
    rom_files: list[str]  # device paths inside the image (relative to /rom)


def romfs_split(app: AppBuild, out_dir: Path | None = None) -> RomBuild:
    """From a build (firelink.board.build): the files under ROM_DIRS go into a ROMFS image, the rest
    stay littlefs files; written to `out_dir` (default: the build's directory + "-rom")."""
    out = Path(out_dir) if out_dir else app.directory.with_name(app.directory.name + "-rom")
    rom = {p: f for p, f in app.files.items() if p.split("/", 1)[0] in ROM_DIRS}
    if not rom:
        raise RomfsError(f"nothing to put in the ROMFS image: no {', '.join(ROM_DIRS)}/ in {app.directory}")
    img = image({p: f.local.read_bytes() for p, f in rom.items()})
    out.mkdir(parents=True, exist_ok=True)
    keep = {IMAGE_NAME}
    files: dict[str, AppFile] = {}
    for p, f in app.files.items():
        if p in rom:
            continue
        if "/" in p:
            raise RomfsError(f"{p}: only top-level files stay on littlefs in a ROM build")
        dst = out / p
        if not dst.is_file() or dst.read_bytes() != f.local.read_bytes():
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.copyfile(f.local, tmp)
            os.replace(tmp, dst)
        files[p] = AppFile(p, dst, f.sha256, f.size)
        keep.add(p)
    target = out / IMAGE_NAME
    if not target.is_file() or hashlib.sha256(target.read_bytes()).digest() != hashlib.sha256(img).digest():
        tmp = target.with_name(IMAGE_NAME + ".tmp")
        tmp.write_bytes(img)
        os.replace(tmp, target)
    for stale in out.iterdir():  # the directory is exactly what ships
        if stale.name not in keep:
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    fs = AppBuild(arch=app.arch, directory=out, mpy_version=app.mpy_version, files=files,
                  compiled=list(app.compiled), reused=list(app.reused), removed=list(app.removed))
    return RomBuild(littlefs=fs, image=target, image_bytes=len(img), rom_files=sorted(rom))


def rom_image_of(firmware: Path) -> Path | None:
    """The ROMFS image of a ROM build's directory, None for an ordinary build or the sources."""
    path = Path(firmware) / IMAGE_NAME
    return path if path.is_file() else None
