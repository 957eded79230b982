"""Writes a MicroPython firmware image to an ESP32: typed functions over `esptool.cmds`.

Each function returns data or raises one exception class per failure, whose message says
what to do. esptool's own console output is captured (kept for error messages) and its
progress bars are forwarded to a `progress.Reporter`.

    with connect("/dev/ttyUSB0") as s:          # detect, stub, faster baud, attach flash
        image = check_image(path, s.info.chip)  # right chip? whole firmware? fits?
        erase(s, reporter)
        write_image(s, image, reporter)
        verify(s, image, reporter)
        reset(s)                                # the board boots MicroPython
"""
from __future__ import annotations

import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from esp_pylib.logger import EspLog, EspLogBase
from esptool import cmds
from esptool.bin_image import LoadFirmwareImage
from esptool.loader import ESPLoader
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError, flash_size_bytes
from serial import SerialException

from firelink.board.ports import PortBusy, PortError, PortNotFound, PortPermission, check_port, classify
from firelink.errors import FireLinkError
from firelink.progress import Reporter

__all__ = [
    "ChipInfo", "ImageInfo", "Session", "connect", "detect", "image_offset", "check_image", "read_image",
    "erase", "write_image", "verify", "reset", "FlashError", "PortError", "PortNotFound", "PortPermission",
    "PortBusy", "NoChipAnswer", "UnsupportedChip", "ImageMissing", "ImageInvalid", "ImageCorrupt",
    "NotFullImage", "WrongChip", "ImageTooLarge", "SecurityEnabled", "EraseFailed", "WriteFailed",
    "VerifyFailed", "ConnectionLost",
]

ROM_BAUD = ESPLoader.ESP_ROM_BAUD  # every ROM bootloader syncs at 115200
DEFAULT_BAUD = 460800  # after the stub runs; reliable on CP210x/CH340 with short cables
CONNECT_ATTEMPTS = 7  # esptool's default: ~10 s of reset-and-sync before giving up

# Where a MicroPython release image (bootloader + partition table + app) starts in flash.
# It begins with the bootloader, so this is each chip's bootloader offset, the same as
# esptool's BOOTLOADER_FLASH_OFFSET (tests check the two agree).
IMAGE_OFFSETS = {
    "ESP32": 0x1000,
    "ESP32-S2": 0x1000,
    "ESP32-S3": 0x0,
    "ESP32-C3": 0x0,
    "ESP32-C6": 0x0,
}
PARTITION_TABLE_OFFSET = 0x8000  # MicroPython's esp32 port keeps ESP-IDF's default
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_APP_TYPE = 0x00
ESP_IMAGE_MAGIC = 0xE9
HEADER_LEN = 24  # 8-byte common header + 16-byte extended header
CHIP_BY_IMAGE_ID = {cls.IMAGE_CHIP_ID: cls.CHIP_NAME for cls in CHIP_DEFS.values()
                    if cls.IMAGE_CHIP_ID is not None}


# --- failures -----------------------------------------------------------------------------

class FlashError(FireLinkError):
    """Flashing failed; the message says what to do."""


class NoChipAnswer(FlashError):
    def __init__(self, port: str, detail: str = "") -> None:
        super().__init__(f"no ESP32 answered on {port}: hold BOOT, press EN, release BOOT, try again"
                         + (f" (esptool: {detail})" if detail else ""))


class UnsupportedChip(FlashError):
    pass


class ImageMissing(FlashError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"no firmware image at {path}: download the MicroPython .bin for your board "
                         "from https://micropython.org/download/ESP32_GENERIC/ (the SPIRAM build for the "
                         "reference board's ESP32-WROVER-E, the plain one for the lean board's ESP32-WROOM-32)")


class ImageInvalid(FlashError):
    """Not an ESP firmware image at all (wrong file)."""


class ImageCorrupt(FlashError):
    """An ESP image, but truncated or damaged (an interrupted download)."""


class NotFullImage(FlashError):
    """An application-only image: no bootloader/partition table in front of it."""


class WrongChip(FlashError):
    def __init__(self, image_chip: str, board_chip: str, path: Path) -> None:
        super().__init__(f"image is for {image_chip}, board is {board_chip}: {path.name} would not boot; "
                         f"download the {board_chip} firmware from https://micropython.org/download/")
        self.image_chip, self.board_chip = image_chip, board_chip


