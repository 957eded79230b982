"""Deploy end to end through mpremote's real transport, to a real MicroPython REPL on a
pseudo-terminal (the unix port; its directory is the board's filesystem)."""
from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from pathlib import Path

import pytest

from firelink.board import build
from firelink.board.deploy import AppIncompatible, check_compatible, deploy, plan, scan_paths
from firelink.board.device import (Device, DeviceInfo, DeviceTimeout, HashMismatch, NotMicroPython, RemoteFile,
                                   wait_for_repl)
from firelink.board.ports import PortNotFound
from firelink.commands import flash as flash_cmd
from firelink.progress import RecordingReporter
from tests.host.mp_pty import PtyBoard
from tests.tooling import FIRMWARE, ROOT

BOARD_JSON = ROOT / "hardware" / "boards" / "reference.json"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def app_src(tmp_path: Path) -> Path:
    """A copy of firmware/ that tests may change."""
    src = tmp_path / "src"
    shutil.copytree(FIRMWARE, src, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def make(src: Path, out: Path) -> build.AppBuild:
    return build.build_app("xtensawin", source=src, board_json=BOARD_JSON, build_root=out)


def board_files(board: PtyBoard) -> dict[str, str]:
    return {p.relative_to(board.directory).as_posix(): sha(p.read_bytes())
            for p in board.directory.rglob("*") if p.is_file()}


def stamps(board: PtyBoard) -> dict[str, int]:
    return {p.relative_to(board.directory).as_posix(): p.stat().st_mtime_ns
            for p in board.directory.rglob("*") if p.is_file()}


def change_module(src: Path, rel: str, marker: str) -> None:
    """A change that alters the bytecode (a comment would not)."""
    path = src / rel
    path.write_text(path.read_text() + f"\n_DEPLOY_MARK = {marker!r}\n")


# --- device.py on its own ---------------------------------------------------------------

def test_device_identifies_micropython_and_moves_files(pty_board: PtyBoard) -> None:
    with Device.open(pty_board.port) as dev:
        info = dev.info()
        assert info.platform == "linux" and info.version[:2] == (1, 29)
        assert info.mpy_version == (6, 3) and info.mpy_arch == "x64"

        blob = bytes(range(256)) * 40 + b"\r\n\x03\x04 end"  # every byte value, control chars too
        dev.mkdir_p("a/b/c")
        dev.mkdir_p("a/b/c")  # idempotent
        dev.write_file("a/b/c/blob.bin", blob)
        assert (pty_board.directory / "a/b/c/blob.bin").read_bytes() == blob
        assert dev.read_file("a/b/c/blob.bin") == blob
        assert dev.sha256("a/b/c/blob.bin") == sha(blob)
        assert dev.sha256("a/missing") is None
        listed = dev.list_files(["a", "nothing-here"])
        assert listed == {"a/b/c/blob.bin": RemoteFile("a/b/c/blob.bin", len(blob), sha(blob))}
        assert not (pty_board.directory / "a/b/c/blob.bin.tmp").exists()
        dev.remove("a/b/c/blob.bin")
        dev.remove("a/b/c/blob.bin")  # already gone: fine
        assert dev.list_files(["a"]) == {}
        (pty_board.directory / "file").write_text("x")
        with pytest.raises(Exception, match="in the way"):
            dev.mkdir_p("file/sub")


def test_a_damaged_transfer_is_caught_and_the_old_file_kept(pty_board: PtyBoard,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import firelink.board.device as device_mod

    (pty_board.directory / "m.py").write_bytes(b"old = 1\n")
    real = device_mod.binascii.b2a_base64

    def flip_a_bit(data: bytes, newline: bool = True) -> bytes:  # noise on the line
        return real(bytes([data[0] ^ 1]) + data[1:], newline=newline)

    with Device.open(pty_board.port) as dev:
        monkeypatch.setattr(device_mod.binascii, "b2a_base64", flip_a_bit)
        with pytest.raises(HashMismatch, match="arrived damaged"):
            dev.write_file("m.py", b"new = 2\n")
        monkeypatch.undo()
        assert (pty_board.directory / "m.py").read_bytes() == b"old = 1\n"
        assert not (pty_board.directory / "m.py.tmp").exists()


def test_a_port_without_micropython_is_named(tmp_path: Path) -> None:
    import os
    import pty

    master, slave = pty.openpty()  # a line with nothing answering on it
    try:
        started = time.monotonic()
        with pytest.raises(NotMicroPython, match="does not answer as MicroPython"):
            Device.open(os.ttyname(slave), enter_timeout_s=0.5)
        with pytest.raises(NotMicroPython):
            wait_for_repl(os.ttyname(slave), timeout_s=1.5, poll_s=0.2)
        assert time.monotonic() - started < 8
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(PortNotFound, match=r"no such port /dev/ttyUSB99; plugged in\?"):
        Device.open("/dev/ttyUSB99")


# --- deploy -------------------------------------------------------------------------------

def test_deploy_writes_everything_then_nothing(pty_board: PtyBoard, app_src: Path, tmp_path: Path) -> None:
    app = make(app_src, tmp_path / "build")
    rep = RecordingReporter()
    with Device.open(pty_board.port) as dev:
        first = deploy(dev, app, rep)
    assert sorted(first.written) == sorted(app.files) and first.skipped == [] and first.removed == []
    assert first.written[-2:] == ["boot.py", "main.py"]  # entry points go in last
    assert first.bytes_written == app.total_bytes
    # every file is on the board, byte for byte, and nothing else
    assert board_files(pty_board) == {p: e.sha256 for p, e in app.files.items()}
    # progress: one step per file, advanced by its size
    for path, entry in app.files.items():
        assert rep.advanced(f"write {path}") == entry.size
    assert rep.steps()[0] == "compare with the board" and rep.steps()[-1] == "verify files on the board"

    before = stamps(pty_board)
    rep2 = RecordingReporter()
    with Device.open(pty_board.port) as dev:
        second = deploy(dev, app, rep2)
    assert second.written == [] and second.removed == [] and sorted(second.skipped) == sorted(app.files)
    assert second.bytes_written == 0 and not second.changed
    assert stamps(pty_board) == before  # not one file touched
    assert not any(s.startswith("write ") for s in rep2.steps())

    # the deployed app runs on the board: import it through the same REPL
    with Device.open(pty_board.port) as dev:
        out = dev.run("import fl.health, fl.config\nprint(fl.health.__file__, fl.config.__file__)")
    assert out.split() == ["fl/health.mpy", "fl/config.mpy"]


def test_a_changed_file_is_rewritten_alone(pty_board: PtyBoard, app_src: Path, tmp_path: Path) -> None:
    app = make(app_src, tmp_path / "build")
    with Device.open(pty_board.port) as dev:
        deploy(dev, app)
    before = stamps(pty_board)

    change_module(app_src, "fl/health.py", "v2")
    app2 = make(app_src, tmp_path / "build")
    assert app2.compiled == ["fl/health.mpy"]
    with Device.open(pty_board.port) as dev:
        report = deploy(dev, app2)
    assert report.written == ["fl/health.mpy"] and report.removed == []
    assert len(report.skipped) == len(app2.files) - 1
    after = stamps(pty_board)
    assert [p for p in after if after[p] != before.get(p)] == ["fl/health.mpy"]
    assert board_files(pty_board)["fl/health.mpy"] == app2.files["fl/health.mpy"].sha256


def test_an_interrupted_deploy_leaves_the_old_app_intact(pty_board: PtyBoard, app_src: Path,
                                                          tmp_path: Path) -> None:
    app = make(app_src, tmp_path / "build")
    with Device.open(pty_board.port) as dev:
        deploy(dev, app)
    old = board_files(pty_board)

    # two modules change; the second (larger than one write chunk) is interrupted midway
    change_module(app_src, "fl/clock.py", "v2")
    change_module(app_src, "fl/config.py", "v2")
    app2 = make(app_src, tmp_path / "build")
    assert sorted(app2.compiled) == ["fl/clock.mpy", "fl/config.mpy"]
    assert app2.files["fl/config.mpy"].size > 2 * 2048

    def stop_midway(step: str, done: int) -> None:
        if step == "write fl/config.mpy" and done >= 2048:
            raise KeyboardInterrupt  # the installer's Ctrl-C, the laptop sleeping...

    with Device.open(pty_board.port) as dev, pytest.raises(KeyboardInterrupt):
        deploy(dev, app2, RecordingReporter(on_advance=stop_midway))

    now = board_files(pty_board)
    # both old modules are still what the board imports; the new ones wait in .tmp files
    assert now["fl/clock.mpy"] == old["fl/clock.mpy"] and now["fl/config.mpy"] == old["fl/config.mpy"]
    assert now["fl/clock.mpy.tmp"] == app2.files["fl/clock.mpy"].sha256  # fully staged
    assert (pty_board.directory / "fl/config.mpy.tmp").stat().st_size == 2048  # cut short
    assert {p: h for p, h in now.items() if not p.endswith(".tmp")} == old

    with Device.open(pty_board.port) as dev:
        again = deploy(dev, app2)
    assert again.written == ["fl/config.mpy"] and again.resumed == ["fl/clock.mpy"]
    assert board_files(pty_board) == {p: e.sha256 for p, e in app2.files.items()}


def test_a_cable_pulled_midway_times_out_and_a_rerun_finishes(pty_board: PtyBoard, app_src: Path,
                                                              tmp_path: Path) -> None:
    app = make(app_src, tmp_path / "build")

    def pull_cable(step: str, done: int) -> None:
        if step == "write fl/config.mpy" and done >= 2048:
            pty_board.cut()

    started = time.monotonic()
    with Device.open(pty_board.port, timeout_s=1.0) as dev, pytest.raises(DeviceTimeout, match="stopped answering"):
        deploy(dev, app, RecordingReporter(on_advance=pull_cable))
    assert time.monotonic() - started < 10
    assert "fl/config.mpy" not in board_files(pty_board)  # nothing was put in place

    pty_board.restore()
    with Device.open(pty_board.port) as dev:
        report = deploy(dev, app)
    assert "fl/config.mpy" in report.written
    assert board_files(pty_board) == {p: e.sha256 for p, e in app.files.items()}


def test_stale_app_files_go_and_device_data_stays(pty_board: PtyBoard, app_src: Path, tmp_path: Path) -> None:
    app = make(app_src, tmp_path / "build")
    d = pty_board.directory
    (d / "fl" / "hal").mkdir(parents=True)
    (d / "fl" / "health.py").write_text("STALE = True\n")  # would shadow health.mpy
    (d / "fl" / "hal" / "retired.mpy").write_bytes(b"M\x06\x00\x1f")
    (d / "fl" / "store.mpy.tmp").write_bytes(b"half")
    (d / "main.py.tmp").write_bytes(b"half")  # main.py will be written: this is overwritten
    (d / "board.json").write_bytes(app.files["board.json"].local.read_bytes())  # already right: skipped...
    (d / "board.json.tmp").write_bytes(b"half")  # ...so its leftover .tmp is removed
    (d / "config.json").write_text('{"device_id": "fl-1"}')  # the board's own data
    (d / "sim").mkdir()
    (d / "sim" / "control.json").write_text("{}")
    with Device.open(pty_board.port) as dev:
        report = deploy(dev, app)
    assert report.removed == ["board.json.tmp", "fl/hal/retired.mpy", "fl/health.py"]
    assert report.skipped == ["board.json"]
    files = board_files(pty_board)
    assert files.pop("config.json") and files.pop("sim/control.json")
    assert files == {p: e.sha256 for p, e in app.files.items()}


def test_plan_and_compatibility_rules(tmp_path: Path, app_src: Path) -> None:
    app = make(app_src, tmp_path / "build")
    assert scan_paths(app) == ["board.json", "boot.py", "main.py", "board.json.tmp", "boot.py.tmp",
                               "main.py.tmp", "fl"]
    main = app.files["main.py"]
    remote = {"main.py": RemoteFile("main.py", 1, "0" * 64),
              "main.py.tmp": RemoteFile("main.py.tmp", main.size, main.sha256),
              "fl/x.py": RemoteFile("fl/x.py", 1, "1" * 64)}
    p = plan(app, remote)
    assert p.resume == ["main.py"] and p.remove == ["fl/x.py"] and p.skip == []

    def info(mpy: tuple[int, int], arch: str | None = "xtensawin") -> DeviceInfo:
        return DeviceInfo("esp32", (1, 19, 1), mpy, arch, "ESP32 module with ESP32")

    check_compatible(app, info((6, 3)))
    check_compatible(app, info((6, 1)))  # bytecode only: the sub-version does not matter
    with pytest.raises(AppIncompatible, match=r"MicroPython 1\.19\.1, which loads \.mpy v5\.0"):
        check_compatible(app, info((5, 0)))
    (app_src / "fl" / "fast.py").write_text("import micropython\n@micropython.native\ndef f():\n    return 1\n")
    native = make(app_src, tmp_path / "build")
    check_compatible(native, info((6, 3)))
    with pytest.raises(AppIncompatible, match="fl/fast.mpy holds xtensawin machine code"):
        check_compatible(native, info((6, 3), "rv32imc"))


# --- the command, --app-only, against the pty board -----------------------------------------

def test_flash_app_only_command(pty_board: PtyBoard, app_src: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="firelink")
    flash_cmd.register(parser.add_subparsers(dest="command"))
    argv = ["flash", "--port", pty_board.port, "--app-only", "--arch", "xtensawin", "--app-dir", str(app_src),
            "--build-dir", str(tmp_path / "build")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    app = make(app_src, tmp_path / "build")
    out = capsys.readouterr().out
    assert "done in" in out and f"{len(app.files)} files written" in out
    # the board was rebooted into the app: on the unix port a soft reset ends the process
    assert pty_board.proc.wait(timeout=10) == 0
    files = board_files(pty_board)
    assert {p: files[p] for p in app.files} == {p: e.sha256 for p, e in app.files.items()}


def test_flash_app_only_reports_a_missing_port(tmp_path: Path) -> None:
    from firelink.errors import FireLinkError

    parser = argparse.ArgumentParser(prog="firelink")
    flash_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["flash", "--port", "/dev/ttyUSB99", "--app-only", "--build-dir", str(tmp_path)])
    with pytest.raises(FireLinkError, match=r"no such port /dev/ttyUSB99"):
        args.func(args)


def test_whole_app_deploy_time_over_the_pty(pty_board: PtyBoard, tmp_path: Path) -> None:
    """A figure, not a requirement: the pty is much faster than a 115200-baud UART, whose
    time is dominated by the bytes sent (reported)."""
    app = build.build_app("xtensawin", source=FIRMWARE, board_json=BOARD_JSON, build_root=tmp_path)
    with Device.open(pty_board.port) as dev:
        report = deploy(dev, app)
        sent = dev.bytes_sent
    print(f"\nwhole app: {len(app.files)} files, {app.total_bytes} bytes, deployed in {report.seconds:.2f} s "
          f"over the pty; {sent} bytes of commands sent (≈{sent / 11520:.1f} s at 115200 baud)")
    assert report.seconds < 30


def test_reboot_on_the_unix_port_ends_the_process(pty_board: PtyBoard) -> None:
    dev = Device.open(pty_board.port)
    dev.reboot()  # a soft reset: the unix port exits (its supervisor would start it again)
    assert pty_board.proc.wait(timeout=10) == 0


# --- against `firelink virtual` ------------------------------------------------------------------

def test_deploy_to_a_running_virtual_device_which_then_boots_the_built_app(tmp_path: Path, app_src: Path) -> None:
    """The virtual device runs the firmware from source; deploy interrupts it (Ctrl-C, as on
    a board), puts the built app in its flash, and a power cycle running from that flash boots
    the compiled app."""
    from firelink.virtual import device as virtual
    from firelink.virtual.device import VirtualDevice

    flash_dir = tmp_path / "dev"
    virtual.create(flash_dir, config={"device_id": "fl-virt1"})
    running = VirtualDevice(flash_dir, firmware=FIRMWARE)
    running.start()
    try:
        running.wait_for_log(r"FireLink \S+ on sim")
        app = make(app_src, tmp_path / "build")
        with Device.open(running.tty()) as dev:
            report = deploy(dev, app)
        assert sorted(report.written) == sorted(p for p in app.files if p != "board.json")
        assert report.skipped == ["board.json"]  # create() put the same board.json there
    finally:
        running.kill()
    on_flash = {p.relative_to(flash_dir).as_posix(): sha(p.read_bytes()) for p in flash_dir.rglob("*") if p.is_file()}
    assert {p: on_flash.get(p) for p in app.files} == {p: e.sha256 for p, e in app.files.items()}
    assert "config.json" in on_flash  # the device's own files stay
    assert not list((flash_dir / "fl").rglob("*.py"))  # only bytecode: what boots next is the build

    booted = VirtualDevice(flash_dir, firmware=flash_dir)  # power on from its own flash
    booted.start()
    try:
        booted.wait_for_log(r"FireLink \S+ on sim", timeout_s=15)
        assert "Traceback" not in booted.log_text()
    finally:
        booted.kill()
