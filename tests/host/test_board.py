"""hardware/boards/*.json: the ESP32 checks (firelink.board.boardcheck) with each module's pin facts,
the generated pin maps (firelink.board.boarddoc) and the rule that nothing else repeats a pin number."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firelink.board import boardcheck, boarddoc, boards
from firelink.board.boardcheck import CONSOLE, FLASH, INPUT_ONLY, MODULE_GPIOS, STRAPPING, Problem, check
from tests.tooling import FIRMWARE, ROOT, micropython_binary

BOARD_JSON = ROOT / "hardware" / "boards" / "reference.json"
README = ROOT / "hardware" / "README.md"


Board = dict[str, Any]


def real() -> Board:
    """The reference board; the rule tests mutate it."""
    board: Board = boardcheck.load(BOARD_JSON)
    return board


def lean() -> Board:
    return boards.load(boards.LEAN)


def added(mutate: Callable[[Board], object], base: Callable[[], Board] = real) -> list[str]:
    """The problems a mutation of a board adds to the ones it already has."""
    before = check(base())
    b = copy.deepcopy(base())
    mutate(b)
    return [str(p) for p in check(b) if p not in before]


def spare_pin(output: bool = True) -> int:
    """A GPIO the board does not use and that no rule reserves."""
    used = {p.gpio for p in boardcheck.pins(real())}
    free: frozenset[int] = MODULE_GPIOS - used - set(STRAPPING) - FLASH - set(CONSOLE)
    free = free - INPUT_ONLY if output else free & INPUT_ONLY
    return min(free)


def gpio(where: str) -> int:
    return next(p.gpio for p in boardcheck.pins(real()) if p.where == where)


# --- the reference board ---

@pytest.mark.parametrize("name", boards.names())
def test_every_board_passes_every_check(name: str) -> None:
    assert [str(p) for p in check(boards.load(name))] == []


def test_the_reference_and_lean_boards() -> None:
    ref, small = real(), lean()
    assert boards.names() == ["lean", "reference"] and boards.DEFAULT == "reference"
    assert (ref["module"], small["module"]) == ("ESP32-WROVER-E", "ESP32-WROOM-32")
    assert boards.firmware(ref) == boards.Firmware("ESP32_GENERIC-SPIRAM", "Generic ESP32 module with SPIRAM with ESP32")
    assert boards.firmware(small) == boards.Firmware("FIRELINK_LEAN", "FireLink lean (ESP32_GENERIC with ROMFS) with ESP32",
                                                     romfs=True)
    assert (ROOT / "hardware" / "micropython" / "FIRELINK_LEAN" / "mpconfigboard.h").read_text().count(
        '#define MICROPY_HW_BOARD_NAME "FireLink lean (ESP32_GENERIC with ROMFS)"') == 1
    assert boardcheck.MODULES["ESP32-WROVER-E"].psram and not boardcheck.MODULES["ESP32-WROOM-32"].psram
    # The same panel wiring on both: a site can take either board.
    assert ref["inputs"] == small["inputs"] and ref["default_inputs"] == small["default_inputs"]


@pytest.mark.parametrize("name", boards.names())
def test_board_defaults_are_accepted_by_the_firmware(tmp_path: Path, name: str) -> None:
    out = run_firmware('print(json.dumps(config.validate({}, board)[1]))', tmp_path, boards.path(name))
    assert json.loads(out) == []


def test_kinds_and_contacts_are_the_firmware_s(tmp_path: Path) -> None:
    candidates = ["no", "nc", "NO", "nc ", "", "open", 1, None]
    code = (f"cands = {json.dumps(candidates).replace('null', 'None')}\n"
            "ok = []\n"
            "for c in cands:\n"
            "    e = {'name': 'x', 'kind': 'fire', 'channel': 'in1'}\n"
            "    if c is not None:\n"
            "        e['contact'] = c\n"
            "    probs = config.validate({'inputs': [e]}, board)[1]\n"
            "    ok.append(not [p for p in probs if '.contact' in p])\n"
            "print(json.dumps([list(config.KINDS), ok]))\n")
    kinds, accepted = json.loads(run_firmware(code, tmp_path))
    assert tuple(kinds) == boardcheck.KINDS
    # an absent contact is "no" in both
    mine = [c is None or c in boardcheck.CONTACTS for c in candidates]
    assert accepted == mine


def run_firmware(body: str, cwd: Path, board_json: Path = BOARD_JSON) -> str:
    code = f"import json\nfrom fl import config\nboard = json.load(open({str(board_json)!r}))\n{body}"
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(FIRMWARE), ".frozen"]))
    r = subprocess.run([micropython_binary(), "-c", code], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


# --- each rule catches a board that breaks it ---

def set_path(path: str, value: object) -> Callable[[Board], None]:
    def mutate(b: Board) -> None:
        *parents, last = path.split(".")
        node: Any = b
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if last.isdigit():
            node[int(last)] = value
        elif value is DELETE:
            del node[last]
        else:
            node[last] = value
    return mutate


DELETE = object()


def test_rule_module_pin() -> None:
    assert added(set_path("inputs.in3.gpio", 20)) == ["inputs.in3: GPIO 20 is not a pin of the ESP32-WROVER-E"]
    assert added(set_path("outputs.buzzer.gpio", 37), lean) == [
        "outputs.buzzer: GPIO 37 is not a pin of the ESP32-WROOM-32"]


def test_rule_module() -> None:
    assert added(set_path("module", "ESP32-C3-MINI-1")) == [
        'module: expected one of ESP32-WROOM-32, ESP32-WROVER-E, got "ESP32-C3-MINI-1"; '
        "its pins are checked as an ESP32-WROOM-32's"]


@pytest.mark.parametrize("pin", [16, 17])
def test_rule_psram_pins_taken_on_the_wrover(pin: int) -> None:
    assert added(set_path("outputs.buzzer.gpio", pin)) == [
        f"outputs.buzzer: GPIO {pin} is wired to the ESP32-WROVER-E's PSRAM (GPIO 16 and 17 are taken inside the "
        "module): use another pin"]
    b = lean()
    b["outputs"]["buzzer"]["gpio"] = pin
    assert [p.rule for p in check(b) if p.rule == "psram"] == []  # the WROOM-32 has no PSRAM (its modem uses them)


@pytest.mark.parametrize("pin", [36, 39])
def test_rule_irq_pin_never_a_digital_input_on_36_or_39(pin: int) -> None:
    ch = next(ch for ch, spec in real()["inputs"].items() if spec["gpio"] == pin)
    assert real()["inputs"][ch]["adc"] is True  # analog there today: polled, allowed
    assert added(set_path(f"inputs.{ch}.adc", False)) == [
        f"inputs.{ch}: GPIO {pin} ({boardcheck.NO_IRQ[pin]}) as a digital input is watched with a pin interrupt, and "
        "ESP32 errata 3.11 gives GPIO 36 and 39 false edges (an 80 ns pull-down) whenever Wi-Fi or the ADC powers "
        "up: use another pin, or wire it as an analog (adc: true) input, which is polled"]
    # A default input on that channel must be an EOL (analog) one, too.
    found = added(lambda b: b["default_inputs"].append({"name": "valve", "kind": "supervisory", "channel": ch,
                                                        "zone": 40}))
    assert found == [f"default_inputs[6].eol: channel {ch} is GPIO {pin}: without eol the input is digital, watched "
                     "with a pin interrupt, and ESP32 errata 3.11 gives GPIO 36 and 39 false edges whenever Wi-Fi or "
                     "the ADC powers up"]


def test_rule_every_pin_used_once() -> None:
    g = gpio("inputs.in3")
    assert added(set_path("outputs.buzzer.gpio", g)) == [
        f"GPIO {g}: used by inputs.in3 and outputs.buzzer; each pin does one job"]


def test_rule_modem_pins_distinct() -> None:
    g = gpio("modem.tx")
    assert added(set_path("modem.reset.gpio", g)) == [
        f"GPIO {g}: used by modem.tx and modem.reset; each pin does one job"]


@pytest.mark.parametrize("pin, why", sorted(STRAPPING.items()))
def test_rule_no_strapping_pin(pin: int, why: str) -> None:
    assert added(set_path("inputs.in3.gpio", pin)) == [
        (f"inputs.in3: GPIO {pin} is a strapping pin ({why}): a circuit on it can stop the board booting; "
        "use another pin")]


@pytest.mark.parametrize("pin", sorted(FLASH))
def test_rule_no_flash_pin(pin: int) -> None:
    assert added(set_path("outputs.led_fault.gpio", pin)) == [
        f"outputs.led_fault: GPIO {pin} is wired to the module's SPI flash (GPIO 6-11)"]


@pytest.mark.parametrize("pin, name", [(1, "UART0 TX"), (3, "UART0 RX")])
def test_rule_no_console_pin(pin: int, name: str) -> None:
    assert added(set_path("modem.rx", pin)) == [
        f"modem.rx: GPIO {pin} is {name}, the USB serial console that flashing, provisioning and the REPL use"]


def test_rule_no_internal_pull_on_input_only_pins() -> None:
    g = gpio("inputs.in6")
    assert g in INPUT_ONLY
    assert added(set_path("inputs.in6.pull", "internal")) == [
        (f'inputs.in6: GPIO {g} is input-only and has no internal pull-up: with pull "internal" the input floats; '
        'fit a pull-up and write "external"')]


def test_rule_pull_is_internal_or_external() -> None:
    assert added(set_path("inputs.in3.pull", "up")) == [
        'inputs.in3.pull: expected "internal" or "external", got "up"']


def test_rule_adc_only_on_adc1() -> None:
    g = gpio("inputs.in3")
    assert added(set_path("inputs.in3.adc", True)) == [
        f"inputs.in3: adc: true on GPIO {g}, which is not on ADC1 (GPIO 32-39): ADC2 cannot be read while Wi-Fi runs"]
    spare = spare_pin()
    assert added(set_path("battery.gpio", spare)) == [
        f"battery: GPIO {spare} is not on ADC1 (GPIO 32-39): ADC2 cannot be read while Wi-Fi runs"]


def test_rule_eol_capable_channel_has_the_circuit_pull_up() -> None:
    # in1 (opto-isolated, internal pull-up) made EOL capable: its line would read as active.
    assert added(set_path("inputs.in1.adc", True)) == [
        ('inputs.in1: adc: true with pull "internal": the eol thresholds assume the circuit\'s pull-up, not the '
        "chip's 45 kOhm one (a normal line would read as active); fit the circuit's pull-up and write "
        '"external", or write adc: false')]


@pytest.mark.parametrize("where", ["outputs.buzzer", "modem.tx", "modem.pwrkey", "modem.reset"])
def test_rule_outputs_not_on_input_only_pins(where: str) -> None:
    pin = spare_pin(output=False)
    path = "modem.tx" if where == "modem.tx" else f"{where}.gpio"
    assert added(set_path(path, pin)) == [
        f"{where}: GPIO {pin} is input-only (GPIO 34-39) and cannot drive an output"]


def test_rule_battery_thresholds() -> None:
    low = real()["battery"]["low_mv"]
    assert added(set_path("battery.missing_mv", low + 50)) == [
        f"battery: expected 0 < missing_mv < low_mv, got missing_mv {low + 50}, low_mv {low}"]
    div = real()["battery"]["divider"]
    assert added(set_path("battery.low_mv", 6000)) == [
        f"battery.low_mv: 6000 mV reaches the ADC as {6000 / div:.0f} mV, outside the 150-2450 mV it reads reliably"]


def test_rule_eol_thresholds_ordered() -> None:
    e = real()["eol"]
    assert added(set_path("eol.active_max", e["normal_max"] + 1)) == [
        (f"eol: expected 0 < short_max < active_max < normal_max <= 4095, got short_max {e['short_max']}, "
        f"active_max {e['normal_max'] + 1}, normal_max {e['normal_max']}")]
    assert added(set_path("eol.normal_max", 5000)) == [
        (f"eol: expected 0 < short_max < active_max < normal_max <= 4095, got short_max {e['short_max']}, "
        f"active_max {e['active_max']}, normal_max 5000")]


def test_rule_eol_nominal_inside_its_band() -> None:
    e = real()["eol"]
    v = e["active_max"] + 10
    assert added(set_path("eol.nominal.active", v)) == [
        (f"eol.nominal.active: {v} is outside the active band {e['short_max']}..{e['active_max'] - 1} "
        "(it reads as normal)")]
    assert added(set_path("eol.nominal.open", e["normal_max"] - 1)) == [
        (f"eol.nominal.open: {e['normal_max'] - 1} is outside the open band {e['normal_max']}..4095 "
        "(it reads as normal)")]


def test_rule_modem_uart_and_timings() -> None:
    assert added(set_path("modem.uart", 0)) == ["modem.uart: expected 1 or 2 (UART 0 is the console), got 0"]
    assert added(set_path("modem.pwrkey.on_ms", 20)) == [
        ("modem.pwrkey.on_ms: expected 50..2499 ms (A7670: PWRKEY low >= 50 ms switches it on, >= 2.5 s switches "
        "it off), got 20")]
    assert added(set_path("modem.pwrkey.off_ms", 1000)) == [
        "modem.pwrkey.off_ms: expected 2500..10000 ms (A7670: PWRKEY low >= 2.5 s switches it off), got 1000"]
    assert added(set_path("modem.reset.pulse_ms", 100)) == [
        "modem.reset.pulse_ms: expected 2000..2500 ms (A7670: RESET low 2-2.5 s), got 100"]
    assert added(set_path("modem.reset.active_low", "yes")) == [
        'modem.reset.active_low: expected true or false, got "yes"']


def test_rule_default_inputs_reference_existing_channels() -> None:
    names = ", ".join(sorted(real()["inputs"]))
    assert added(set_path("default_inputs.2.channel", "in9")) == [
        f'default_inputs[2].channel: expected a channel of inputs ({names}), got "in9"']
    assert added(set_path("default_inputs.2.channel", "in1")) == [
        'default_inputs[2].channel: "in1" already used by default_inputs[0]']
    bat = next(i for i, e in enumerate(real()["default_inputs"]) if e["kind"] == "battery")
    assert added(set_path(f"default_inputs.{bat}.channel", "in7")) == [
        f'default_inputs[{bat}].channel: expected "battery" for kind battery, got "in7"']


def test_rule_default_inputs_unique_names_and_zones() -> None:
    first = real()["default_inputs"][0]
    assert added(set_path("default_inputs.1.name", first["name"])) == [
        f'default_inputs[1].name: "{first["name"]}" already used by default_inputs[0]']
    assert added(set_path("default_inputs.1.zone", first["zone"])) == [
        f'default_inputs[1].zone: {first["zone"]} already used by default_inputs[0]']
    assert added(set_path("default_inputs.1.name", "Panel Fault")) == [
        'default_inputs[1].name: expected 1..24 characters from a-z 0-9 _, got "Panel Fault"']
    assert added(set_path("default_inputs.1.zone", 1000)) == [
        "default_inputs[1].zone: expected an integer 0..999, got 1000"]


def test_rule_default_inputs_valid_kinds_and_contacts() -> None:
    assert added(set_path("default_inputs.0.kind", "fir")) == [
        ("default_inputs[0].kind: expected one of fire, smoke, heat, manual, supervisory, fault, mains, battery, "
        'tamper, got "fir"')]
    assert added(set_path("default_inputs.0.contact", "NO")) == [
        'default_inputs[0].contact: expected "no" or "nc", got "NO"']


def test_rule_default_eol_only_on_adc_channels() -> None:
    i = next(i for i, e in enumerate(real()["default_inputs"]) if e["channel"] == "in3")
    assert added(set_path(f"default_inputs.{i}.eol", True)) == [
        f"default_inputs[{i}].eol: channel in3 has no ADC: eol needs adc: true"]

    def eol_nc(b: Board) -> None:
        b["inputs"]["in1"].update(adc=True, pull="external")  # an EOL-capable channel
        b["default_inputs"][0].update(eol=True, contact="nc")
    assert added(eol_nc) == [
        ('default_inputs[0].contact: eol needs "no": the end-of-line circuit switches the alarm resistor in '
        "when the contact closes")]


def test_rule_structure() -> None:
    assert added(set_path("modem", DELETE)) == ["modem: missing"]
    assert added(set_path("inputs.in3.gpio", "25")) == ['inputs.in3.gpio: expected an integer, got "25"']
    assert check([1, 2]) == [Problem("structure", "board.json", "expected a JSON object, got [1, 2]")]


def test_every_rule_has_a_test() -> None:
    """Adding a rule to RULES means adding a test here that breaks it."""
    source = Path(__file__).read_text(encoding="utf-8")
    names = {"structure": "test_rule_structure", "module-pin": "test_rule_module_pin", "module": "test_rule_module",
             "psram": "test_rule_psram_pins_taken_on_the_wrover",
             "irq-pin": "test_rule_irq_pin_never_a_digital_input_on_36_or_39",
             "pin-once": "test_rule_every_pin_used_once", "strapping": "test_rule_no_strapping_pin",
             "flash": "test_rule_no_flash_pin", "console": "test_rule_no_console_pin",
             "pull": "test_rule_no_internal_pull_on_input_only_pins", "adc1": "test_rule_adc_only_on_adc1",
             "eol-pull": "test_rule_eol_capable_channel_has_the_circuit_pull_up",
             "output-pin": "test_rule_outputs_not_on_input_only_pins", "battery": "test_rule_battery_thresholds",
             "eol-thresholds": "test_rule_eol_thresholds_ordered", "eol-nominal": "test_rule_eol_nominal_inside_its_band",
             "modem": "test_rule_modem_uart_and_timings",
             "default-channel": "test_rule_default_inputs_reference_existing_channels",
             "default-input": "test_rule_default_inputs_valid_kinds_and_contacts",
             "default-eol": "test_rule_default_eol_only_on_adc_channels"}
    assert set(names) == set(boardcheck.RULES)
    assert all(f"def {t}(" in source for t in names.values())


def test_boardcheck_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "board.json"
    good.write_text(json.dumps(real()))
    assert boardcheck.main([str(good)]) == 0
    assert capsys.readouterr().out == "board.json: no problems\n"
    bad = real()
    bad["modem"]["uart"] = 0
    good.write_text(json.dumps(bad))
    assert boardcheck.main([str(good)]) == 1
    assert capsys.readouterr().out == "board.json: modem.uart: expected 1 or 2 (UART 0 is the console), got 0  [modem]\n"
    good.write_text("{")
    assert boardcheck.main([str(good)]) == 2
    assert boardcheck.main([]) == 0  # every board in hardware/boards/
    assert capsys.readouterr().out == "lean.json: no problems\nreference.json: no problems\n"
    assert boardcheck.main(["nope"]) == 2
    assert "no board 'nope': the boards are lean, reference" in capsys.readouterr().err


def test_boardcheck_states_its_facts_itself() -> None:
    """A user's clone has no reference folder beside it: the facts and their sources are in the code."""
    assert "shared/reference" not in Path(boardcheck.__file__).read_text(encoding="utf-8")