class WrongVariant(FlashError):
    """The right chip, but the MicroPython build for another board (SPIRAM or not)."""


class ImageTooLarge(FlashError):
    pass


class SecurityEnabled(FlashError):
    pass


class EraseFailed(FlashError):
    pass


class WriteFailed(FlashError):
    pass


class VerifyFailed(FlashError):
    pass


class ConnectionLost(FlashError):
    def __init__(self, port: str, step: str, detail: str) -> None:
        super().__init__(f"lost the board on {port} while {step} ({detail}): check the USB cable "
                         "(short, data-capable, no hub), then run the same command again; "
                         "an interrupted flash is safe to redo")


# --- data ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChipInfo:
    chip: str  # esptool's name: "ESP32", "ESP32-S3", ...
    description: str  # "ESP32-D0WD-V3 (revision v3.1)"
    mac: str  # "24:6f:28:aa:bb:cc"
    flash_size: int | None  # bytes; None when the flash chip is not recognised
    crystal_mhz: int | None
    features: tuple[str, ...]

    @property
    def flash_size_text(self) -> str:
        if self.flash_size is None:
            return "unknown"
        return f"{self.flash_size // (1024 * 1024)}MB" if self.flash_size >= 1024 * 1024 \
            else f"{self.flash_size // 1024}KB"


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    chip: str  # chip named by the image header
    size: int
    offset: int  # where it goes in flash
    app_offset: int  # the application partition found in its partition table


@dataclass
class Session:
    """An open esptool connection (stub running, flash attached) and what it found."""

    port: str
    esp: ESPLoader
    info: ChipInfo
    log: list[str]
    reset_done: bool = False


# --- esptool output -------------------------------------------------------------------------

