"""Flashing at the `esptool.cmds` boundary (no hardware): chip detection, offsets, the
erase/write/verify sequence, image checks on real image files written by esptool's own image
code, and every failure's message. One test, marked `hardware`, flashes a real board."""
from __future__ import annotations

import argparse
import os
import pty
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import serial
from esptool import cmds
from esptool.logger import log
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError

from firelink.board import boards, flash, romfs
from firelink.board.build import build_app
from firelink.board.device import wait_for_repl
from firelink.commands import flash as flash_cmd
from firelink.errors import FireLinkError
from firelink.progress import RecordingReporter
from tests.host.esp_images import chip_key, esp_image, make_firmware
from tests.host.mp_pty import PtyBoard
from tests.tooling import FIRMWARE, ROOT

SUPPORTED = ["ESP32", "ESP32-S2", "ESP32-S3", "ESP32-C3", "ESP32-C6"]
MAC = (0x24, 0x6F, 0x28, 0xAA, 0xBB, 0xCC)
WINBOND_4MB = 0x1640EF  # JEDEC id as esptool reads it: vendor 0xEF, size code 0x16 = 4MB


class FakePort:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeESP:
    """What esptool's `detect_chip` returns, reduced to what flash.py uses."""

    secure_download_mode = False

    def __init__(self, chip: str, calls: list[tuple[Any, ...]]) -> None:
        rom = CHIP_DEFS[chip_key(chip)]
        self.CHIP_NAME = rom.CHIP_NAME
        self.IMAGE_CHIP_ID = rom.IMAGE_CHIP_ID
        self.IS_STUB = False
        self._port = FakePort()
        self._calls = calls

    def read_mac(self, mac_type: str = "BASE_MAC") -> tuple[int, ...]:
        return MAC  # esptool's ESP32 ROM class returns a tuple

    def flash_id(self, cache: bool = True) -> int:
        return WINBOND_4MB

    def get_chip_description(self) -> str:
        return f"{self.CHIP_NAME}-D0WD-V3 (revision v3.1)"

    def get_chip_features(self) -> list[str]:
        return ["Wi-Fi", "BT", "Dual Core + LP Core", "240MHz"]

    def get_crystal_freq(self) -> int:
        return 40

    def change_baud(self, baud: int) -> None:
        self._calls.append(("change_baud", baud))


class FakeEsptool:
    """Replaces the esptool.cmds functions flash.py calls; records calls, injects failures."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, chip: str = "ESP32") -> None:
        self.chip = chip
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, BaseException] = {}
        self.esp: FakeESP | None = None
        for name in ("detect_chip", "run_stub", "attach_flash", "erase_flash", "write_flash",
                     "verify_flash", "reset_chip"):
            monkeypatch.setattr(cmds, name, getattr(self, name))

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, *args, *(f"{k}={v}" for k, v in sorted(kwargs.items()))))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def detect_chip(self, port: str, baud: int, connect_mode: str, trace: bool, attempts: int) -> FakeESP:
        self._record("detect_chip", port, baud, connect_mode, trace, attempts)
        self.esp = FakeESP(self.chip, self.calls)
        return self.esp

    def run_stub(self, esp: FakeESP) -> FakeESP:
        self._record("run_stub", esp)
        esp.IS_STUB = True
        return esp

    def attach_flash(self, esp: FakeESP) -> None:
        self._record("attach_flash", esp)

    def erase_flash(self, esp: FakeESP) -> None:
        self._record("erase_flash", esp)

    def write_flash(self, esp: FakeESP, addr_data: list[tuple[int, str]], **kwargs: Any) -> None:
        self._record("write_flash", esp, addr_data, **kwargs)
        # like esptool: a progress bar over the compressed bytes, 16 kB blocks
        compressed = os.path.getsize(addr_data[0][1]) // 3
        with log.progress(total=compressed, unit="B") as bar:
            for done in range(0, compressed, 0x4000):
                bar.update(advance=min(0x4000, compressed - done), description="Writing at ...")

    def verify_flash(self, esp: FakeESP, addr_data: list[tuple[int, str]], **kwargs: Any) -> None:
        self._record("verify_flash", esp, addr_data, **kwargs)

    def reset_chip(self, esp: FakeESP, mode: str) -> None:
        self._record("reset_chip", esp, mode)


@pytest.fixture
def esptool_fake(monkeypatch: pytest.MonkeyPatch) -> FakeEsptool:
    return FakeEsptool(monkeypatch)


@pytest.fixture
def port(tmp_path: Path) -> str:
    """A path that exists and can be opened: enough for flash.py's own port checks."""
    p = tmp_path / "ttyUSB0"
    p.write_bytes(b"")
    return str(p)


