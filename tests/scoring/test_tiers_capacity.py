"""Capacity-based tiers on a known arrival rate."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.tiers import assign_tiers, capacity_cutoffs


def test_cutoffs_match_capacity_on_a_known_arrival_rate():
    # 100 leads a day for 10 days, probabilities spread evenly: 1000 distinct values.
    p = np.random.default_rng(1).permutation(np.arange(1000) / 1000)
    tiers = capacity_cutoffs(p, {"A": 10, "B": 30}, basis_days=10)
    assert tiers.arrivals_per_day == 100
    assert tiers.cutoffs == {"A": 0.9, "B": 0.6}
    assert tiers.expected_per_day == {"A": 10, "B": 30}
    assigned = assign_tiers(p, tiers.cutoffs, "C")
    assert (assigned == "A").sum() == 100 and (assigned == "B").sum() == 300
    assert "100.0 scored leads arrive per day" in tiers.explain()


def test_capacity_per_rep_and_more_capacity_than_arrivals():
    p = np.linspace(0.01, 0.99, 50)
    tiers = capacity_cutoffs(p, {"A": 2, "B": 10}, basis_days=5, reps=3)
    # A: 6 a day x 5 days = 30 leads; B would take 150 but only 20 are left.
    assert tiers.expected_per_day["A"] == 6 and tiers.expected_per_day["B"] == 4
    assigned = assign_tiers(p, tiers.cutoffs, "C")
    assert (assigned == "C").sum() == 0
    # A tier with no capacity is empty and never takes a better tier's leads.
    empty = capacity_cutoffs(p, {"A": 10, "B": 5}, basis_days=5)
    assigned = assign_tiers(p, empty.cutoffs, "C")
    assert (assigned == "A").sum() == 50 and empty.expected_per_day["B"] == 0


def test_ties_at_the_cutoff_are_counted():
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    tiers = capacity_cutoffs(p, {"A": 2}, basis_days=1)
    assert tiers.cutoffs["A"] == 0.5 and tiers.expected_per_day["A"] == 4


def test_no_arrivals_is_a_clear_error():
    with pytest.raises(ValueError, match="no scored leads arrived in the last 7 days"):
        capacity_cutoffs(np.array([]), {"A": 1}, basis_days=7)