class _EsptoolSink(EspLogBase):
    """Takes esptool's output: text is kept (shown in error details), progress bars advance
    the current reporter step in units of the image's bytes (esptool counts compressed bytes)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.reporter: Reporter = Reporter()
        self.scale_to = 0  # bytes the reporter step counts; 0 = pass through esptool's units
        self._reported = 0

    def route(self, reporter: Reporter, scale_to: int) -> None:
        self.reporter, self.scale_to, self._reported = reporter, scale_to, 0

    def _keep(self, *args: Any) -> None:
        text = " ".join(str(a) for a in args).strip()
        if text:
            self.lines.append(text)
            del self.lines[:-200]

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._keep(*args)

    def note(self, *args: Any) -> None:
        self._keep("note:", *args)

    def hint(self, *args: Any) -> None:
        self._keep("hint:", *args)

    def debug(self, *args: Any) -> None:
        pass

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        self._keep("warning:", *args)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        self._keep("error:", *args)

    def set_verbosity(self, mode: int | str) -> None:
        pass

    def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "",
                     bar_length: int = 30) -> None:
        if total_iters <= 0:
            return
        done = cur_iter * self.scale_to // total_iters if self.scale_to else cur_iter
        if done > self._reported:
            self.reporter.advance(done - self._reported)
            self._reported = done


@contextmanager
def _esptool_output(lines: list[str], reporter: Reporter | None = None, scale_to: int = 0) -> Iterator[_EsptoolSink]:
    sink = _EsptoolSink(lines)
    sink.route(reporter or Reporter(), scale_to)
    previous = EspLog.instance
    EspLog.instance = sink
    try:
        yield sink
    finally:
        EspLog.instance = previous


# --- connecting ---------------------------------------------------------------------------

def _connect_error(port: str, e: BaseException) -> Exception:
    port_error = classify(port, e) if "Could not open" in str(e) or isinstance(e, OSError) else None
    if port_error is not None:
        return port_error
    text = str(e)
    if "Failed to connect" in text or "No serial data" in text or "Wrong boot mode" in text:
        reason = text.split(":", 1)[-1].split("\n")[0].strip()
        return NoChipAnswer(port, reason)
    if "Unexpected chip" in text or "autodetect" in text:
        return UnsupportedChip(f"the chip on {port} is not one esptool knows ({text.splitlines()[0]}); "
                               f"FireLink supports {', '.join(IMAGE_OFFSETS)}")
    return FlashError(f"esptool could not connect on {port}: {text.strip()}")


def _mac_text(mac: object) -> str:
    if isinstance(mac, (bytes, bytearray, tuple, list)):
        return ":".join(f"{b:02x}" for b in mac)
    return str(mac)


def _read_info(esp: ESPLoader) -> ChipInfo:
    size_text = cmds.detect_flash_size(esp)
    try:
        crystal: int | None = int(esp.get_crystal_freq())
    except (FatalError, NotImplementedError):
        crystal = None
    return ChipInfo(
        chip=esp.CHIP_NAME,
        description=esp.get_chip_description(),
        mac=_mac_text(esp.read_mac()),
        flash_size=flash_size_bytes(size_text) if size_text else None,
        crystal_mhz=crystal,
        features=tuple(esp.get_chip_features()),
    )


@contextmanager
def connect(port: str, baud: int = DEFAULT_BAUD, connect_attempts: int = CONNECT_ATTEMPTS,
            reset_mode: str = "default-reset") -> Iterator[Session]:
    """Detects the chip (resetting it into the ROM bootloader), loads esptool's stub flasher,
    moves to `baud` and attaches the flash. On leaving, the chip is hard-reset (unless
    `reset` was called) and the port closed."""
    check_port(port)
    lines: list[str] = []
    with _esptool_output(lines):
        try:
            esp = cmds.detect_chip(port, ROM_BAUD, reset_mode, False, connect_attempts)
        except (FatalError, SerialException, OSError) as e:
            raise _connect_error(port, e) from e
    session: Session | None = None
    try:
        with _esptool_output(lines):
            try:
                if esp.CHIP_NAME not in IMAGE_OFFSETS:
                    raise UnsupportedChip(f"{esp.CHIP_NAME} on {port} is not supported: FireLink runs on "
                                          f"{', '.join(IMAGE_OFFSETS)}")
                esp = cmds.run_stub(esp)
                if baud > ROM_BAUD:
                    esp.change_baud(baud)
                cmds.attach_flash(esp)
                info = _read_info(esp)
            except (SerialException, OSError) as e:
                raise ConnectionLost(port, "reading the chip", str(e)) from e
            except FatalError as e:
                raise FlashError(f"esptool failed on {port} while preparing the chip: {e}") from e
        session = Session(port=port, esp=esp, info=info, log=lines)
        yield session
    finally:
        # Like esptool's CLI: never leave the chip waiting in its bootloader.
        if session is None or not session.reset_done:
            with _esptool_output(lines):
                try:
                    cmds.reset_chip(esp, "hard-reset")
                except Exception:  # the port may be gone (cable pulled): nothing to reset
                    pass
        try:
            esp._port.close()
        except Exception:
            pass


def detect(port: str, baud: int = DEFAULT_BAUD) -> ChipInfo:
    """Chip name, MAC, flash size, crystal and features of the board on `port`."""
    with connect(port, baud) as s:
        return s.info


# --- images -------------------------------------------------------------------------------

def image_offset(chip: str) -> int:
    """Flash offset of a MicroPython release image for `chip` (0x1000 on the classic ESP32)."""
    try:
        return IMAGE_OFFSETS[chip]
    except KeyError:
        raise UnsupportedChip(f"{chip} is not supported: FireLink runs on {', '.join(IMAGE_OFFSETS)}") from None


def _not_an_image_hint(head: bytes) -> str:
    if head.startswith(b"\x7fELF"):
        return "it is an ELF file; use the .bin"
    if head.startswith(b"PK"):
        return "it is a zip archive; unpack it and use the .bin inside"
    if head.startswith(b"UF2\n"):
        return "it is a UF2 file (for drag-and-drop boards); use the .bin"
    if head.startswith(b":"):
        return "it is an Intel HEX file; use the .bin"
    if head.lstrip().startswith(b"<"):
        return "it is a web page (a failed download?); download the .bin again"
    return "download the .bin from https://micropython.org/download/"


def read_image(path: Path) -> ImageInfo:
    """Reads and checks a firmware image without a board: the ESP image header (magic 0xE9,
    chip id in the extended header), the partition table at 0x8000 and the application it
    points to (catches truncated downloads)."""
    path = Path(path)
    if not path.is_file():
        raise ImageMissing(path)
    data = path.read_bytes()
    if len(data) < HEADER_LEN or data[0] != ESP_IMAGE_MAGIC:
        raise ImageInvalid(f"{path} is not an ESP32 firmware image (first byte "
                           f"{'0x%02x' % data[0] if data else 'missing'}, expected 0xe9): {_not_an_image_hint(data[:8])}")
    # Extended header: wp_pin, 3 bytes of SPI drive strengths, then the chip id (u16 LE).
    (chip_id,) = struct.unpack_from("<H", data, 12)
    chip = CHIP_BY_IMAGE_ID.get(chip_id)
    if chip is None:
        raise ImageInvalid(f"{path} names chip id {chip_id}, which no ESP32 has: "
                           "is it an ESP8266 image? download the ESP32 .bin")
    offset = IMAGE_OFFSETS.get(chip)
    if offset is None:
        raise UnsupportedChip(f"{path} is built for {chip}; FireLink supports {', '.join(IMAGE_OFFSETS)}")
    app_offset = _check_layout(path, data, chip, offset)
    return ImageInfo(path=path, chip=chip, size=len(data), offset=offset, app_offset=app_offset)


def _check_layout(path: Path, data: bytes, chip: str, offset: int) -> int:
    """The partition table must sit at 0x8000 and name an app partition whose image loads."""
    _load_image(path, data, chip, "bootloader")
    table_at = PARTITION_TABLE_OFFSET - offset
    if data[table_at:table_at + 2] != PARTITION_MAGIC:
        raise NotFullImage(f"{path} has no partition table at {PARTITION_TABLE_OFFSET:#x}: it looks like an "
                           "application-only image. Use the full firmware .bin from micropython.org "
                           "(bootloader, partition table and application in one file)")
    app_offset = None
    for at in range(table_at, min(table_at + 0xC00, len(data)), 32):
        entry = data[at:at + 32]
        if entry[:2] != PARTITION_MAGIC:
            break
        ptype, _subtype, part_offset = struct.unpack_from("<BBI", entry, 2)
        if ptype == PARTITION_APP_TYPE:
            app_offset = part_offset
            break
    if app_offset is None:
        raise ImageCorrupt(f"{path}: the partition table has no application partition; download the image again")
    start = app_offset - offset
    if start >= len(data):
        raise ImageCorrupt(f"{path} ends before its application at {app_offset:#x} "
                           f"({len(data)} bytes): the download was cut short, download it again")
    _load_image(path, data[start:], chip, f"application at {app_offset:#x}")
    return int(app_offset)


def _load_image(path: Path, data: bytes, chip: str, what: str) -> None:
    lines: list[str] = []
    with _esptool_output(lines):
        try:
            image = LoadFirmwareImage(chip, data)
            if image.checksum != image.calculate_checksum():
                raise FatalError("checksum mismatch")
            if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
                raise FatalError("SHA-256 digest mismatch")
        except (FatalError, struct.error, RuntimeError, TypeError) as e:
            raise ImageCorrupt(f"{path}: the {what} is damaged ({e}); the download was probably "
                               "cut short: download the image again") from None


def check_image(path: Path, chip: str, flash_size: int | None = None) -> ImageInfo:
    """`read_image`, then: is it for `chip`, and does it fit a flash of `flash_size` bytes?"""
    image = read_image(path)
    if image.chip != chip:
        raise WrongChip(image.chip, chip, image.path)
    if flash_size is not None and image.offset + image.size > flash_size:
        raise ImageTooLarge(f"{image.path.name} needs {image.offset + image.size} bytes of flash, the board "
                            f"has {flash_size}: use the build for {flash_size // (1024 * 1024)}MB boards")
    return image


def image_machine(path: Path, machines: list[str]) -> str | None:
    """Which of `machines` (MicroPython board names as sys.implementation._machine gives them,
    e.g. "Generic ESP32 module with SPIRAM with ESP32") the image was built as: the name is a
    C string in the image's read-only data. None when it holds none of them."""
    data = Path(path).read_bytes()
    found = [m for m in machines if m.encode() + b"\x00" in data]
    return max(found, key=len) if found else None


