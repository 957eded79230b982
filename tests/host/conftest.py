"""Options and fixtures for the host-tool tests.

`--port` (and `--firmware`, both declared in tests/conftest.py) enable the tests marked `hardware`, which flash and deploy a real
board:  pytest -m hardware --port /dev/ttyUSB0 --firmware ESP32_GENERIC-….bin
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.host.mp_pty import PtyBoard


@pytest.fixture
def hardware_port(request: pytest.FixtureRequest) -> str:
    port = request.config.getoption("--port", default=None)
    if not port:
        pytest.skip("needs a board: run with --port /dev/ttyUSB0")
    return str(port)


@pytest.fixture
def pty_board(tmp_path: Path) -> Iterator[PtyBoard]:
    """MicroPython's unix port at its REPL on a pseudo-terminal; its filesystem is a temp dir."""
    with PtyBoard(tmp_path / "board") as board:
        yield board
