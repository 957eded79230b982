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
