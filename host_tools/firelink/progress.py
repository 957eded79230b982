"""Progress reporting: the interface long operations report through, and its two renderings.

Library functions (flash, build, deploy) take a `Reporter` and call, for each step in turn:
`start(step, total, unit)`, `advance(n)` any number of times, then `finish()`. `info` and
`warn` add lines between steps. The CLI passes a `RichReporter` (progress bars on the
terminal); tests pass a `RecordingReporter` and assert on the sequence of calls. The base
`Reporter` ignores everything, so `Reporter()` is the "quiet" choice.

Steps do not nest: starting a step while one is open finishes the open one first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class Reporter:
    """Receives progress. This base class discards it (the quiet reporter)."""

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        """A step begins. `total` in `unit`s ("B" for bytes) when known, else None."""

    def advance(self, amount: int = 1) -> None:
        """The open step moved forward by `amount` units."""

    def finish(self, message: str = "") -> None:
        """The open step is done; `message` says what it achieved (may be empty)."""

    def info(self, message: str) -> None:
        """A fact worth showing (chip found, MAC, files skipped)."""

    def warn(self, message: str) -> None:
        """Something the user should know about that does not stop the command."""


@dataclass
class RecordingReporter(Reporter):
    """Keeps every call as a tuple, for tests: ("start", step, total, unit), ("advance", n),
    ("finish", message), ("info", message), ("warn", message).

    `on_advance(step, done_so_far)` runs after each advance; tests use it to interrupt an
    operation at a chosen point (raise from it)."""

    calls: list[tuple[object, ...]] = field(default_factory=list)
    on_advance: Callable[[str, int], None] | None = None
    _step: str | None = None
    _done: int = 0

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        self.calls.append(("start", step, total, unit))
        self._step, self._done = step, 0

    def advance(self, amount: int = 1) -> None:
        self.calls.append(("advance", amount))
        self._done += amount
        if self.on_advance is not None and self._step is not None:
            self.on_advance(self._step, self._done)

    def finish(self, message: str = "") -> None:
        self.calls.append(("finish", message))
        self._step = None

    def info(self, message: str) -> None:
        self.calls.append(("info", message))

    def warn(self, message: str) -> None:
        self.calls.append(("warn", message))

    # --- queries for assertions ---
    def steps(self) -> list[str]:
        return [str(c[1]) for c in self.calls if c[0] == "start"]

    def advanced(self, step: str) -> int:
        """Total advanced while `step` was open."""
        total, current = 0, None
        for c in self.calls:
            if c[0] == "start":
                current = c[1]
            elif c[0] == "advance" and current == step:
                total += int(c[1])  # type: ignore[call-overload]
        return total

    def messages(self, kind: str) -> list[str]:
        return [str(c[1]) for c in self.calls if c[0] == kind]


class _CountColumn(ProgressColumn):
    """Bytes as kB/MB for byte steps, "3/25" for counted steps, nothing when unknown."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._count = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        if task.fields.get("unit") == "B":
            return self._bytes.render(task)
        return self._count.render(task)


class _StateColumn(SpinnerColumn):
    """A spinner while a step runs, ✓ when it finished, ✗ when it failed."""

    def render(self, task: Task) -> Text:
        if task.fields.get("failed"):
            return Text("✗", style="red")
        return super().render(task)  # type: ignore[return-value]


class RichReporter(Reporter):
    """Progress bars on a rich console: one line per step, kept after it finishes.

    Use as a context manager so the live display is stopped even when the command fails."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress = Progress(
            _StateColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            BarColumn(),
            _CountColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task: TaskID | None = None
        self._step = ""

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._task is not None and exc is not None:
            self._progress.update(self._task, description=f"[red]{self._step} (failed)[/]", failed=True)
            self._progress.stop_task(self._task)
            self._task = None
        elif self._task is not None:
            self.finish()
        self._progress.stop()

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        if self._task is not None:
            self.finish()
        self._step = step
        self._task = self._progress.add_task(step, total=total, unit=unit)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def finish(self, message: str = "") -> None:
        if self._task is None:
            return
        task = self._progress.tasks[self._task]
        text = self._step + (f" [dim]({message})[/]" if message else "")
        self._progress.update(self._task, description=text,
                              total=task.total if task.total is not None else 1,
                              completed=task.total if task.total is not None else 1)
        self._progress.stop_task(self._task)
        self._task = None

    def info(self, message: str) -> None:
        self._progress.console.print(message)

    def warn(self, message: str) -> None:
        self._progress.console.print(f"[yellow]warning:[/] {message}")
