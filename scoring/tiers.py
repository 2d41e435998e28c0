"""Tiers, percentiles and 0-100 scores from probabilities.

Tiers come from probability cut-offs (``A = 0.6``: a lead with a 60 % chance or more is an A), or
from percentile cut-offs (``A = 0.9``: the top 10 % of the scored population are A's), which keeps
tier sizes stable when the model's calibration moves, or from the team's capacity
(:func:`capacity_cutoffs`: ``tiers.capacity = { A = 50, B = 150 }`` leads a day), set when a model
is promoted or on request and kept between scoring runs so that a tier does not flicker.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def percentiles_in(values: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Percentile ranks of some values within a whole run's sorted values (0-1).

    The same as :func:`percentiles` over the whole run (ties share their mean rank), for values
    of one batch: the run's sorted probabilities take 8 bytes a lead, the batch's rows no more.

    Args:
        values: the batch's values (each one of ``population``).
        population: every value of the run, sorted.

    Returns:
        Each value's percentile rank in the population.
    """
    v = np.asarray(values, dtype=float)
    if not len(population):
        return np.zeros(len(v))
    below = np.searchsorted(population, v, side="left")
    upto = np.searchsorted(population, v, side="right")
    return (below + 1 + upto) / 2.0 / len(population)


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


@dataclass(frozen=True)
class CapacityTiers:
    """Probability cut-offs set so that each tier's expected daily volume matches capacity.

    Attributes:
        cutoffs: tier name -> minimum probability, best tier first.
        capacity_per_day: tier name -> leads per day the team can work.
        arrivals_per_day: scored arrivals per day over the basis period.
        expected_per_day: tier name -> leads per day expected above the tier's cut-off and below
            the better tier's.
        basis_days: days of arrivals the rate and the score distribution come from.
        basis_leads: leads in the basis.
    """

    cutoffs: dict[str, float]
    capacity_per_day: dict[str, float]
    arrivals_per_day: float
    expected_per_day: dict[str, float]
    basis_days: int
    basis_leads: int

    def explain(self) -> str:
        """The cut-offs in plain words, one sentence per tier."""
        parts = [
            f"About {self.arrivals_per_day:,.1f} scored leads arrive per day (last "
            f"{self.basis_days} days, {self.basis_leads:,} leads)."
        ]
        for name, cutoff in self.cutoffs.items():
            parts.append(
                f"Tier {name}: probability {cutoff:.1%} or more, about "
                f"{self.expected_per_day[name]:,.1f} leads a day for a capacity of "
                f"{self.capacity_per_day[name]:,.0f}."
            )
        return " ".join(parts)


def capacity_cutoffs(
    probabilities: np.ndarray,
    capacity_per_day: dict[str, float],
    *,
    basis_days: int,
    reps: int | None = None,
) -> CapacityTiers:
    """Cut-offs from the recent arrival rate and score distribution and the team's capacity.

    The best tier takes the highest-scored ``capacity / arrivals`` share of arrivals, the next
    tier the following share, and so on, so that each tier's expected daily volume is what the
    team can work. A tier whose capacity exceeds what is left takes every remaining lead (the
    tiers after it are then empty).

    Args:
        probabilities: probabilities of the leads that arrived in the last ``basis_days`` days
            (one per lead).
        capacity_per_day: tier name -> leads per day (per rep when ``reps`` is given), best
            tier first.
        basis_days: length of the basis period in days (> 0).
        reps: active reps, when capacity is per rep.

    Returns:
        The cut-offs and what they were derived from.

    Raises:
        ValueError: no arrivals, a non-positive period or a negative capacity.
    """
    p = np.sort(np.asarray(probabilities, dtype=float))[::-1]
    p = p[np.isfinite(p)]
    if basis_days <= 0:
        raise ValueError("the basis period must be at least one day")
    if not len(p):
        raise ValueError(f"no scored leads arrived in the last {basis_days} days")
    scale = float(reps) if reps else 1.0
    capacity = {name: float(value) * scale for name, value in capacity_per_day.items()}
    if any(value < 0 for value in capacity.values()):
        raise ValueError("tier capacities must be zero or more")
    arrivals = len(p) / basis_days
    cutoffs: dict[str, float] = {}
    expected: dict[str, float] = {}
    taken = 0
    ceiling = float(np.nextafter(1.0, 2.0))  # above every probability: an empty tier
    for name, per_day in capacity.items():
        want = min(taken + round(per_day * basis_days), len(p))
        if want <= taken:
            # No capacity, or nothing left: an empty tier just below the better tier's cut-off
            # (never above it, which would take the better tier's leads).
            cutoffs[name] = ceiling
            expected[name] = 0.0
            ceiling = float(np.nextafter(ceiling, -1.0))
            continue
        cutoff = float(p[want - 1])
        # Ties at the cut-off all land in the tier: count them honestly.
        count = int((p >= cutoff).sum()) - taken
        cutoffs[name] = cutoff
        expected[name] = count / basis_days
        taken += count
        ceiling = float(np.nextafter(cutoff, -1.0))
    return CapacityTiers(
        cutoffs=cutoffs,
        capacity_per_day=capacity,
        arrivals_per_day=arrivals,
        expected_per_day=expected,
        basis_days=basis_days,
        basis_leads=len(p),
    )
