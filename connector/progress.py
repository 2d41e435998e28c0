"""How long work reports progress, without knowing whether a terminal, a log or nobody watches.

The protocols live here so that connectors can report progress; ``sync/progress.py`` implements
them for the console and for silence.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class Task(Protocol):
    """A unit of long work with a known or unknown size."""

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done."""

    def set_total(self, total: int) -> None:
        """Set the number of items, once known."""


class Reporter(Protocol):
    """Receives progress from jobs."""

    def stage(self, message: str) -> None:
        """Announce a short step ("training CatBoost on 9,800 examples")."""

    def track(self, description: str, total: int | None = None) -> AbstractContextManager[Task]:
        """Open a progress task for countable work."""
