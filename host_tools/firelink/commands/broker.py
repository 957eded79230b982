"""`firelink broker`: run a site's mosquitto and manage its accounts."""
from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from firelink.errors import FireLinkError, UsageError
from firelink.site import pki
from firelink.site.broker import MONITOR_USER, Broker, BrokerError

DEFAULT_DIR = Path("run/broker")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run mosquitto for a site (passwords, ACL, TLS)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: %(default)s)")
    p.add_argument("--port", type=int, default=1883, help="plain listener port (default: %(default)s)")
    p.add_argument("--tls-port", type=int, default=8883, help="mutual-TLS listener port (default: %(default)s)")
    p.add_argument("--bind", default="127.0.0.1", help="address of the TLS listener (default: %(default)s)")
    p.add_argument("--plain-bind", default="127.0.0.1",
                   help="address of the plain (password in clear) listener; other than loopback only if the "
                        "network is yours end to end (default: %(default)s)")
    p.add_argument("--hostname", action="append", default=None,
                   help="name or address devices use for the broker (server certificate); repeatable")
    p.add_argument("--add-device", metavar="DEVICE_ID", help="create a device account and certificate, then exit")
    p.add_argument("--add-centre", metavar="NAME",
                   help="create another centre account (centre-<name>: a second console), then exit")
    p.add_argument("--centre-cert", metavar="ACCOUNT",
                   help="issue a client certificate for a centre account (monitor, centre-<name>) to use on the "
                        "TLS listener, then exit")
    p.add_argument("--rotate", action="store_true",
                   help="with --add-device/--add-centre/--monitor-password: replace an existing credential "
                        "(the old one stops working)")
    p.add_argument("--revoke", metavar="DEVICE_ID", help="remove a device account, then exit")
    p.add_argument("--monitor-password", nargs="?", const="", default=None, metavar="PASSWORD",
                   help="set the monitor account's password (no value: generate one), then exit")
    p.add_argument("--protect-ca", action="store_true",
                   help=f"encrypt the site CA's key with a passphrase (${pki.PASSPHRASE_ENV} or asked), then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Console(soft_wrap=True)
    b = Broker(args.dir, port=args.port, tls_port=args.tls_port, bind=args.bind, hostnames=args.hostname,
               plain_bind=args.plain_bind)
    replaced = "; the old password and certificate stop working now" if args.rotate else ""
    if args.add_device:
        account, cred = b.add_device(args.add_device, rotate=args.rotate)
        out.print(f"device [bold]{account.username}[/] password {account.password}{replaced}")
        out.print(f"certificate {b.pki_dir / 'devices' / (account.username + '.crt.der')} "
                  f"(sha256 {cred.fingerprint[:16]}…, until {pki.not_after(cred.cert_der):%Y-%m-%d}); its key "
                  f"{account.username}.key.der is secret: copy it to the board, then delete it here")
        return 0
    if args.add_centre:
        name = args.add_centre if args.add_centre.startswith("centre-") else "centre-" + args.add_centre
        account = b.add_centre(name, rotate=args.rotate)
        out.print(f"centre account [bold]{account.username}[/] password {account.password}"
                  f"{'; the old password stops working now' if args.rotate else ''}")
        return 0
    if args.centre_cert:
        crt, key = b.centre_cert(args.centre_cert)
        out.print(f"certificate {crt} and key {key} for {args.centre_cert!r} (e.g. `firelink monitor --tls --port "
                  f"{args.tls_port} --ca {b.pki_dir / 'ca.crt'} --cert {crt} --key {key} --username "
                  f"{args.centre_cert}` with its password); the key is secret, and the TLS listener takes "
                  "the certificate only with its own account's name and password")
        return 0
    if args.revoke:
        if not b.revoke(args.revoke):
            raise FireLinkError(f"no device {args.revoke!r} in {args.dir}")
        out.print(f"revoked {args.revoke}; {b.last_revoke_marker}")
        return 0
    if args.monitor_password is not None:
        account = b.add_monitor(args.monitor_password or None, rotate=args.rotate)
        shown = "" if args.monitor_password else f": {account.password}"
        out.print(f"{MONITOR_USER} password set{shown}"
                  f"{'; the old one stops working now (restart the monitor with the new one)' if args.rotate else ''}")
        return 0
    if args.protect_ca:
        phrase = os.environ.get(pki.PASSPHRASE_ENV) or (getpass.getpass("CA passphrase: ") if sys.stdin.isatty() else "")
        if len(phrase) < 12:
            raise UsageError(f"a CA passphrase of at least 12 characters is needed (${pki.PASSPHRASE_ENV})")
        try:
            pki.protect_key(b.pki_dir, "ca", phrase.encode())
        except OSError as e:
            raise FireLinkError(str(e)) from e
        out.print(f"site CA key encrypted; provisioning now needs ${pki.PASSPHRASE_ENV}")
        return 0
    b.start()
    out.print(f"mosquitto listening on {args.plain_bind}:{args.port} (password) and {args.bind}:{args.tls_port} "
              f"(mutual TLS); state in {args.dir}; Ctrl-C to stop")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while b.running():
            time.sleep(0.5)
        raise BrokerError(f"mosquitto stopped unexpectedly; see {b.log_file}")
    except KeyboardInterrupt:
        return 0
    finally:
        b.stop()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM stops the broker as cleanly as Ctrl-C does.
    raise KeyboardInterrupt
