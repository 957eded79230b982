"""Runs the HIL suite against a virtual device's serial port standing in for a board without
a jig (issue 13's acceptance): `--dut <its pty>` and no `--jig`, so every scenario needing the
jig must be skipped with its reason, and the rest must pass.

    python -m tests.hil.standin [pytest arguments...]      (make test-hil-nojig)

The device is provisioned by the suite itself through the REPL, as a board would be (see
SerialDut.start); here it only needs to exist and run. Exit status: pytest's.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from firelink import virtual

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="fl-standin-") as tmp:
        root = Path(tmp)
        app = virtual.shipped_app(root / "build")
        d = virtual.create(root / "board", {"device_id": "fl-standin", "broker": {"host": "127.0.0.1", "port": 9}})
        dev = virtual.VirtualDevice(d, firmware=app)
        port = dev.start(heapsize="256k")
        try:
            cmd = [sys.executable, "-m", "pytest", "tests/hil", "--dut", port, "-rs", *argv]
            print("standing in for a board:", port, "\n$", " ".join(cmd), flush=True)
            return subprocess.call(cmd, cwd=ROOT)
        finally:
            dev.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
