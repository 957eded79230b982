"""Checks a board definition (hardware/boards/*.json) against its ESP32 module's pin facts.

    python -m firelink.board.boardcheck [BOARD | BOARD_JSON ...]  # every board by default; exit status 1 if any problem

`check(board)` returns a list of `Problem`s: the rule broken, where in the file (`inputs.in6`,
`modem.tx`, `default_inputs[2].kind`) and what is wrong, in words a board designer can act on.
A board that passes can be built as defined: no pin does two jobs, none is one the chip needs
at reset or for its flash, every pull-up the firmware relies on exists, every analog reading
works while Wi-Fi runs, and the default inputs are ones the firmware accepts.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firelink.board import boards
from firelink.board.build import BOARD_JSON

# --- ESP32 / ESP32-WROOM-32 facts -------------------------------------------------------------
# Sources: Espressif "ESP32 Series Datasheet", chapter Pins (pin list and its notes, Strapping
# Pins, DC characteristics); "ESP32-WROOM-32 Datasheet", Pin Definitions; ESP-IDF Programming
# Guide for the ESP32: "GPIO & RTC GPIO" (the pin table and its notes) and "ADC Oneshot Mode
# Driver" (hardware limitations; input range per attenuation).

# GPIOs the module brings out. The chip has no GPIO 20, 24 or 28-31, and the WROOM-32 does not
# bring out GPIO 37 and 38 (WROOM-32 datasheet, pin definitions).
MODULE_GPIOS = frozenset([*range(20), 21, 22, 23, 25, 26, 27, 32, 33, 34, 35, 36, 39])
# Sampled at reset (ESP32 datasheet, Strapping Pins): whatever is wired to one can stop the board
# booting, put it in download mode or change its flash voltage. (GPIO 4 is latched in the strap
# register too, but the datasheet gives it no boot function.)
STRAPPING = {0: "boot mode", 2: "boot mode, with GPIO 0", 5: "SDIO timing", 12: "flash voltage (MTDI)",
             15: "boot messages and SDIO timing (MTDO)"}
# Wired inside the module to its SPI flash (WROOM-32 datasheet; ESP-IDF GPIO guide, "SPI0/1").
FLASH = frozenset(range(6, 12))
# UART0: the ROM bootloader, esptool and the MicroPython REPL (ESP-IDF GPIO guide: "TXD & RXD
# are usually used for flashing and debugging"); the USB-serial bridge is wired to them, and
# `firelink flash` and `firelink provision` talk through them.
CONSOLE = {1: "UART0 TX", 3: "UART0 RX"}
# "GPI": input only, no output driver, no internal pull-up or pull-down (ESP32 datasheet and
# ESP-IDF GPIO guide, notes to the pin table).
INPUT_ONLY = frozenset(range(34, 40))
# ADC1 channel of each GPIO (ESP-IDF GPIO guide, pin table). ADC2 (GPIO 0, 2, 4, 12-15, 25-27)
# is taken by the Wi-Fi driver and cannot be read while Wi-Fi runs (ESP-IDF ADC guide, hardware
# limitations): every analog input must be on ADC1.
ADC1_CHANNEL = {36: 0, 37: 1, 38: 2, 39: 3, 32: 4, 33: 5, 34: 6, 35: 7}
# Internal pull-up resistance, typical (ESP32 datasheet, DC characteristics: R_PU 45 kOhm).
INTERNAL_PULL_KOHM = 45
# The firmware's 12-bit scale: fl/hal/esp32.py reads read_u16() >> 4, attenuation 11 dB.
ADC_MAX = 4095
# What the ADC reads without bending or clipping at 11 dB (ESP-IDF ADC guide, ESP32: 150-2450 mV).
ADC_RANGE_MV = (150, 2450)
# UART 0 is the console; the ESP32 has UART 1 and 2 to route to any pins through the GPIO matrix.
MODEM_UARTS = (1, 2)

# The modules FireLink boards use, and the GPIOs each one keeps for itself. ESP32-WROVER modules
# wire GPIO 16 and 17 to their PSRAM (Espressif "ESP32-WROVER-E Datasheet", pin definitions and
# the note on PSRAM; MicroPython's ESP32_GENERIC SPIRAM firmware turns the PSRAM on at boot).


@dataclass(frozen=True)
class Module:
    name: str
    gpios: frozenset[int]  # the GPIOs the module brings out
    taken: dict[int, str] = field(default_factory=dict)  # GPIO -> what inside the module uses it
    psram: bool = False


MODULES = {
    "ESP32-WROOM-32": Module("ESP32-WROOM-32", MODULE_GPIOS),
    "ESP32-WROVER-E": Module("ESP32-WROVER-E", MODULE_GPIOS, {16: "PSRAM", 17: "PSRAM"}, psram=True),
}
# ESP32 errata (Espressif "ESP32 Series SoC Errata", item 3.11): when an RTC peripheral powers up
# (Wi-Fi, the ADC, the touch or Hall sensor), GPIO 36 and 39 are pulled low for about 80 ns, so
# an interrupt on either sees edges that never happened. The firmware watches digital inputs
# with pin interrupts (fl/hal/esp32.py); analog (adc: true) inputs are polled and are fine there.
NO_IRQ = {36: "SENSOR_VP", 39: "SENSOR_VN"}

# --- SIMCom A7670 facts (SIMCom "A7670 Series Hardware Design", power-on/off and reset) --------
PWRKEY_ON_MS = (50, 2499)     # low >= 50 ms switches it on; >= 2.5 s would switch a running module off
PWRKEY_OFF_MIN_MS = 2500      # low >= 2.5 s switches it off
RESET_MS = (2000, 2500)       # RESET low 2-2.5 s, only when the module no longer answers

# --- What the firmware accepts (fl/config.py; a test runs the firmware's validator to keep these equal)
KINDS = ("fire", "smoke", "heat", "manual", "supervisory", "fault", "mains", "battery", "tamper")
CONTACTS = ("no", "nc")
PULLS = ("internal", "external")  # fl/hal/esp32.py: "internal" -> Pin.PULL_UP, otherwise none
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
NAME_LEN = (1, 24)
ZONES = (0, 999)
EOL_STATES = ("short", "active", "normal", "open")

# Rule ids, each with what it protects; a Problem names one.
RULES = {
    "structure": "each section has the keys and types the firmware reads",
    "module": "the board names a module boardcheck knows the pin facts of",
    "module-pin": "the GPIO exists on the board's module",
    "psram": "no pin the module's PSRAM uses (GPIO 16 and 17 on WROVER modules)",
    "irq-pin": "no digital (interrupt) input on GPIO 36 or 39 (ESP32 errata 3.11)",
    "pin-once": "each GPIO does one job",
    "strapping": "no strapping pin",
    "flash": "no pin of the module's SPI flash",
    "console": "no pin of the USB serial console",
    "pull": "pull is internal or external; never internal on an input-only pin",
    "adc1": "analog readings only on ADC1, which works while Wi-Fi runs",
    "eol-pull": "an EOL-capable channel has the circuit's external pull-up",
    "output-pin": "nothing the ESP32 drives is on an input-only pin",
    "battery": "battery thresholds ordered and inside the ADC's range",
    "eol-thresholds": "EOL thresholds rise inside the 12-bit scale",
    "eol-nominal": "each nominal EOL reading lies inside its own band",
    "modem": "modem UART usable; PWRKEY and RESET timings inside the A7670's windows",
    "default-channel": "each default input uses an existing channel, once",
    "default-input": "default inputs have valid, unique names and zones, valid kinds and contacts",
    "default-eol": "eol only on a channel with an ADC, with a normally open contact",
}


@dataclass(frozen=True)
class Problem:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Pin:
    """One GPIO the board uses: where board.json defines it and whether the ESP32 drives it."""
    where: str
    gpio: int
    output: bool


def show(value: Any) -> str:
    """A JSON value as it appears in the file."""
    return json.dumps(value)


def _is_int(v: Any) -> bool:
    return type(v) is int  # not bool, which JSON true/false become


def _obj(board: dict[str, Any], key: str, out: list[Problem], where: str | None = None) -> dict[str, Any] | None:
    v = board.get(key)
    if isinstance(v, dict):
        return v
    where = where or key
    out.append(Problem("structure", where, "missing" if v is None else f"expected an object, got {show(v)}"))
    return None


def _int(spec: dict[str, Any], key: str, where: str, out: list[Problem]) -> int | None:
    v = spec.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    out.append(Problem("structure", f"{where}.{key}",
                       "missing" if v is None else f"expected an integer, got {show(v)}"))
    return None


def _bool(spec: dict[str, Any], key: str, where: str, out: list[Problem]) -> bool | None:
    v = spec.get(key)
    if type(v) is bool:
        return v
    out.append(Problem("structure", f"{where}.{key}",
                       "missing" if v is None else f"expected true or false, got {show(v)}"))
    return None


def _collect_pins(board: dict[str, Any], out: list[Problem]) -> list[Pin]:
    pins: list[Pin] = []

    def add(spec: dict[str, Any], owner: str, key: str, where: str, output: bool) -> None:
        gpio = _int(spec, key, owner, out)
        if gpio is not None:
            pins.append(Pin(where, gpio, output))

    inputs = _obj(board, "inputs", out)
    for ch, spec in (inputs or {}).items():
        if isinstance(spec, dict):
            add(spec, f"inputs.{ch}", "gpio", f"inputs.{ch}", False)
        else:
            out.append(Problem("structure", f"inputs.{ch}", f"expected an object, got {show(spec)}"))
    battery = _obj(board, "battery", out)
    if battery is not None:
        add(battery, "battery", "gpio", "battery", False)
    outputs = _obj(board, "outputs", out)
    for name, spec in (outputs or {}).items():
        if isinstance(spec, dict):
            add(spec, f"outputs.{name}", "gpio", f"outputs.{name}", True)
        else:
            out.append(Problem("structure", f"outputs.{name}", f"expected an object, got {show(spec)}"))
    modem = _obj(board, "modem", out)
    if modem is not None:
        add(modem, "modem", "tx", "modem.tx", True)
        add(modem, "modem", "rx", "modem.rx", False)
        for line in ("pwrkey", "reset"):
            spec = _obj(modem, line, out, f"modem.{line}")
            if spec is not None:
                add(spec, f"modem.{line}", "gpio", f"modem.{line}", True)
    return pins


def pins(board: dict[str, Any]) -> list[Pin]:
    """Every GPIO the board uses, in file order (entries too broken to read are left out)."""
    return _collect_pins(board, [])


def adc_channel(gpio: int) -> str | None:
    """`ADC1_CH4` for GPIO 32; None off ADC1."""
    ch = ADC1_CHANNEL.get(gpio)
    return None if ch is None else f"ADC1_CH{ch}"


def module_of(board: dict[str, Any]) -> Module | None:
    """The board's module (its `module` key), None when boardcheck does not know it."""
    return MODULES.get(board.get("module"))  # type: ignore[arg-type]


