"""Training and scoring of one prediction over the store: pure ML, no I/O beyond DuckDB reads."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import catboost
import duckdb
import numpy as np
import pandas as pd

from scoring.events import ENTITIES, columns_revealing, create_events_view, event_names
from scoring.features import FeatureColumns, build_features, select_attributes
from scoring.labels import build_examples, current_entity_ids
from scoring.model import binary_metrics, predict_proba, split_by_time, train_classifier
from scoring.spec import PredictionSpec
from scoring.tiers import assign_tiers, to_score
from scoring.traits import TraitSpec, check_traits

# Below these counts a model is noise; the job stops with a clear message instead.
MIN_EXAMPLES = 100
MIN_PER_CLASS = 20
# Events that are bookkeeping rather than engagement.
_NOT_FEATURES = frozenset({"lead_created"})


class ScoringError(Exception):
    """An expected failure of training or scoring (e.g. not enough data), as one line."""


Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainOutcome:
    """A trained model with everything needed to store, report and compare it.

    Attributes:
        model: the CatBoost model.
        metadata: JSON-serialisable facts for ``metadata.json``.
        holdout: the test rows: ``entity_id, anchor_at, label, probability``.
    """

    model: catboost.CatBoostClassifier
    metadata: dict[str, Any]
    holdout: pd.DataFrame


def spec_hash(spec: PredictionSpec) -> str:
    """A short hash of a prediction's configuration, stored with each model.

    Args:
        spec: the prediction.

    Returns:
        12 hex characters.
    """
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def train_prediction(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    *,
    as_of: datetime,
    exclude_fields: set[str] = frozenset(),  # type: ignore[assignment]
    progress: Progress = lambda stage: None,
    traits: Sequence[TraitSpec] = (),
) -> TrainOutcome:
    """Build the point-in-time training set, train CatBoost and evaluate it on the newest examples.

    Args:
        con: store connection.
        spec: the prediction.
        as_of: the store is complete up to this time (labels whose window ends later are unknown).
        exclude_fields: more entity fields never to use as features (e.g. the fields scores are
            written to).
        progress: called with a short description of each stage.
        traits: computed engagement traits to use as features (those whose event never occurs
            in the store are skipped and listed in ``metadata["traits"]["skipped"]``).

    Returns:
        The model, its metadata and the holdout predictions.

    Raises:
        ScoringError: too little data to train or evaluate.
    """
    started = time.perf_counter()
    entity = ENTITIES[spec.entity]
    sources = create_events_view(con, entity)
    examples = build_examples(con, entity, spec, as_of)
    frame = examples.frame
    positives = int(frame["label"].sum()) if len(frame) else 0
    negatives = len(frame) - positives
    if len(frame) < MIN_EXAMPLES or positives < MIN_PER_CLASS or negatives < MIN_PER_CLASS:
        raise ScoringError(
            f"prediction '{spec.name}': not enough labelled examples to train "
            f"({len(frame)} examples, {positives} positive, {negatives} negative; need at least "
            f"{MIN_EXAMPLES} with {MIN_PER_CLASS} of each class). Pull more history, or check "
            f"that the anchor event '{spec.anchor.event}' and label event '{spec.label.event}' "
            "occur in the data"
        )
    exclude = {f.lower() for f in (*spec.exclude_fields, *exclude_fields)}
    exclude |= columns_revealing(entity, spec.label.event, sources)
    categorical, numeric = select_attributes(con, entity, entity.stream, exclude)
    events = [
        e
        for e in event_names(con, entity)
        if e != spec.label.event
        and e not in _NOT_FEATURES
        and e not in spec.features.exclude_events
    ]
    usable, skipped_traits = check_traits(con, traits)
    columns = FeatureColumns(
        categorical,
        numeric,
        events,
        list(spec.features.windows_days),
        traits=[t.model_dump() for t in usable],
    )
    progress("computing point-in-time features")
    data = build_features(con, entity, frame, columns)
    split = split_by_time(
        data,
        "anchor_at",
        test_fraction=spec.training.test_fraction,
        validation_fraction=spec.training.validation_fraction,
    )
    for part, rows in (("train", split.train), ("validation", split.valid), ("test", split.test)):
        if rows["label"].nunique() < 2:
            raise ScoringError(
                f"prediction '{spec.name}': the {part} period has only one class; "
                "pull a longer history or lower training.test_fraction/validation_fraction"
            )
    progress(f"training CatBoost on {len(split.train):,} examples")
    model, info = train_classifier(split, columns.names, columns.cat_features, spec.training)
    p_test = predict_proba(model, split.test, columns.names, columns.cat_features)
    metrics = binary_metrics(split.test["label"].to_numpy(), p_test)
    importance = dict(
        sorted(
            zip(columns.names, (float(v) for v in model.get_feature_importance()), strict=True),
            key=lambda kv: -kv[1],
        )
    )
    metadata = {
        "task": spec.task,
        "entity": spec.entity,
        "config_hash": spec_hash(spec),
        "spec": spec.model_dump(mode="json"),
        "as_of": as_of.isoformat(),
        "features": asdict(columns),
        "feature_importance": importance,
        "traits": {"used": [t.name for t in usable], "skipped": skipped_traits},
        "examples": {
            "anchored": examples.anchored,
            "censored": examples.censored,
            "label_before_anchor": examples.label_before_anchor,
            "used": len(frame),
            "positive": positives,
        },
        "split": {
            name: {
                "n": len(rows),
                "from": rows["anchor_at"].min().isoformat() if len(rows) else None,
                "to": rows["anchor_at"].max().isoformat() if len(rows) else None,
            }
            for name, rows in (("train", split.train), ("valid", split.valid), ("test", split.test))
        },
        "metrics": metrics,
        "training": info,
        "catboost_version": catboost.__version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    holdout = split.test[["entity_id", "anchor_at", "label"]].assign(probability=p_test)
    return TrainOutcome(model=model, metadata=metadata, holdout=holdout.reset_index(drop=True))


def score_entities(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    model: catboost.CatBoostClassifier,
    metadata: dict[str, Any],
    *,
    score_time: datetime,
) -> pd.DataFrame:
    """Score every current entity as of ``score_time`` with a stored model.

    Args:
        con: store connection.
        spec: the prediction (tiers).
        model: the model.
        metadata: its metadata (the exact feature columns it was trained with).
        score_time: features use only data strictly before this time.

    Returns:
        ``entity_id, model_version, probability, score, tier, reasons, scored_at``, one row per
        entity.
    """
    entity = ENTITIES[spec.entity]
    create_events_view(con, entity)
    columns = FeatureColumns(**metadata["features"])
    ids = current_entity_ids(con, entity)
    anchors = pd.DataFrame({"entity_id": ids, "anchor_at": pd.Timestamp(score_time)})
    data = build_features(con, entity, anchors, columns)
    p = predict_proba(model, data, columns.names, columns.cat_features)
    return pd.DataFrame(
        {
            "entity_id": data["entity_id"].to_numpy(),
            "model_version": metadata["version"],
            "probability": np.round(p, 6),
            "score": to_score(p),
            "tier": assign_tiers(p, spec.tiers, spec.lowest_tier),
            "reasons": None,
            "scored_at": pd.Timestamp(score_time),
        }
    )
