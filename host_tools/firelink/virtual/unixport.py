"""The MicroPython unix port on this machine, and the firmware's own code run on it.

Host tools ask the firmware instead of re-implementing its rules: how a config.json is read
(defaults, fallbacks, dropped entries) is whatever fl.config does, run here on the device's
own files.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from firelink.errors import FireLinkError

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"


class UnixPortError(FireLinkError, RuntimeError):
    """The unix port is missing, or the firmware code run on it failed; the message says which."""


def micropython_binary() -> str:
    """$MICROPYTHON, else the pinned unix port installed beside this interpreter, else $PATH."""
    override = os.environ.get("MICROPYTHON")
    if override:
        return override
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise UnixPortError("MicroPython unix port not found: run `make deps` or set $MICROPYTHON")


def run(code: str, cwd: Path, firmware: Path = FIRMWARE, timeout_s: float = 20.0) -> str:
    """Runs MicroPython code with the firmware importable, in `cwd` (a device's filesystem);
    returns what it printed."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(firmware), ".frozen"]))
    try:
        r = subprocess.run([micropython_binary(), "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UnixPortError(f"the firmware code did not finish within {timeout_s:g} s") from None
    if r.returncode != 0:
        raise UnixPortError(f"the firmware code failed (status {r.returncode}): {r.stderr.strip()[-500:]}")
    return r.stdout


_CONFIG = """
import json
from fl import config
with open({board!r}) as f:
    info = json.load(f)
cfg, problems = config.load(info)
cfg.pop("_secrets", None)
print(json.dumps(cfg))
"""


def device_config(directory: Path, board_json: Path) -> dict[str, Any]:
    """The configuration the firmware will run with in `directory`: its config.json as fl.config
    validates it (secrets left out). Reads files only."""
    out = run(_CONFIG.format(board=str(board_json)), Path(directory))
    cfg: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return cfg
