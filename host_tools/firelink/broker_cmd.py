"""`firelink broker`: run a site's mosquitto and manage its accounts."""
from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from rich.console import Console

from firelink.broker import Broker, BrokerError

DEFAULT_DIR = Path("run/broker")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run mosquitto for a site (passwords, ACL, TLS)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: %(default)s)")
    p.add_argument("--port", type=int, default=1883, help="plain listener port (default: %(default)s)")
    p.add_argument("--tls-port", type=int, default=8883, help="mutual-TLS listener port (default: %(default)s)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--hostname", action="append", default=None,
                   help="name or address devices use for the broker (server certificate); repeatable")
    p.add_argument("--add-device", metavar="DEVICE_ID", help="create a device account and certificate, then exit")
    p.add_argument("--revoke", metavar="DEVICE_ID", help="remove a device account, then exit")
    p.add_argument("--monitor-password", help="set the monitor account's password, then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firelink.cli import CommandError

    out = Console()
    b = Broker(args.dir, port=args.port, tls_port=args.tls_port, bind=args.bind, hostnames=args.hostname)
    if args.add_device:
        account, cred = b.add_device(args.add_device)
        out.print(f"device [bold]{account.username}[/] password {account.password}")
        out.print(f"certificate {b.pki_dir / 'devices' / (account.username + '.crt.der')} "
                  f"(sha256 {cred.fingerprint[:16]}…)")
        return 0
    if args.revoke:
        if not b.revoke(args.revoke):
            raise CommandError(f"no device {args.revoke!r} in {args.dir}")
        out.print(f"revoked {args.revoke}")
        return 0
    if args.monitor_password:
        b.add_monitor(args.monitor_password)
        out.print("monitor password set")
        return 0
    try:
        b.start()
    except BrokerError as e:
        raise CommandError(str(e)) from e
    out.print(f"mosquitto listening on {args.bind}:{args.port} (password) and :{args.tls_port} (mutual TLS); "
              f"state in {args.dir}; Ctrl-C to stop")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while b.running():
            time.sleep(0.5)
        raise CommandError(f"mosquitto stopped unexpectedly; see {b.log_file}")
    except KeyboardInterrupt:
        return 0
    finally:
        b.stop()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM stops the broker as cleanly as Ctrl-C does.
    raise KeyboardInterrupt
