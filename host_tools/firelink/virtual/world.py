"""The simulated world around a virtual device, and its provisioning files.

A virtual device's directory is its flash. `create()`/`prepare()` write what provisioning
would (config.json, secrets.json, DER files, board.json); the functions below drive what
fl/hal/sim.py reads from `sim/control.json`: contact and line levels, links, signal, battery
and clock. Input names map to channels through the device's config.json (or the board's
default_inputs), by the firmware's own fl.config, so a test says "panel_fire active" and
gets the raw value the wiring would produce.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firelink.board import boards
from firelink.errors import FireLinkError
from firelink.virtual import unixport

_HERE = Path(__file__).resolve()
CONTROL = "sim/control.json"
CONTROL_SEQ = "sim/control.seq"  # bumped in place after each control.json change (fl/hal/sim.py)
STATES = ("active", "normal", "open", "short")


class WorldError(FireLinkError, RuntimeError):
    """A request the simulated board cannot carry out; the message says why."""


class UnknownInput(WorldError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Writes then renames, so a reader (the firmware polls) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask, and ignored for an old file
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def board_json_path() -> Path:
    """The default board's definition (firelink.board.boards): what a virtual device is."""
    return boards.path(boards.DEFAULT)


def _write_board(path: Path, board: dict[str, Any] | None) -> None:
    # What `firelink flash` deploys: the firmware's part of the definition only.
    path.write_bytes(boards.device_json(board if board is not None else boards.load(board_json_path())))


# --- provisioning ---

def create(directory: Path, config: dict[str, Any], secrets: dict[str, Any] | None = None,
           certs: dict[str, bytes] | None = None, board: dict[str, Any] | None = None) -> Path:
    """Writes a device's flash as provisioning would: config.json, secrets.json (if given),
    DER files (`certs` maps file name → bytes, e.g. {"ca.der": ...}; name them in `secrets`'
    tls_ca/tls_cert/tls_key) and board.json (the default board unless `board` is given; its device view, as flashed)."""
    d = Path(directory)
    (d / "sim").mkdir(parents=True, exist_ok=True)
    write_json_atomic(d / "config.json", config)
    if secrets is not None:
        write_json_atomic(d / "secrets.json", secrets, mode=0o600)
    for name, data in (certs or {}).items():
        if "/" in name or name.startswith("."):
            raise WorldError(f"certificate file name {name!r} must be a plain file name")
        write_bytes_atomic(d / name, data, 0o600 if "key" in name else 0o644)
    _write_board(d / "board.json", board)
    if not (d / CONTROL).exists():
        wire_normal(d)
    return d


def prepare(directory: Path, config: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None,
            board: dict[str, Any] | None = None) -> Path:
    """Like create(), but keeps what the device already has: merges `config` and `secrets`
    into its files, and adds board.json (`board`, else the default) and normal inputs only where
    missing; a `board` other than the one the device has is refused."""
    d = Path(directory)
    (d / "sim").mkdir(parents=True, exist_ok=True)
    if config or not (d / "config.json").exists():
        update_json(d / "config.json", config or {})
    if secrets:
        update_json(d / "secrets.json", secrets, mode=0o600)
    if not (d / "board.json").exists():
        _write_board(d / "board.json", board)
    elif board is not None and (read_json(d / "board.json") or {}).get("name") != board.get("name"):
        raise WorldError(f"{d} is already a {(read_json(d / 'board.json') or {}).get('name')} board, not "
                         f"{board.get('name')}: give a new --dir for another board")
    if not (d / CONTROL).exists():
        wire_normal(d)
    return d


def wire_normal(directory: Path) -> dict[str, Any]:
    """Puts every input in its normal state, as on a correctly wired site: without it a
    normally closed contact (tamper, mains) reads open, i.e. active, on the first boot."""
    d = Path(directory)
    info = board_info(d)
    return write_control(d, {"inputs": {s.channel: raw_for(s, "normal", info)
                                        for s in input_specs(d) if s.channel != "battery"}})


def update_json(path: Path, changes: dict[str, Any], mode: int = 0o644) -> dict[str, Any]:
    """Merges `changes` into a JSON object file (one level deep for nested objects)."""
    data = read_json(path) or {}
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data, mode)
    return data


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's content, or None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- the simulated world ---

@dataclass(frozen=True)
class InputSpec:
    name: str
    channel: str
    kind: str
    contact: str  # "no" | "nc"
    eol: bool
    debounce_ms: int = 0


def board_info(directory: Path) -> dict[str, Any]:
    return read_json(Path(directory) / "board.json") or json.loads(board_json_path().read_text())


def input_specs(directory: Path) -> list[InputSpec]:
    """The device's inputs exactly as its firmware will watch them: fl.config itself, run on
    the unix port over the device's files (its defaults, fallbacks and dropped entries)."""
    d = Path(directory)
    board = d / "board.json" if (d / "board.json").exists() else board_json_path()
    key = (str(d.resolve()), _stamp(d / "config.json"), _stamp(board))
    if key not in _SPECS:
        try:
            cfg = unixport.device_config(d, board.resolve())
        except unixport.UnixPortError as e:
            raise WorldError(f"cannot read the inputs of {d}: {e}") from None
        _SPECS[key] = [InputSpec(e["name"], e["channel"], e["kind"], e["contact"], e["eol"], e["debounce_ms"])
                       for e in cfg["inputs"]]
    return list(_SPECS[key])


