"""A pytest plugin for the board stand-in without a jig (tests/hil/standin.py): the run fails
unless it tested what it could. Issue 13: with `--dut PORT` and no `--jig`, every scenario
needing what a bare board lacks is skipped with its reason, and the rest pass. A run where
everything was skipped, or where a scenario that needs nothing of a jig was skipped for a
capability, would otherwise pass silently.

Checked per scenario, from its `@pytest.mark.needs(...)` (tests/hil/conftest.py):
  - it needs something a bare board lacks: it is skipped, and the reason names each missing
    capability (`needs inputs: ...`), or the scenario skipped itself with a reason of its own;
  - it needs nothing more than a bare board has (the link proxy): it passed, or skipped itself
    with a reason of its own (never for a capability);
  - at least one scenario passed.
The needs travel with the reports (user_properties), so the check holds under pytest-xdist too.
"""
from __future__ import annotations

from collections import Counter

import pytest

from tests.hil.conftest import _needs
from tests.hil.dut import SerialDut

BARE_BOARD = SerialDut.capabilities | {"link"}  # the suite's proxy is on every rig


class StandinCheck:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.skipped: dict[str, str] = {}
        self.needs: dict[str, set[str]] = {}
        self.problems: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            item.user_properties.append(("needs", sorted(_needs(item))))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        needs = dict(report.user_properties).get("needs")
        if needs is not None:
            self.needs[report.nodeid] = set(needs)
        if report.skipped:
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped[report.nodeid] = reason.removeprefix("Skipped: ").strip()
        elif report.when == "call" and report.passed:
            self.passed.append(report.nodeid)

    def check(self) -> list[str]:
        problems = []
        for nodeid, reason in self.skipped.items():
            missing = self.needs.get(nodeid, set()) - BARE_BOARD
            if not reason:
                problems.append(f"{nodeid}: skipped without a reason")
            elif reason.startswith("needs "):
                unnamed = [cap for cap in sorted(missing) if f"needs {cap}: " not in reason]
                if not missing:
                    problems.append(f"{nodeid}: needs nothing a bare board lacks, yet skipped: {reason}")
                elif unnamed:
                    problems.append(f"{nodeid}: skipped without naming what it lacks ({', '.join(unnamed)}): "
                                    f"{reason}")
        for nodeid, needs in self.needs.items():
            if needs - BARE_BOARD and nodeid in self.passed:
                problems.append(f"{nodeid}: needs {', '.join(sorted(needs - BARE_BOARD))}, which a board "
                                "without a jig lacks, yet it passed: the capability check did not apply")
        if not self.passed:
            problems.append("no scenario ran: everything was skipped")
        return problems

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.config.option.collectonly:
            return
        self.problems = self.check()
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        if tr.config.option.collectonly:
            return
        tr.section("board stand-in without a jig")
        tr.write_line(f"{len(self.passed)} scenarios needing nothing of a jig ran and passed:")
        for nodeid in self.passed:
            tr.write_line(f"  {nodeid}")
        lacking = Counter(cap for nodeid, reason in self.skipped.items() if reason.startswith("needs ")
                          for cap in sorted(self.needs.get(nodeid, set()) - BARE_BOARD))
        own = Counter(reason for reason in self.skipped.values() if not reason.startswith("needs "))
        tr.write_line(f"{len(self.skipped)} skipped; scenarios lacking, per capability: "
                      + ", ".join(f"{cap} {n}" for cap, n in sorted(lacking.items())))
        for reason, n in own.most_common():
            tr.write_line(f"  {n} skipped by the scenario itself: {reason}")
        for problem in self.problems:
            tr.write_line(f"STAND-IN CHECK FAILED: {problem}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(StandinCheck(), "standin-check")
