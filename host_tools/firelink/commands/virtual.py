"""`firelink virtual`: run the real firmware as a virtual device and drive its inputs and links.

    firelink virtual start [--dir run/devices/dev1] [--broker HOST:PORT] [--device-id ID]
                           [--username U] [--password P] [--foreground] [--no-restart] [--heapsize 256k]
                           [--source]
        Writes what is missing in the device directory (config.json, secrets.json, board.json,
        inputs wired normal), merges the options given into config.json / secrets.json, and
        powers the device on. It runs the application as it ships (the .mpy build that
        `firelink flash` deploys, rebuilt if a source changed); --source runs firmware/ as is.
        Background (default): prints the serial port and returns; the device runs until
        `stop`. --foreground: streams the console here until Ctrl-C, then stops it cleanly.
    firelink virtual stop [--kill]          ^C, firmware says offline, process ends; --kill: power cut
    firelink virtual reset                  reset button: reboot with reset cause `hard`
    firelink virtual status                 running?, pids, serial port, boots, inputs (driven and reported)
    firelink virtual input NAME STATE       STATE: active | normal | open | short (open/short: EOL inputs)
    firelink virtual input NAME --raw 1234  a raw level (digital 0/1) or ADC count; NAME may be a channel (in6)
    firelink virtual link wifi down|up|stall   stall: open sockets, bytes dropped (4G devices)
    firelink virtual link 4g down|up|stall
    firelink virtual modem sim-missing|sim-ready|sim-pin|sim-puk|drop|hang | modem rssi -85
    firelink virtual rssi -75 | battery 3300 | clock synced|unsynced

Every command takes --dir (default run/devices/dev1). Talk to the device's REPL with
`mpremote connect $(readlink <dir>/tty) resume ...` (always `resume`: see virtual/device.py).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from firelink.board import boards
from firelink.errors import UsageError
from firelink.virtual import device as virtual
from firelink.virtual.device import VirtualDevice, VirtualError, WorldError
from firelink.virtual.supervisor import Supervisor

DEFAULT_DIR = Path("run/devices/dev1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("virtual", help="run the firmware as a virtual device on a pseudo-terminal")
    vsub = p.add_subparsers(dest="virtual_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="device directory, its flash (default: %(default)s)")

    s = vsub.add_parser("start", parents=[common], help="power the device on")
    s.add_argument("--broker", metavar="HOST:PORT", help="broker address written to config.json")
    s.add_argument("--device-id", help="device id written to config.json (default for a new device: the directory name)")
    s.add_argument("--username", help="MQTT username written to secrets.json (default: the device id)")
    s.add_argument("--password", help="MQTT password written to secrets.json")
    s.add_argument("--foreground", action="store_true", help="stream the console here until Ctrl-C")
    s.add_argument("--no-restart", action="store_true", help="do not reboot after a watchdog or software reset")
    s.add_argument("--heapsize", help="MicroPython heap size, e.g. 256k (default: the unix port's)")
    s.add_argument("--board", choices=boards.names(), help="the board of a new device (hardware/boards/; default: "
                   f"{boards.DEFAULT}); the lean board runs its ROM build: fl/ from a ROMFS image, as on the board")
    s.add_argument("--source", action="store_true",
                   help="run the firmware/ sources instead of the shipped .mpy build")
    s.set_defaults(func=run_start)

    s = vsub.add_parser("stop", parents=[common], help="stop the device (^C, offline, end)")
    s.add_argument("--kill", action="store_true", help="power cut: SIGKILL at once, nothing flushed")
    s.set_defaults(func=run_stop)

    s = vsub.add_parser("reset", parents=[common], help="press the reset button (reset cause hard)")
    s.set_defaults(func=run_reset)

    s = vsub.add_parser("status", parents=[common], help="show whether the device runs, and its inputs")
    s.set_defaults(func=run_status)

    s = vsub.add_parser("input", parents=[common], help="put an input in a state, or at a raw value")
    s.add_argument("name", help="input name from config.json (or the board defaults), or a channel such as in6")
    s.add_argument("state", nargs="?", choices=virtual.STATES)
    s.add_argument("--raw", type=int, help="raw value instead of a state: 0/1 digital level, 0..4095 ADC count")
    s.set_defaults(func=run_input)

    s = vsub.add_parser("link", parents=[common], help="take a network path down or up, or stall it silently")
    s.add_argument("path", help="a network path of the simulated board: wifi, or 4g (with cellular.enabled)")
    s.add_argument("updown", choices=("up", "down", "stall"),
                   help="stall: sockets stay open and every byte is dropped (nobody is told)")
    s.set_defaults(func=run_link)

    s = vsub.add_parser("modem", parents=[common], help="drive the simulated modem (4G devices)")
    s.add_argument("what", choices=("sim-missing", "sim-ready", "sim-pin", "sim-puk", "rssi", "drop", "hang"),
                   help="SIM state; rssi DBM; drop: the operator ends the data session; hang: the module locks up")
    s.add_argument("value", nargs="?", type=int, help="dBm for rssi (-113..-51)")
    s.set_defaults(func=run_modem)

    s = vsub.add_parser("rssi", parents=[common], help="set the signal strength in dBm")
    s.add_argument("dbm", type=int)
    s.set_defaults(func=lambda a: _set(a, virtual.set_rssi, a.dbm, f"rssi {a.dbm} dBm"))

    s = vsub.add_parser("battery", parents=[common], help="set the battery voltage in mV")
    s.add_argument("mv", type=int)
    s.set_defaults(func=lambda a: _set(a, virtual.set_battery_mv, a.mv, f"battery {a.mv} mV"))

    s = vsub.add_parser("clock", parents=[common], help="say whether the clock is synchronised")
    s.add_argument("sync", choices=("synced", "unsynced"))
    s.set_defaults(func=lambda a: _set(a, virtual.set_clock_synced, a.sync == "synced", f"clock {a.sync}"))


def _need_dir(args: argparse.Namespace) -> None:
    """Every command but `start` works on an existing device directory."""
    d = args.dir
    if not d.is_dir():
        raise UsageError(f"no virtual device directory {d}: `firelink virtual start --dir {d}` creates one "
                         "(or give --dir)")
    if not (d / "config.json").exists() and not (d / "sim").is_dir():
        raise UsageError(f"{d} is not a virtual device directory (no config.json): give --dir")


def parse_broker(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT or [IPv6]:PORT; the port defaults to 1883."""
    host, port = text, "1883"
    if text.count(":") == 1 or text.startswith("["):
        host, _, port = text.rpartition(":") if not text.endswith("]") else (text, "", "1883")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker {text!r}: expected HOST or HOST:PORT")
    return host, int(port)


