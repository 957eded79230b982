"""Renders a board definition as Markdown: the pin map and wiring tables of one board.

    python -m firelink.board.boarddoc BOARD > hardware/pinmap-BOARD.md     # from the repository root
    python -m firelink.board.boarddoc --write                              # every board's pin map

hardware/boards/<board>.json is the one place pin numbers are written; hardware/pinmap-<board>.md
is this module's output, and tests/host/test_board.py fails when the two disagree. The output depends on nothing but the
file (no dates, no paths), so rendering the same board twice gives the same bytes.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firelink.board import boardcheck, boards
from firelink.board.boardcheck import ADC_MAX, CONSOLE, FLASH, INPUT_ONLY, MODULE_GPIOS, STRAPPING, adc_channel

COMMAND = ".venv/bin/python -m firelink.board.boarddoc --write"
HARDWARE = boards.REPO / "hardware"


def pinmap_path(name: str) -> Path:
    return HARDWARE / f"pinmap-{name}.md"
# The scale used to show ADC readings as voltages: full scale = the 3.3 V rail the EOL pull-up is
# fed from, which is what the board's nominal readings assume. The uncalibrated ESP32 ADC at 11 dB
# differs from this by a few percent from part to part and bends above ~2.45 V, which is why the
# bands are wide; read them as a guide for a multimeter, not as calibration.
FULL_SCALE_MV = 3300


class BoardDocError(Exception):
    """board.json is too broken to render (its structure problems are in the message)."""


@dataclass(frozen=True)
class DefaultInput:
    index: int
    name: str
    kind: str
    channel: str
    contact: str
    zone: int
    eol: bool

    def describe(self) -> str:
        eol = ", EOL" if self.eol else ""
        contact = "" if self.kind == "battery" else f", {self.contact.upper()}"
        return f"`{self.name}` ({self.kind}{contact}, zone {self.zone}{eol})"


def default_inputs(board: dict[str, Any]) -> dict[str, DefaultInput]:
    """The board's default inputs by channel, with the firmware's defaults filled in
    (contact "no", zone = position + 1, eol false)."""
    found: dict[str, DefaultInput] = {}
    for i, e in enumerate(board.get("default_inputs", [])):
        d = DefaultInput(i, e["name"], e["kind"], e.get("channel", "battery"), e.get("contact", "no"),
                         e.get("zone", i + 1), e.get("eol", False))
        found.setdefault(d.channel, d)
    return found


def mv(raw: float) -> str:
    """A 12-bit reading as volts on the FULL_SCALE_MV scale."""
    return f"{raw * FULL_SCALE_MV / ADC_MAX / 1000:.2f} V"


def _cell(v: object) -> str:
    return str(v).replace("|", "\\|")


def table(head: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _gpios(nums: list[int] | frozenset[int]) -> str:
    return ", ".join(str(n) for n in sorted(nums))


def _pin_rows(board: dict[str, Any], defaults: dict[str, DefaultInput]) -> list[list[object]]:
    inputs, modem = board["inputs"], board["modem"]
    uart = f"UART{modem['uart']}"
    rows: list[tuple[int, list[object]]] = []
    for pin in boardcheck.pins(board):
        section, _, name = pin.where.partition(".")
        if section == "inputs":
            spec = inputs[name]
            d = defaults.get(name)
            adc = adc_channel(pin.gpio) if spec.get("adc") else None
            row: list[object] = [pin.gpio, f"input {name}", "in", spec["pull"], adc or "—", spec["label"],
                                 d.describe() if d else "—"]
        elif section == "battery":
            d = defaults.get("battery")
            row = [pin.gpio, "battery voltage", "in (analog)", "divider", adc_channel(pin.gpio) or "—",
                   board["battery"]["label"], d.describe() if d else "—"]
        elif section == "outputs":
            level = "high" if board["outputs"][name].get("active_high", True) else "low"
            row = [pin.gpio, f"output {name}", "out", "—", "—", f"on = {level}", "—"]
        else:
            what = {"tx": f"modem TX ({uart})", "rx": f"modem RX ({uart})", "pwrkey": "modem PWRKEY",
                    "reset": "modem RESET"}[name]
            label = {"tx": "to the modem's RXD through the level shifter",
                     "rx": "from the modem's TXD through the level shifter"}.get(name)
            if label is None:
                label = "active low" if modem[name].get("active_low") else "active high"
            row = [pin.gpio, what, "out" if pin.output else "in", "—", "—", label, "—"]
        rows.append((pin.gpio, row))
    return [r for _, r in sorted(rows, key=lambda t: t[0])]


def _inputs_section(board: dict[str, Any], defaults: dict[str, DefaultInput]) -> list[str]:
    rows: list[list[object]] = []
    for ch, spec in board["inputs"].items():
        d = defaults.get(ch)
        adc = adc_channel(spec["gpio"]) if spec.get("adc") else None
        rows.append([ch, spec["gpio"], spec["pull"], adc or "—", "yes" if adc else "no", spec["label"],
                     f"`{d.name}`" if d else "—", d.kind if d else "—",
                     (d.contact.upper() if d.kind != "battery" else "—") if d else "—",
                     d.zone if d else "—", ("yes" if d.eol else "no") if d else "—"])
    spare = [str(r[0]) for r in rows if r[6] == "—"]
    out = ["## Inputs", "",
           ("Each channel with the default input the firmware watches on it when config.json names none "
           "(docs/config.md). NO: active when the contact closes; NC: active when it opens. A channel is "
           "EOL capable when board.json gives it an ADC (`adc: true`): only there may an input set `eol`."), ""]
    out += table(["channel", "GPIO", "pull", "ADC", "EOL capable", "label", "default input", "kind", "contact",
                  "zone", "eol"], rows)
    if spare:
        out += ["", f"Channels without a default input: {', '.join(spare)} (free for a configured input)."]
    bat = defaults.get("battery")
    if bat:
        out += ["", f"The battery is watched as {bat.describe()} on its own ADC pin (below)."]
    return out


def _battery_section(board: dict[str, Any]) -> list[str]:
    bat = board["battery"]
    div = bat["divider"]
    rows: list[list[object]] = [
        ["ADC pin", f"GPIO {bat['gpio']} ({adc_channel(bat['gpio']) or 'not ADC1'})"],
        ["divider", f"{div:g} (battery voltage = {div:g} × pin voltage)"],
        ["low (battery fault, event 302)", (f"{bat['low_mv']} mV ({bat['low_mv'] / div:.0f} mV at the pin); "
                                           "normal again 100 mV above")],
        ["missing", f"{bat['missing_mv']} mV ({bat['missing_mv'] / div:.0f} mV at the pin)"],
        ["label", bat["label"]],
    ]
    return ["## Battery", ""] + table(["", "value"], rows)


def _outputs_section(board: dict[str, Any]) -> list[str]:
    rows: list[list[object]] = [[name, spec["gpio"], "high" if spec.get("active_high", True) else "low"]
                                for name, spec in board["outputs"].items()]
    return ["## Outputs", ""] + table(["output", "GPIO", "on ="], rows)


def _modem_section(board: dict[str, Any]) -> list[str]:
    m = board["modem"]
    pk, rs = m["pwrkey"], m["reset"]

    def level(spec: dict[str, Any]) -> str:
        return "active low (the GPIO drives low to assert)" if spec.get("active_low") else \
            "active high (the GPIO drives high to assert)"

    rows: list[list[object]] = [
        ["TX", m["tx"], "ESP32 → modem RXD", f"3.3 V ↔ {m['logic_v']:g} V level shifter", "—"],
        ["RX", m["rx"], "modem TXD → ESP32", f"{m['logic_v']:g} V ↔ 3.3 V level shifter", "—"],
        ["PWRKEY", pk["gpio"], "ESP32 → modem", level(pk),
         f"on: assert {pk['on_ms']} ms; off: assert {pk['off_ms']} ms"],
        ["RESET", rs["gpio"], "ESP32 → modem", level(rs),
         f"assert {rs['pulse_ms']} ms, only when it no longer answers"],
    ]
    return ["## 4G modem (SIMCom A7670)", "",
            (f"UART{m['uart']}, {m['baud']} baud 8N1, no flow control. The modem's logic is {m['logic_v']:g} V "
            "and the ESP32's 3.3 V: every signal between them goes through a level shifter, whose polarity is "
            "the one written here (the firmware asserts each line as board.json says)."), ""] + \
        table(["signal", "GPIO", "direction", "level", "timing"], rows)


def _eol_section(board: dict[str, Any]) -> list[str]:
    eol = board["eol"]
    bands = boardcheck.eol_bands(eol)
    nominal = eol.get("nominal", {})
    rows: list[list[object]] = []
    for state in boardcheck.EOL_STATES:
        lo, hi = bands[state]
        nom = nominal.get(state)
        rows.append([state, f"{lo}–{hi}", f"{mv(lo)} – {mv(hi)}",
                     "—" if nom is None else nom, "—" if nom is None else mv(nom)])
    capable = [ch for ch, spec in board["inputs"].items() if spec.get("adc")]
    return ["## End-of-line supervision", "",
            f"Circuit: {eol['circuit']}.", "",
            (f"EOL capable channels: {', '.join(capable) or 'none'}. The firmware reads the line on the 12-bit "
            f"scale (0–{ADC_MAX}) and classifies it: below `short_max` ({eol['short_max']}) short, below "
            f"`active_max` ({eol['active_max']}) active, below `normal_max` ({eol['normal_max']}) normal, "
            "else open. Open or short must last 1 s and is a fault (event 380), never a fire."), ""] + \
        table(["state", "reading", "voltage", "nominal reading", "nominal voltage"], rows) + \
        ["", (f"Voltages = reading × {FULL_SCALE_MV / 1000:g} V / {ADC_MAX} (full scale taken as the 3.3 V rail, "
             "as the nominal readings are). The ESP32's uncalibrated ADC differs by a few percent between "
             "parts: measure with a multimeter against the bands, not against the nominal value.")]


def _reserved_section(board: dict[str, Any]) -> list[str]:
    used = {p.gpio for p in boardcheck.pins(board)}
    module = boardcheck.module_of(board)
    taken = set(module.taken) if module else set()
    reserved = set(STRAPPING) | FLASH | set(CONSOLE) | taken
    spare_io = sorted(MODULE_GPIOS - used - reserved - INPUT_ONLY)
    spare_in = sorted((MODULE_GPIOS & INPUT_ONLY) - used)
    return ["## Pins kept free", "",
            f"- strapping pins, read at reset: GPIO {_gpios(list(STRAPPING))}",
            f"- the module's SPI flash: GPIO {_gpios(FLASH)}",
            f"- the USB serial console (flashing, provisioning, REPL): GPIO {_gpios(list(CONSOLE))}",
            *([f"- the module's PSRAM: GPIO {_gpios(list(taken))}"] if taken else []),
            f"- no digital (interrupt) input on GPIO {_gpios(list(boardcheck.NO_IRQ))}: ESP32 errata 3.11 "
            "(false edges when Wi-Fi or the ADC powers up); analog inputs there are polled",
            f"- spare, input and output: {('GPIO ' + _gpios(spare_io)) if spare_io else 'none'}",
            f"- spare, input only (no internal pull-up): {('GPIO ' + _gpios(spare_in)) if spare_in else 'none'}",
            "", "Why: host_tools/firelink/board/boardcheck.py states each ESP32 fact with its source."]


def _checks_section(problems: list[boardcheck.Problem]) -> list[str]:
    out = ["## Checks", "", "`python -m firelink.board.boardcheck` on this board:", ""]
    if not problems:
        return out + ["- no problems"]
    return out + [f"- **{p.where}** ({p.rule}): {p.message}" for p in problems]


def _firmware_section(board: dict[str, Any]) -> list[str]:
    fw = boards.firmware(board)
    module = boardcheck.module_of(board)
    if fw is None:
        return []
    ram = ("PSRAM: MicroPython's heap is megabytes" if module and module.psram else
           "no PSRAM: about 110 KB of Python heap with Wi-Fi and TLS up, which the application is tested to fit")
    where = ("micropython.org/download/ESP32_GENERIC/" if not fw.romfs else
             f"built with ROMFS from hardware/micropython/{fw.variant}, see hardware/README.md")
    romfs = (" The application's `fl/` runs from the image's `romfs` flash partition, not from the heap."
             if fw.romfs else "")
    return ["## Firmware", "",
            f"MicroPython `{fw.variant}` ({where}), which reports itself as "
            f"\"{fw.machine}\"; `firelink flash --board ...` refuses another image. {ram[0].upper() + ram[1:]}.{romfs}"]


def render(board: dict[str, Any], source: str = "hardware/boards/reference.json") -> str:
    """The Markdown document for a board (raises BoardDocError if its structure is broken);
    `source` is the definition's path as the document names it."""
    problems = boardcheck.check(board)
    broken = [p for p in problems if p.rule == "structure"]
    if broken:
        raise BoardDocError("board.json cannot be rendered:\n  " + "\n  ".join(str(p) for p in broken))
    defaults = default_inputs(board)
    lines = [f"<!-- generated from {source} by `{COMMAND}`; do not edit by hand -->", "",
             f"# Pin map: {board.get('name', 'board')} ({board.get('module', 'ESP32')})", "",
             (f"Generated from `{source}`; do not edit by hand. After changing it, run "
             f"`{COMMAND}` from the repository root (tests/host/test_board.py fails until you do). "
             "Prose, block diagram and wiring advice: [README.md](README.md)."), ""]
    if board.get("notes"):
        lines += [f"> {board['notes']}", ""]
    lines += ["## Pins by GPIO", ""]
    lines += table(["GPIO", "function", "direction", "pull", "ADC", "label", "default input"],
                   _pin_rows(board, defaults))
    for section in (_firmware_section(board), _inputs_section(board, defaults), _outputs_section(board),
                    _battery_section(board),
                    _modem_section(board), _eol_section(board), _reserved_section(board), _checks_section(problems)):
        lines += [""] + section
    return "\n".join(lines) + "\n"


def render_board(name: str) -> str:
    return render(boards.load(name), f"hardware/boards/{name}.json")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        for name in boards.names():
            try:
                text = render_board(name)
            except (boards.BoardError, BoardDocError) as e:
                print(f"{name}: {e}", file=sys.stderr)
                return 2
            tmp = pinmap_path(name).with_suffix(".md.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(pinmap_path(name))
            print(f"wrote {pinmap_path(name).relative_to(boards.REPO)}")
        return 0
    source = args[0] if args else boards.DEFAULT
    try:
        if source.endswith(".json"):
            text = render(boardcheck.load(Path(source)), source)
        else:
            text = render_board(source)
    except (OSError, ValueError, BoardDocError) as e:
        print(f"{source}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
