"""The HIL suite's link proxy (tests/hil/link_proxy.py) against a real TCP echo server: each
mode does to the connection what it says."""
from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import pytest

from tests.hil.link_proxy import LinkProxy


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass  # reset by the proxy: that is the test

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join()
    server.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[LinkProxy]:
    with LinkProxy("127.0.0.1", echo).start() as p:
        yield p


def connect(p: LinkProxy) -> socket.socket:
    s = socket.create_connection((p.host, p.port), timeout=5)
    s.settimeout(5)
    return s


def roundtrip(s: socket.socket, data: bytes = b"ping") -> float:
    t = time.monotonic()
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        got += s.recv(4096)
    assert got == data
    return time.monotonic() - t


def test_pass_and_delay(proxy: LinkProxy) -> None:
    s = connect(proxy)
    assert roundtrip(s) < 0.5
    proxy.set_mode("delay", delay_s=0.2)
    assert roundtrip(s) >= 0.4  # held both ways
    proxy.restore()
    assert roundtrip(s) < 0.2
    with pytest.raises(ValueError, match="delay needs"):
        proxy.set_mode("delay")
    with pytest.raises(ValueError, match="unknown link mode 'flaky'"):
        proxy.set_mode("flaky")


def test_stall_holds_bytes_and_loses_none(proxy: LinkProxy) -> None:
    s = connect(proxy)
    roundtrip(s)
    proxy.set_mode("stall")
    s.sendall(b"held")
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(10)
    proxy.restore()
    s.settimeout(5)
    got = b""
    while len(got) < 4:
        got += s.recv(10)
    assert got == b"held"


def test_reset_and_refuse(proxy: LinkProxy) -> None:
    s = connect(proxy)
    roundtrip(s)
    proxy.set_mode("reset")
    with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError, AssertionError)):
        for _ in range(50):  # the reset lands within the pump's poll
            roundtrip(s)
            time.sleep(0.02)
    with pytest.raises((ConnectionResetError, OSError)):
        roundtrip(connect(proxy))  # new ones are accepted, then reset
    proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.restore()
    assert roundtrip(connect(proxy)) < 0.5  # the same port again


def test_cut_resets_the_open_and_refuses_the_new(proxy: LinkProxy) -> None:
    s = connect(proxy)
    roundtrip(s)
    proxy.cut()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    with pytest.raises((ConnectionResetError, BrokenPipeError, AssertionError, OSError)):
        for _ in range(50):
            roundtrip(s)
            time.sleep(0.02)
    assert proxy.open_connections() == 0
