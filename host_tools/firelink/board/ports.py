"""Serial ports: is this port usable, and what went wrong when opening it failed.

Shared by `flash` (esptool) and `device` (mpremote) so that a missing cable, a missing
`dialout` membership or a port held by another program read the same whichever step hit it.
"""
from __future__ import annotations

import errno
import os
import re
from typing import Callable

from firelink.errors import FireLinkError


class PortError(FireLinkError):
    """The serial port itself is the problem (not the board behind it)."""

    def __init__(self, port: str, message: str) -> None:
        super().__init__(message)
        self.port = port


class PortNotFound(PortError):
    def __init__(self, port: str) -> None:
        super().__init__(port, f"no such port {port}; plugged in? "
                               "`ls /dev/ttyUSB* /dev/ttyACM*` lists the ports present")


class PortPermission(PortError):
    def __init__(self, port: str) -> None:
        super().__init__(port, f"permission denied on {port}: add yourself to the dialout group "
                               "(`sudo usermod -aG dialout $USER`, then log in again)")


class PortBusy(PortError):
    def __init__(self, port: str) -> None:
        super().__init__(port, f"{port} is in use by another program (a serial monitor, mpremote, "
                               f"another firelink?): close it and try again; `fuser -v {port}` shows which")


def _is_url(port: str) -> bool:
    # pyserial URLs (rfc2217://, socket://, loop://) have no file to check.
    return "://" in port


def check_port(port: str) -> None:
    """Raises PortNotFound or PortPermission before any tool tries (and fails less clearly)."""
    if _is_url(port):
        return
    if not os.path.exists(port):
        raise PortNotFound(port)
    if not os.access(port, os.R_OK | os.W_OK):
        raise PortPermission(port)


_PATTERNS: list[tuple[re.Pattern[str], Callable[[str], PortError]]] = [
    (re.compile(r"Errno 2\b|No such file|FileNotFoundError", re.I), PortNotFound),
    (re.compile(r"Errno 13\b|Permission denied", re.I), PortPermission),
    (re.compile(r"Errno 16\b|Device or resource busy|exclusively lock|Errno 11\b", re.I), PortBusy),
]


def classify(port: str, error: BaseException | str) -> PortError | None:
    """The PortError matching an open failure's text or errno, or None if it is not one."""
    if isinstance(error, OSError) and error.errno is not None:
        by_errno: dict[int, Callable[[str], PortError]] = {
            errno.ENOENT: PortNotFound, errno.EACCES: PortPermission, errno.EBUSY: PortBusy}
        cls = by_errno.get(error.errno)
        if cls is not None:
            return cls(port)
    text = str(error)
    for pattern, cls in _PATTERNS:
        if pattern.search(text):
            return cls(port)
    return None
