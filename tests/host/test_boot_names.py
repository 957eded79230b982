"""MicroPython never frees an interned name, and its name table grows by doubling: a module
imported late can make it grow by one large block in a fragmented heap (fl/boot.py, LATER).
So every module the firmware imports inside a function must be one whose names boot interns
(LATER, BOOT_ONLY) or one that loads while the app starts (START, below), and, once boot has
interned LATER, importing those modules again must add no name at all."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from firelink.virtual import unixport

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"

# Imported inside a function, but only while boot runs or the app is being built (fl.boot.main,
# App()), before the app's tasks run: the names are interned at boot either way.
START = {
    "fl.hal": "boot picks the hardware layer",
    "fl.hal.esp32": "boot picks the hardware layer",
    "fl.hal.sim": "boot picks the hardware layer",
    "fl.hal.esp32_modem": "built with the paths in App() (boards with a modem)",
    "fl.modem": "built with the paths in App() (boards with a modem)",
    "fl.pathmgr": "built in App() when there are two paths",
    "fl.app": "boot starts it",
    "fl.boot": "App() reads the config when boot could not; release() is boot's",
    "fl.bootguard": "the first thing fl.app.main does",
    "fl.bufpool": "boot reserves the buffers",
    "fl.log": "boot's own error message",
    "fl.recovery": "boot-only, released once App() is built",
    "fl.diag": "the console, built in App() (boards with diag_console: PSRAM)",
    "fl.diag_ask": "the console's commands (boards with diag_console: PSRAM)",
    "fl": "the package itself (release() edits its attributes)",
}


def _constant(name: str) -> tuple[str, ...]:
    tree = ast.parse((FIRMWARE / "fl" / "boot.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple)
            return value
    raise AssertionError(f"fl/boot.py has no {name}")


def _late_imports() -> dict[str, list[str]]:
    """fl modules imported inside a function body -> where."""
    found: dict[str, list[str]] = {}
    for path in sorted((FIRMWARE / "fl").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    # `from fl import x` imports the module fl.x; `from fl.x import y`, fl.x.
                    names = ([f"fl.{a.name}" for a in node.names] if node.module == "fl" else [node.module])
                for name in names:
                    if name == "fl" or name.startswith("fl."):
                        found.setdefault(name, []).append(f"{path.relative_to(FIRMWARE)}:{node.lineno}")
    return found


def test_every_late_import_has_its_names_interned_at_boot() -> None:
    known = set(_constant("LATER")) | set(_constant("BOOT_ONLY")) | set(START)
    late = _late_imports()
    assert late, "the scan found no import inside a function: it is broken"
    unknown = {name: where for name, where in late.items() if name not in known}
    assert not unknown, (
        "modules imported inside a function whose names boot does not intern; add each to LATER in "
        f"fl/boot.py (or, if it only loads while the app starts, to START here): {unknown}")


def test_later_modules_exist_and_are_imported_late() -> None:
    late = _late_imports()
    for name in _constant("LATER"):
        assert (FIRMWARE / (name.replace(".", "/") + ".py")).is_file(), f"LATER names {name}, which does not exist"
        assert name in late, f"{name} is in LATER but nothing imports it inside a function: it would load anyway"


def test_after_boot_interns_later_modules_their_import_adds_no_name(tmp_path: Path) -> None:
    later = _constant("LATER")
    code = ("import micropython\n"
            "from fl import boot\n"
            "boot.intern_later()\n"
            "micropython.qstr_info()\n"
            f"for name in {later!r}:\n"
            "    __import__(name)\n"
            "micropython.qstr_info()\n")
    try:
        out = unixport.run(code, tmp_path)
    except unixport.UnixPortError as e:
        pytest.fail(str(e))
    counts = [int(n) for n in re.findall(r"n_qstr=(\d+)", out)]
    assert len(counts) == 2, out
    assert counts[1] == counts[0], (f"importing {later} after boot interned {counts[1] - counts[0]} new names "
                                    "(the name table may grow by a large block in a fragmented heap)")