# --- the generated pin map ---

@pytest.mark.parametrize("name", boards.names())
def test_pinmap_md_is_what_boarddoc_renders_now(name: str) -> None:
    pinmap = boarddoc.pinmap_path(name)
    assert pinmap.exists(), f"{pinmap.name} is missing: run `{boarddoc.COMMAND}` from the repository root"
    assert pinmap.read_text(encoding="utf-8") == boarddoc.render_board(name), (
        f"{pinmap.name} differs from hardware/boards/{name}.json: run `{boarddoc.COMMAND}` from the repository "
        "root and commit it")
    assert sorted(p.name for p in (ROOT / "hardware").glob("pinmap*.md")) == [
        f"pinmap-{n}.md" for n in boards.names()]


def test_pinmap_says_how_it_is_made() -> None:
    first = boarddoc.render_board("lean").splitlines()[0]
    assert first == (f"<!-- generated from hardware/boards/lean.json by `{boarddoc.COMMAND}`; do not edit by hand -->")


def test_pinmaps_name_each_board_s_firmware_and_psram_pins() -> None:
    ref, small = boarddoc.render_board("reference"), boarddoc.render_board("lean")
    assert "MicroPython `ESP32_GENERIC-SPIRAM`" in ref and "the module's PSRAM: GPIO 16, 17" in ref
    assert "MicroPython `FIRELINK_LEAN` (built with ROMFS from hardware/micropython/FIRELINK_LEAN" in small
    assert "runs from the image's `romfs` flash partition" in small and "romfs" not in ref
    assert "PSRAM: GPIO" not in small
    assert "errata 3.11" in ref and "errata 3.11" in small