def _check_module(board: dict[str, Any], out: list[Problem]) -> Module:
    module = module_of(board)
    if module is None:
        out.append(Problem("module", "module", f"expected one of {', '.join(MODULES)}, got {show(board.get('module'))}; "
                                               "its pins are checked as an ESP32-WROOM-32's"))
        return MODULES["ESP32-WROOM-32"]
    return module


def _check_pins(used: list[Pin], module: Module, out: list[Problem]) -> None:
    by_gpio: dict[int, list[str]] = {}
    for p in used:
        by_gpio.setdefault(p.gpio, []).append(p.where)
        if p.gpio not in module.gpios:
            out.append(Problem("module-pin", p.where, f"GPIO {p.gpio} is not a pin of the {module.name}"))
        elif p.gpio in module.taken:
            out.append(Problem("psram", p.where, f"GPIO {p.gpio} is wired to the {module.name}'s {module.taken[p.gpio]} "
                                                 f"(GPIO {' and '.join(str(g) for g in sorted(module.taken))} are "
                                                 "taken inside the module): use another pin"))
        elif p.gpio in STRAPPING:
            out.append(Problem("strapping", p.where, f"GPIO {p.gpio} is a strapping pin ({STRAPPING[p.gpio]}): "
                                                     "a circuit on it can stop the board booting; use another pin"))
        elif p.gpio in FLASH:
            out.append(Problem("flash", p.where, f"GPIO {p.gpio} is wired to the module's SPI flash (GPIO 6-11)"))
        elif p.gpio in CONSOLE:
            out.append(Problem("console", p.where, f"GPIO {p.gpio} is {CONSOLE[p.gpio]}, the USB serial console "
                                                   "that flashing, provisioning and the REPL use"))
        elif p.output and p.gpio in INPUT_ONLY:
            out.append(Problem("output-pin", p.where, f"GPIO {p.gpio} is input-only (GPIO 34-39) and cannot "
                                                      "drive an output"))
    for gpio, users in by_gpio.items():
        if len(users) > 1:
            out.append(Problem("pin-once", f"GPIO {gpio}", f"used by {' and '.join(users)}; each pin does one job"))


