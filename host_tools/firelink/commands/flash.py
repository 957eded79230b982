"""`firelink flash`: from a blank ESP32 to a running FireLink transmitter in one command.

detect the chip -> check the image is for it, and is the MicroPython build the board takes
(`--board reference`: ESP32_GENERIC-SPIRAM for its ESP32-WROVER-E; `--board lean`: ESP32_GENERIC
built with ROMFS, hardware/micropython/FIRELINK_LEAN, for its ESP32-WROOM-32) -> erase -> write
at the chip's offset -> verify -> reset and wait for MicroPython's REPL -> build the app for the
chip -> deploy it with the board's board.json (hash-checked, only what changed) -> reboot into the
app. On a board whose image has ROMFS (the lean board) the app's fl/ goes as a ROMFS image to the
`romfs` partition, where it runs from flash (firelink.board.romfs, firelink.board.romdeploy), and
only main.py, boot.py and board.json to littlefs. `--app-only` does the last steps on a board that
already runs MicroPython (and checks it runs the board's build).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from firelink.board import boards
from firelink.board import build as build_mod
from firelink.board import flash, romdeploy, romfs
from firelink.board.deploy import DeployReport, deploy
from firelink.board.device import Device, DeviceError, wait_for_repl
from firelink.errors import UsageError
from firelink.progress import Reporter, RichReporter

REPL_WAIT_S = 30.0  # a fresh MicroPython formats its filesystem on first boot
# micropython.org's images that no board takes (the reference board takes the SPIRAM one).
STOCK_IMAGES = {"Generic ESP32 module with ESP32": "ESP32_GENERIC from micropython.org: no PSRAM support, no ROMFS"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("flash", help="install MicroPython and the FireLink app on a board",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--firmware", type=Path, help="MicroPython firmware .bin for the board's chip "
                   "(from micropython.org/download; required unless --app-only)")
    p.add_argument("--app-only", action="store_true",
                   help="skip esptool: build and deploy the app to a board already running MicroPython")
    p.add_argument("--baud", type=int, default=flash.DEFAULT_BAUD,
                   help="esptool speed after connecting (default: %(default)s; 115200 for bad cables)")
    p.add_argument("--no-erase", action="store_true",
                   help="keep the flash (and the board's files) instead of erasing it first")
    p.add_argument("--arch", choices=sorted(set(build_mod.ARCH_BY_MPY_CODE.values())),
                   help="build for this mpy-cross architecture instead of the one the board reports")
    p.add_argument("--app-dir", type=Path, default=build_mod.FIRMWARE_DIR, help="application sources "
                   "(default: %(default)s)")
    p.add_argument("--board", choices=boards.names(), default=boards.DEFAULT,
                   help="which FireLink board (hardware/boards/): decides the MicroPython image it takes and "
                   "the board.json it gets (default: %(default)s)")
    p.add_argument("--board-json", type=Path,
                   help="another board definition to deploy as /board.json (instead of --board's)")
    p.add_argument("--build-dir", type=Path, default=build_mod.BUILD_ROOT,
                   help="where compiled files go (default: %(default)s)")
    p.add_argument("--no-reboot", action="store_true", help="leave the board at its REPL after deploying")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.app_only and args.firmware is None:
        raise UsageError("--firmware is required (the MicroPython .bin for the board), "
                         "or use --app-only on a board that already runs MicroPython")
    out = Console()
    started = time.monotonic()
    board_json = args.board_json or boards.path(args.board)
    definition = boards.load(board_json)
    with RichReporter(out) as reporter:
        arch = args.arch
        if not args.app_only:
            chip = flash_firmware(args, reporter, boards.firmware(definition))
            arch = arch or build_mod.arch_for_chip(chip)
            reporter.start("wait for MicroPython")
            device = wait_for_repl(args.port, timeout_s=REPL_WAIT_S)
        else:
            reporter.start("connect to MicroPython")
            device = Device.open(args.port)
        with device:
            info = device.info()
            reporter.finish(f"MicroPython {info.version_text} on {info.platform}")
            _check_running_build(info.platform, info.machine, boards.firmware(definition), board_json)
            arch = arch or info.mpy_arch
            if arch is None:
                raise DeviceError(f"the board on {args.port} does not say its architecture: "
                                  "give it with --arch (xtensawin for ESP32/S2/S3, rv32imc for C3/C6)")
            app = build_mod.build_app(arch, source=args.app_dir, board_json=board_json,
                                      build_root=args.build_dir, reporter=reporter)
            fw = boards.firmware(definition)
            if fw is not None and fw.romfs:
                report = _deploy_rom(device, app, reporter)
            else:
                report = deploy(device, app, reporter)
            if not args.no_reboot:
                reporter.start("reboot into the app")
                device.reboot()
                reporter.finish()
    _summary(out, report, time.monotonic() - started)
    return 0


def _deploy_rom(device: Device, app: build_mod.AppBuild, reporter: Reporter) -> DeployReport:
    """fl/ to the ROMFS partition (checked there), then littlefs's files, then littlefs's old fl/
    removed (it would be found before /rom): the old app runs until the new one is complete."""
    rom = romfs.romfs_split(app)
    written = romdeploy.write_image(device, rom, reporter)
    report = deploy(device, rom.littlefs, reporter)
    romdeploy.remove_littlefs_copy(device, written, reporter)
    if written.written:
        report.written.append(f"romfs ({rom.image_bytes} of {written.partition_bytes} bytes)")
        report.bytes_written += rom.image_bytes
    else:
        report.skipped.append("romfs")
    return report


def _known_builds() -> dict[str, str]:
    """machine -> how to name it, for every board's MicroPython build."""
    out: dict[str, str] = {}
    for name in boards.names():
        fw = boards.firmware(boards.load(name))
        if fw is not None:
            out[fw.machine] = f"{fw.variant}, the {name} board's"
    return out


