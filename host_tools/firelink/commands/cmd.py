"""`firelink cmd DEVICE COMMAND ...`: send one remote command to a device and wait for its result.

Examples:
  firelink cmd dev1 status                              the device's health snapshot
  firelink cmd dev1 config get broker.port
  firelink cmd dev1 config set broker.port 8883 --rollback-s 120
                        applied by a restart; back to the old value by itself if the device
                        does not reach the broker within 120 s
  firelink cmd dev1 walktest on --minutes 30            607 on; alarms flagged as test; ends by itself
  firelink cmd dev1 walktest off
  firelink cmd dev1 silence | reboot | test

The account must be a centre account (`monitor` or `centre-<name>`; while the monitor runs use a
centre-<name> one: the broker binds client ids to accounts). Password: --password or $FL_CMD_PASS.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from firelink.centre import remote as centre_cmd
from firelink.errors import UsageError
from firelink.provision.settings import BrokerURL

PASSWORD_ENV = "FL_CMD_PASS"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cmd", help="send a remote command to a device and wait for its result",
                       description=__doc__.split("\n\n", 1)[0], epilog="examples:" + __doc__.split("Examples:", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("device")
    p.add_argument("words", nargs="+", metavar="COMMAND", help=" | ".join(centre_cmd.NAMES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca", type=Path)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--username", default="monitor", help="a centre account (default: %(default)s)")
    p.add_argument("--password", default=None, help=f"default: ${PASSWORD_ENV}")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the result (default 15)")
    p.add_argument("--minutes", type=int, default=None, help="walktest on: its length")
    p.add_argument("--rollback-s", type=int, default=None, help="config set: the device's rollback window")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    name = " ".join(words[:2]) if words[0] == "config" and len(words) > 1 else words[0]
    rest = words[2:] if words[0] == "config" else words[1:]
    if name not in centre_cmd.NAMES:
        raise UsageError(f"unknown command {name!r}: one of {', '.join(centre_cmd.NAMES)}")
    doc = centre_cmd.build(name, rest, args.minutes, args.rollback_s)
    target = centre_cmd.Target(BrokerURL("mqtts" if args.tls else "mqtt", args.host, args.port), args.username,
                               args.password if args.password is not None else os.environ.get(PASSWORD_ENV),
                               centre_cmd.tls_files(args.ca, args.cert, args.key))
    result = centre_cmd.send(target, args.device, doc, args.timeout)
    print(json.dumps(result, indent=2))
    return 0