@pytest.fixture
def silent_pty() -> Iterator[str]:
    master, slave = pty.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


# --- detection and offsets ------------------------------------------------------------------

def test_detect_reports_chip_mac_flash_crystal_features(esptool_fake: FakeEsptool, port: str) -> None:
    info = flash.detect(port)
    assert info == flash.ChipInfo(chip="ESP32", description="ESP32-D0WD-V3 (revision v3.1)",
                                  mac="24:6f:28:aa:bb:cc", flash_size=4 * 1024 * 1024, crystal_mhz=40,
                                  features=("Wi-Fi", "BT", "Dual Core + LP Core", "240MHz"))
    assert info.flash_size_text == "4MB"
    esp = esptool_fake.esp
    assert esptool_fake.calls == [
        ("detect_chip", port, 115200, "default-reset", False, 7),  # ROM bootloaders sync at 115200
        ("run_stub", esp),
        ("change_baud", 460800),
        ("attach_flash", esp),
        ("reset_chip", esp, "hard-reset"),  # not left waiting in the bootloader
    ]
    assert esp is not None and esp._port.closed


def test_image_offset_per_chip() -> None:
    assert flash.image_offset("ESP32") == 0x1000
    assert flash.image_offset("ESP32-S2") == 0x1000
    assert flash.image_offset("ESP32-S3") == flash.image_offset("ESP32-C3") == flash.image_offset("ESP32-C6") == 0
    for chip in SUPPORTED:  # a MicroPython image starts with the bootloader: esptool's offset
        assert flash.image_offset(chip) == CHIP_DEFS[chip_key(chip)].BOOTLOADER_FLASH_OFFSET
    for chip in ("ESP8266", "ESP32-H2", "ESP32-P4"):
        with pytest.raises(flash.UnsupportedChip, match=f"{chip} is not supported"):
            flash.image_offset(chip)


