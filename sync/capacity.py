"""Capacity-based tiers in the score stage: cut-offs set once per champion, kept until asked.

With ``tiers.capacity`` the first scoring run of a newly promoted champion (or a run with
``leadscore score --retier``) sets the probability cut-offs from the leads that arrived in the
last ``tiers.capacity_days`` days, so that each tier's expected daily volume matches what the
team can work (``scoring.tiers.capacity_cutoffs``). They are stored beside the model version and
reused by every later run, so a lead's tier does not flicker from one run to the next.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from connector.errors import LeadscoreError
from connector.store import Store
from connector.store.sales_activity import recent_leads
from scoring.registry import ModelVersion
from scoring.tiers import CapacityTiers, assign_tiers, capacity_cutoffs
from sync.config import PredictionConfig

CAPACITY_FILE = "capacity_tiers.json"


def stored_capacity_tiers(version: ModelVersion) -> CapacityTiers | None:
    """The capacity cut-offs set for a model version, if any."""
    path = version.path / CAPACITY_FILE
    if not path.exists():
        return None
    return CapacityTiers(**json.loads(path.read_text(encoding="utf-8")))


def _store_capacity_tiers(version: ModelVersion, tiers: CapacityTiers) -> None:
    path = version.path / CAPACITY_FILE
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(asdict(tiers), indent=2), encoding="utf-8")
    os.replace(staging, path)


def all_cutoffs(spec: PredictionConfig, tiers: CapacityTiers) -> dict[str, float]:
    """Capacity cut-offs plus the other tiers' starting cut-offs, best tier first.

    A tier without a capacity keeps its configured cut-off, lowered when needed to stay below
    the better tiers' (a tier never takes a better tier's leads).
    """
    out = dict(tiers.cutoffs)
    floor = min(out.values(), default=1.0)
    for name, cutoff in spec.tiers.items():
        if name not in out:
            cutoff = min(cutoff, float(np.nextafter(floor, -1.0)))
            out[name] = cutoff
            floor = cutoff
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def apply_capacity_tiers(
    store: Store,
    spec: PredictionConfig,
    champion: ModelVersion,
    scores: pd.DataFrame,
    *,
    retier: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Tiers of one scoring run from the champion's capacity cut-offs (set now if needed).

    Args:
        store: the store (recent arrivals and their owners).
        spec: the prediction (``capacity`` set or not).
        champion: the model that scored.
        scores: this run's scores (``entity_id, probability, tier``).
        retier: set the cut-offs again from the current arrivals.

    Returns:
        The scores with capacity tiers, and what the run reports about them (None without
        capacity).

    Raises:
        LeadscoreError: no lead arrived in the basis period to set cut-offs from.
    """
    if spec.capacity is None or spec.task != "binary":
        return scores, None
    tiers = None if retier else stored_capacity_tiers(champion)
    moved = tiers is None
    if tiers is None:
        recent = recent_leads(store, spec.capacity_days)
        probabilities = scores.loc[scores["entity_id"].isin(recent["lead_id"]), "probability"]
        reps = int(recent["owner_id"].dropna().nunique()) if spec.capacity_per == "rep" else None
        if spec.capacity_per == "rep" and not reps:
            raise LeadscoreError(
                f"prediction '{spec.name}': capacity per rep needs lead owners",
                hint='add "OwnerId" to [salesforce.streams.Lead] fields and pull again',
            )
        try:
            tiers = capacity_cutoffs(
                probabilities.to_numpy(dtype=float),
                spec.capacity,
                basis_days=spec.capacity_days,
                reps=reps,
            )
        except ValueError as exc:
            raise LeadscoreError(
                f"prediction '{spec.name}': capacity tiers: {exc}",
                hint="lower tiers.capacity_days or pull recent leads",
            ) from None
        _store_capacity_tiers(champion, tiers)
    cutoffs = all_cutoffs(spec, tiers)
    tier = assign_tiers(scores["probability"].to_numpy(dtype=float), cutoffs, spec.lowest_tier)
    return scores.assign(tier=tier), {
        "cutoffs": cutoffs,
        "expected_per_day": {k: round(v, 1) for k, v in tiers.expected_per_day.items()},
        "set_now": moved,
    }
