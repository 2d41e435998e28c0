"""Tiers, percentiles and 0-100 scores from probabilities.

Tiers come from probability cut-offs (``A = 0.6``: a lead with a 60 % chance or more is an A), or
from percentile cut-offs (``A = 0.9``: the top 10 % of the scored population are A's), which keeps
tier sizes stable when the model's calibration moves.
"""

from __future__ import annotations

import numpy as np


def assign_tiers(probabilities: np.ndarray, cutoffs: dict[str, float], lowest: str) -> np.ndarray:
    """Give each probability the highest tier whose cut-off it reaches.

    Args:
        probabilities: calibrated probabilities.
        cutoffs: tier name -> minimum probability (any order).
        lowest: tier for probabilities below every cut-off.

    Returns:
        Tier names, one per probability.
    """
    p = np.asarray(probabilities, dtype=float)
    tiers = np.full(p.shape, lowest, dtype=object)
    # Assign from the lowest cut-off up, so higher tiers overwrite lower ones.
    for name, cutoff in sorted(cutoffs.items(), key=lambda kv: kv[1]):
        tiers[p >= cutoff] = name
    return tiers


def to_score(probabilities: np.ndarray) -> np.ndarray:
    """Map probabilities to integer scores 0-100 (what sales sees in a list view).

    Args:
        probabilities: probabilities.

    Returns:
        Rounded percentages as integers.
    """
    return np.rint(np.clip(np.asarray(probabilities, dtype=float), 0, 1) * 100).astype(int)


def percentiles(values: np.ndarray) -> np.ndarray:
    """Each value's percentile rank in its population (0-1; ties share their mean rank).

    Args:
        values: probabilities (or predicted values) of one scoring run.

    Returns:
        The share of the population at or below each value, between 0 and 1.
    """
    v = np.asarray(values, dtype=float)
    if not len(v):
        return np.zeros(0)
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    # mean rank of ties, so equal scores always get the same percentile
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse] / len(v)


def assign_tiers_by(
    probabilities: np.ndarray, cutoffs: dict[str, float], lowest: str, *, by: str = "probability"
) -> np.ndarray:
    """Tiers by probability cut-offs, or by percentile cut-offs of the scored population.

    Args:
        probabilities: calibrated probabilities of one scoring run.
        cutoffs: tier name -> minimum probability (``by="probability"``) or minimum percentile
            between 0 and 1 (``by="percentile"``).
        lowest: tier below every cut-off.
        by: ``probability`` or ``percentile``.

    Returns:
        Tier names, one per probability.
    """
    basis = percentiles(probabilities) if by == "percentile" else probabilities
    return assign_tiers(basis, cutoffs, lowest)
