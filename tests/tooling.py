"""Where the test suites find the MicroPython unix port and the firmware sources."""
from __future__ import annotations

import os
from pathlib import Path

from firelink.virtual.unixport import micropython_binary  # noqa: F401 - one lookup for tools and tests

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def firmware_env(extra_path: list[str] | None = None) -> dict[str, str]:
    """Environment for a firmware process. MICROPYPATH replaces the search path, so `.frozen` must stay."""
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([*(extra_path or []), str(FIRMWARE), ".frozen"])
    return env
