"""`firelink`: one CLI over the host-tool modules.

Each command module (firelink.commands.*) offers `register(subparsers)` (adds its parser and
sets `func`) and does its work in plain functions that tests call. This is the one place that
turns errors into messages and exit codes: every failure meant for the user is a
`firelink.errors.FireLinkError` carrying both; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console
from rich.markup import escape

from firelink.errors import FireLinkError

# Modules that provide commands, in the order `--help` lists them.
COMMAND_MODULES = [f"firelink.commands.{name}" for name in
                   ("broker", "monitor", "virtual", "flash", "provision", "devices", "demo", "diag", "cmd")]


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
    except FireLinkError as e:
        # escape: a message may hold brackets ([::1]:1883, a list) that are not markup.
        err.print(f"[bold red]error:[/] {escape(e.message)}")
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