_SPECS: dict[tuple[object, ...], list[InputSpec]] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def find_input(directory: Path, name: str) -> InputSpec:
    """An input by name, or by channel (`in1`)."""
    specs = input_specs(directory)
    for s in specs:
        if s.name == name:
            return s
    for s in specs:
        if s.channel == name:
            return s
    channels = board_info(directory).get("inputs", {})
    if name in channels:
        return InputSpec(name, name, "", "no", False)
    known = ", ".join(s.name for s in specs)
    raise UnknownInput(f"no input {name!r} in this device (inputs: {known}; or a channel: {', '.join(channels)})")


def raw_for(spec: InputSpec, state: str, info: dict[str, Any]) -> int:
    """The raw reading that puts `spec` in `state`: an ADC count for end-of-line inputs (the
    board's nominal values), else the digital level with pull-up (contact closed reads 0)."""
    if state not in STATES:
        raise WorldError(f"unknown state {state!r}: expected one of {', '.join(STATES)}")
    if spec.eol:
        return int(info["eol"]["nominal"][state])
    if state in ("open", "short"):
        raise WorldError(f"input {spec.name} has no end-of-line supervision: it is only active or normal")
    closed = (state == "active") == (spec.contact == "no")
    return 0 if closed else 1


def set_input(directory: Path, name: str, state: str | None = None, raw: int | None = None) -> int:
    """Puts an input (name or channel) in `state` (active|normal|open|short), or at a raw
    value; returns the raw value written. A battery input is driven through battery_mv."""
    if (state is None) == (raw is None):
        raise WorldError("give either a state or a raw value")
    d = Path(directory)
    info = board_info(d)
    spec = find_input(d, name)
    if spec.channel == "battery" or spec.kind == "battery":
        if raw is None:
            battery = info.get("battery", {})
            levels = {"normal": 4000, "active": int(battery.get("low_mv", 3450)) - 100,
                      "open": int(battery.get("missing_mv", 2500)) - 500}
            if state not in levels:
                raise WorldError("a battery input is active, normal or open")
            raw = levels[state]
        set_battery_mv(d, raw)
        return raw
    if raw is not None:
        analog = bool(info.get("inputs", {}).get(spec.channel, {}).get("adc")) or spec.eol
        top = ADC_MAX if analog else 1
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= top:
            raise WorldError(f"--raw {raw}: {spec.channel} is {'an ADC line: 0..4095' if analog else 'digital: 0 or 1'}")
    value = raw_for(spec, state, info) if state is not None else int(raw)  # type: ignore[arg-type]
    write_control(d, {"inputs": {spec.channel: value}})
    return value


def state_of(spec: InputSpec, raw: int, info: dict[str, Any]) -> str:
    """What the firmware should make of a raw reading (the board's thresholds)."""
    if spec.eol:
        eol = info["eol"]
        for state, limit in (("short", eol["short_max"]), ("active", eol["active_max"]),
                             ("normal", eol["normal_max"])):
            if raw <= limit:
                return state
        return "open"
    closed = raw == 0
    return "active" if closed == (spec.contact == "no") else "normal"


# What the simulated board can be told (firmware/fl/hal/sim.py): its network paths, a received
# signal strength as radios report it, and a battery voltage its ADC (3.3 V full scale behind
# the board's divider) can read.
SIM_PATHS = ("wifi",)  # sim.Board.paths()
RSSI_RANGE = (-127, 0)
ADC_MAX = 4095


def battery_range(info: dict[str, Any]) -> tuple[int, int]:
    return 0, int(3300 * float(info.get("battery", {}).get("divider", 2.0)))


def set_link(directory: Path, path: str, up: bool) -> None:
    if path not in SIM_PATHS:
        raise WorldError(f"link {path!r}: the simulated board has only {', '.join(SIM_PATHS)}")
    write_control(directory, {"links": {path: bool(up)}})


def set_rssi(directory: Path, dbm: int) -> None:
    lo, hi = RSSI_RANGE
    if isinstance(dbm, bool) or not isinstance(dbm, int) or not lo <= dbm <= hi:
        raise WorldError(f"rssi {dbm}: a signal strength is {lo}..{hi} dBm")
    write_control(directory, {"rssi": int(dbm)})


def set_battery_mv(directory: Path, mv: int) -> None:
    lo, hi = battery_range(board_info(Path(directory)))
    if isinstance(mv, bool) or not isinstance(mv, int) or not lo <= mv <= hi:
        raise WorldError(f"battery {mv} mV: the board measures {lo}..{hi} mV")
    write_control(directory, {"battery_mv": int(mv)})


def set_clock_synced(directory: Path, synced: bool) -> None:
    write_control(directory, {"clock_synced": bool(synced)})


def read_control(directory: Path) -> dict[str, Any]:
    return read_json(Path(directory) / CONTROL) or {}


def write_control(directory: Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Merges into sim/control.json and replaces it atomically (the firmware polls it). A lock
    keeps two writers (a test and the CLI, say) from losing each other's change."""
    d = Path(directory)
    (d / "sim").mkdir(parents=True, exist_ok=True)
    with open(d / "sim" / "control.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = update_json(d / CONTROL, changes)
        _bump(d / CONTROL_SEQ)
        return data


def _bump(path: Path) -> None:
    """Counts a change in place (same file, never replaced): the simulated board keeps it open and
    re-reads 8 bytes each poll, which allocates nothing on its heap, unlike reading control.json."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        old = os.pread(fd, 8, 0)
        n = int.from_bytes(old, "little") + 1 if len(old) == 8 else 1
        os.pwrite(fd, (n % (1 << 63)).to_bytes(8, "little"), 0)
    finally:
        os.close(fd)
