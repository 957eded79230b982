"""The boards FireLink supports: one definition each, `hardware/boards/<name>.json`.

- `reference`: an ESP32-WROVER-E module (4 MB flash, PSRAM), MicroPython's ESP32_GENERIC
  firmware in its SPIRAM variant: megabytes of heap, room for everything to come.
- `lean`: a plain ESP32-WROOM-32 module (no PSRAM), MicroPython's ESP32_GENERIC built with
  ROMFS (hardware/micropython/FIRELINK_LEAN; the app's fl/ runs from flash, firelink.board.romfs):
  ≈110 KB of Python heap left with Wi-Fi and TLS up, which the application must fit
  (tests/hil/test_heap_fit.py, `make bench`).

A definition holds what the firmware reads (pins, pulls, ADC use, battery divider, EOL
thresholds, modem lines, default inputs) and what only people and host tools read (labels,
notes, the EOL circuit's description, which MicroPython image the board takes). The board gets
`device_json()`: the definition without the host-only part, compact. The firmware keeps
board.json in RAM for as long as it runs, so every label shipped is heap the lean board lacks.

Everything that needs "the board" (build/flash, the virtual device, boardcheck, boarddoc, the
tests) asks this module; `firelink flash --board NAME` picks one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firelink.errors import UsageError

REPO = Path(__file__).resolve().parents[3]
BOARDS_DIR = REPO / "hardware" / "boards"
REFERENCE = "reference"
LEAN = "lean"
DEFAULT = REFERENCE
# Keys, at any depth, that the firmware never reads: kept out of the board's board.json.
HOST_ONLY = frozenset({"notes", "label", "circuit", "firmware"})


class BoardError(UsageError, ValueError):
    """A board name or definition that cannot be used; the message says what exists."""


@dataclass(frozen=True)
class Firmware:
    """The MicroPython image a board takes: `variant` as micropython.org names the download,
    `machine` the board name that image reports (sys.implementation._machine, also written in
    the image itself), which is how flash and deploy tell the SPIRAM build from the plain one."""
    variant: str
    machine: str
    # The image has ROMFS (MICROPY_VFS_ROM and a "romfs" partition): the app's .mpy files go
    # there and run from flash (firelink/romfs.py). Stock micropython.org images have none.
    romfs: bool = False


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def path(name: str = DEFAULT) -> Path:
    p = BOARDS_DIR / f"{name}.json"
    if not p.is_file():
        raise BoardError(f"no board {name!r}: the boards are {', '.join(names())} (hardware/boards/)")
    return p


def load(source: str | Path = DEFAULT) -> dict[str, Any]:
    """A definition by board name, or from a file path."""
    p = Path(source) if isinstance(source, Path) or str(source).endswith(".json") else path(str(source))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise BoardError(f"{p}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise BoardError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BoardError(f"{p}: expected a JSON object")
    return data


def firmware(board: dict[str, Any]) -> Firmware | None:
    """The image a definition asks for; None when it names none (an older or custom board)."""
    fw = board.get("firmware")
    if not isinstance(fw, dict) or not isinstance(fw.get("variant"), str) or not isinstance(fw.get("machine"), str):
        return None
    return Firmware(fw["variant"], fw["machine"], fw.get("romfs") is True)


def device_view(value: Any) -> Any:
    """The definition as the firmware needs it: HOST_ONLY keys removed at every depth."""
    if isinstance(value, dict):
        return {k: device_view(v) for k, v in value.items() if k not in HOST_ONLY}
    if isinstance(value, list):
        return [device_view(v) for v in value]
    return value


def device_json(board: dict[str, Any]) -> bytes:
    """board.json as deployed on a board (and in a virtual device's directory)."""
    return json.dumps(device_view(board), separators=(",", ":")).encode() + b"\n"
