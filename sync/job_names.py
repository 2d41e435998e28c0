"""The names of the jobs ``[schedule]`` can run.

A module of its own so that ``leadscore --help`` can list them without importing the config.
"""

from __future__ import annotations

JOB_NAMES: tuple[str, ...] = ("pull", "score", "push", "sync", "train", "monitor", "vacuum")
