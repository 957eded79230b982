"""`firelink devices`: the provisioned devices in the inventory.

    firelink devices list [--state active|revoked] [--site NAME] [--json]
    firelink devices show ID [--json]
    firelink devices revoke ID [--broker-dir run/broker] [--yes] [--installer NAME]

Every action takes --inventory (default run/inventory.db). `revoke` removes the device's
account from the site broker, so it can no longer connect, and marks it revoked.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from firelink.commands.broker import DEFAULT_DIR as DEFAULT_BROKER_DIR
from firelink.errors import FireLinkError, UsageError
from firelink.site import devices, pki
from firelink.site.broker import Broker
from firelink.site.inventory import ACTIVE, DEFAULT_PATH, REVOKED, Inventory, installer_name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="list, show or revoke provisioned devices",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--inventory", type=Path, default=DEFAULT_PATH, help="inventory file (default: %(default)s)")

    s = dsub.add_parser("list", parents=[common], help="one line per device")
    s.add_argument("--state", choices=(ACTIVE, REVOKED))
    s.add_argument("--site", help="only this site (exact name)")
    s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    s.set_defaults(func=run_list)

    s = dsub.add_parser("show", parents=[common], help="everything known about one device, with its history")
    s.add_argument("device_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_show)

    s = dsub.add_parser("revoke", parents=[common], help="lock a device out of the broker")
    s.add_argument("device_id")
    s.add_argument("--broker-dir", type=Path, default=DEFAULT_BROKER_DIR,
                   help="the site broker's directory (default: %(default)s)")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("--installer", help="who revokes it (default: the OS user)")
    s.set_defaults(func=run_revoke)


def _open(args: argparse.Namespace) -> Inventory:
    if not args.inventory.exists():
        raise UsageError(f"no inventory at {args.inventory}: nothing was provisioned with it yet "
                         "(give --inventory if it is elsewhere)")
    return Inventory(args.inventory)


def run_list(args: argparse.Namespace) -> int:
    with _open(args) as inv:
        rows = devices.list_devices(inv, state=args.state, site=args.site)
    out = Console(soft_wrap=True)
    if args.json:
        for rec in rows:
            out.print_json(json.dumps(devices.as_dict(rec)), indent=None)
        return 0
    table = Table()
    for name in ("device", "site", "MAC", "firmware", "state", "provisioned", "by", "last result", "cert until"):
        table.add_column(name, no_wrap=name in ("device", "MAC"))  # copied from here: never folded
    for rec in rows:
        state = f"[green]{rec.state}[/]" if rec.state == ACTIVE else f"[red]{rec.state}[/]"
        result = rec.last_result or "-"
        table.add_row(rec.device_id, rec.site, rec.mac, rec.firmware or "-", state, rec.provisioned_at,
                      rec.provisioned_by, f"[green]{result}[/]" if result == "pass" else result, _cert_until(rec))
    out.print(table)
    out.print(f"{len(rows)} device(s) in {args.inventory}")
    for rec, left in devices.renewals_due_of(rows):
        when = f"ended {-left:.0f} days ago" if left < 0 else f"ends in {left:.0f} days"
        out.print(f"[yellow]renew:[/] {rec.device_id}'s certificate {when} ({rec.cert_not_after}): provision the "
                  "board again (`firelink provision`), which issues a new one")
    return 0


def _cert_until(rec: devices.DeviceRecord) -> str:
    left = rec.cert_days_left()
    if left is None:
        return "-"
    day = (rec.cert_not_after or "")[:10]
    return f"[red]{day} renew[/]" if left <= pki.RENEW_DAYS else day


def run_show(args: argparse.Namespace) -> int:
    with _open(args) as inv:
        rec, history = devices.show(inv, args.device_id)
    out = Console(soft_wrap=True)
    if args.json:
        doc = devices.as_dict(rec)
        doc["history"] = [h.__dict__ for h in history]
        out.print_json(json.dumps(doc))
        return 0
    facts = Table(show_header=False, title=rec.device_id, title_justify="left")
    for label, value in (("site", rec.site), ("MAC", rec.mac), ("firmware", rec.firmware or "-"),
                         ("state", rec.state + (f" since {rec.revoked_at} ({rec.revoked_by})" if rec.revoked_at else "")),
                         ("broker", rec.broker_url), ("certificate sha256", rec.cert_fingerprint),
                         ("certificate until", _cert_until(rec)),
                         ("provisioned", f"{rec.provisioned_at} by {rec.provisioned_by}"),
                         ("last result", f"{rec.last_result or '-'} ({rec.last_result_at or '-'})"),
                         ("report", rec.last_report or "-")):
        facts.add_row(label, value)
    out.print(facts)
    inputs = Table("input", "kind", "channel", "contact", "zone", "eol", title="inputs", title_justify="left")
    for entry in rec.inputs:
        inputs.add_row(*(str(entry.get(k, "-")) for k in ("name", "kind", "channel", "contact", "zone", "eol")))
    out.print(inputs)
    hist = Table("at", "action", "by", "detail", title="history", title_justify="left")
    for h in history:
        hist.add_row(h.at, h.action, h.by, h.detail)
    out.print(hist)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    out = Console(soft_wrap=True)
    with _open(args) as inv:
        rec = inv.get(args.device_id)
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError("revoking needs confirmation: add --yes")
            answer = input(f"revoke {rec.device_id} ({rec.site}, MAC {rec.mac})? It will no longer reach the "
                           "centre. Type the device id to confirm: ")
            if answer.strip() != rec.device_id:
                raise FireLinkError("not revoked")
        broker = Broker(args.broker_dir)
        if not (broker.pki_dir / "ca.crt").exists():
            raise UsageError(f"no site broker in {args.broker_dir}: give --broker-dir")
        outcome = devices.revoke(inv, broker, args.device_id, installer_name(args.installer))
    for problem in outcome.reload.problems:
        out.print(f"[yellow]warning:[/] {problem}")
    if outcome.locked_out:
        out.print(f"[bold]{args.device_id}[/] revoked: the broker refuses it from now on "
                  f"(mosquitto pid {', '.join(map(str, outcome.reload.signalled))} reloaded)")
    else:
        out.print(f"[bold]{args.device_id}[/] revoked in {args.broker_dir}; [yellow]no running mosquitto for it was "
                  "reloaded[/]: a connected device keeps its session until the broker restarts or reloads")
    if not outcome.had_account:
        out.print("(the broker had no account for it any more)")
    return 0
