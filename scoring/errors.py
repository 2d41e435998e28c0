"""The one exception of the scoring package.

A module of its own, so that code which only needs to recognise it does not import the pipeline.
"""

from __future__ import annotations


class ScoringError(Exception):
    """An expected failure of training or scoring (e.g. not enough data), as one line."""
