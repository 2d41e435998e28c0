"""The ``train`` job: a model version per prediction, champion or challenger."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from connector.store import utc_now
from scoring.pipeline import (
    ScoringError,
    compare_with_champion,
    train_prediction,
)
from scoring.production_metrics import (
    reference_profile,
)
from scoring.registry import (
    load_champion,
    save_version,
)
from scoring.traits import TraitSpec
from sync.config import PredictionConfig, Settings
from sync.lock import lendable, lock_path
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded, scoring_error
from sync.stages.freshness import prediction_as_of
from sync.stages.imports import import_sources
from sync.stages.score import score_time_for


def output_fields(settings: Settings, prediction: PredictionConfig) -> set[str]:
    """Fields any prediction writes to the scored object: never features."""
    out: set[str] = set()
    for p in settings.predictions:
        if p.entity == prediction.entity and p.salesforce is not None:
            out |= set(p.salesforce.fields.values())
    return out


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Headline metrics without the tables."""
    return {k: v for k, v in metrics.items() if k != "tables"}


def _prediction_traits(settings: Settings, spec: PredictionConfig) -> list[TraitSpec]:
    """The ``[[traits]]`` a prediction uses as features (``features.traits``; default all)."""
    chosen = spec.features.traits
    return [t for t in settings.traits if chosen is None or t.name in chosen]


def _training_threads(settings: Settings) -> int:
    """CatBoost's threads: all cores, or all but one when fresh cycles must keep running.

    A fit saturates every core; a fresh cycle borrowing the store meanwhile would then take
    several times longer than its 30 s. With ``[fresh]`` configured, training leaves one core.
    """
    if settings.fresh is None:
        return -1
    return max(1, (os.cpu_count() or 2) - 1)


def run_train(
    settings: Settings, *, prediction: str | None = None, reporter: Reporter = SILENT
) -> JobResult:
    """Train a model per prediction (or the named one); it becomes champion if it passes the gate.

    The quality gate scores the current champion on the new model's holdout: the new model becomes
    champion only if its holdout metric is not worse (within ``training.quality_tolerance``);
    otherwise it is stored as the challenger (``leadscore models promote`` makes it champion).

    Args:
        settings: configuration.
        prediction: train only this prediction.
        reporter: progress.

    Returns:
        Per prediction: ``version``, ``champion``, ``metrics``, ``baselines``, ``deployed`` (the
        model / blend / fall-back choice and why), ``gate``, ``warnings``, ``examples``.
        ``artifacts["holdout"]`` holds the holdout predictions by prediction name.
    """
    targets = [settings.prediction(prediction)] if prediction else list(settings.predictions)
    with (
        open_store(settings, "train", reporter=reporter) as store,
        recorded(store, "train") as result,
    ):
        if settings.sources:
            import_sources(store, settings, reporter, only_missing=True)
        trained: dict[str, Any] = {}
        holdouts: dict[str, pd.DataFrame] = {}
        for spec in targets:
            as_of = prediction_as_of(store, settings, spec)
            when = f" as of {as_of:%Y-%m-%d %H:%M} UTC" if as_of else ""
            reporter.stage(f"{spec.name}: training set{when}")
            # Fitting only reads the store: a fresh cycle may borrow it meanwhile (sync/lock.py).
            try:
                with lendable(lock_path(settings.store.path)):
                    outcome = train_prediction(
                        store.read_connection(),
                        spec,
                        as_of=as_of,
                        exclude_fields={f.lower() for f in output_fields(settings, spec)},
                        progress=lambda stage, name=spec.name: reporter.stage(f"{name}: {stage}"),
                        traits=_prediction_traits(settings, spec),
                        thread_count=_training_threads(settings),
                    )
                    current = load_champion(settings.store.models_dir, spec.name)
                    gate = (
                        compare_with_champion(
                            store.read_connection(), spec, outcome, current.load(), current.metadata
                        )
                        if current is not None
                        else {"promote": True, "reason": "no champion yet"}
                    )
                    # Reference for drift monitoring: the population this model would score at the
                    # cut-off (static tables have no time: their scoring time is now).
                    reporter.stage(f"{spec.name}: profiling the scored population for drift")
                    profile = reference_profile(
                        store.read_connection(),
                        spec,
                        outcome.predictor,
                        outcome.metadata,
                        at=score_time_for(as_of or utc_now()),
                    )
            except ScoringError as exc:
                raise scoring_error(exc) from None
            metadata = {**outcome.metadata, "gate": gate, "monitoring_profile": profile}
            version = save_version(
                settings.store.models_dir,
                spec.name,
                outcome.predictor,
                metadata,
                champion=bool(gate["promote"]),
                holdout=outcome.holdout,
            )
            for warning in outcome.warnings:
                reporter.stage(f"{spec.name}: warning: {warning}")
            if not gate["promote"]:
                reporter.stage(f"{spec.name}: kept as challenger, not champion: {gate['reason']}")
            holdouts[spec.name] = outcome.holdout
            trained[spec.name] = {
                "version": version.version,
                "champion": bool(gate["promote"]),
                "task": spec.task,
                "examples": outcome.metadata["examples"]["used"],
                "metrics": metrics_summary(outcome.metadata["metrics"]),
                "baselines": outcome.metadata["baselines"],
                "deployed": {
                    k: v for k, v in outcome.metadata["deployed"].items() if k != "calibrator"
                },
                "gate": gate,
                "warnings": outcome.warnings,
                "split": outcome.metadata["split"]["method"],
                "split_reason": outcome.metadata["split"].get("reason"),
                "deploy": outcome.metadata.get("deploy"),
                **(
                    {"sampling": outcome.metadata["sampling"]}
                    if "sampling" in outcome.metadata
                    else {}
                ),
                "seconds": outcome.metadata["seconds"],
                "skipped_traits": outcome.metadata["traits"]["skipped"],
            }
        result.counts = {"predictions": trained}
        result.artifacts["holdout"] = holdouts
    return result