def check_variant(path: Path, want: str, variant: str, others: dict[str, str]) -> bool:
    """Refuses an image built as another board's MicroPython (`others`: machine -> what to call
    it, e.g. "ESP32_GENERIC, the lean board's"); True when the image is `want`, False when it
    cannot be told (a custom build: the caller warns)."""
    found = image_machine(path, [want, *others])
    if found == want:
        return True
    if found is not None:
        where = ("download it from https://micropython.org/download/ESP32_GENERIC/"
                 if variant.startswith("ESP32_GENERIC") else
                 f"build it from hardware/micropython/{variant} (hardware/README.md)")
        raise WrongVariant(f"{Path(path).name} is the MicroPython build \"{found}\" ({others[found]}); this board "
                           f"takes {variant} (\"{want}\"): {where}, or pick the board that image is for with --board")
    return False


# --- flash operations ---------------------------------------------------------------------

def erase(session: Session, reporter: Reporter | None = None) -> None:
    """Erases the whole flash (old filesystem included), so the board starts clean."""
    reporter = reporter or Reporter()
    reporter.start("erase flash")
    with _esptool_output(session.log):
        try:
            cmds.erase_flash(session.esp)
        except (SerialException, OSError) as e:
            raise ConnectionLost(session.port, "erasing", str(e)) from e
        except FatalError as e:
            if "security features" in str(e).lower():
                raise SecurityEnabled(f"the board on {session.port} has flash encryption or secure boot "
                                      "enabled; FireLink images are not signed for it: use a board without "
                                      "them (they cannot be turned off)") from e
            raise EraseFailed(f"erasing the flash on {session.port} failed: {e}; run again, and if it "
                              "fails twice the flash chip may be faulty") from e
    reporter.finish()


