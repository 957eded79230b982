"""Runs the HIL suite against a virtual device's serial port standing in for a board
(issue 13's acceptance), as the suite would run against a real one:

    python -m tests.hil.standin [pytest arguments...]             (make test-hil-nojig)
        --dut <its pty> and no --jig: every scenario needing the jig must be skipped with its
        reason, and the rest must pass.
    python -m tests.hil.standin --with-jig [pytest arguments...]  (make test-hil-board)
        --dut <its pty> --jig <a simulated jig's pty wired to it>: the board-and-jig path of
        the suite (SerialDut provisioning through the REPL, JigDut over a serial jig) end to end.

The device is provisioned by the suite itself through the REPL, as a board would be (see
SerialDut.start); here it only needs to exist and run. Exit status: pytest's.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from firelink.virtual import device as virtual
from tests.hil.jig import SimJig

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    with_jig = "--with-jig" in argv
    argv = [a for a in argv if a != "--with-jig"]
    with tempfile.TemporaryDirectory(prefix="fl-standin-") as tmp:
        root = Path(tmp)
        app = virtual.shipped_app(root / "build")
        d = virtual.create(root / "board", {"device_id": "fl-standin", "broker": {"host": "127.0.0.1", "port": 9}})
        sim = None
        extra: list[str] = []
        if with_jig:  # first: the jig's safe state holds the board unpowered until the suite powers it
            sim = SimJig(d, root / "jig.log")
            extra = ["--jig", sim.start()]
        dev = virtual.VirtualDevice(d, firmware=app)
        port = dev.start(heapsize="256k")
        try:
            cmd = [sys.executable, "-m", "pytest", "tests/hil", "--dut", port, *extra, "-rs", *argv]
            print("standing in for a board:", port, "\n$", " ".join(cmd), flush=True)
            return subprocess.call(cmd, cwd=ROOT)
        finally:
            dev.kill()
            if sim is not None:
                sim.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