def _provision(args: argparse.Namespace) -> None:
    config: dict[str, object] = {}
    new = not (args.dir / "config.json").exists()
    device_id = args.device_id
    if new and not device_id:
        name = args.dir.resolve().name.lower()
        device_id = name if re.fullmatch(r"[a-z0-9_-]{1,32}", name) else None
    if device_id:
        config["device_id"] = device_id
    if args.broker:
        host, port = parse_broker(args.broker)
        config["broker"] = {"host": host, "port": port}
    secrets: dict[str, object] = {}
    if args.password or args.username:
        secrets["mqtt_username"] = args.username or device_id or _config_device_id(args.dir)
    if args.password:
        secrets["mqtt_password"] = args.password
    if secrets.get("mqtt_username") is None:
        secrets.pop("mqtt_username", None)
    virtual.prepare(args.dir, config, secrets, board=boards.load(args.board) if args.board else None)


def _config_device_id(d: Path) -> str | None:
    cfg = virtual.read_json(d / "config.json") or {}
    return cfg.get("device_id") if isinstance(cfg.get("device_id"), str) else None


def run_start(args: argparse.Namespace) -> int:
    out = Console(soft_wrap=True)
    try:
        _provision(args)
        dev = VirtualDevice(args.dir, source=args.source)
        if dev.running():
            raise VirtualError(f"already running in {args.dir} ({dev.tty()}); `firelink virtual stop --dir {args.dir}` first")
        if args.foreground:
            return _foreground(args, out)
        tty = dev.start(restart=not args.no_restart, detach=True, heapsize=args.heapsize)
    except ValueError as e:
        raise UsageError(str(e)) from e
    except OSError as e:
        raise VirtualError(str(e)) from e
    out.print(f"virtual device running in {args.dir}: serial port [bold]{tty}[/] (also {args.dir / 'tty'})")
    out.print(f"console log {dev.console_log}; REPL: mpremote connect {tty} resume repl")
    return 0


