"""The ``score`` job: every current entity scored by its prediction's champion."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connector.errors import LeadscoreError
from connector.store import utc_now
from scoring.pipeline import (
    ScoringError,
    score_entities,
)
from scoring.registry import (
    load_champion,
)
from sync.capacity import apply_capacity_tiers
from sync.config import Settings
from sync.lock import lendable, lock_path
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded, scoring_error
from sync.stages.freshness import prediction_as_of


def score_time_for(as_of: datetime) -> datetime:
    """The scoring time for data complete up to ``as_of``: floored to the hour.

    Flooring makes features (and so scores) identical for every run within the same hour, so a
    re-run writes nothing; events of the current hour count from the next hour on.

    Args:
        as_of: how far the store is complete.

    Returns:
        The scoring time.
    """
    return as_of.replace(minute=0, second=0, microsecond=0)


def run_score(
    settings: Settings, *, reporter: Reporter = SILENT, retier: bool = False
) -> JobResult:
    """Score every current entity of each prediction with its champion model, with reasons.

    Args:
        settings: configuration.
        reporter: progress.
        retier: set capacity-based tier cut-offs again from the current arrivals.

    Returns:
        Per prediction: model version, records scored and the tier distribution.
    """
    with (
        open_store(settings, "score", reporter=reporter) as store,
        recorded(store, "score") as result,
    ):
        scored: dict[str, Any] = {}
        for spec in settings.predictions:
            as_of = prediction_as_of(store, settings, spec) or utc_now()
            score_time = score_time_for(as_of)
            champion = load_champion(settings.store.models_dir, spec.name)
            if champion is None:
                raise LeadscoreError(
                    f"prediction '{spec.name}' has no trained model",
                    hint="run `leadscore train --config FILE` first",
                )
            reporter.stage(f"{spec.name}: scoring with model {champion.version}")
            try:
                # scoring only reads the store: a fresh cycle may borrow it meanwhile
                with lendable(lock_path(settings.store.path)):
                    scores = score_entities(
                        store.read_connection(),
                        spec,
                        champion.load(),
                        champion.metadata,
                        score_time=score_time,
                    )
            except ScoringError as exc:
                raise scoring_error(exc) from None
            scores, capacity = apply_capacity_tiers(store, spec, champion, scores, retier=retier)
            store.append_scores(spec.name, scores)
            scored[spec.name] = {
                **({"capacity": capacity} if capacity else {}),
                "version": champion.version,
                "scored": len(scores),
                "tiers": {
                    str(k): int(v)
                    for k, v in scores["tier"].dropna().value_counts().sort_index().items()
                },
                "score_time": score_time.isoformat(),
            }
        result.counts = {"scored": sum(s["scored"] for s in scored.values()), "predictions": scored}
    return result
