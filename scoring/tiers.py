"""Tiers and 0-100 scores from probabilities."""

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