def _foreground(args: argparse.Namespace, out: Console) -> int:
    def ready(tty: str) -> None:
        out.print(f"[dim]virtual device in {args.dir} on {tty}; Ctrl-C stops it[/]")

    sup = Supervisor(args.dir, virtual.app_dir(args.source, rom=virtual.takes_romfs(args.dir)), virtual.micropython_binary(),
                     restart=not args.no_restart, heapsize=args.heapsize, echo=sys.stdout.buffer, on_ready=ready)
    status = sup.run()
    out.print(f"[dim]device stopped (firmware exit status {status})[/]")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    _need_dir(args)
    dev = VirtualDevice(args.dir)
    if not dev.running():
        Console(soft_wrap=True).print(f"no virtual device running in {args.dir}")
        return 0
    if args.kill:
        dev.kill()
    else:
        dev.stop(clean=True)
    Console(soft_wrap=True).print("killed" if args.kill else "stopped")
    return 0


def run_reset(args: argparse.Namespace) -> int:
    _need_dir(args)
    VirtualDevice(args.dir).reset()
    Console(soft_wrap=True).print("reset")
    return 0


def run_status(args: argparse.Namespace) -> int:
    _need_dir(args)
    out = Console(soft_wrap=True)
    dev = VirtualDevice(args.dir)
    st = dev.state()
    if st["running"]:
        out.print(f"[bold green]running[/] in {args.dir}: supervisor pid {st.get('pid')}, firmware pid "
                  f"{st.get('firmware_pid')}, serial port [bold]{st.get('tty')}[/]")
        at = "main.py running" if st.get("mode") == "main" else "at the REPL (main.py ended)"
        out.print(f"{at}; boot #{st.get('boots')}, reset cause {st.get('reset_cause')}"
                  + (f", last exit status {st['last_exit']}" if st.get("last_exit") is not None else ""))
    else:
        last = f" (last exit status {st['last_exit']})" if st.get("last_exit") is not None else ""
        out.print(f"[bold]not running[/] in {args.dir}{last}")
    control = virtual.read_control(args.dir)
    info = virtual.board_info(args.dir)
    reported = dev.reported_inputs()
    table = Table("input", "channel", "contact", "driven", "raw", "reported (console)")
    for spec in virtual.input_specs(args.dir):
        raw = control.get("inputs", {}).get(spec.channel)
        driven = virtual.state_of(spec, raw, info) if isinstance(raw, int) else "-"
        kind = "eol" if spec.eol else spec.contact
        if spec.channel == "battery":
            raw, driven, kind = control.get("battery_mv", 4000), "-", "mV"
        table.add_row(spec.name, spec.channel, kind, driven, "-" if raw is None else str(raw),
                      reported.get(spec.name, "-"))
    out.print(table)
    links = ", ".join(f"{k} {'up' if v else 'down'}" for k, v in control.get("links", {}).items()) or "wifi up"
    out.print(f"links: {links}; rssi {control.get('rssi', -60)} dBm; battery {control.get('battery_mv', 4000)} mV; "
              f"clock {'synced' if control.get('clock_synced', True) else 'unsynced'}")
    if _has_cell(args.dir):
        _paths_status(out, args.dir, control)
    return 0


