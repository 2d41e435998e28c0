"""How jobs report progress, without knowing whether a terminal, a log or nobody is watching."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from connector.progress import Reporter, Task

__all__ = ["ConsoleReporter", "Reporter", "SilentReporter", "Task"]


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class SilentReporter:
    """Reports nothing (``--json``, tests, the scheduler)."""

    def stage(self, message: str) -> None:
        """Ignore a stage."""

    @contextmanager
    def track(self, description: str, total: int | None = None) -> Iterator[Task]:
        """Yield a task that ignores progress."""
        yield _NullTask()


class _RichTask:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)  # type: ignore[arg-type]

    def set_total(self, total: int) -> None:
        self._progress.update(self._id, total=total)  # type: ignore[arg-type]


class _LineTask:
    """Progress as plain lines, for output that is not a terminal."""

    def __init__(self, reporter: ConsoleReporter, description: str, total: int | None) -> None:
        self._reporter = reporter
        self._description = description
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._last_line = self._started
        self._quarter = 0

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        quarter = int(4 * self._done / self._total) if self._total else 0
        if (quarter > self._quarter and quarter < 4) or now - self._last_line >= 60:
            self._quarter = max(quarter, self._quarter)
            self._last_line = now
            self._line()

    def set_total(self, total: int) -> None:
        self._total = total

    def finish(self) -> None:
        if self._done:  # nothing done (0 of 0): no line, the summary says it
            self._line(done=True)

    def _line(self, *, done: bool = False) -> None:
        of = f" of {self._total:,}" if self._total else ""
        seconds = time.monotonic() - self._started
        state = "done" if done else "so far"
        self._reporter.stage(f"{self._description}: {self._done:,}{of} {state} ({seconds:.1f} s)")


class ConsoleReporter:
    """Progress bars and stage lines on stderr, so stdout stays clean for results."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    def stage(self, message: str) -> None:
        """Print a dim stage line."""
        self.console.print(f"[dim]· {message}[/dim]")

    @contextmanager
    def track(self, description: str, total: int | None = None) -> Iterator[Task]:
        """Show a progress bar until the block ends (in a log: a few plain lines)."""
        if not self.console.is_terminal:
            # cron, systemd, a pipe: a bar cannot redraw there, and its last frame (a spinner,
            # often "0/0") would stay in the log. Lines at each quarter and each minute instead.
            task = _LineTask(self, description, total)
            yield task
            task.finish()
            return
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        with progress:
            task_id = progress.add_task(description, total=total)
            yield _RichTask(progress, task_id)  # type: ignore[arg-type]
            task = progress.tasks[0]
            if task.total is None:
                progress.update(task_id, total=task.completed)
