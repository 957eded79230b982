"""`firelink diag`: a technician's look into a running device over its serial port (issue 12).

The device keeps watching its inputs and sending alarms while this is attached: the tool
only talks the diagnostics protocol (docs/diag.md), never breaks into the REPL, and opens the
port without pulsing DTR/RTS (no reset).

Examples:
  firelink diag --port /dev/ttyUSB0                 live view, refreshed twice a second (Ctrl-C ends)
  firelink diag --port run/devices/dev1             a virtual device: its directory works as a port
  firelink diag --port /dev/ttyUSB0 --once --json   one snapshot, as JSON
  firelink diag log --port /dev/ttyUSB0             the device's last log lines, then follow (coloured)
  firelink diag walktest --port /dev/ttyUSB0        guided walk test: 607 on, activate each input, 607 off
  firelink diag config get --port P [KEY]           the config (secrets masked)
  firelink diag config set --port P broker.port 8883   validated on the device, written, applied by a restart
  firelink diag silence --port P                    buzzer silenced until the next new fault
  firelink diag reboot --port P
  firelink diag report --port P --out reports/      support bundle: JSON + Markdown, secrets masked, last crash
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from firelink.board import diag
from firelink.board.diag import DiagError, DiagLink
from firelink.errors import UsageError

EXAMPLES = __doc__.split("Examples:", 1)[1]
# Twice a second: the device reads its console every 500 ms (fl/indicators.py), so a change
# shows within ≈1 s of the contact moving.
REFRESH_S = 0.5
LEVEL_STYLE = {"DEBUG": "dim", "INFO": "", "WARN": "yellow", "ERROR": "bold red"}


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", default=argparse.SUPPRESS,
                        help="serial port of the device, or a virtual device's directory (e.g. run/devices/dev1)")
    common.add_argument("--baud", type=int, default=argparse.SUPPRESS, help="baud rate (default 115200)")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for each answer (default 5)")
    p = sub.add_parser("diag", parents=[common], help="diagnostics over the serial port, beside the running firmware",
                       description="Diagnostics console of a running device (docs/diag.md).", epilog="examples:" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    p.set_defaults(func=cmd_view, port=None, baud=115200, timeout=diag.ANSWER_TIMEOUT_S)
    s = p.add_subparsers(dest="diag_command", metavar="ACTION")
    lg = s.add_parser("log", parents=[common], help="last log lines, then follow them (levels coloured)")
    lg.add_argument("--lines", type=int, default=10)
    lg.add_argument("--no-follow", action="store_true")
    lg.set_defaults(func=cmd_log)
    wt = s.add_parser("walktest", parents=[common], help="guided walk test (607 on/off, alarms flagged as test)")
    wt.add_argument("--minutes", type=int, default=30, help="the device ends it by itself after this (default 30)")
    wt.add_argument("--input", action="append", default=None, help="only these inputs (repeatable)")
    wt.add_argument("--wait", type=float, default=120.0, help="seconds to wait for each input (default 120)")
    wt.set_defaults(func=cmd_walktest)
    cfg = s.add_parser("config", parents=[common], help="config get [KEY] | set KEY VALUE")
    cs = cfg.add_subparsers(dest="config_command", metavar="get|set", required=True)
    g = cs.add_parser("get", parents=[common])
    g.add_argument("key", nargs="?")
    g.set_defaults(func=cmd_config_get)
    st = cs.add_parser("set", parents=[common])
    st.add_argument("key")
    st.add_argument("value", help='JSON: 8883, true, "text" (a bare word is taken as text)')
    st.add_argument("--no-reboot", action="store_true", help="write it; it applies at the next restart")
    st.set_defaults(func=cmd_config_set)
    si = s.add_parser("silence", parents=[common], help="silence the buzzer until the next new fault")
    si.set_defaults(func=cmd_silence)
    rb = s.add_parser("reboot", parents=[common], help="restart the device (what is recorded is kept)")
    rb.set_defaults(func=cmd_reboot)
    lt = s.add_parser("leds", parents=[common], help="LED and buzzer test")
    lt.set_defaults(func=cmd_leds)
    rp = s.add_parser("report", parents=[common], help="support bundle: JSON + Markdown, secrets masked")
    rp.add_argument("--out", type=Path, default=Path("."), help="directory for the two files (default .)")
    rp.set_defaults(func=cmd_report)


def _link(args: argparse.Namespace, **kw: Any) -> DiagLink:
    if not args.port:
        raise UsageError("--port is required: the device's serial port (or a virtual device's directory)")
    link = DiagLink(args.port, args.baud, **kw)
    try:
        link.hello(args.timeout)
    except DiagError:
        link.close()
        raise
    return link


def _run(args: argparse.Namespace, fn: Any, **kw: Any) -> int:
    link = _link(args, **kw)
    try:
        return int(fn(link) or 0)
    finally:
        link.close()


# --- live view ---
def render(snap: dict[str, Any], extra_log: list[str] | None = None) -> Group:
    ident = snap.get("id", {})
    head = Text(f"{ident.get('id')}  fw {ident.get('fw')}  board {ident.get('board')}  boot {ident.get('boot')}  "
                f"reset {ident.get('reset')}  up {ident.get('uptime_s')} s"
                + ("  SAFE MODE" if ident.get("safe_mode") else ""), style="bold")
    walk = snap.get("walk") or {}
    if walk.get("on"):
        head.append(f"   WALK TEST ({walk.get('left_s')} s left)", style="bold magenta")
    inputs = Table(title="inputs", expand=True)
    for col in ("input", "kind", "zone", "state", "raw", "EOL V", "debounce"):
        inputs.add_column(col)
    for i in snap.get("inputs", []):
        state = i.get("state") or "?"
        style = "green" if state == "normal" else "bold red" if state == "active" else "yellow"
        deb = f"→ {i.get('candidate')} {i.get('for_ms')} ms" if i.get("debouncing") else ""
        inputs.add_row(i.get("name", ""), i.get("kind", ""), str(i.get("zone", "")), Text(state, style=style),
                       str(i.get("raw", i.get("battery_mv", ""))), str(i.get("eol_v", "")), deb)
    paths = snap.get("paths", {})
    pt = Table(title="paths", expand=True)
    for col in ("path", "up", "signal", "ip", "failures"):
        pt.add_column(col)
    for p in paths.get("paths", []):
        pt.add_row(p.get("name", "") + (" *" if p.get("current") else ""),
                   Text("up" if p.get("up") else "DOWN", style="green" if p.get("up") else "bold red"),
                   f"{p.get('signal_dbm')} dBm" if p.get("signal_dbm") is not None else "-", str(p.get("ip") or "-"),
                   str(p.get("failures", "")))
    m = paths.get("mqtt", {})
    broker = Text(f"broker {m.get('broker')}: " + ("connected" if m.get("connected") else "NOT connected"),
                  style="green" if m.get("connected") else "bold red")
    broker.append(f"  connects {m.get('connects')}  last error: {m.get('last_error') or '-'}", style="")
    ob = snap.get("outbox", {})
    outbox = Text(f"outbox: fire {ob.get('fire')}  fault {ob.get('fault')}  status {ob.get('status')}  "
                  f"(in RAM {ob.get('in_ram')}, dropped {ob.get('dropped')}, acks pending {ob.get('acks_pending')})")
    faults = snap.get("faults") or {}
    ft = Text("faults: " + (", ".join(f"{k} ({v})" if v else k for k, v in faults.items()) or "none"),
              style="bold yellow" if faults else "green")
    mem, clock = snap.get("mem", {}), snap.get("clock", {})
    misc = Text(f"heap free {mem.get('heap_free')} B  flash free {mem.get('flash_free')} B  "
                f"clock {'synced' if clock.get('synced') else 'NOT synced'}")
    logs = Text()
    for line in (extra_log if extra_log is not None else snap.get("log", []))[-8:]:
        logs.append(line + "\n", style=LEVEL_STYLE.get(diag.level_of(line), ""))
    return Group(head, inputs, pt, broker, outbox, ft, misc, Panel(logs, title="log"))


def cmd_view(args: argparse.Namespace) -> int:
    console = Console()

    def view(link: DiagLink) -> None:
        if args.once:
            snap = diag.snapshot(link)
            if args.json:
                print(json.dumps(snap, indent=2))
            else:
                console.print(render(snap))
            return
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while True:
                started = time.monotonic()
                snap = diag.snapshot(link)
                live.update(render(snap, list(link.log)[-8:] or None))
                time.sleep(max(0.0, REFRESH_S - (time.monotonic() - started)))

    return _run(args, view)


def cmd_log(args: argparse.Namespace) -> int:
    console = Console(highlight=False)

    def show(line: str) -> None:
        console.print(Text(line, style=LEVEL_STYLE.get(diag.level_of(line), "")))

    def follow(link: DiagLink) -> None:
        for line in link.ask(f"log {max(1, min(args.lines, 10))}").get("log", []):
            show(line)
        if args.no_follow:
            return
        link.on_log = show
        while link.error is None:
            time.sleep(0.2)
        console.print(f"[red]port closed: {link.error}")

    return _run(args, follow)


def cmd_config_get(args: argparse.Namespace) -> int:
    def get(link: DiagLink) -> None:
        cfg = diag.mask(link.ask("config", args.timeout)["config"])
        if args.key:
            v: Any = cfg
            for part in args.key.split("."):
                if not isinstance(v, dict) or part not in v:
                    raise UsageError(f"{args.key}: no such key in the device's config")
                v = v[part]
            print(json.dumps(v))
        else:
            print(json.dumps(cfg, indent=2))

    return _run(args, get)


def _json_value(text: str) -> str:
    try:
        json.loads(text)
        return text
    except ValueError:
        return json.dumps(text)  # a bare word: text


def cmd_config_set(args: argparse.Namespace) -> int:
    console = Console()

    def set_(link: DiagLink) -> None:
        ans = link.ask(f"set {args.key} {_json_value(args.value)}", args.timeout)
        console.print(f"{args.key} = {json.dumps(ans.get('value'))} written on the device")
        if args.no_reboot:
            console.print("applies at the next restart (firelink diag reboot)")
            return
        _reboot(link, console)

    return _run(args, set_)


def _reboot(link: DiagLink, console: Console) -> None:
    try:
        link.ask("reboot", 3.0)
    except DiagError:
        pass  # the device went down before answering: expected
    console.print("restarting; the device is back online within a minute (firelink diag --port … to watch)")


def cmd_reboot(args: argparse.Namespace) -> int:
    return _run(args, lambda link: _reboot(link, Console()))


def cmd_silence(args: argparse.Namespace) -> int:
    return _run(args, lambda link: (link.ask("silence", args.timeout),
                                    Console().print("buzzer silenced until the next new fault")) and 0)


def cmd_leds(args: argparse.Namespace) -> int:
    return _run(args, lambda link: (link.ask("leds", args.timeout + 2),
                                    Console().print("LEDs and buzzer were on for 1.5 s")) and 0)


def cmd_report(args: argparse.Namespace) -> int:
    def rep(link: DiagLink) -> None:
        jpath, mpath = diag.write_report(diag.report(link), args.out)
        print(f"{jpath}\n{mpath}")

    return _run(args, rep)


def cmd_walktest(args: argparse.Namespace) -> int:
    console = Console()

    def walk(link: DiagLink) -> int:
        states = {i["name"]: i for i in link.ask("inputs")["inputs"]}
        names = args.input or [n for n, i in states.items() if i.get("kind") not in ("mains", "battery")]
        unknown = [n for n in names if n not in states]
        if unknown:
            raise UsageError(f"no such input(s): {', '.join(unknown)}; the device has {', '.join(states)}")
        link.ask(f"walk on {args.minutes}")
        console.print(f"[magenta]walk test on[/] (607 sent; ends by itself after {args.minutes} min); "
                      "alarms reach the centre flagged as test")
        missed = []
        try:
            for name in names:
                before = states[name]["state"]
                console.print(f"activate [bold]{name}[/] now (waiting {args.wait:.0f} s)…")
                t0 = time.monotonic()
                seen = None
                while time.monotonic() - t0 < args.wait:
                    now = {i["name"]: i for i in link.ask("inputs")["inputs"]}[name]
                    if now["state"] != before:
                        seen = now["state"]
                        break
                    time.sleep(0.25)
                if seen is None:
                    console.print(f"  [red]{name}: no change seen[/]")
                    missed.append(name)
                    continue
                console.print(f"  [green]{name}: {before} → {seen}[/] after {time.monotonic() - t0:.1f} s; "
                              "restore it now")
                t1 = time.monotonic()
                while time.monotonic() - t1 < args.wait:
                    if {i["name"]: i for i in link.ask("inputs")["inputs"]}[name]["state"] == before:
                        break
                    time.sleep(0.25)
        finally:
            link.ask("walk off")
            console.print("[magenta]walk test off[/] (607 restore sent)")
        if missed:
            console.print(f"[red]not seen: {', '.join(missed)}[/]")
            return 1
        console.print("[green]every input seen[/]")
        return 0

    return _run(args, walk)
