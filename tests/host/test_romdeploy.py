"""firelink.board.romdeploy against a real MicroPython REPL (the unix port on a pty, tests/host/mp_pty.py)
whose `esp32.Partition` is a stand-in over a file (tests/host/standin/esp32.py: the unix port has
no flash partitions). What only a board proves (the real partition, the mount at boot) is in
hardware/README.md's checklist."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firelink.board import romdeploy, romfs
from firelink.board.build import build_app
from firelink.board.device import Device
from tests.host.mp_pty import PtyBoard

HERE = Path(__file__).resolve().parent
PART = 128 * 1024  # partitions-4MiB-romfs.csv's romfs partition


@pytest.fixture(scope="module")
def rom(tmp_path_factory: pytest.TempPathFactory) -> romfs.RomBuild:
    return romfs.romfs_split(build_app("xtensawin", build_root=tmp_path_factory.mktemp("b")))


def with_partition(board: PtyBoard, size: int = PART) -> Path:
    shutil.copy(HERE / "standin" / "esp32.py", board.directory / "esp32.py")
    part = board.directory / "romfs.part"
    part.write_bytes(os.urandom(size))  # whatever the flash held before
    return part


def test_image_goes_to_the_partition_and_fl_leaves_littlefs(pty_board: PtyBoard, rom: romfs.RomBuild) -> None:
    part = with_partition(pty_board)
    (pty_board.directory / "fl" / "hal").mkdir(parents=True)
    (pty_board.directory / "fl" / "app.mpy").write_bytes(b"old")
    (pty_board.directory / "fl" / "hal" / "sim.mpy").write_bytes(b"old")
    (pty_board.directory / "config.json").write_text("{}")  # the device's own files stay
    img = rom.image.read_bytes()
    with Device.open(pty_board.port) as dev:
        report = romdeploy.write_image(dev, rom)
        assert report.written and report.image_bytes == len(img) and report.partition_bytes == PART
        assert (pty_board.directory / "fl").is_dir()  # the old app stays until the image is checked
        romdeploy.remove_littlefs_copy(dev, report)
        again = romdeploy.write_image(dev, rom)
    assert not again.written  # the same image is not written twice
    data = part.read_bytes()
    assert data[:len(img)] == img and len(data) == PART
    assert romfs.listing(data) == romfs.listing(img)  # a mount over the whole partition reads the image
    assert not (pty_board.directory / "fl").exists()
    assert (pty_board.directory / "config.json").read_text() == "{}"


def test_the_written_partition_runs_the_app(pty_board: PtyBoard, rom: romfs.RomBuild, tmp_path: Path) -> None:
    """The partition as written, mapped and mounted as the board does: fl imports from /rom."""
    part = with_partition(pty_board)
    with Device.open(pty_board.port) as dev:
        romdeploy.write_image(dev, rom)
    probe = tmp_path / "probe.py"
    probe.write_text("import fl.events, fl.mqtt\nprint(fl.mqtt.__file__)\n")
    r = subprocess.run([sys.executable, "-m", "firelink.virtual.romrun", str(part), "run", "--", str(probe)], cwd=tmp_path,
                       env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "/rom/fl/mqtt.mpy"


def test_an_image_larger_than_the_partition_is_refused_before_writing(pty_board: PtyBoard,
                                                                      rom: romfs.RomBuild) -> None:
    part = with_partition(pty_board, size=64 * 1024)
    before = part.read_bytes()
    with Device.open(pty_board.port) as dev, \
            pytest.raises(romdeploy.RomDeployError, match=r"image is \d+ bytes, the board's 'romfs' partition 65536"):
        romdeploy.write_image(dev, rom)
    assert part.read_bytes() == before


def test_a_board_without_a_romfs_partition_is_told_which_image_to_flash(pty_board: PtyBoard,
                                                                        rom: romfs.RomBuild) -> None:
    with Device.open(pty_board.port) as dev, \
            pytest.raises(romdeploy.RomDeployError, match="no flash partition labelled 'romfs': flash the lean board"):
        romdeploy.write_image(dev, rom)
