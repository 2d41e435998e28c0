"""Training and scoring of one prediction over the store: pure ML, no I/O beyond DuckDB reads.

``train_prediction`` builds the point-in-time training set, guards against too little data and
leakage, trains CatBoost with settings chosen on validation, scores the baselines (hand-written
rule, logistic regression, a decision tree) on the same holdout, calibrates, and blends with (or
falls back to) logistic regression when that wins on validation. ``score_entities`` scores every
current entity with a stored model and explains each score.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import catboost
import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from scoring.baselines import LinearModel, fit_tree, rule_scores, tree_predict
from scoring.events import (
    Entity,
    SpecError,
    columns_revealing,
    create_events_view,
    entity_sources,
    event_names,
    resolve_entity,
    table_columns,
)
from scoring.explain import explain
from scoring.features import FeatureColumns, build_features, select_attributes
from scoring.labels import build_examples, current_entity_ids
from scoring.metrics import (
    best_f1_threshold,
    binary_metrics,
    headline,
    loss,
    multiclass_metrics,
    regression_metrics,
)
from scoring.model import (
    Predictor,
    calibrate,
    fit_calibrator,
    fit_catboost,
    refit_wanted,
    split_examples,
)
from scoring.spec import PredictionSpec
from scoring.tiers import assign_tiers_by, to_score
from scoring.traits import TraitSpec, check_traits

# Events that are bookkeeping rather than engagement.
_NOT_FEATURES = frozenset({"lead_created"})
# Blend weights tried on validation (CatBoost's share).
BLEND_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))


class ScoringError(Exception):
    """An expected failure of training or scoring (e.g. not enough data), as one line."""


Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainOutcome:
    """A trained model with everything needed to store, report and compare it.

    Attributes:
        predictor: what scoring applies (CatBoost, blend, calibration).
        metadata: JSON-serialisable facts for ``metadata.json``.
        holdout: the test rows: ``entity_id, anchor_at, label, prediction`` and one column per
            baseline (``baseline_<name>``); multiclass adds ``p_<class>`` columns.
        warnings: leakage and data warnings, one line each.
        features: the holdout's feature frame (for comparing with the champion).
    """

    predictor: Predictor
    metadata: dict[str, Any]
    holdout: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    features: pd.DataFrame | None = None

    @property
    def model(self) -> catboost.CatBoost:
        """The CatBoost model."""
        return self.predictor.model


def spec_hash(spec: PredictionSpec) -> str:
    """A short hash of a prediction's configuration, stored with each model.

    Args:
        spec: the prediction.

    Returns:
        12 hex characters.
    """
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def target_hash(spec: PredictionSpec) -> str:
    """A hash of what is predicted (entity, task, label, anchor, filters).

    Models with the same target hash can be compared on the same holdout.

    Args:
        spec: the prediction.

    Returns:
        12 hex characters.
    """
    data = spec.model_dump(
        mode="json",
        include={"entity", "entity_table", "task", "label", "anchor", "train_only_when"},
    )
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _check_columns(con: duckdb.DuckDBPyConnection, entity: Entity, spec: PredictionSpec) -> None:
    present = table_columns(con, entity.table)
    if not present:
        raise ScoringError(
            f"prediction '{spec.name}': table '{entity.table}' is not in the store; "
            + ("pull it first" if entity.stream else "import it first ([[sources]])")
        )
    for key in ("exclude_fields", "categorical_fields", "post_outcome_fields"):
        for name in getattr(spec, key):
            if name.lower() not in present:
                close = difflib.get_close_matches(name, list(present.values()), n=1)
                raise ScoringError(
                    f"prediction '{spec.name}': {key}: column '{name}' is not in table "
                    f"'{entity.table}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                )


def _guard_data(spec: PredictionSpec, frame: pd.DataFrame, entity: Entity) -> None:
    """The minimum-data guard and the constant-label check."""
    t = spec.training
    name = f"prediction '{spec.name}'"
    if frame.empty:
        raise ScoringError(
            f"{name}: no labelled examples (table '{entity.table}' is empty, or no entity has an "
            "anchor and a closed label window); pull more history or check the anchor and label"
        )
    if len(frame) < t.min_examples:
        raise ScoringError(
            f"{name}: not enough labelled examples to train ({len(frame):,}; need at least "
            f"{t.min_examples}, training.min_examples); pull more history"
        )
    if frame["label"].nunique() < 2:
        raise ScoringError(
            f"{name}: the label is constant (all {len(frame):,} examples are "
            f"{frame['label'].tolist()[0]!r}); check the label definition"
        )
    if spec.task != "regression":
        counts = frame["label"].value_counts()
        small = counts[counts < t.min_per_class]
        if len(small):
            detail = ", ".join(f"{k!r}: {v}" for k, v in small.items())
            what = "positive" if spec.task == "binary" and 1 in small.index else "examples"
            raise ScoringError(
                f"{name}: not enough labelled examples of each class to train ({detail} {what}; "
                f"need at least {t.min_per_class} of each, training.min_per_class); pull more "
                f"history, widen label.within_days, or check that the label event "
                f"'{spec.label.event or spec.label.field}' occurs in the data"
            )


def _encode_labels(spec: PredictionSpec, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    if spec.task == "binary":
        return frame["label"].to_numpy(dtype=int), []
    if spec.task == "regression":
        return frame["label"].to_numpy(dtype=float), []
    if spec.label.classes:
        classes = [c.name for c in spec.label.classes]
    else:
        classes = sorted(frame["label"].unique().tolist())
    return pd.Categorical(frame["label"], categories=classes).codes.astype(int), classes


def _metrics(
    task: str,
    y: np.ndarray,
    prediction: np.ndarray,
    classes: list[str],
    threshold: float,
    *,
    tables: bool = False,
) -> dict[str, Any]:
    if task == "binary":
        return binary_metrics(y, prediction, threshold, tables=tables)
    if task == "multiclass":
        return multiclass_metrics(y, prediction, classes, tables=tables)
    return regression_metrics(y, prediction, tables=tables)


def _leakage(
    spec: PredictionSpec,
    entity: Entity,
    columns: FeatureColumns,
    train: pd.DataFrame,
    y_train: np.ndarray,
    valid: pd.DataFrame,
    y_valid: np.ndarray,
) -> list[str]:
    """Warnings: a feature alone nearly predicts the label, or is known to be filled later."""
    warnings = []
    known = {f.lower() for f in (*entity.post_outcome, *spec.post_outcome_fields)}
    for c in [*columns.categorical, *columns.numeric]:
        if c.lower() in known:
            warnings.append(
                f"{c} is usually filled in after the outcome; add it to exclude_fields unless "
                "it is known at the anchor time"
            )
    if spec.task != "binary" or len(np.unique(y_valid)) < 2:
        return warnings
    prior = float(y_train.mean())
    for c in columns.names:
        if c in columns.categorical:
            means = pd.Series(y_train).groupby(train[c].to_numpy()).mean()
            score = valid[c].map(means).fillna(prior).to_numpy(dtype=float)
        else:
            score = np.nan_to_num(valid[c].to_numpy(dtype=float), nan=-1e12)
        if np.all(score == score[0]):
            continue
        auc = float(roc_auc_score(y_valid, score))
        auc = max(auc, 1 - auc)
        if auc >= spec.training.leakage_auc:
            warnings.append(
                f"possible leakage: {c} alone predicts the label with AUC {auc:.3f} on validation; "
                "check that it is known before the outcome, or add it to exclude_fields"
            )
    return warnings


def _feature_columns(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    spec: PredictionSpec,
    sources: list,
    exclude_fields: set[str],
    timed: bool,
    notes: list[str],
) -> FeatureColumns:
    exclude = {f.lower() for f in (*spec.exclude_fields, *exclude_fields)}
    if spec.label.event:
        exclude |= columns_revealing(entity, spec.label.event, sources)
    if spec.label.field:
        exclude.add(spec.label.field.lower())
    for f in spec.train_only_when:
        if f.column:
            exclude.add(f.column.lower())
    categorical, numeric = select_attributes(
        con,
        entity,
        exclude,
        categorical_fields={c.lower() for c in spec.categorical_fields},
        notes=notes,
    )
    events: list[str] = []
    derived: list[str] = []
    # a one-time label event (conversion) never happened before the anchor of a kept example, so
    # counting it would only leak; repeated label events (orders) before the anchor are history
    one_time = spec.label.aggregate == "exists" and spec.label.comparison == ">="
    if timed:
        events = [
            e
            for e in event_names(con, entity)
            if not (one_time and e == spec.label.event)
            and e not in _NOT_FEATURES
            and e != entity.created_event
            and e not in spec.features.exclude_events
            and not any(e in f.events for f in spec.train_only_when)
        ]
        if entity.created_column:
            derived.append("days_since_created")
        if events:
            derived.append("days_since_last_event")
    return FeatureColumns(categorical, numeric, events, list(spec.features.windows_days), derived)


def train_prediction(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    *,
    as_of: datetime | None,
    exclude_fields: set[str] = frozenset(),  # type: ignore[assignment]
    progress: Progress = lambda stage: None,
    thread_count: int = -1,
    traits: Sequence[TraitSpec] = (),
) -> TrainOutcome:
    """Build the point-in-time training set, train, evaluate against baselines on the holdout.

    Args:
        con: store connection.
        spec: the prediction.
        as_of: the store is complete up to this time (labels whose window ends later are unknown);
            None for static tables.
        exclude_fields: more entity fields never to use as features (e.g. the fields scores are
            written to).
        progress: called with a short description of each stage.
        thread_count: CPU threads for CatBoost (-1: all cores).
        traits: computed engagement traits to use as features (those whose event never occurs
            in the store are skipped and listed in ``metadata["traits"]["skipped"]``); they are
            computed before each anchor, so only predictions with anchor times use them.

    Returns:
        The predictor, its metadata, the holdout predictions and warnings.

    Raises:
        ScoringError: a configuration problem (unknown column, event) or too little data.
    """
    started = time.perf_counter()
    try:
        entity = resolve_entity(con, spec)
        _check_columns(con, entity, spec)
        sources = entity_sources(con, entity, spec)
        create_events_view(con, entity, sources)
        examples = build_examples(con, entity, spec, as_of, sources)
    except SpecError as exc:
        raise ScoringError(f"prediction '{spec.name}': {exc}") from None
    frame = examples.frame
    _guard_data(spec, frame, entity)
    notes: list[str] = []
    try:
        columns = _feature_columns(
            con, entity, spec, sources, exclude_fields, examples.timed, notes
        )
    except SpecError as exc:
        raise ScoringError(f"prediction '{spec.name}': {exc}") from None
    usable_traits, skipped_traits = check_traits(con, traits if examples.timed else ())
    if usable_traits:
        columns = replace(columns, traits=[t.model_dump() for t in usable_traits])
    if not columns.names:
        raise ScoringError(
            f"prediction '{spec.name}': no usable features in '{entity.table}' "
            "(every column is excluded, an identifier, or constant)"
        )
    progress(f"computing point-in-time features for {len(frame):,} examples")
    data = build_features(con, entity, frame, columns)
    split = split_examples(data, spec.task, spec.training)
    y_train, classes = _encode_labels(spec, split.train)
    y_valid, _ = _encode_labels(spec, split.valid)
    y_test, _ = _encode_labels(spec, split.test)
    if spec.task != "regression":
        for part, y in (("train", y_train), ("validation", y_valid), ("test", y_test)):
            if len(np.unique(y)) < 2:
                raise ScoringError(
                    f"prediction '{spec.name}': the {part} period has only one class; "
                    "pull a longer history or lower training.test_fraction/validation_fraction"
                )
    names, cats = columns.names, columns.cat_features
    progress(
        f"training CatBoost on {len(split.train):,} examples "
        f"({split.method} split; settings chosen on {len(split.valid):,})"
    )
    fitted = fit_catboost(
        split,
        y_train,
        y_valid,
        names,
        cats,
        spec.task,
        spec.training,
        n_classes=len(classes),
        thread_count=thread_count,
    )
    predictor = Predictor(spec.task, fitted.model, names, cats, classes)
    progress("scoring baselines on the same holdout")
    linear = LinearModel.fit(split.train, y_train, names, cats, spec.task, classes or None)
    task = spec.task

    def score_fn(y: np.ndarray, prediction: np.ndarray) -> float:
        return loss(task, y, prediction)

    tree, tree_depth = fit_tree(
        split.train, y_train, split.valid, y_valid, linear.encoder, task, score_fn, classes
    )
    selection = Predictor(spec.task, fitted.selection_model or fitted.model, names, cats, classes)
    cb_valid = selection.raw(split.valid)
    lin_valid = linear.predict(split.valid)
    # calibration and blending, chosen on validation
    decision: dict[str, Any] = {"model": "catboost", "weight": 1.0, "calibrator": None}
    cb_loss, lin_loss = loss(task, y_valid, cb_valid), loss(task, y_valid, lin_valid)
    if spec.training.blend and lin_loss < cb_loss:
        losses = {w: loss(task, y_valid, w * cb_valid + (1 - w) * lin_valid) for w in BLEND_WEIGHTS}
        weight = float(min(losses, key=losses.get))  # type: ignore[arg-type]
        kind = "catboost" if weight == 1.0 else ("logistic" if weight == 0.0 else "blend")
        linear_name = "ridge regression" if task == "regression" else "logistic regression"
        decision = {
            "model": kind,
            "weight": weight,
            "calibrator": None,
            "reason": (
                f"{linear_name} beat CatBoost on validation (loss {lin_loss:.4f} vs "
                f"{cb_loss:.4f}); the blend with CatBoost weight {weight:.1f} has validation "
                f"loss {losses[weight]:.4f}"
            ),
        }
        predictor.weight = weight
    else:
        decision["reason"] = (
            f"CatBoost beat the linear model on validation (loss {cb_loss:.4f} vs {lin_loss:.4f})"
            if lin_loss >= cb_loss
            else "blending disabled (training.blend = false)"
        )
    threshold = 0.5
    if task == "binary":
        # fitted on predictions of models that did not see the validation rows
        raw_valid = predictor.weight * cb_valid + (1 - predictor.weight) * lin_valid
        method = spec.training.calibration
        if method != "none":
            candidate = fit_calibrator("platt" if method == "auto" else method, y_valid, raw_valid)
            before = loss(task, y_valid, raw_valid)
            after = loss(task, y_valid, calibrate(candidate, raw_valid))
            if method != "auto" or after < before * 0.995:
                predictor.calibrator = candidate
                decision["calibrator"] = candidate
            decision["calibration"] = {
                "method": candidate["method"],
                "used": predictor.calibrator is not None,
                "valid_log_loss_before": round(before, 6),
                "valid_log_loss_after": round(after, 6),
            }
        threshold = spec.training.threshold or best_f1_threshold(
            y_valid, calibrate(predictor.calibrator, raw_valid)
        )
    deployed_linear = linear
    if refit_wanted(spec.training, len(split.train)):
        both = pd.concat([split.train, split.valid], ignore_index=True)
        deployed_linear = LinearModel.fit(
            both, np.concatenate([y_train, y_valid]), names, cats, spec.task, classes or None
        )
    predictor.linear = deployed_linear
    progress("evaluating on the holdout")
    prediction = predictor.predict(split.test)
    metrics = _metrics(task, y_test, prediction, classes, threshold, tables=True)
    holdout = split.test[["entity_id", "anchor_at", "label"]].reset_index(drop=True).copy()
    baselines: dict[str, dict[str, Any]] = {}
    baseline_preds: dict[str, np.ndarray] = {}
    lin_name = "ridge" if task == "regression" else "logistic"
    baseline_preds[lin_name] = deployed_linear.predict(split.test)
    baseline_preds["tree"] = tree_predict(
        tree, linear.encoder.transform(split.test), task, len(classes)
    )
    if spec.rule and task == "binary":
        try:
            rule_valid = rule_scores(split.valid, spec.rule)
            rule_test = rule_scores(split.test, spec.rule)
        except KeyError as exc:
            close = difflib.get_close_matches(str(exc.args[0]), names, n=1)
            raise ScoringError(
                f"prediction '{spec.name}': rule: feature '{exc.args[0]}' does not exist"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + f"; features are: {', '.join(names[:30])}"
            ) from None
        # points are not probabilities: map them with a Platt fit on validation
        if np.ptp(rule_valid) > 0:
            rule_cal = fit_calibrator("platt", y_valid, 1 / (1 + np.exp(-rule_valid)))
            baseline_preds["rule"] = calibrate(rule_cal, 1 / (1 + np.exp(-rule_test)))
        else:
            baseline_preds["rule"] = np.full(len(rule_test), float(y_train.mean()))
    if task == "multiclass":
        prior = np.bincount(y_train, minlength=len(classes)) / len(y_train)
        baseline_preds["prior"] = np.tile(prior, (len(split.test), 1))
    if task == "regression":
        baseline_preds["mean"] = np.full(len(split.test), float(y_train.mean()))
    for name, pred in baseline_preds.items():
        baselines[name] = _metrics(task, y_test, pred, classes, threshold)
    if task == "multiclass":
        for i, c in enumerate(classes):
            holdout[f"p_{c}"] = prediction[:, i]
        holdout["prediction"] = [classes[i] for i in prediction.argmax(axis=1)]
        for name, pred in baseline_preds.items():
            holdout[f"baseline_{name}"] = [classes[i] for i in pred.argmax(axis=1)]
    else:
        holdout["prediction"] = prediction
        for name, pred in baseline_preds.items():
            holdout[f"baseline_{name}"] = pred
    warnings = _leakage(spec, entity, columns, split.train, y_train, split.valid, y_valid)
    importance = dict(
        sorted(
            zip(names, (float(v) for v in fitted.model.get_feature_importance()), strict=True),
            key=lambda kv: -kv[1],
        )
    )
    metric, higher = headline(task)
    beaten = [
        b
        for b, m in baselines.items()
        if m.get(metric) is not None
        and metrics.get(metric) is not None
        and ((m[metric] > metrics[metric]) if higher else (m[metric] < metrics[metric]))
    ]
    if beaten:
        warnings.append(
            f"baseline {', '.join(beaten)} beat the model on the holdout {metric}; "
            "see the report before relying on the scores"
        )
    metadata = {
        "task": task,
        "entity": spec.entity,
        "entity_table": entity.table,
        "classes": classes,
        "config_hash": spec_hash(spec),
        "target_hash": target_hash(spec),
        "spec": spec.model_dump(mode="json"),
        "as_of": as_of.isoformat() if as_of else None,
        "features": asdict(columns),
        "feature_notes": notes,
        "feature_importance": importance,
        "traits": {"used": [t.name for t in usable_traits], "skipped": skipped_traits},
        "examples": {
            "anchored": examples.anchored,
            "censored": examples.censored,
            "label_before_anchor": examples.label_before_anchor,
            "filtered_by_train_only_when": examples.filtered,
            "unlabelled": examples.unlabelled,
            "used": len(frame),
            "positive": int(frame["label"].sum()) if task == "binary" else None,
            "class_counts": (
                {str(k): int(v) for k, v in frame["label"].value_counts().items()}
                if task == "multiclass"
                else None
            ),
        },
        "split": {
            "method": split.method,
            **{
                name: {
                    "n": len(rows),
                    "from": rows["anchor_at"].min().isoformat()
                    if len(rows) and rows["anchor_at"].notna().any()
                    else None,
                    "to": rows["anchor_at"].max().isoformat()
                    if len(rows) and rows["anchor_at"].notna().any()
                    else None,
                }
                for name, rows in (
                    ("train", split.train),
                    ("valid", split.valid),
                    ("test", split.test),
                )
            },
        },
        "metrics": metrics,
        "baselines": baselines,
        "baseline_settings": {"tree_depth": tree_depth, "rule": bool(spec.rule)},
        "deployed": decision,
        "training": {**fitted.params, "search": fitted.search, "train_seconds": fitted.seconds},
        "warnings": warnings,
        "catboost_version": catboost.__version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return TrainOutcome(predictor, metadata, holdout, warnings, split.test.reset_index(drop=True))


def compare_with_champion(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    outcome: TrainOutcome,
    champion: Predictor,
    champion_metadata: dict[str, Any],
) -> dict[str, Any]:
    """The quality gate: score the champion on the new model's holdout and compare.

    Args:
        con: store connection.
        spec: the prediction.
        outcome: the new model.
        champion: the current champion's predictor.
        champion_metadata: its metadata.

    Returns:
        ``promote`` (bool), ``metric``, ``new``, ``champion`` and ``reason``.
    """
    metric, higher = headline(spec.task)
    new_value = outcome.metadata["metrics"].get(metric)
    if champion_metadata.get("target_hash") != outcome.metadata["target_hash"]:
        return {
            "promote": True,
            "metric": metric,
            "new": new_value,
            "champion": None,
            "reason": "the prediction's target changed since the champion was trained; "
            "the new model replaces it",
        }
    entity = resolve_entity(con, spec)
    create_events_view(con, entity, entity_sources(con, entity, spec))
    columns = FeatureColumns(**champion_metadata["features"])
    rows = outcome.holdout[["entity_id", "anchor_at"]]
    data = build_features(con, entity, rows, columns)
    y, classes = outcome.holdout["label"], outcome.predictor.classes
    if spec.task == "multiclass":
        y = pd.Categorical(y, categories=classes).codes
    old = _metrics(spec.task, np.asarray(y), champion.predict(data), classes, 0.5)
    old_value = old.get(metric)
    tolerance = spec.training.quality_tolerance
    if old_value is None or new_value is None:
        ok = True
    elif higher:
        ok = new_value >= old_value - tolerance  # AUC: absolute
    else:
        ok = new_value <= old_value * (1 + tolerance)  # log loss, RMSE: relative to their scale
    direction = "higher" if higher else "lower"
    reason = (
        f"holdout {metric} {new_value:.4f} vs champion {old_value:.4f} on the same holdout "
        f"({direction} is better, tolerance {tolerance})"
        if old_value is not None and new_value is not None
        else "no comparable metric"
    )
    return {
        "promote": ok,
        "metric": metric,
        "new": new_value,
        "champion": old_value,
        "reason": reason,
    }


def score_entities(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    predictor: Predictor,
    metadata: dict[str, Any],
    *,
    score_time: datetime,
    reasons: bool = True,
) -> pd.DataFrame:
    """Score every current entity as of ``score_time`` with a stored model.

    Args:
        con: store connection.
        spec: the prediction (tiers).
        predictor: the stored predictor.
        metadata: its metadata (the exact feature columns it was trained with).
        score_time: features use only data strictly before this time.
        reasons: explain each score (top positive and negative factors).

    Returns:
        ``entity_id, model_version, probability, score, tier, reasons, scored_at,
        class_probabilities``, one row per entity. Multiclass: ``tier`` is the predicted class,
        ``probability`` its probability and ``class_probabilities`` every class's probability (a
        JSON object; None for other tasks); regression: ``probability`` holds the predicted value
        and ``score`` its percentile (0-100).
    """
    try:
        entity = resolve_entity(con, spec)
        create_events_view(con, entity, entity_sources(con, entity, spec))
    except SpecError as exc:
        raise ScoringError(f"prediction '{spec.name}': {exc}") from None
    columns = FeatureColumns(**metadata["features"])
    ids = current_entity_ids(con, entity)
    anchors = pd.DataFrame({"entity_id": ids, "anchor_at": pd.Timestamp(score_time)})
    data = build_features(con, entity, anchors, columns)
    out = predictor.predict(data)
    if spec.task == "binary":
        probability = np.round(out, 6)
        score = to_score(out)
        tier = assign_tiers_by(out, spec.tiers, spec.lowest_tier, by=spec.tier_by)
    elif spec.task == "multiclass":
        best = out.argmax(axis=1) if len(out) else np.zeros(0, dtype=int)
        probability = np.round(out[np.arange(len(best)), best], 6) if len(best) else np.zeros(0)
        score = to_score(probability)
        tier = np.array([predictor.classes[i] for i in best], dtype=object)
        names = [str(c) for c in predictor.classes]
        class_probabilities = [
            json.dumps(dict(zip(names, (round(float(p), 4) for p in row), strict=True)))
            for row in out
        ]
    else:
        probability = np.round(out, 6)
        score = (
            np.rint(pd.Series(out).rank(pct=True).to_numpy() * 100).astype(int)
            if len(out)
            else np.zeros(0, dtype=int)
        )
        tier = np.full(len(out), None, dtype=object)
    text = explain(predictor, data) if reasons and len(data) else [None] * len(data)
    return pd.DataFrame(
        {
            "entity_id": data["entity_id"].to_numpy(),
            "model_version": metadata["version"],
            "probability": probability,
            "score": score,
            "tier": tier,
            "reasons": text,
            "scored_at": pd.Timestamp(score_time),
            "class_probabilities": class_probabilities
            if spec.task == "multiclass"
            else [None] * len(data),
        }
    )
