"""`firelink provision`: a flashed board on a USB cable -> a commissioned transmitter the centre sees.

    firelink provision --port /dev/ttyUSB0 --site "Kho A, 12 Le Loi" --wifi-ssid KhoA-Office \\
        --broker mqtts://mq.example.vn:8883 [--wifi-password ...] [--apn v-internet | --4g] [--inputs inputs.json]
    firelink provision ... --no-wifi --apn v-internet     a site without Wi-Fi: 4G alone

With 4G (--apn, or --4g for the APN the SIM's operator implies) the commissioning also waits for a
heartbeat over 4G (the backup path's test at boot) and reports the modem's health: signal
(RSSI, RSRP, RSRQ, SINR), operator, band, registration, APN, ICCID, IMEI, modem firmware.

Checks every value first, then the broker (as the monitor account), then writes the board's
configuration, secrets and certificates atomically, registers it with the broker and the
inventory, reboots it, waits until the broker sees it online, sends a test alarm (601) and waits
for the centre's acknowledgement. Prints and saves a commissioning report (run/reports/).

Passwords: --wifi-password (or $FL_WIFI_PASSWORD, or asked for; "" for an open network) and
--monitor-password (or $FL_MONITOR_PASS, or asked for). Exit status 0 when commissioned, 2 for
invalid settings, 1 for any other failure (the report says which check failed).
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from firelink.commands.broker import DEFAULT_DIR as DEFAULT_BROKER_DIR
from firelink.errors import UsageError
from firelink.progress import RichReporter
from firelink.provision import report
from firelink.provision.commission import MONITOR_USER, ProvisionError, Timeouts, provision
from firelink.site.broker import Broker
from firelink.site.inventory import DEFAULT_PATH, Inventory

WIFI_ENV = "FL_WIFI_PASSWORD"
MONITOR_ENV = "FL_MONITOR_PASS"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("provision", help="configure a flashed board for a site and commission it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--site", required=True, help="the site's name as the centre shows it (1..64 characters)")
    p.add_argument("--wifi-ssid", help="the site's Wi-Fi network (1..32 bytes); or --no-wifi")
    p.add_argument("--no-wifi", action="store_true",
                   help="the site has no Wi-Fi: 4G alone carries everything (needs --apn or --4g)")
    p.add_argument("--wifi-password", help=f"WPA2 passphrase, 8..63 characters; \"\" for an open network "
                   f"(default: ${WIFI_ENV}, else asked for)")
    p.add_argument("--apn", help="4G APN of the SIM, e.g. v-internet (Viettel), m3-world (VinaPhone): turns 4G on")
    p.add_argument("--4g", dest="cellular", action="store_true",
                   help="turn 4G on with the APN the SIM's operator implies (Vietnam's carriers)")
    p.add_argument("--broker", required=True, metavar="URL", help="mqtts://HOST:PORT (or mqtt:// on a test bench)")
    p.add_argument("--broker-dir", type=Path, default=DEFAULT_BROKER_DIR,
                   help="the site broker's directory: CA, passwords, ACL (default: %(default)s)")
    p.add_argument("--monitor-user", default=MONITOR_USER, help="the centre's broker account (default: %(default)s)")
    p.add_argument("--monitor-password", help=f"its password (default: ${MONITOR_ENV}, else asked for)")
    p.add_argument("--inputs", type=Path, metavar="FILE",
                   help="JSON list of the board's inputs (docs/config.md); default: the board's own defaults, "
                        "or those already on the board")
    p.add_argument("--inventory", type=Path, default=DEFAULT_PATH, help="inventory file (default: %(default)s)")
    p.add_argument("--installer", help="who provisions (default: the OS user)")
    p.add_argument("--reports", type=Path, default=report.DEFAULT_DIR,
                   help="where commissioning reports go (default: %(default)s)")
    p.add_argument("--replace-config", action="store_true",
                   help="do not keep other settings (heartbeat_s, …) from the board's previous config.json")
    p.add_argument("--online-timeout", type=float, default=Timeouts.online_s, metavar="S",
                   help="longest wait for the board to come online after its reboot (default: %(default)s)")
    p.add_argument("--ack-timeout", type=float, default=Timeouts.ack_s, metavar="S",
                   help="longest wait for the centre to acknowledge the test alarm (default: %(default)s)")
    p.set_defaults(func=run)


def _secret(given: str | None, env: str, prompt: str, option: str) -> str:
    if given is not None:
        return given
    if env in os.environ:
        return os.environ[env]
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    raise UsageError(f"{option} is needed (or ${env})")


def _inputs(path: Path | None) -> object:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"--inputs: cannot read {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise UsageError(f"--inputs: {path} is not valid JSON: {e}") from e


def run(args: argparse.Namespace) -> int:
    if args.no_wifi and args.wifi_ssid is not None:
        raise UsageError("--no-wifi and --wifi-ssid: give one (a site without Wi-Fi has no network name)")
    if not args.no_wifi and args.wifi_ssid is None:
        raise UsageError("--wifi-ssid is needed (or --no-wifi for a site on 4G alone)")
    if args.no_wifi and args.wifi_password is not None:
        raise UsageError("--wifi-password with --no-wifi: a site without Wi-Fi has no Wi-Fi password")
    wifi_password = "" if args.no_wifi else _secret(
        args.wifi_password, WIFI_ENV, f"Wi-Fi password for {args.wifi_ssid!r} (empty for an open network): ",
        "--wifi-password")
    monitor_password = _secret(args.monitor_password, MONITOR_ENV, f"broker password of {args.monitor_user!r}: ",
                               "--monitor-password")
    inputs = _inputs(args.inputs)
    out = Console()
    timeouts = Timeouts(online_s=args.online_timeout, ack_s=args.ack_timeout)
    started = time.monotonic()
    inventory = Inventory(args.inventory)
    try:
        with RichReporter(out) as reporter:
            result = provision(args.port, args.site, args.wifi_ssid, wifi_password, args.broker,
                               broker=Broker(args.broker_dir), inventory=inventory,
                               monitor_user=args.monitor_user, monitor_password=monitor_password, apn=args.apn,
                               cellular=args.cellular,
                               inputs=inputs, installer=args.installer, reports_dir=args.reports,
                               reporter=reporter, timeouts=timeouts, replace_config=args.replace_config)
    except ProvisionError as e:
        failed = e.result.failed()
        if failed is not None and failed.name == "settings":
            raise UsageError("invalid settings, nothing was done:\n  " + "\n  ".join(e.problems)) from e
        out.print(report.render(e.result))
        raise
    finally:
        inventory.close()
    out.print(report.render(result))
    out.print(f"[bold green]commissioned[/] {result.device_id} in {time.monotonic() - started:.1f} s; "
              f"report {result.report_md} (and .json)")
    return 0
