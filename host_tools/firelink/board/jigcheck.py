"""Checks a test jig's definition (hardware/jig.json, issue 13) against the jig's MCU and the
board definition of the device it tests (hardware/board.json).

    python -m firelink.board.jigcheck [JIG_JSON [BOARD_JSON]]   # one line per problem; exit 1 if any

`check(jig, board)` returns `Problem`s (firelink.board.boardcheck's): a jig that passes can be built
and drives what it claims. Each device input it names exists on the board; no jig pin does two
jobs or is one the Pico keeps for itself; an EOL network sits only on an input the device reads
with its ADC, and its resistors, at the ends of their tolerances and behind the device's
pull-up at the ends of its own, land each line state (normal, active, open, short) inside the
band the board's thresholds give it; the rail sense is on an ADC pin; the sensed outputs
exist on the board. `warnings()` lists what the jig leaves out (scenarios needing it skip).
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from firelink.board.boardcheck import ADC_MAX, Problem, eol_bands, load_or_say, show
from firelink.board.boards import REPO
from firelink.board.build import BOARD_JSON

JIG_JSON = REPO / "hardware" / "jig.json"  # beside boards/, not in it: boards.names() lists that folder

# --- Raspberry Pi Pico (RP2040) facts: "Raspberry Pi Pico Datasheet", pinout and §2.1 --------
# GP0-GP22 and GP26-GP28 reach the header; GP23 (SMPS power save), GP24 (VBUS sense), GP25 (the
# LED) and GP29 (VSYS/3 on ADC3) are the board's own.
MCU_GPIOS = {"RP2040": frozenset([*range(23), 26, 27, 28])}
MCU_RESERVED = {"RP2040": {23: "SMPS power save", 24: "VBUS sense", 25: "the on-board LED", 29: "VSYS sense"}}
MCU_ADC = {"RP2040": frozenset([26, 27, 28])}
EOL_STATES = ("normal", "active", "open", "short")
# The opto-MOSFET's on-resistance (AQY212EH: 0.83 ohm typical, 2.5 ohm max) in series with each
# closed switch: it matters only for the short, which must still read as one.
SWITCH_ON_OHM_MAX = 2.5


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def line_count(pullup: float, r_line: float | None) -> int:
    """The device's ADC count with `r_line` ohms from its EOL terminal to ground (None: open)."""
    if r_line is None:
        return ADC_MAX
    return int(ADC_MAX * r_line / (pullup + r_line) + 0.5)


def state_resistance(state: str, r_eol: float, r_alarm: float, r_on: float) -> float | None:
    """What the jig's network puts across the line in a state (jig/jigfw/wiring.py's switches)."""
    if state == "short":
        return r_on
    if state == "open":
        return None
    r = r_eol + r_on
    return r * r_alarm / (r + r_alarm) if state == "active" else r


def count_range(state: str, net: dict[str, Any], pullup: float, pullup_tol: float) -> tuple[int, int]:
    """The lowest and highest count a state can read, over every resistor at either end of its
    tolerance and the switch anywhere between 0 and its worst on-resistance."""
    tol = float(net.get("tolerance", 0.05))
    counts = []
    for pu, re_, ra, ron in itertools.product((pullup * (1 - pullup_tol), pullup * (1 + pullup_tol)),
                                              (net["r_eol"] * (1 - tol), net["r_eol"] * (1 + tol)),
                                              (net["r_alarm"] * (1 - tol), net["r_alarm"] * (1 + tol)),
                                              (0.0, SWITCH_ON_OHM_MAX)):
        counts.append(line_count(pu, state_resistance(state, re_, ra, ron)))
    return min(counts), max(counts)


