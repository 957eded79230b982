"""Real ESP firmware images for tests, made offline with esptool's own image writer.

A MicroPython release `.bin` is three things merged at their flash offsets: the second-stage
bootloader (an ESP image: magic 0xE9, the chip id in its extended header), the partition
table at 0x8000 and the application image in the `factory` partition at 0x10000.
`make_firmware` builds the same layout, small: each image is written by esptool's
`BOOTLOADER_IMAGE` class for the chip (so header, checksum and SHA-256 digest are esptool's),
and `esptool.cmds.merge_bin` merges them from the chip's bootloader offset.
"""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

from esptool import cmds
from esptool.bin_image import ELFSection
from esptool.targets import CHIP_DEFS

APP_OFFSET = 0x10000
TABLE_OFFSET = 0x8000


def chip_key(chip: str) -> str:
    """esptool's CHIP_DEFS key for a chip name: "ESP32-S3" -> "esp32s3"."""
    return chip.lower().replace("-", "")


def esp_image(chip: str, payload: bytes, load_addr: int | None = None) -> bytes:
    """One ESP image (as esptool writes it) holding `payload` in a RAM segment."""
    rom = CHIP_DEFS[chip_key(chip)]
    image = rom.BOOTLOADER_IMAGE()
    addr = load_addr if load_addr is not None else _iram(rom)
    image.segments = [ELFSection(b".iram0.text", addr, payload, flags=0)]
    image.entrypoint = addr
    data = image.save(None)
    assert data is not None
    return data


def _iram(rom: Any) -> int:
    for start, _end, name in rom.MEMORY_MAP:
        if name == "IRAM":
            return int(start) + 0x400
    raise AssertionError(f"no IRAM in {rom.CHIP_NAME}'s memory map")


def partition_table(app_offset: int = APP_OFFSET, app_size: int = 0x1F0000) -> bytes:
    """ESP-IDF's binary partition table (nvs, phy_init, factory app, vfs) with its MD5 row."""
    rows = [(0x01, 0x02, 0x9000, 0x6000, b"nvs"), (0x01, 0x01, 0xF000, 0x1000, b"phy_init"),
            (0x00, 0x00, app_offset, app_size, b"factory"),
            (0x01, 0x81, app_offset + app_size, 0x200000, b"vfs")]
    table = b"".join(struct.pack("<2sBBLL16sL", b"\xaa\x50", t, st, off, size, name, 0)
                     for t, st, off, size, name in rows)
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    return table + b"\xff" * (0xC00 - len(table))


def make_firmware(path: Path, chip: str = "ESP32", app_payload: bytes | None = None,
                  with_table: bool = True) -> Path:
    """A miniature MicroPython-style release image for `chip`, written to `path`."""
    rom = CHIP_DEFS[chip_key(chip)]
    bootloader = esp_image(chip, b"\x01\x02\x03\x04" * 64)
    app = esp_image(chip, app_payload if app_payload is not None else os.urandom(8192))
    parts: list[tuple[int, bytes]] = [(rom.BOOTLOADER_FLASH_OFFSET, bootloader)]
    if with_table:
        parts.append((TABLE_OFFSET, partition_table()))
    parts.append((APP_OFFSET, app))
    merged = cmds.merge_bin(parts, chip_key(chip), output=None, format="raw",
                            target_offset=rom.BOOTLOADER_FLASH_OFFSET)
    assert merged is not None
    path.write_bytes(merged)
    return path
