"""The ``score`` job: every current entity scored by its prediction's champion."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connector.errors import LeadscoreError
from connector.store import Store, utc_now
from connector.store.sales_activity import recent_leads
from scoring.pipeline import ScoringError, score_batches
from scoring.registry import ModelVersion, load_champion
from sync.capacity import apply_capacity_tiers
from sync.config import PredictionConfig, Settings
from sync.lock import lendable, lock_path
from sync.progress import Reporter
from sync.run import (
    BATCH_CACHE_MB,
    SILENT,
    JobResult,
    map_large_buffers,
    open_store,
    recorded,
    release_memory,
    scoring_error,
)
from sync.stages.freshness import prediction_as_of
from sync.stages.vacuum import vacuum_store


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
            with store.bounded_cache(BATCH_CACHE_MB):
                outcome = _score_prediction(
                    store, settings, spec, champion, score_time, retier=retier, reporter=reporter
                )
            scored[spec.name] = {
                **outcome,
                "score_time": score_time.isoformat(),
            }
        result.counts = {"scored": sum(s["scored"] for s in scored.values()), "predictions": scored}
        if settings.store.retention.vacuum_after_score:
            reporter.stage("vacuum: applying [store.retention]")
            result.counts["vacuum"] = vacuum_store(store, settings, reporter)
    return result


def _score_prediction(
    store: Store,
    settings: Settings,
    spec: PredictionConfig,
    champion: ModelVersion,
    score_time: datetime,
    *,
    retier: bool,
    reporter: Reporter,
) -> dict[str, Any]:
    """Score one prediction in batches of ``store.batch_size`` entities, each stored as it comes.

    Features, predictions, reasons and the history write happen per batch, so memory does not
    depend on the number of entities. What depends on the whole run (regression percentiles,
    percentile or capacity tiers) is set afterwards in the store, in SQL. A run that fails half
    way is deleted, so that a push never takes a partial run for the latest one.
    """
    predictor = champion.load()
    map_large_buffers()
    # rows of a run a kill -9 cut short: readers skip them already; they are deleted here, where
    # no other run can be in progress
    store.discard_unfinished_score_runs()
    run_id = store.start_score_run()
    rows = 0
    capacity: dict[str, Any] | None = None
    try:
        with reporter.track(f"score {spec.name}", total=None) as task:
            batches = score_batches(
                store.read_connection(),
                spec,
                predictor,
                champion.metadata,
                score_time=score_time,
                batch_size=settings.store.batch_size,
            )
            while True:
                # computing a batch only reads the store: a fresh cycle may borrow it meanwhile
                with lendable(lock_path(settings.store.path)):
                    batch = next(batches, None)
                if batch is None:
                    break
                store.append_scores(spec.name, batch, score_run_id=run_id)
                rows += len(batch)
                task.advance(len(batch))
                del batch
                release_memory()
        by_percentile = spec.task == "binary" and spec.tier_by == "percentile"
        store.set_population_scores(
            run_id,
            percentile_score=spec.task == "regression",
            tiers=dict(spec.tiers) if by_percentile else None,
            lowest_tier=spec.lowest_tier,
            tier_by=spec.tier_by,
        )
        if spec.capacity is not None and spec.task == "binary":
            recent = recent_leads(store, spec.capacity_days)
            subset = store.score_run_rows(run_id, recent["lead_id"].astype(str))
            _, capacity = apply_capacity_tiers(store, spec, champion, subset, retier=retier)
            assert capacity is not None
            store.set_population_scores(
                run_id, tiers=capacity["cutoffs"], lowest_tier=spec.lowest_tier
            )
    except ScoringError as exc:
        store.discard_score_run(run_id)
        raise scoring_error(exc) from None
    except BaseException:
        store.discard_score_run(run_id)
        raise
    store.finish_score_run(run_id)
    total, tiers = store.score_run_tiers(run_id)
    return {
        **({"capacity": capacity} if capacity else {}),
        "version": champion.version,
        "scored": total,
        "tiers": tiers,
    }
