"""The jig firmware's unit tests: MicroPython modules run under the unix port by the firmware
tests' own runner (tests/firmware/conftest.py, mprun.py, fwtest.py), with jig/ importable."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.firmware.conftest import FirmwareModule
from tests.tooling import ROOT

HERE = Path(__file__).resolve().parent


class JigFirmwareModule(FirmwareModule):
    search_path = (str(HERE), str(ROOT / "jig"))


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    if module_path.parent == HERE and module_path.name.startswith("test_"):
        return JigFirmwareModule.from_parent(parent, path=module_path)
    return None


class _Wiring:
    env = {"FL_JIG_JSON": str(ROOT / "hardware" / "jig.json")}


@pytest.fixture
def jig_wiring() -> _Wiring:
    """hardware/jig.json's path, for the tests' `FIXTURES = ("jig_wiring",)`."""
    return _Wiring()