def test_unsupported_chip_on_the_port_is_refused(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    fake = FakeEsptool(monkeypatch, chip="ESP8266")
    with pytest.raises(flash.UnsupportedChip, match="ESP8266 on .* is not supported"):
        flash.detect(port)
    assert fake.names() == ["detect_chip", "reset_chip"] and fake.esp is not None and fake.esp._port.closed


# --- images ---------------------------------------------------------------------------------

@pytest.mark.parametrize("chip", SUPPORTED)
def test_real_image_headers_name_their_chip(chip: str, tmp_path: Path) -> None:
    path = make_firmware(tmp_path / "fw.bin", chip)
    data = path.read_bytes()
    assert data[0] == 0xE9 and int.from_bytes(data[12:14], "little") == CHIP_DEFS[chip_key(chip)].IMAGE_CHIP_ID
    image = flash.check_image(path, chip, flash_size=4 * 1024 * 1024)
    assert (image.chip, image.offset, image.size, image.app_offset) == (chip, flash.image_offset(chip), len(data), 0x10000)


@pytest.mark.parametrize("image_chip,board_chip", [("ESP32-S3", "ESP32"), ("ESP32", "ESP32-S3"),
                                                   ("ESP32-C3", "ESP32-C6"), ("ESP32-S2", "ESP32")])
def test_image_for_another_chip_is_rejected(image_chip: str, board_chip: str, tmp_path: Path) -> None:
    path = make_firmware(tmp_path / "fw.bin", image_chip)
    with pytest.raises(flash.WrongChip, match=f"^image is for {image_chip}, board is {board_chip}:"):
        flash.check_image(path, board_chip)


def test_files_that_are_not_firmware_images(tmp_path: Path) -> None:
    with pytest.raises(flash.ImageMissing, match="no firmware image at .*micropython.org/download"):
        flash.read_image(tmp_path / "missing.bin")
    for name, content, hint in [("empty.bin", b"", "first byte missing"),
                                ("fw.elf", b"\x7fELF\x01\x01\x01" + bytes(64), "ELF file; use the .bin"),
                                ("fw.zip", b"PK\x03\x04" + bytes(64), "zip archive"),
                                ("fw.uf2", b"UF2\nWQ]\x9e" + bytes(64), "UF2 file"),
                                ("fw.hex", b":020000040000FA\n" + bytes(16), "Intel HEX"),
                                ("fw.bin", b"<!DOCTYPE html><html>Not Found</html>" + bytes(16), "web page")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(flash.ImageInvalid, match=hint):
            flash.read_image(tmp_path / name)
    esp8266_like = bytearray(esp_image("ESP32", b"\x00" * 64))
    esp8266_like[12:14] = (0x4242).to_bytes(2, "little")
    (tmp_path / "odd.bin").write_bytes(esp8266_like)
    with pytest.raises(flash.ImageInvalid, match="chip id 16962"):
        flash.read_image(tmp_path / "odd.bin")


def test_app_only_truncated_and_damaged_images(tmp_path: Path) -> None:
    app_only = make_firmware(tmp_path / "app.bin", "ESP32", with_table=False)
    with pytest.raises(flash.NotFullImage, match="no partition table at 0x8000"):
        flash.read_image(app_only)

    full = make_firmware(tmp_path / "full.bin", "ESP32").read_bytes()
    (tmp_path / "short.bin").write_bytes(full[:-3000])  # download cut short inside the app
    with pytest.raises(flash.ImageCorrupt, match="application at 0x10000 is damaged"):
        flash.read_image(tmp_path / "short.bin")
    (tmp_path / "tiny.bin").write_bytes(full[:0x8000])  # cut before the app begins
    with pytest.raises(flash.ImageCorrupt, match="ends before its application"):
        flash.read_image(tmp_path / "tiny.bin")
    flipped = bytearray(full)
    flipped[0x40] ^= 0xFF  # a bit error in the bootloader's code
    (tmp_path / "flipped.bin").write_bytes(bytes(flipped))
    with pytest.raises(flash.ImageCorrupt, match="bootloader is damaged"):
        flash.read_image(tmp_path / "flipped.bin")


def test_image_larger_than_the_flash(tmp_path: Path) -> None:
    path = make_firmware(tmp_path / "fw.bin", "ESP32")
    with pytest.raises(flash.ImageTooLarge, match="needs .* bytes of flash, the board has 65536"):
        flash.check_image(path, "ESP32", flash_size=64 * 1024)


# --- the flashing sequence --------------------------------------------------------------------

def test_erase_write_verify_reset_sequence(esptool_fake: FakeEsptool, port: str, tmp_path: Path) -> None:
    path = make_firmware(tmp_path / "ESP32_GENERIC.bin", "ESP32", app_payload=os.urandom(200_000))
    rep = RecordingReporter()
    with flash.connect(port, baud=921600) as s:
        image = flash.check_image(path, s.info.chip, s.info.flash_size)
        flash.erase(s, rep)
        flash.write_image(s, image, rep)
        flash.verify(s, image, rep)
        flash.reset(s)
    esp = esptool_fake.esp
    keep = ("flash_freq=keep", "flash_mode=keep", "flash_size=keep")
    assert esptool_fake.calls == [
        ("detect_chip", port, 115200, "default-reset", False, 7),
        ("run_stub", esp),
        ("change_baud", 921600),
        ("attach_flash", esp),
        ("erase_flash", esp),
        ("write_flash", esp, [(0x1000, str(path))], *keep),
        ("verify_flash", esp, [(0x1000, str(path))], *keep),
        ("reset_chip", esp, "hard-reset"),
    ]
    assert esp is not None and esp._port.closed
    write_step = "write ESP32_GENERIC.bin at 0x1000"
    assert rep.steps() == ["erase flash", write_step, "verify flash"]
    assert ("start", write_step, image.size, "B") in rep.calls
    # esptool's bar counts compressed bytes; the step counts the image's, ending exactly at its size
    assert rep.advanced(write_step) == image.size
    assert len([c for c in rep.calls if c[0] == "advance"]) > 3


def test_s3_image_goes_at_zero(monkeypatch: pytest.MonkeyPatch, port: str, tmp_path: Path) -> None:
    fake = FakeEsptool(monkeypatch, chip="ESP32-S3")
    path = make_firmware(tmp_path / "fw.bin", "ESP32-S3")
    with flash.connect(port) as s:
        flash.write_image(s, flash.check_image(path, s.info.chip))
    assert [c[2] for c in fake.calls if c[0] == "write_flash"] == [[(0x0, str(path))]]


# --- failures ---------------------------------------------------------------------------------

NO_DATA = ("Failed to connect to Espressif device: No serial data received.\n"
           "For troubleshooting steps visit: https://docs.espressif.com/projects/esptool/en/latest/troubleshooting.html")


@pytest.mark.parametrize("where,error,expected,message", [
    ("detect_chip", FatalError(NO_DATA), flash.NoChipAnswer,
     r"^no ESP32 answered on .*ttyUSB0: hold BOOT, press EN, release BOOT, try again \(esptool: No serial data"),
    ("detect_chip", FatalError("Failed to connect to ESP32: Wrong boot mode detected (0x13)! The chip needs to be "
                               "in download mode."), flash.NoChipAnswer, "Wrong boot mode detected"),
    ("detect_chip", FatalError("Unexpected chip ID value 99. Failed to autodetect chip type."),
     flash.UnsupportedChip, "not one esptool knows"),
    ("run_stub", serial.SerialException("read failed: device disconnected"), flash.ConnectionLost,
     "lost the board on .* while reading the chip"),
    ("erase_flash", FatalError("Active security features detected, erasing flash is disabled as a safety measure."),
     flash.SecurityEnabled, "flash encryption or secure boot"),
    ("erase_flash", FatalError("Timed out waiting for packet content"), flash.EraseFailed, "erasing the flash"),
    ("erase_flash", OSError(5, "Input/output error"), flash.ConnectionLost, "while erasing.*USB cable"),
    ("write_flash", serial.SerialException("write failed: [Errno 5] Input/output error"), flash.ConnectionLost,
     "while writing.*safe to redo"),
    ("write_flash", FatalError("MD5 of file does not match data in flash!"), flash.VerifyFailed,
     r"differ from fw.bin after writing.*--baud 115200"),
    ("write_flash", FatalError("Timed out waiting for packet header"), flash.WriteFailed, "writing fw.bin failed"),
    ("verify_flash", FatalError("Verification failed."), flash.VerifyFailed, "does not match fw.bin"),
])
def test_each_failure_has_its_exception_and_advice(esptool_fake: FakeEsptool, port: str, tmp_path: Path,
                                                   where: str, error: BaseException,
                                                   expected: type[Exception], message: str) -> None:
    path = make_firmware(tmp_path / "fw.bin", "ESP32")
    esptool_fake.fail[where] = error
    with pytest.raises(expected, match=message):
        with flash.connect(port) as s:
            image = flash.check_image(path, s.info.chip)
            flash.erase(s)
            flash.write_image(s, image)
            flash.verify(s, image)
    names = esptool_fake.names()
    if where == "detect_chip":
        assert names == ["detect_chip"]
    else:  # stopped at the failing step, then the chip was reset and the port closed
        assert names[-2:] == [where, "reset_chip"] and names.count("reset_chip") == 1
        assert esptool_fake.esp is not None and esptool_fake.esp._port.closed


def test_port_that_does_not_exist(esptool_fake: FakeEsptool) -> None:
    with pytest.raises(flash.PortNotFound) as e:
        flash.detect("/dev/ttyUSB9")
    assert str(e.value).startswith("no such port /dev/ttyUSB9; plugged in? `ls /dev/ttyUSB*")
    assert esptool_fake.calls == []


def test_permission_denied_found_before_esptool(esptool_fake: FakeEsptool, port: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(flash.PortPermission) as e:
        flash.detect(port)
    assert str(e.value) == (f"permission denied on {port}: add yourself to the dialout group "
                            "(`sudo usermod -aG dialout $USER`, then log in again)")


@pytest.mark.parametrize("os_error,expected", [
    (serial.SerialException(13, "could not open port X: [Errno 13] Permission denied: 'X'"), flash.PortPermission),
    (serial.SerialException("Could not exclusively lock port X: [Errno 11] Resource temporarily unavailable"),
     flash.PortBusy),
    (serial.SerialException(2, "could not open port X: [Errno 2] No such file or directory: 'X'"), flash.PortNotFound),
])
def test_port_open_failures_through_real_esptool(port: str, monkeypatch: pytest.MonkeyPatch,
                                                 os_error: Exception, expected: type[Exception]) -> None:
    """esptool's own ESPLoader opens the port and words the error; flash.py classifies it."""
    class Unopenable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.port = port

        def open(self) -> None:
            raise os_error

    import esptool.loader
    monkeypatch.setattr(esptool.loader.serial, "serial_for_url", Unopenable)
    with pytest.raises(expected):
        flash.detect(port)


def test_no_chip_answering_through_real_esptool(silent_pty: str) -> None:
    """Real esptool against a serial line where nothing answers (a pty)."""
    with pytest.raises(flash.NoChipAnswer, match=r"^no ESP32 answered on .*: hold BOOT, press EN, release BOOT"):
        with flash.connect(silent_pty, connect_attempts=1):
            pass


# --- the command ------------------------------------------------------------------------------

def run_flash(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="firelink")
    flash_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["flash", *argv])
    return int(args.func(args))


@pytest.fixture
def app_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(FIRMWARE, src, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_flash_command_from_blank_board_to_deployed_app(esptool_fake: FakeEsptool, pty_board: PtyBoard,
                                                        app_src: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """esptool faked at its boundary; after the 'reset' the port is a real MicroPython REPL
    (the unix port on a pty), which gets the app built for the ESP32's architecture."""
    fw = make_firmware(tmp_path / "ESP32_GENERIC.bin", "ESP32")
    assert run_flash(["--port", pty_board.port, "--firmware", str(fw), "--app-dir", str(app_src),
                      "--build-dir", str(tmp_path / "build")]) == 0
    assert esptool_fake.names() == ["detect_chip", "run_stub", "change_baud", "attach_flash", "erase_flash",
                                    "write_flash", "verify_flash", "reset_chip"]
    out = capsys.readouterr().out
    assert "24:6f:28:aa:bb:cc" in out and "flash 4MB" in out and "done in" in out
    app = build_app("xtensawin", source=app_src, board_json=ROOT / "hardware" / "boards" / "reference.json",
                    build_root=tmp_path / "build")
    assert app.compiled == []  # the command built exactly this, for xtensawin
    for path, entry in app.files.items():
        assert (pty_board.directory / path).read_bytes() == entry.local.read_bytes()
    assert pty_board.proc.wait(timeout=10) == 0  # rebooted into the app


def test_flash_command_lean_board_app_to_romfs(esptool_fake: FakeEsptool, pty_board: PtyBoard, app_src: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lean board: fl/ as a ROMFS image on the 'romfs' partition (a file-backed stand-in for
    esp32.Partition, tests/host/standin/esp32.py), only main.py, boot.py and board.json on littlefs,
    an older fl/ there removed."""
    shutil.copy(ROOT / "tests" / "host" / "standin" / "esp32.py", pty_board.directory / "esp32.py")
    part = pty_board.directory / "romfs.part"
    part.write_bytes(b"\xff" * 128 * 1024)
    (pty_board.directory / "fl").mkdir()
    (pty_board.directory / "fl" / "app.mpy").write_bytes(b"an older app")
    fw = _built_as(tmp_path, "FIRELINK_LEAN.bin", LEAN)
    assert run_flash(["--board", "lean", "--port", pty_board.port, "--firmware", str(fw), "--app-dir", str(app_src),
                      "--build-dir", str(tmp_path / "build"), "--no-erase"]) == 0
    assert "done in" in capsys.readouterr().out
    app = build_app("xtensawin", source=app_src, board_json=ROOT / "hardware" / "boards" / "lean.json",
                    build_root=tmp_path / "build")
    img = romfs.romfs_split(app).image.read_bytes()
    assert part.read_bytes()[:len(img)] == img
    assert romfs.listing(img) == {p: f.local.read_bytes() for p, f in app.files.items() if p.startswith("fl/")}
    assert not (pty_board.directory / "fl").exists()
    for name in ("main.py", "boot.py", "board.json"):
        assert (pty_board.directory / name).read_bytes() == app.files[name].local.read_bytes()
    assert pty_board.proc.wait(timeout=10) == 0  # rebooted into the app


def test_flash_command_refuses_an_image_for_another_chip(esptool_fake: FakeEsptool, port: str,
                                                         tmp_path: Path) -> None:
    fw = make_firmware(tmp_path / "ESP32_GENERIC_S3.bin", "ESP32-S3")
    with pytest.raises(FireLinkError, match="^image is for ESP32-S3, board is ESP32"):
        run_flash(["--port", port, "--firmware", str(fw)])
    assert "erase_flash" not in esptool_fake.names() and "write_flash" not in esptool_fake.names()


SPIRAM = b"Generic ESP32 module with SPIRAM with ESP32\x00"
PLAIN = b"Generic ESP32 module with ESP32\x00"  # micropython.org's ESP32_GENERIC: no ROMFS
LEAN = b"FireLink lean (ESP32_GENERIC with ROMFS) with ESP32\x00"  # hardware/micropython/FIRELINK_LEAN


def _built_as(tmp_path: Path, name: str, machine: bytes) -> Path:
    """An image whose read-only data names the board it was built for, as MicroPython's does."""
    return make_firmware(tmp_path / name, "ESP32", app_payload=os.urandom(3000) + machine + os.urandom(3000))


def test_image_variant_is_read_from_the_image(tmp_path: Path) -> None:
    names = [SPIRAM[:-1].decode(), PLAIN[:-1].decode()]
    assert flash.image_machine(_built_as(tmp_path, "a.bin", SPIRAM), names) == names[0]
    assert flash.image_machine(_built_as(tmp_path, "b.bin", PLAIN), names) == names[1]
    assert flash.image_machine(make_firmware(tmp_path / "c.bin", "ESP32"), names) is None


@pytest.mark.parametrize("board, wrong, right", [("reference", PLAIN, SPIRAM), ("reference", LEAN, SPIRAM),
                                                 ("lean", SPIRAM, LEAN), ("lean", PLAIN, LEAN)])
def test_flash_command_refuses_the_other_board_s_build(esptool_fake: FakeEsptool, port: str, tmp_path: Path,
                                                       board: str, wrong: bytes, right: bytes) -> None:
    fw = _built_as(tmp_path, "fw.bin", wrong)
    with pytest.raises(FireLinkError, match=r"^fw.bin is the MicroPython build .* this board takes "
                                           r"(ESP32_GENERIC-SPIRAM|FIRELINK_LEAN) \(") as e:
        run_flash(["--board", board, "--port", port, "--firmware", str(fw)])
    assert ("SPIRAM" in str(e.value).split("this board takes")[1]) == (board == "reference")
    assert ("build it from hardware/micropython/FIRELINK_LEAN" in str(e.value)) == (board == "lean")
    assert esptool_fake.calls == []  # refused before the board was touched
    ok = _built_as(tmp_path, "ok.bin", right)
    assert flash.check_variant(ok, right[:-1].decode(), "x", {wrong[:-1].decode(): "the other"}) is True


def test_an_ESP32_at_the_REPL_must_run_its_board_s_build() -> None:
    ref = boards.firmware(boards.load("reference"))
    flash_cmd._check_running_build("esp32", SPIRAM[:-1].decode(), ref, Path("reference.json"))
    flash_cmd._check_running_build("linux", "linux [GCC 14] version", ref, Path("reference.json"))  # the pty board
    with pytest.raises(FireLinkError, match='runs MicroPython built as "Generic ESP32 module with ESP32", but '
                                           "reference.json takes ESP32_GENERIC-SPIRAM"):
        flash_cmd._check_running_build("esp32", PLAIN[:-1].decode(), ref, Path("reference.json"))


def test_flash_command_checks_the_file_before_the_board(esptool_fake: FakeEsptool, port: str,
                                                        tmp_path: Path) -> None:
    with pytest.raises(FireLinkError, match="no firmware image at"):
        run_flash(["--port", port, "--firmware", str(tmp_path / "nope.bin")])
    with pytest.raises(FireLinkError, match="--firmware is required") as e:
        run_flash(["--port", port])
    assert e.value.exit_code == 2
    assert esptool_fake.calls == []


def test_flash_command_no_erase_and_board_without_micropython(esptool_fake: FakeEsptool, silent_pty: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(flash_cmd, "REPL_WAIT_S", 1.0)
    fw = make_firmware(tmp_path / "fw.bin", "ESP32")
    with pytest.raises(FireLinkError, match="does not answer as MicroPython"):
        run_flash(["--port", silent_pty, "--firmware", str(fw), "--no-erase", "--build-dir", str(tmp_path)])
    assert "erase_flash" not in esptool_fake.names() and "write_flash" in esptool_fake.names()
    assert "not erasing" in capsys.readouterr().out


# --- a real board -----------------------------------------------------------------------------

@pytest.mark.hardware
def test_flash_and_deploy_a_real_board(hardware_port: str, request: pytest.FixtureRequest, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """pytest tests/host -m hardware --port /dev/ttyUSB0 --firmware ESP32_GENERIC-….bin"""
    firmware = request.config.getoption("--firmware", default=None)
    if not firmware:
        pytest.skip("needs --firmware <MicroPython .bin for the board>")
    assert run_flash(["--port", hardware_port, "--firmware", str(firmware), "--build-dir", str(tmp_path),
                      "--no-reboot"]) == 0
    app = build_app("xtensawin", build_root=tmp_path)
    with wait_for_repl(hardware_port) as dev:
        assert dev.info().platform == "esp32"
        on_board = dev.list_files(["main.py", "boot.py", "board.json", "fl"])
        assert {p: f.sha256 for p, f in on_board.items()} == {p: e.sha256 for p, e in app.files.items()}
        assert dev.run("import fl.health\nprint(fl.health.__file__)").strip() == "fl/health.mpy"
    # a second, app-only run finds everything in place
    assert run_flash(["--port", hardware_port, "--app-only", "--build-dir", str(tmp_path)]) == 0
    assert "already had this app" in capsys.readouterr().out
    info = flash.detect(hardware_port)  # detection resets the board back into MicroPython after
    assert info.chip == "ESP32" and info.flash_size is not None and info.flash_size >= 4 * 1024 * 1024
