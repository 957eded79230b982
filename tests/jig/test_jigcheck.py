"""The jig definition checker: hardware/jig.json passes; each kind of broken jig is named."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from firelink.board import jigcheck
from firelink.board.build import BOARD_JSON

JIG = json.loads(jigcheck.JIG_JSON.read_text())
BOARD = json.loads(BOARD_JSON.read_text())


def broken(change: Callable[[dict[str, Any]], None]) -> list[str]:
    jig = copy.deepcopy(JIG)
    change(jig)
    return [f"{p.rule} {p.where}: {p.message}" for p in jigcheck.check(jig, BOARD)]


def test_the_project_jig_passes_and_reaches_every_input() -> None:
    assert jigcheck.check(JIG, BOARD) == []
    assert [w for w in jigcheck.warnings(JIG, BOARD) if "not wired" in w] == []


@pytest.mark.parametrize("change, expected", [
    (lambda j: j["contacts"].update(in9={"pin": 20}), "input contacts.in9: no input 'in9' on board firelink-ref-v2"),
    (lambda j: j["contacts"]["in2"].update(pin=2), "pin-twice contacts.in2.pin: GP2 is already contacts.in1.pin"),
    (lambda j: j["eol"]["in7"].update(alarm=13), "pin-twice power.pin: GP13 is already eol.in7.alarm"),
    (lambda j: j["en"].update(pin=25), "pin en.pin: GP25 is the Pico's own (the on-board LED)"),
    (lambda j: j["boot"].update(pin=40), "pin boot.pin: GP40 is not a GPIO of the RP2040"),
    (lambda j: j["power"].update(sense=20), "adc power.sense: GP20 has no ADC"),
    (lambda j: j["sense"].update(siren=19), "output sense.siren: no output 'siren' on the board"),
    (lambda j: j.update(dut_board="other-board"), "board dut_board: \"other-board\" is not the board"),
    (lambda j: j["eol"].update(in1=j["eol"].pop("in7")), "eol-input eol.in1: in1 is read as a digital input"),
    (lambda j: j["eol"]["in6"].update(r_alarm=4700), "band eol.in6.active: reads"),
    (lambda j: j["eol"]["in6"].update(r_eol=1000), "band eol.in6.normal: reads"),
    # 3.9k across 4.7k reads 1279 nominally, inside the active band; at 5 % it can read 1367.
    (lambda j: j["eol"]["in6"].update(r_alarm=3900, tolerance=0.05), "band eol.in6.active"),
    (lambda j: j["dut"].update(eol_pullup_ohm=47000), "band eol.in6.normal"),
    (lambda j: j["eol"]["in6"].update(r_eol="4k7"), "resistor eol.in6: r_eol and r_alarm must be ohms"),
    (lambda j: j["power"].update(on_mv=300), "power power: need 0 <= off_mv < on_mv"),
    (lambda j: j.update(mcu="Z80"), "mcu mcu: unknown jig MCU \"Z80\""),
])
def test_a_broken_jig_is_told_from_a_good_one(change: Callable[[dict[str, Any]], None], expected: str) -> None:
    problems = broken(change)
    assert any(p.startswith(expected) for p in problems), problems


def test_band_problem_says_where_the_reading_lands() -> None:
    (problem,) = [p for p in broken(lambda j: j["eol"]["in6"].update(r_alarm=4700)) if "active" in p]
    assert "outside the board's active band 250..1299" in problem


def test_a_jig_without_power_or_some_inputs_is_valid_with_notes() -> None:
    jig = copy.deepcopy(JIG)
    del jig["power"], jig["contacts"]["in5"]
    assert jigcheck.check(jig, BOARD) == []
    notes = jigcheck.warnings(jig, BOARD)
    assert any(n.startswith("in5 ") for n in notes) and any("power cuts" in n for n in notes)


def test_cli_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert jigcheck.main([]) == 0
    bad = copy.deepcopy(JIG)
    bad["contacts"]["in3"]["pin"] = 7
    path = tmp_path / "jig.json"
    path.write_text(json.dumps(bad))
    assert jigcheck.main([str(path)]) == 1
    assert "GP7 is already" in capsys.readouterr().out
    path.write_text("{not json")
    assert jigcheck.main([str(path)]) == 2