def _check_inputs(board: dict[str, Any], out: list[Problem]) -> None:
    inputs = board.get("inputs")
    if not isinstance(inputs, dict):
        return
    for ch, spec in inputs.items():
        if not isinstance(spec, dict) or not _is_int(spec.get("gpio")):
            continue
        where, gpio = f"inputs.{ch}", spec["gpio"]
        pull, adc = spec.get("pull"), spec.get("adc", False)
        pull_ok = pull in PULLS and not (pull == "internal" and gpio in INPUT_ONLY)
        if pull not in PULLS:
            out.append(Problem("pull", f"{where}.pull", f'expected "internal" or "external", got {show(pull)}'))
        elif not pull_ok:
            out.append(Problem("pull", where, f'GPIO {gpio} is input-only and has no internal pull-up: with pull '
                                              '"internal" the input floats; fit a pull-up and write "external"'))
        if adc is False and gpio in NO_IRQ:
            out.append(Problem("irq-pin", where, f"GPIO {gpio} ({NO_IRQ[gpio]}) as a digital input is watched with a pin "
                                                 "interrupt, and ESP32 errata 3.11 gives GPIO 36 and 39 false edges "
                                                 "(an 80 ns pull-down) whenever Wi-Fi or the ADC powers up: use another "
                                                 "pin, or wire it as an analog (adc: true) input, which is polled"))
        if type(adc) is not bool:
            out.append(Problem("structure", f"{where}.adc", f"expected true or false, got {show(adc)}"))
        elif adc and gpio not in ADC1_CHANNEL:
            out.append(Problem("adc1", where, f"adc: true on GPIO {gpio}, which is not on ADC1 (GPIO 32-39): "
                                              "ADC2 cannot be read while Wi-Fi runs"))
        elif adc and pull == "internal" and pull_ok:
            out.append(Problem("eol-pull", where, f"adc: true with pull \"internal\": the eol thresholds assume the "
                                                  f"circuit's pull-up, not the chip's {INTERNAL_PULL_KOHM} kOhm one "
                                                  "(a normal line would read as active); fit the circuit's pull-up "
                                                  'and write "external", or write adc: false'))