def write_image(session: Session, image: ImageInfo, reporter: Reporter | None = None) -> None:
    """Writes the image at its offset; esptool checks the MD5 of what landed in flash."""
    reporter = reporter or Reporter()
    reporter.start(f"write {image.path.name} at {image.offset:#x}", total=image.size, unit="B")
    with _esptool_output(session.log, reporter, scale_to=image.size):
        try:
            cmds.write_flash(session.esp, [(image.offset, str(image.path))],
                             flash_freq="keep", flash_mode="keep", flash_size="keep")
        except (SerialException, OSError) as e:
            raise ConnectionLost(session.port, "writing", str(e)) from e
        except FatalError as e:
            if "MD5" in str(e) or "region is empty" in str(e):
                raise VerifyFailed(f"flash contents differ from {image.path.name} after writing ({e}): run "
                                   "again at a lower speed (--baud 115200); if it persists the board's "
                                   "flash or power supply is faulty") from e
            raise WriteFailed(f"writing {image.path.name} failed: {e}; run again (--baud 115200 if "
                              "it repeats)") from e
    reporter.finish()


def verify(session: Session, image: ImageInfo, reporter: Reporter | None = None) -> None:
    """Compares the flash with the image again (digest computed on the chip)."""
    reporter = reporter or Reporter()
    reporter.start("verify flash")
    with _esptool_output(session.log):
        try:
            cmds.verify_flash(session.esp, [(image.offset, str(image.path))],
                              flash_freq="keep", flash_mode="keep", flash_size="keep")
        except (SerialException, OSError) as e:
            raise ConnectionLost(session.port, "verifying", str(e)) from e
        except FatalError as e:
            raise VerifyFailed(f"flash on {session.port} does not match {image.path.name} ({e}): run again "
                               "at a lower speed (--baud 115200); if it persists the board is faulty") from e
    reporter.finish()


def reset(session: Session) -> None:
    """Hard-resets the board (RTS) so it boots what was written."""
    with _esptool_output(session.log):
        try:
            cmds.reset_chip(session.esp, "hard-reset")
        except (SerialException, OSError, FatalError) as e:
            raise ConnectionLost(session.port, "resetting", str(e)) from e
    session.reset_done = True


def esptool_log_tail(session: Session, lines: int = 15) -> str:
    """The last lines esptool printed, for a `--verbose` error report."""
    return "\n".join(session.log[-lines:])

