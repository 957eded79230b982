"""Collects firmware tests (MicroPython files) so that each `test_*` function is one pytest item.

A firmware test module is plain MicroPython. pytest never imports it: the functions are found
with `ast`, and each item runs `micropython mprun.py <module> <test>` in a fresh directory,
which is the device filesystem for that test. Optional module-level literals:

    FIXTURES = ("broker",)   # pytest fixtures whose `.env` is passed as environment variables
    TIMEOUT_S = 60           # wall-clock limit for one test process
    HEAPSIZE = "256k"        # the unix port's -X heapsize for this module
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.tooling import firmware_env, micropython_binary

HERE = Path(__file__).resolve().parent
DEFAULTS = {"FIXTURES": (), "TIMEOUT_S": 60, "HEAPSIZE": "1m"}
SKIP_STATUS = 77


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    if module_path.parent == HERE and module_path.name.startswith("test_"):
        return FirmwareModule.from_parent(parent, path=module_path)
    return None


class FirmwareModule(pytest.File):
    # Directories searched before this one's (fwtest, mprun) and the firmware's: the jig's
    # tests (tests/jig/fw) put their own module directory and the jig firmware here.
    search_path: tuple[str, ...] = ()

    def collect(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        meta = dict(DEFAULTS)
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id in DEFAULTS:
                    meta[target.id] = ast.literal_eval(node.value)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                run = _make_runner(self.path, node.name, meta, self.search_path)
                yield pytest.Function.from_parent(self, name=node.name, callobj=run)


def _make_runner(path: Path, test_name: str, meta: dict[str, Any],
                 search_path: tuple[str, ...] = ()) -> Callable[..., None]:
    def run(request: pytest.FixtureRequest, tmp_path: Path) -> None:
        env = firmware_env(extra_path=[*search_path, str(HERE)])
        for fixture_name in meta["FIXTURES"]:
            env.update(request.getfixturevalue(fixture_name).env)
        cmd = [micropython_binary(), "-X", "heapsize=" + meta["HEAPSIZE"], str(HERE / "mprun.py"), path.stem, test_name]
        try:
            proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=meta["TIMEOUT_S"], errors="replace")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            pytest.fail(f"device test timed out after {meta['TIMEOUT_S']} s\n--- device output ---\n{out}", pytrace=False)
        if proc.returncode == SKIP_STATUS:
            pytest.skip(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "skipped")
        if proc.returncode != 0:
            pytest.fail(f"device exit status {proc.returncode}\n--- device stdout ---\n{proc.stdout}"
                        f"--- device traceback ---\n{proc.stderr}", pytrace=False)

    run.__name__ = test_name
    return run