def _check_battery(board: dict[str, Any], out: list[Problem]) -> None:
    bat = board.get("battery")
    if not isinstance(bat, dict):
        return
    gpio = bat.get("gpio")
    if _is_int(gpio) and gpio not in ADC1_CHANNEL:
        out.append(Problem("adc1", "battery", f"GPIO {gpio} is not on ADC1 (GPIO 32-39): ADC2 cannot be read "
                                              "while Wi-Fi runs"))
    raw_divider = bat.get("divider")
    divider: float | None = None
    if isinstance(raw_divider, (int, float)) and not isinstance(raw_divider, bool) and raw_divider >= 1:
        divider = float(raw_divider)
    else:
        out.append(Problem("structure", "battery.divider", f"expected a number >= 1 (battery voltage / ADC pin "
                                                           f"voltage), got {show(raw_divider)}"))
    low, missing = _int(bat, "low_mv", "battery", out), _int(bat, "missing_mv", "battery", out)
    if low is None or missing is None:
        return
    if not 0 < missing < low:
        out.append(Problem("battery", "battery", f"expected 0 < missing_mv < low_mv, got missing_mv {missing}, "
                                                 f"low_mv {low}"))
    if divider is not None:
        lo, hi = ADC_RANGE_MV
        for key, mv in (("low_mv", low), ("missing_mv", missing)):
            at_pin = mv / divider
            if not lo <= at_pin <= hi:
                out.append(Problem("battery", f"battery.{key}", f"{mv} mV reaches the ADC as {at_pin:.0f} mV, "
                                                                f"outside the {lo}-{hi} mV it reads reliably"))