def test_pinmap_lists_every_pin_once_in_its_pin_table() -> None:
    text = boarddoc.render(real())
    section = text.split("## Pins by GPIO", 1)[1].split("\n## ", 1)[0]
    gpios = [int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)]
    assert gpios == sorted(p.gpio for p in boardcheck.pins(real()))


def test_pinmap_shows_thresholds_as_voltages() -> None:
    text = boarddoc.render(real())
    e = real()["eol"]
    assert f"| normal | {e['active_max']}–{e['normal_max'] - 1} | " in text
    assert boarddoc.mv(e["nominal"]["normal"]) in text
    assert boarddoc.mv(2048) == "1.65 V"


def test_boarddoc_refuses_a_broken_board() -> None:
    b = real()
    del b["modem"]
    with pytest.raises(boarddoc.BoardDocError, match="modem: missing"):
        boarddoc.render(b)


def test_boarddoc_cli_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert boarddoc.main(["lean"]) == 0
    assert capsys.readouterr().out == boarddoc.render_board("lean")


# --- nothing else repeats a pin number ---

def test_hardware_readme_repeats_no_pin_number() -> None:
    text = README.read_text(encoding="utf-8")
    assert "pinmap-reference.md" in text and "pinmap-lean.md" in text
    found = re.findall(r"\b(?:GPIO|IO|pin|pins)\s*\d+", text, flags=re.IGNORECASE)
    assert found == [], f"hardware/README.md names pins by number ({found}): refer to pinmap.md instead"
