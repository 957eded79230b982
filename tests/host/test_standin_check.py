"""tests/hil/standin_check.py, the board stand-in's guard against a run that passes without
testing: each way a stand-in run can go wrong is a problem, a run as it should be is none."""
from __future__ import annotations

from tests.hil.standin_check import StandinCheck

FIRE = "tests/hil/test_x.py::test_fire"
SMOKE = "tests/hil/test_x.py::test_smoke"
CELL = "tests/hil/test_x.py::test_cell"


def _run(passed: list[str], skipped: dict[str, str]) -> list[str]:
    c = StandinCheck()
    c.needs = {FIRE: {"inputs", "power", "link"}, SMOKE: {"link"}, CELL: set()}
    c.passed, c.skipped = passed, skipped
    return c.check()


def test_a_run_as_it_should_be_has_no_problem() -> None:
    assert _run([SMOKE], {FIRE: "needs inputs: a board needs the test jig; needs power: the same",
                          CELL: "the modem simulator drives the virtual device only"}) == []


def test_each_way_to_pass_without_testing_is_a_problem() -> None:
    assert _run([], {SMOKE: "the scenario's own reason", FIRE: "needs inputs: x; needs power: y",
                     CELL: "z"}) == ["no scenario ran: everything was skipped"]
    [p] = _run([CELL], {SMOKE: "needs link: a proxy", FIRE: "needs inputs: x; needs power: y"})
    assert p.startswith(SMOKE) and "needs nothing a bare board lacks" in p
    [p] = _run([SMOKE], {FIRE: "needs inputs: a board needs the test jig"})
    assert "without naming what it lacks (power)" in p
    [p] = _run([SMOKE], {FIRE: ""})
    assert "skipped without a reason" in p
    [p] = _run([SMOKE, FIRE], {})
    assert p.startswith(FIRE) and "yet it passed" in p