def eol_bands(eol: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Raw reading range (inclusive) of each EOL state, as fl/inputs.py classifies: below
    short_max short, below active_max active, below normal_max normal, else open."""
    s, a, n = eol["short_max"], eol["active_max"], eol["normal_max"]
    return {"short": (0, s - 1), "active": (s, a - 1), "normal": (a, n - 1), "open": (n, ADC_MAX)}


def _check_eol(board: dict[str, Any], out: list[Problem]) -> None:
    eol = _obj(board, "eol", out)
    if eol is None:
        return
    s, a, n = (_int(eol, k, "eol", out) for k in ("short_max", "active_max", "normal_max"))
    if s is None or a is None or n is None:
        return
    if not (0 < s < a < n <= ADC_MAX):
        out.append(Problem("eol-thresholds", "eol", f"expected 0 < short_max < active_max < normal_max <= {ADC_MAX}, "
                                                    f"got short_max {s}, active_max {a}, normal_max {n}"))
        return
    nominal = _obj(eol, "nominal", out, "eol.nominal")
    if nominal is None:
        return
    bands = eol_bands(eol)
    for state in EOL_STATES:
        v = _int(nominal, state, "eol.nominal", out)
        if v is None:
            continue
        lo, hi = bands[state]
        if not lo <= v <= hi:
            read_as = next((st for st, (b_lo, b_hi) in bands.items() if b_lo <= v <= b_hi), "out of range")
            out.append(Problem("eol-nominal", f"eol.nominal.{state}", f"{v} is outside the {state} band {lo}..{hi} "
                                                                      f"(it reads as {read_as})"))


def _check_modem(board: dict[str, Any], out: list[Problem]) -> None:
    modem = board.get("modem")
    if not isinstance(modem, dict):
        return
    uart = modem.get("uart")
    if uart not in MODEM_UARTS or not _is_int(uart):
        out.append(Problem("modem", "modem.uart", f"expected 1 or 2 (UART 0 is the console), got {show(uart)}"))
    baud = _int(modem, "baud", "modem", out)
    if baud is not None and baud <= 0:
        out.append(Problem("modem", "modem.baud", f"expected a positive integer, got {baud}"))
    windows = (("pwrkey", "on_ms", PWRKEY_ON_MS, "PWRKEY low >= 50 ms switches it on, >= 2.5 s switches it off"),
               ("pwrkey", "off_ms", (PWRKEY_OFF_MIN_MS, 10000), "PWRKEY low >= 2.5 s switches it off"),
               ("reset", "pulse_ms", RESET_MS, "RESET low 2-2.5 s"))
    for line, key, (lo, hi), why in windows:
        spec = modem.get(line)
        if not isinstance(spec, dict):
            continue
        if key != "off_ms":  # one polarity check per line
            _bool(spec, "active_low", f"modem.{line}", out)
        v = _int(spec, key, f"modem.{line}", out)
        if v is not None and not lo <= v <= hi:
            out.append(Problem("modem", f"modem.{line}.{key}", f"expected {lo}..{hi} ms (A7670: {why}), got {v}"))


def _check_default_inputs(board: dict[str, Any], out: list[Problem]) -> None:
    entries = board.get("default_inputs")
    if not isinstance(entries, list) or not entries:
        out.append(Problem("structure", "default_inputs", f"expected a non-empty list, got {show(entries)}"))
        return
    inputs = board.get("inputs")
    channels: dict[str, Any] = inputs if isinstance(inputs, dict) else {}
    seen: dict[str, dict[Any, int]] = {"name": {}, "zone": {}, "channel": {}}
    for i, e in enumerate(entries):
        p = f"default_inputs[{i}]"
        if not isinstance(e, dict):
            out.append(Problem("structure", p, f"expected an object, got {show(e)}"))
            continue
        name, kind = e.get("name"), e.get("kind")
        ch = e.get("channel", "battery" if kind == "battery" else None)
        contact, zone, eol = e.get("contact", "no"), e.get("zone", i + 1), e.get("eol", False)
        if type(name) is not str or not NAME_LEN[0] <= len(name) <= NAME_LEN[1] or not set(name) <= NAME_CHARS:
            out.append(Problem("default-input", f"{p}.name",
                               f"expected 1..24 characters from a-z 0-9 _, got {show(name)}"))
        if kind not in KINDS:
            out.append(Problem("default-input", f"{p}.kind",
                               f"expected one of {', '.join(KINDS)}, got {show(kind)}"))
        if contact not in CONTACTS:
            out.append(Problem("default-input", f"{p}.contact", f'expected "no" or "nc", got {show(contact)}'))
        if not _is_int(zone) or not ZONES[0] <= zone <= ZONES[1]:
            out.append(Problem("default-input", f"{p}.zone", f"expected an integer 0..999, got {show(zone)}"))
        if kind == "battery":
            if ch != "battery":
                out.append(Problem("default-channel", f"{p}.channel",
                                   f'expected "battery" for kind battery, got {show(ch)}'))
        elif type(ch) is not str or ch not in channels:
            out.append(Problem("default-channel", f"{p}.channel",
                               f"expected a channel of inputs ({', '.join(sorted(channels))}), got {show(ch)}"))
        spec_ch = channels.get(ch) if type(ch) is str else None
        if eol is False and kind != "battery" and isinstance(spec_ch, dict) and spec_ch.get("gpio") in NO_IRQ:
            out.append(Problem("irq-pin", f"{p}.eol", f"channel {ch} is GPIO {spec_ch['gpio']}: without eol the input is "
                                                      "digital, watched with a pin interrupt, and ESP32 errata 3.11 gives "
                                                      "GPIO 36 and 39 false edges whenever Wi-Fi or the ADC powers up"))
        if type(eol) is not bool:
            out.append(Problem("default-eol", f"{p}.eol", f"expected true or false, got {show(eol)}"))
        elif eol:
            spec = channels.get(ch) if type(ch) is str and kind != "battery" else None
            if not (isinstance(spec, dict) and spec.get("adc") is True):
                out.append(Problem("default-eol", f"{p}.eol", f"channel {ch} has no ADC: eol needs adc: true"))
            elif contact == "nc":
                out.append(Problem("default-eol", f"{p}.contact", 'eol needs "no": the end-of-line circuit switches '
                                                                  "the alarm resistor in when the contact closes"))
        for key, value in (("name", name), ("zone", zone), ("channel", ch)):
            if type(value) not in (str, int):
                continue
            if value in seen[key]:
                rule = "default-channel" if key == "channel" else "default-input"
                out.append(Problem(rule, f"{p}.{key}",
                                   f"{show(value)} already used by default_inputs[{seen[key][value]}]"))
            else:
                seen[key][value] = i


def check(board: Any) -> list[Problem]:
    """Every problem found in a parsed board.json; [] when the board can be built as defined."""
    if not isinstance(board, dict):
        return [Problem("structure", "board.json", f"expected a JSON object, got {show(board)[:40]}")]
    out: list[Problem] = []
    module = _check_module(board, out)
    _check_pins(_collect_pins(board, out), module, out)
    _check_inputs(board, out)
    _check_battery(board, out)
    _check_eol(board, out)
    _check_modem(board, out)
    _check_default_inputs(board, out)
    return out


def load(path: Path = BOARD_JSON) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_or_say(path: Path) -> Any:
    """The definition at `path` for a checker's command line; None once it has said, on stderr,
    why it cannot be read (the checkers then exit 2)."""
    try:
        return load(path)
    except OSError as e:
        print(f"{path}: cannot read: {e.strerror or e}", file=sys.stderr)
    except ValueError as e:
        print(f"{path}: not valid JSON: {e}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = 0
    for arg in args or boards.names():
        path = Path(arg) if arg.endswith(".json") else None
        try:
            path = path or boards.path(arg)
        except boards.BoardError as e:
            print(str(e), file=sys.stderr)
            return 2
        board = load_or_say(path)
        if board is None:
            return 2
        problems = check(board)
        for p in problems:
            print(f"{path.name}: {p}  [{p.rule}]")
        if not problems:
            print(f"{path.name}: no problems")
        status = max(status, 1 if problems else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