def _paths_status(out: Console, d: Path, control: dict[str, Any]) -> None:
    """Both paths: what the world does to each (firelink.virtual.modemsim) and what the device said."""
    from firelink.virtual import modemsim

    world = modemsim.read_state(d)
    table = Table("path", "link", "proxy", "bytes up", "bytes down", "connections")
    for name, label in (("wifi", "wifi"), ("cellular", "4g")):
        p = world.get("paths", {}).get(name, {})
        if name == "wifi":
            state = "up" if control.get("links", {}).get("wifi", True) else "down"
        else:
            m = world.get("modem", {})
            state = "data" if m.get("data") else ("registered" if m.get("reg") in (1, 5) else "no service")
        table.add_row(label, state, p.get("mode", "-"), str(p.get("up", "-")), str(p.get("down", "-")),
                      str(p.get("connections", "-")))
    out.print(table)
    m = world.get("modem", {})
    if m:
        pulses = ", ".join(f"{p['line']} {p['ms']} ms" for p in m.get("pulses", [])[-4:]) or "none"
        out.print(f"modem: {'on' if m.get('powered') else 'off'}, SIM {m.get('sim')}, "
                  f"rssi {2 * m.get('rssi_csq', 0) - 113} dBm, registration {m.get('reg')}, dials {m.get('dials')}, "
                  f"boots {m.get('boots')}; last pulses: {pulses}")


def run_input(args: argparse.Namespace) -> int:
    _need_dir(args)
    if (args.state is None) == (args.raw is None):
        raise UsageError("give a state (active, normal, open, short) or --raw N, not both")
    try:
        raw = virtual.set_input(args.dir, args.name, state=args.state, raw=args.raw)
    except OSError as e:
        raise WorldError(str(e)) from e
    Console(soft_wrap=True).print(f"{args.name}: {args.state or 'raw'} ({raw})")
    return 0


def _has_cell(d: Path) -> bool:
    return bool(((virtual.read_json(Path(d) / "config.json") or {}).get("cellular") or {}).get("enabled"))


def run_link(args: argparse.Namespace) -> int:
    from firelink.virtual import modemsim

    _need_dir(args)
    path = {"4g": "cellular", "lte": "cellular"}.get(args.path, args.path)
    if path not in ("wifi", "cellular"):
        raise UsageError(f"link {args.path!r}: the simulated board has wifi and 4g")
    if path == "cellular" and not _has_cell(args.dir):
        raise WorldError("link 4g: this device has no 4G (set cellular.enabled in its config.json)")
    if path == "wifi" and args.updown != "stall":
        if _has_cell(args.dir):
            modemsim.update_control(args.dir, {"wifi": "pass"})
        return _set(args, lambda d, up: virtual.set_link(d, "wifi", up), args.updown == "up", f"wifi {args.updown}")
    if path == "wifi":
        if not _has_cell(args.dir):
            raise WorldError("link wifi stall: the path proxies run for devices with cellular.enabled")
        modemsim.update_control(args.dir, {"wifi": "stall"})
    elif args.updown == "stall":
        modemsim.update_control(args.dir, {"cellular": "stall"})
    else:
        up = args.updown == "up"
        # down: the network drops the session and registration (searching); up: back, dial allowed.
        modemsim.update_control(args.dir, {"cellular": "pass" if up else "refuse", "modem": {"reg": 1 if up else 2}})
    Console(soft_wrap=True).print(f"{args.path} {args.updown}")
    return 0


def run_modem(args: argparse.Namespace) -> int:
    from firelink.virtual import modemsim

    _need_dir(args)
    if not _has_cell(args.dir):
        raise WorldError("modem: this device has no 4G (set cellular.enabled in its config.json)")
    if args.what == "rssi":
        if args.value is None or not -113 <= args.value <= -51:
            raise UsageError("modem rssi: give the signal in dBm, -113..-51")
        change: dict[str, Any] = {"rssi": args.value}
    elif args.value is not None:
        raise UsageError(f"modem {args.what} takes no value")
    elif args.what.startswith("sim-"):
        change = {"sim": args.what[4:]}
    elif args.what == "drop":
        drops = (modemsim.read_control(args.dir).get("modem") or {}).get("drops", 0)
        change = {"drops": drops + 1}
    else:
        change = {"hang": "pwrkey"}
    modemsim.update_control(args.dir, {"modem": change})
    Console(soft_wrap=True).print(f"modem {args.what}" + (f" {args.value}" if args.value is not None else ""))
    return 0


def _set(args: argparse.Namespace, fn: Callable[[Path, Any], None], value: Any, text: str) -> int:
    _need_dir(args)
    try:
        fn(args.dir, value)
    except OSError as e:
        raise WorldError(str(e)) from e
    Console(soft_wrap=True).print(text)
    return 0
