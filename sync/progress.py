"""How jobs report progress, without knowing whether a terminal, a log or nobody is watching."""

from __future__ import annotations

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


class ConsoleReporter:
    """Progress bars and stage lines on stderr, so stdout stays clean for results."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    def stage(self, message: str) -> None:
        """Print a dim stage line."""
        self.console.print(f"[dim]· {message}[/dim]")

    @contextmanager
    def track(self, description: str, total: int | None = None) -> Iterator[Task]:
        """Show a progress bar until the block ends."""
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
