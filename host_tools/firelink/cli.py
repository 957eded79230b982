"""`firelink`: one CLI over the host-tool modules.

Each command module offers `register(subparsers)` (adds its parser and sets `func`) and
does its work in plain functions that tests call. This is the one place that turns
exceptions into messages and exit codes.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

# Modules that provide commands, in the order `--help` lists them.
COMMAND_MODULES = ["firelink.commands.broker", "firelink.commands.monitor", "firelink.commands.virtual", "firelink.commands.flash",
                   "firelink.commands.provision", "firelink.commands.devices", "firelink.commands.demo", "firelink.commands.diag",
                   "firelink.commands.cmd"]


class CommandError(Exception):
    """A failure with a message for the user (and what to do about it)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firelink", description="FireLink fire-alarm transmitter tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    err = Console(stderr=True)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        err.print(f"[bold red]error:[/] {e}")
        return e.status
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