def check(jig: Any, board: Any) -> list[Problem]:
    """Every problem in a parsed jig.json for the parsed board.json; [] when it can be built."""
    if not isinstance(jig, dict):
        return [Problem("structure", "jig.json", f"expected a JSON object, got {show(jig)[:40]}")]
    out: list[Problem] = []
    mcu = jig.get("mcu")
    if mcu not in MCU_GPIOS:
        out.append(Problem("mcu", "mcu", f"unknown jig MCU {show(mcu)}: known {', '.join(MCU_GPIOS)}"))
        return out
    if jig.get("dut_board") != board.get("name"):
        out.append(Problem("board", "dut_board", f"{show(jig.get('dut_board'))} is not the board defined in "
                                                 f"board.json ({show(board.get('name'))})"))
    inputs = board.get("inputs", {})
    used: dict[int, str] = {}

    def pin(value: Any, where: str, adc: bool = False) -> None:
        if type(value) is not int:
            out.append(Problem("pin", where, f"pin must be a GPIO number, not {show(value)}"))
            return
        if value in MCU_RESERVED[mcu]:
            out.append(Problem("pin", where, f"GP{value} is the Pico's own ({MCU_RESERVED[mcu][value]})"))
        elif value not in MCU_GPIOS[mcu]:
            out.append(Problem("pin", where, f"GP{value} is not a GPIO of the {mcu} on the header"))
        if adc and value not in MCU_ADC[mcu]:
            out.append(Problem("adc", where, f"GP{value} has no ADC: use one of "
                                             f"{', '.join(f'GP{p}' for p in sorted(MCU_ADC[mcu]))}"))
        if value in used:
            out.append(Problem("pin-twice", where, f"GP{value} is already {used[value]}"))
        else:
            used[value] = where

    def obj(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            out.append(Problem("structure", where, f"expected an object, got {show(value)[:40]}"))
            return {}
        return value

    def board_input(ch: str, where: str) -> dict[str, Any] | None:
        if ch not in inputs:
            out.append(Problem("input", where, f"no input {ch!r} on board {board.get('name')} "
                                               f"(inputs: {', '.join(inputs)})"))
            return None
        return inputs[ch]

    for ch, spec in obj(jig.get("contacts", {}), "contacts").items():
        board_input(ch, f"contacts.{ch}")
        pin(obj(spec, f"contacts.{ch}").get("pin"), f"contacts.{ch}.pin")

    dut = obj(jig.get("dut", {}), "dut")
    pullup = dut.get("eol_pullup_ohm")
    pullup_tol = dut.get("eol_pullup_tolerance", 0.05)
    eol = board.get("eol", {})
    bands = eol_bands(eol) if all(k in eol for k in ("short_max", "active_max", "normal_max")) else None
    for ch, spec in obj(jig.get("eol", {}), "eol").items():
        where = f"eol.{ch}"
        spec = obj(spec, where)
        b = board_input(ch, where)
        if b is not None and not b.get("adc"):
            out.append(Problem("eol-input", where, f"{ch} is read as a digital input on the board: an EOL "
                                                   f"network there cannot give four states"))
        if ch in jig.get("contacts", {}):
            out.append(Problem("pin-twice", where, f"{ch} is driven both by a contact and an EOL network"))
        for sw in ("connect", "alarm", "short"):
            pin(spec.get(sw), f"{where}.{sw}")
        values = [spec.get("r_eol"), spec.get("r_alarm"), spec.get("tolerance", 0.05)]
        if not all(_is_num(v) and v > 0 for v in values[:2]) or not (_is_num(values[2]) and 0 <= values[2] < 0.5):
            out.append(Problem("resistor", where, f"r_eol and r_alarm must be ohms > 0 and tolerance a fraction "
                                                  f"below 0.5, not {show(values)}"))
            continue
        if not (_is_num(pullup) and pullup > 0):
            out.append(Problem("resistor", "dut.eol_pullup_ohm", f"the device's pull-up must be ohms > 0, "
                                                                 f"not {show(pullup)}"))
            continue
        if bands is None:
            out.append(Problem("board", "eol", "board.json has no EOL thresholds to check the networks against"))
            continue
        for state in EOL_STATES:
            lo, hi = count_range(state, spec, pullup, pullup_tol)
            blo, bhi = bands[state]
            if lo < blo or hi > bhi:
                out.append(Problem("band", f"{where}.{state}",
                                   f"reads {lo}..{hi} with r_eol {spec['r_eol']:g}, r_alarm {spec['r_alarm']:g} "
                                   f"±{spec.get('tolerance', 0.05):.0%} behind {pullup:g} ±{pullup_tol:.0%}: "
                                   f"outside the board's {state} band {blo}..{bhi}"))

    for key in ("power", "en", "boot"):
        if key not in jig:
            continue
        spec = obj(jig[key], key)
        pin(spec.get("pin"), f"{key}.pin")
        if "active_high" in spec and not isinstance(spec["active_high"], bool):
            out.append(Problem("structure", f"{key}.active_high", f"true or false, not {show(spec['active_high'])}"))
    power = jig.get("power")
    if isinstance(power, dict):
        if "sense" in power:
            pin(power["sense"], "power.sense", adc=True)
        on_mv, off_mv = power.get("on_mv", 2800), power.get("off_mv", 500)
        if not (_is_num(on_mv) and _is_num(off_mv) and 0 <= off_mv < on_mv <= 3300):
            out.append(Problem("power", "power", f"need 0 <= off_mv < on_mv <= 3300, not {off_mv}, {on_mv}"))
        settle = power.get("settle_ms", 2000)
        if type(settle) is not int or not 1 <= settle <= 10000:
            out.append(Problem("power", "power.settle_ms", f"1..10000 ms, not {show(settle)}"))
        if power.get("default", "off") not in ("on", "off"):
            out.append(Problem("power", "power.default", f"\"on\" or \"off\", not {show(power.get('default'))}"))

    outputs = board.get("outputs", {})
    for name, p in obj(jig.get("sense", {}), "sense").items():
        if name not in outputs:
            out.append(Problem("output", f"sense.{name}", f"no output {name!r} on the board "
                                                          f"(outputs: {', '.join(outputs)})"))
        pin(p, f"sense.{name}")
    return out


def warnings(jig: dict[str, Any], board: dict[str, Any]) -> list[str]:
    """What the jig does not reach: the scenarios that need it are skipped on this jig."""
    reached = set(jig.get("contacts", {})) | set(jig.get("eol", {}))
    out = [f"{ch} ({spec.get('label', '')}) is not wired to the jig" for ch, spec in board.get("inputs", {}).items()
           if ch not in reached]
    for key, what in (("power", "power cuts"), ("en", "the reset button"), ("sense", "LED and buzzer reads")):
        if not jig.get(key):
            out.append(f"no {key}: scenarios needing {what} are skipped")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    jig_path = Path(args[0]) if args else JIG_JSON
    board_path = Path(args[1]) if len(args) > 1 else BOARD_JSON
    docs = []
    for path in (jig_path, board_path):
        doc = load_or_say(path)
        if doc is None:
            return 2
        docs.append(doc)
    jig, board = docs
    problems = check(jig, board)
    for p in problems:
        print(f"{jig_path.name}: {p}  [{p.rule}]")
    if not problems:
        for w in warnings(jig, board):
            print(f"{jig_path.name}: note: {w}")
        print(f"{jig_path.name}: no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