def _check_running_build(platform: str, machine: str, fw: boards.Firmware | None, board_json: Path) -> None:
    """--app-only (and after flashing): an ESP32 must run the build its board takes; a WROOM-32
    build on a WROVER board leaves the PSRAM unused, a SPIRAM build on a WROOM-32 does not boot."""
    if platform != "esp32" or fw is None or machine == fw.machine:
        return
    raise flash.WrongVariant(f"the board runs MicroPython built as \"{machine}\", but {board_json.name} takes "
                             f"{fw.variant} (\"{fw.machine}\"): flash that image (--firmware), or pick the board "
                             "it is with --board")


def flash_firmware(args: argparse.Namespace, reporter: Reporter, fw: boards.Firmware | None = None) -> str:
    """The esptool part; returns the chip name."""
    flash.read_image(args.firmware)  # a wrong file fails before the board is touched
    if fw is not None:
        others = {m: what for m, what in {**STOCK_IMAGES, **_known_builds()}.items() if m != fw.machine}
        if not flash.check_variant(args.firmware, fw.machine, fw.variant, others):
            reporter.warn(f"cannot tell which MicroPython build {args.firmware.name} is (no board name in it): "
                          f"this board takes {fw.variant}")
    reporter.start(f"connect to the bootloader on {args.port}")
    with flash.connect(args.port, baud=args.baud) as session:
        chip = session.info
        reporter.finish(chip.chip)
        reporter.info(f"[bold]{chip.description}[/], MAC {chip.mac}, flash {chip.flash_size_text}, "
                      f"crystal {chip.crystal_mhz or '?'} MHz, {', '.join(chip.features)}")
        image = flash.check_image(args.firmware, chip.chip, chip.flash_size)
        if args.no_erase:
            reporter.warn("not erasing: files already on the board stay (deploy still replaces the app)")
        else:
            flash.erase(session, reporter)
        flash.write_image(session, image, reporter)
        flash.verify(session, image, reporter)
        flash.reset(session)
    return chip.chip


def _summary(out: Console, report: DeployReport, seconds: float) -> None:
    if report.changed:
        out.print(f"[green]done[/] in {seconds:.1f} s: {len(report.written)} files written "
                  f"({report.bytes_written} bytes), {len(report.resumed)} resumed, "
                  f"{len(report.skipped)} unchanged, {len(report.removed)} removed")
    else:
        out.print(f"[green]done[/] in {seconds:.1f} s: the board already had this app "
                  f"({len(report.skipped)} files unchanged)")
