"""firelink.board.diag against the other end of a real pseudo-terminal: what a technician is told for a
busy port, a board in its ROM bootloader, one at the REPL, a firmware too old for the protocol and
a silent port; frames reassembled, damaged ones refused; secrets masked a second time."""
from __future__ import annotations

import json
import os
import threading
import time
import tty
import zlib
from typing import Iterator

import pytest

from firelink.board import diag


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        os.close(master)
        os.close(slave)


def _device(master: int, text: bytes, answer: bool = False, damaged: bool = False) -> threading.Thread:
    """The board's side: prints `text`; with `answer`, answers each request as firmware v1 would."""
    def run() -> None:
        os.write(master, text)
        buf = b""
        deadline = time.monotonic() + 5
        while answer and time.monotonic() < deadline:
            try:
                buf += os.read(master, 256)
            except OSError:
                return
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                tag = line[1:].split(b" ")[0].decode()
                body = json.dumps({"ok": True, "proto": 1, "echo": line.decode()})
                half = len(body) // 2
                for k, chunk in ((1, body[:half]), (2, body[half:])):
                    crc = zlib.crc32(chunk.encode()) ^ (1 if damaged and k == 2 else 0)
                    os.write(master, f"123 INFO app: between frames\n#FL1 {tag} {k}/{'+' if k == 1 else 2} "
                                     f"{crc:08x} {chunk}\n".encode())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_answers_are_reassembled_among_log_lines(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    with diag.DiagLink(path) as link:
        _device(master, b"", answer=True)
        assert link.hello(3)["echo"].endswith("hello")
        assert any("between frames" in line for line in link.log)


def test_a_damaged_frame_is_refused(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    with diag.DiagLink(path) as link, pytest.raises(diag.BadFrame):
        _device(master, b"", answer=True, damaged=True)
        link.ask("id", 3)


@pytest.mark.parametrize("text, error", [
    (b"rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\nwaiting for download\n",
     diag.InBootloader),
    (b"MicroPython v1.24 on 2024-01-01; Generic ESP32 module with ESP32\n>>> ", diag.AtRepl),
    (b"1234 INFO app: FireLink 0.0.9 on esp32\n5678 INFO mqtt: connected\n", diag.FirmwareTooOld),
    (b"1234 INFO app: FireLink 0.0.9 on esp32\n5678 WARN diag: no diagnostics console on this board (built "
     b"without it: diag_console false); ask the centre (firelink cmd) or use the REPL\n", diag.NoConsole),
    (b"", diag.NoAnswer),
])
def test_why_nothing_answered(pty_pair: tuple[int, str], text: bytes, error: type) -> None:
    master, path = pty_pair
    with diag.DiagLink(path) as link, pytest.raises(error):
        _device(master, text).join(2)  # after the port opened: opening it flushes what was waiting
        link.hello(1.0)


def test_a_busy_port_says_so(pty_pair: tuple[int, str]) -> None:
    _, path = pty_pair
    with diag.DiagLink(path), pytest.raises(diag.PortBusy, match="busy"):
        diag.DiagLink(path)


def test_a_missing_port_and_a_stopped_virtual_device(tmp_path) -> None:
    with pytest.raises(diag.PortMissing):
        diag.open_port(str(tmp_path / "ttyUSB9"))
    with pytest.raises(diag.PortMissing, match="virtual start"):
        diag.resolve_port(str(tmp_path))


def test_mask_hides_anything_that_looks_like_a_credential() -> None:
    doc = {"secrets": {"mqtt_password": "hunter2", "tls_key": "x"}, "broker": {"port": 1883},
           "list": [{"api_token": "t"}]}
    masked = diag.mask(doc)
    assert "hunter2" not in json.dumps(masked) and masked["broker"]["port"] == 1883
    assert masked["list"][0]["api_token"] == diag.SECRET_MASK


def test_the_outbox_line_names_the_oldest_record_and_its_age() -> None:
    assert diag.oldest_text({"oldest_seq": None}) == "none"
    assert diag.oldest_text({"oldest_seq": 41, "oldest_code": "602", "oldest_age_s": 12.34}) == "12.3 s (seq 41, 602)"
    assert diag.oldest_text({"oldest_seq": 41, "oldest_age_s": 600}) == "10 min (seq 41)"
    assert "age unknown" in diag.oldest_text({"oldest_seq": 7, "oldest_age_s": None})
    md = diag.report_markdown({"outbox": {"fire": 0, "fault": 1, "status": 0, "oldest_seq": 9, "oldest_age_s": 3.0}})
    assert "oldest waiting: 3.0 s (seq 9)" in md
    md = diag.report_markdown({"counters": {"mqtt_connects": 3}, "walk": {"on": True, "left_s": 90}})
    assert "- mqtt_connects: 3" in md and "on, 90 s left" in md


def test_walktest_centre_options_are_checked_before_anything_starts() -> None:
    from firelink.board import walktest
    with pytest.raises(walktest.CentreUnusable, match="centre-user"):
        walktest.CentreView.from_args("mqtt://127.0.0.1:1883", None, "pw")
    with pytest.raises(walktest.CentreUnusable, match="--ca"):
        walktest.CentreView.from_args("mqtts://centre.example:8883", "centre-tech", "pw")
    with pytest.raises(walktest.CentreUnusable):
        walktest.CentreView.from_args("http://x", "centre-tech", "pw")
    ok = walktest.CentreView.from_args("mqtt://127.0.0.1:1883", "centre-tech", "pw")
    assert (ok.url.host, ok.url.port, ok.username) == ("127.0.0.1", 1883, "centre-tech")


def test_walktest_line_says_what_was_seen_and_what_the_centre_got() -> None:
    from firelink.board import walktest
    console_only = walktest.Result("panel_fire", "active", 1.2, "110")
    assert "code 110 (fire alarm)" in walktest.Guide.line(console_only, "normal")
    assert "latency" not in walktest.Guide.line(console_only, "normal")
    full = walktest.Result("panel_fire", "active", 1.2, "110", True, 61.4)
    line = walktest.Guide.line(full, "normal")
    assert "flagged test" in line and "latency to the centre 61 ms" in line
    assert "NOT flagged test" in walktest.Guide.line(walktest.Result("x", "active", 1, "110", False), "normal")


def test_diag_log_follows_the_console_until_the_port_goes(capsys: pytest.CaptureFixture[str]) -> None:
    from firelink import cli
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)

    def board() -> None:  # answers hello and log, then prints a log line, then is unplugged
        buf = b""
        for _ in range(2):
            while b"\n" not in buf:
                buf += os.read(master, 256)
            line, buf = buf.split(b"\n", 1)
            tag = line[1:].split(b" ")[0].decode()
            body = json.dumps({"ok": True, "proto": 1, "log": ["12 INFO app: kept in the ring"]})
            os.write(master, f"#FL1 {tag} 1/1 {zlib.crc32(body.encode()):08x} {body}\n".encode())
        time.sleep(0.5)
        os.write(master, b"98765 WARN mqtt: broker unreachable: ECONNREFUSED\n")
        time.sleep(0.5)
        os.close(master)

    threading.Thread(target=board, daemon=True).start()
    try:
        assert cli.main(["diag", "log", "--port", path, "--timeout", "3"]) == 0
    finally:
        os.close(slave)
    out = capsys.readouterr().out
    assert "kept in the ring" in out and "98765 WARN mqtt: broker unreachable" in out, out
    assert "port closed" in out, out


def test_log_levels_have_their_colours() -> None:
    from firelink.commands.diag import LEVEL_STYLE
    assert diag.level_of("1 WARN x: y") == "WARN" and LEVEL_STYLE["WARN"] == "yellow"
    assert diag.level_of("1 ERROR x: y") == "ERROR" and "red" in LEVEL_STYLE["ERROR"]
    assert diag.level_of("not a log line") == ""


def test_commands_and_the_walk_test_refuse_the_monitor_s_own_account(capsys: pytest.CaptureFixture[str]) -> None:
    """Connecting as `monitor` would take the monitor's client id (the broker binds ids to accounts)
    and drop the events queued for it: refused before anything connects."""
    from firelink import cli
    from firelink.board import walktest
    assert cli.main(["cmd", "dev1", "status", "--username", "monitor", "--password", "x", "--port", "1"]) == 2
    assert "not `monitor`" in " ".join(capsys.readouterr().err.split())
    assert cli.main(["cmd", "dev1", "status", "--password", "x", "--port", "1"]) == 2
    assert "centre-<name> account is needed" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(walktest.CentreUnusable, match="not `monitor`"):
        walktest.CentreView.from_args("mqtt://127.0.0.1:1883", "monitor", "pw")
