"""Where the test suites find the MicroPython unix port and the firmware sources."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def micropython_binary() -> str:
    """$MICROPYTHON if set, else the pinned unix port installed beside this interpreter."""
    override = os.environ.get("MICROPYTHON")
    if override:
        return override
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise RuntimeError("MicroPython unix port not found: run `make test` (it installs it) or set $MICROPYTHON")


def firmware_env(extra_path: list[str] | None = None) -> dict[str, str]:
    """Environment for a firmware process. MICROPYPATH replaces the search path, so `.frozen` must stay."""
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([*(extra_path or []), str(FIRMWARE), ".frozen"])
    return env
