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
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from itertools import chain
from typing import Any

import catboost
import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from scoring.baselines import LinearModel, fit_tree, fit_tree_at, rule_scores, tree_predict
from scoring.errors import ScoringError
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
from scoring.explain import Labels, explain, read_labels
from scoring.features import FeatureColumns, build_features, select_attributes
from scoring.labels import build_examples, current_entity_id_batches
from scoring.metrics import (
    best_f1_threshold,
    binary_metrics,
    headline,
    loss,
    multiclass_metrics,
    regression_metrics,
)
from scoring.model import (
    Fitted,
    Predictor,
    Split,
    calibrate,
    catboost_predict,
    fit_calibrator,
    fit_catboost,
    refit_catboost,
    refit_wanted,
    split_examples,
    stratified_sample,
)
from scoring.production_metrics import build_profile, measure_drift
from scoring.repeat_purchase import RepeatPurchaseModel
from scoring.repeat_purchase import applies as repeat_purchase_applies
from scoring.repeat_purchase import input_columns as repeat_purchase_inputs
from scoring.spec import PredictionSpec
from scoring.tiers import assign_tiers_by, to_score
from scoring.traits import TraitSpec, check_traits

# Events that are bookkeeping rather than engagement.
_NOT_FEATURES = frozenset({"lead_created"})
# Blend weights tried on validation (CatBoost's share).
BLEND_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))


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
        fit_ids: entity ids of the rows each model was fitted on: ``evaluated_<model>`` (the
            model scored on the holdout and its baselines) and ``deployed_<model>``.
        evaluated: the predictor that produced the holdout predictions (the deployed one, fitted
            on every labelled example, has seen the holdout).
    """

    predictor: Predictor
    metadata: dict[str, Any]
    holdout: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    features: pd.DataFrame | None = None
    fit_ids: dict[str, np.ndarray] = field(default_factory=dict)
    evaluated: Predictor | None = None

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


def _guard_data(
    spec: PredictionSpec,
    frame: pd.DataFrame,
    entity: Entity,
    examples: Any = None,
    as_of: datetime | None = None,
) -> None:
    """The minimum-data guard and the constant-label check."""
    t = spec.training
    name = f"prediction '{spec.name}'"
    if frame.empty:
        censored = getattr(examples, "censored", 0)
        anchored = getattr(examples, "anchored", 0)
        if anchored and censored:
            window = f"{spec.label.within_days}-day " if spec.label.event else ""
            by = f" by as_of {as_of:%Y-%m-%d %H:%M} UTC" if as_of else ""
            raise ScoringError(
                f"{name}: no labelled examples: {censored:,} of {anchored:,} anchored examples "
                f"are censored (their {window}label window has not closed{by}); pull more "
                "history, shorten label.within_days, or check the source's as_of"
            )
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
        if c in columns.cat_features:
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
    values: list[str] = []
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
        valued = {name for s in sources if s.value_column for name in s.event_names}
        values = [e for e in events if e in valued]
    return FeatureColumns(
        categorical,
        numeric,
        events,
        list(spec.features.windows_days),
        derived,
        values=values,
        active_days=bool(events),
        repeat_days=bool(values),
    )


# The month of the anchor is a feature only when every month occurs in at least two years of
# history; on shorter history it mostly encodes *when* (the period, with its base rate) rather
# than seasonality, and the holdout's months were last seen in another regime.
MONTH_MIN_SPAN_DAYS = 730


def _date_parts(anchors: pd.Series) -> list[str]:
    """Anchor-time parts as features: weekday, month on long history, hour when times have one."""
    times = pd.to_datetime(anchors)
    if times.isna().all():
        return []
    parts = ["weekday"]
    if (times.max() - times.min()).days >= MONTH_MIN_SPAN_DAYS:
        parts.append("month")
    if (times.dt.hour != 0).any() or (times.dt.minute != 0).any():
        parts.append("hour")
    return parts


def _drop_constant(
    columns: FeatureColumns,
    parts: Sequence[pd.DataFrame],
    notes: list[str],
    *,
    keep: set[str] = frozenset(),  # type: ignore[assignment]
) -> FeatureColumns:
    """Leave out computed columns with one value over every example that has features.

    Those are the rows used (training or its sample, validation, holdout): a column constant
    there carries nothing the model could learn or be judged on. Columns in ``keep`` stay.
    """

    def distinct(c: str) -> int:
        return pd.concat([part[c] for part in parts], ignore_index=True).nunique(dropna=False)

    constant = [c for c in columns.names if c not in keep and distinct(c) <= 1]
    for c in constant:
        notes.append(f"{c}: left out (one value over every labelled example)")
    return replace(columns, dropped=[*columns.dropped, *constant]) if constant else columns


@dataclass
class _TrainingSet:
    """Step 1: the point-in-time examples and the feature columns (features come per part)."""

    entity: Entity
    examples: Any
    columns: FeatureColumns
    notes: list[str]
    traits_used: list[str]
    traits_skipped: list[Any]


@dataclass
class _Labels:
    """Encoded labels of each part of the split."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    classes: list[str]


@dataclass
class _Selection:
    """Step 2: everything chosen on validation, with models fitted on the training rows only."""

    fitted: Fitted
    linear: LinearModel
    repeat: RepeatPurchaseModel | None
    tree_depth: int
    decision: dict[str, Any]
    calibration: str | None
    calibration_trace: dict[str, Any]
    calibrator: dict[str, Any] | None
    raw_valid: np.ndarray
    threshold: float


@dataclass
class _Models:
    """A CatBoost model, its baselines and the rows they were all fitted on."""

    predictor: Predictor
    tree: Any = None
    rule_calibrator: dict[str, Any] | None = None
    repeat: RepeatPurchaseModel | None = None
    fit_ids: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0
    fit_through: str | None = None


def _scoring_error(spec: PredictionSpec, exc: Exception) -> ScoringError:
    return ScoringError(f"prediction '{spec.name}': {exc}")


def _build_training_set(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    as_of: datetime | None,
    exclude_fields: set[str],
    traits: Sequence[TraitSpec],
    progress: Progress,
) -> _TrainingSet:
    """Examples (entity, anchor, label) and the feature columns, no features yet.

    Features are computed afterwards by :func:`_with_features` for the rows training uses only,
    so that a stratified sample decides which examples get features at all.
    """
    try:
        entity = resolve_entity(con, spec)
        _check_columns(con, entity, spec)
        sources = entity_sources(con, entity, spec)
        create_events_view(con, entity, sources)
        examples = build_examples(con, entity, spec, as_of, sources)
    except SpecError as exc:
        raise _scoring_error(spec, exc) from None
    frame = examples.frame
    _guard_data(spec, frame, entity, examples, as_of)
    notes: list[str] = []
    try:
        columns = _feature_columns(
            con, entity, spec, sources, exclude_fields, examples.timed, notes
        )
    except SpecError as exc:
        raise _scoring_error(spec, exc) from None
    usable_traits, skipped_traits = check_traits(con, traits if examples.timed else ())
    if usable_traits:
        columns = replace(columns, traits=[t.model_dump() for t in usable_traits])
    if examples.timed and not entity.row_order:
        columns = replace(columns, date_parts=_date_parts(frame["anchor_at"]))
    if not columns.names:
        raise ScoringError(
            f"prediction '{spec.name}': no usable features in '{entity.table}' "
            "(every column is excluded, an identifier, or constant)"
        )
    return _TrainingSet(
        entity, examples, columns, notes, [t.name for t in usable_traits], skipped_traits
    )


# Examples per build_features call when training: the join of anchors with their events is held
# whole per call. On the 200k-lead benchmark store (137k examples) all at once peaked at 584 MB,
# in batches of 25,000 at 486 MB, for 0.3 s more.
FEATURE_BATCH_ROWS = 25_000


def _features(
    con: duckdb.DuckDBPyConnection, training: _TrainingSet, rows: pd.DataFrame
) -> pd.DataFrame:
    """Point-in-time features of some examples, :data:`FEATURE_BATCH_ROWS` at a time.

    Each row's features depend on its own entity and anchor only, so batches give the same
    values; the result keeps ``rows``' index and columns.
    """
    parts = [
        build_features(
            con, training.entity, rows.iloc[start : start + FEATURE_BATCH_ROWS], training.columns
        )
        for start in range(0, max(len(rows), 1), FEATURE_BATCH_ROWS)
    ]
    data = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    data.index = rows.index
    return data


def _with_features(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    training: _TrainingSet,
    split: Split,
    progress: Progress,
) -> tuple[_TrainingSet, Split]:
    """Step 1b: features for the examples the split keeps, constant columns left out.

    The examples are the training rows (or their stratified sample), validation and holdout.
    """
    rows = len(split.train) + len(split.valid) + len(split.test)
    progress(f"computing point-in-time features for {rows:,} examples")
    train, valid, test = (
        _features(con, training, p) for p in (split.train, split.valid, split.test)
    )
    # the textbook value model reads its inputs at scoring time even where they are constant
    # over the examples (days since the first purchase, at an anchor a fixed time after it)
    event = _repeat_purchase_event(spec)
    keep = set(repeat_purchase_inputs(event).values()) if event else set()
    columns = _drop_constant(training.columns, (train, valid, test), training.notes, keep=keep)
    if not columns.names:
        raise ScoringError(
            f"prediction '{spec.name}': every feature of '{training.entity.table}' has one value "
            "over the labelled examples; check the data"
        )
    return replace(training, columns=columns), replace(split, train=train, valid=valid, test=test)


def _encode_split(spec: PredictionSpec, split: Split) -> _Labels:
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
    return _Labels(y_train, y_valid, y_test, classes)


def _repeat_purchase_event(spec: PredictionSpec) -> str | None:
    """The label's event when the textbook value model applies to the prediction, else None.

    It applies to a regression on the sum (or count) of an event, over all of the event's rows
    (no ``where``).
    """
    label = spec.label
    if (
        spec.task != "regression"
        or not label.event
        or label.where is not None
        or label.aggregate not in ("sum", "count")
    ):
        return None
    return label.event


def _fit_repeat_purchase(
    spec: PredictionSpec, rows: pd.DataFrame, y: np.ndarray
) -> RepeatPurchaseModel | None:
    """The textbook value model fitted on these rows, or None where it does not apply."""
    event = _repeat_purchase_event(spec)
    if event is None or not repeat_purchase_applies(rows.columns, event):
        return None
    return RepeatPurchaseModel.fit(
        rows,
        y,
        event=event,
        horizon_days=float(spec.label.within_days),
        value=spec.label.aggregate == "sum",
    )


def _best_weight(
    task: str, y_valid: np.ndarray, cb_valid: np.ndarray, partner_valid: np.ndarray
) -> tuple[float, float]:
    """CatBoost's blend weight with the lowest validation loss, and that loss."""
    losses = {w: loss(task, y_valid, w * cb_valid + (1 - w) * partner_valid) for w in BLEND_WEIGHTS}
    weight = min(losses, key=losses.get)  # type: ignore[arg-type]
    return float(weight), losses[weight]


def _choose_blend(
    spec: PredictionSpec,
    y_valid: np.ndarray,
    cb_valid: np.ndarray,
    lin_valid: np.ndarray,
    repeat_valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """CatBoost alone, a blend with the linear or the textbook value model, or a fall-back.

    The linear model is blended in only when it beat CatBoost on validation. The textbook value
    model (BG/NBD x Gamma-Gamma) is a different kind of model whose errors differ from CatBoost's
    most on the heaviest buyers, so its blend weight is always chosen on validation (weight 1:
    CatBoost alone).
    """
    task = spec.task
    cb_loss, lin_loss = loss(task, y_valid, cb_valid), loss(task, y_valid, lin_valid)
    if spec.training.blend and repeat_valid is not None:
        rp_loss = loss(task, y_valid, repeat_valid)
        if rp_loss <= lin_loss:
            weight, best = _best_weight(task, y_valid, cb_valid, repeat_valid)
            kind = "catboost" if weight == 1.0 else ("bg_nbd" if weight == 0.0 else "blend")
            others = (
                f"BG/NBD + Gamma-Gamma {rp_loss:.4f}, ridge {lin_loss:.4f}, all fitted on the "
                "same training rows"
            )
            return {
                "model": kind,
                "weight": weight,
                "partner": "bg_nbd" if weight < 1.0 else None,
                "calibrator": None,
                "reason": (
                    f"CatBoost alone: validation loss {cb_loss:.4f} ({others}; no blend lowered it)"
                    if weight == 1.0
                    else f"CatBoost weight {weight:.1f} with BG/NBD + Gamma-Gamma: validation "
                    f"loss {best:.4f} (CatBoost {cb_loss:.4f}, {others})"
                ),
            }
    if spec.training.blend and lin_loss < cb_loss:
        weight, best = _best_weight(task, y_valid, cb_valid, lin_valid)
        kind = "catboost" if weight == 1.0 else ("logistic" if weight == 0.0 else "blend")
        linear_name = "ridge regression" if task == "regression" else "logistic regression"
        return {
            "model": kind,
            "weight": weight,
            "partner": "linear" if weight < 1.0 else None,
            "calibrator": None,
            "reason": (
                f"{linear_name} beat CatBoost on validation (loss {lin_loss:.4f} vs "
                f"{cb_loss:.4f}, both fitted on the same training rows); the blend with CatBoost "
                f"weight {weight:.1f} has validation loss {best:.4f}"
            ),
        }
    return {
        "model": "catboost",
        "weight": 1.0,
        "partner": None,
        "calibrator": None,
        "reason": (
            f"CatBoost beat the linear model on validation (loss {cb_loss:.4f} vs "
            f"{lin_loss:.4f}, both fitted on the same training rows)"
            if lin_loss >= cb_loss
            else "blending disabled (training.blend = false)"
        ),
    }


CALIBRATIONS = ("intercept", "platt", "isotonic")
# Rows a calibrator needs in the window it is fitted on: a slope (Platt) or a curve (isotonic)
# fitted on a few hundred rows follows their noise; an intercept is one number.
CALIBRATION_MIN_ROWS = {"intercept": 50, "platt": 500, "isotonic": 2000}
# A calibrator must lower the log loss on the newest half of validation by this share.
CALIBRATION_MIN_GAIN = 0.001


def _choose_calibration(
    spec: PredictionSpec, y_valid: np.ndarray, raw_valid: np.ndarray
) -> tuple[str | None, dict[str, Any]]:
    """The calibration method: fitted on the older half of validation, judged on the newer half.

    Validation rows are in time order for a time split, so this asks which correction of the
    model's probabilities carries over to the next period, which is what the holdout and scoring
    need when the base rate moves.
    """
    configured = spec.training.calibration
    if spec.task != "binary" or configured == "none":
        return None, {"method": None, "chosen_by": "training.calibration = none"}
    if configured != "auto":
        return configured, {"method": configured, "chosen_by": "training.calibration"}
    half = len(y_valid) // 2
    older, newer = slice(0, half), slice(half, None)
    if len(np.unique(y_valid[older])) < 2 or len(np.unique(y_valid[newer])) < 2:
        return "platt", {"method": "platt", "chosen_by": "default (validation too small to judge)"}
    losses = {"none": loss("binary", y_valid[newer], raw_valid[newer])}
    window = min(half, len(y_valid) - half)  # the bridge window the final fit uses
    candidates = [m for m in CALIBRATIONS if window >= CALIBRATION_MIN_ROWS[m]] or ["intercept"]
    for method in candidates:
        calibrator = fit_calibrator(method, y_valid[older], raw_valid[older])
        losses[method] = loss("binary", y_valid[newer], calibrate(calibrator, raw_valid[newer]))
    best = min(candidates, key=losses.get)  # type: ignore[arg-type]
    chosen = best if losses[best] < losses["none"] * (1 - CALIBRATION_MIN_GAIN) else None
    return chosen, {
        "method": chosen,
        "chosen_by": "log loss on the newer half of validation, fitted on the older half",
        "valid_log_loss": {k: round(v, 6) for k, v in losses.items()},
    }


def _recent_window(
    spec: PredictionSpec,
    split: Split,
    labels: _Labels,
    columns: FeatureColumns,
    selection: _Selection,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Labels and out-of-sample raw predictions of the most recent window before the holdout.

    For a time split, a *bridge* model (the chosen settings on training rows + the older half of
    validation) predicts the newer half: it stands in the same relation to that window as the
    evaluated model (training + validation) to the holdout, so a correction fitted there carries
    over, also when the model has already learned part of a change. Otherwise the selection
    model's predictions of all of validation.
    """
    half = len(split.valid) // 2
    if split.method != "time" or half < 1 or len(np.unique(labels.valid[half:])) < 2:
        return labels.valid, selection.raw_valid, "validation (selection model)"
    rows = pd.concat([split.train, split.valid.iloc[:half]], ignore_index=True)
    y = np.concatenate([labels.train, labels.valid[:half]])
    newer = split.valid.iloc[half:]
    names, cats, weight = columns.names, columns.cat_features, selection.decision["weight"]
    model = refit_catboost(
        selection.fitted, rows, y, names, cats, spec.task, train_rows=len(split.train)
    )
    raw = catboost_predict(model, newer, names, cats, spec.task)
    if weight < 1.0:
        linear = LinearModel.fit(rows, y, names, cats, spec.task)
        raw = weight * raw + (1 - weight) * linear.predict(newer)
    return labels.valid[half:], raw, "newer half of validation (bridge model)"


def _select_on_validation(
    spec: PredictionSpec,
    split: Split,
    labels: _Labels,
    columns: FeatureColumns,
    thread_count: int,
    progress: Progress,
) -> _Selection:
    """Step 2: settings, recency, trees, blend and calibration, chosen on validation."""
    task, names, cats, classes = spec.task, columns.names, columns.cat_features, labels.classes
    progress(
        f"training CatBoost on {len(split.train):,} examples "
        f"({split.method} split; settings chosen on {len(split.valid):,})"
    )
    fitted = fit_catboost(
        split,
        labels.train,
        labels.valid,
        names,
        cats,
        task,
        spec.training,
        n_classes=len(classes),
        thread_count=thread_count,
        recency=spec.training.recency == "auto" and split.method == "time",
        progress=progress,
    )
    linear = LinearModel.fit(split.train, labels.train, names, cats, task, classes or None)

    def score_fn(y: np.ndarray, prediction: np.ndarray) -> float:
        return loss(task, y, prediction)

    _, tree_depth = fit_tree(
        split.train,
        labels.train,
        split.valid,
        labels.valid,
        linear.encoder,
        task,
        score_fn,
        classes,
    )
    cb_valid = catboost_predict(fitted.model, split.valid, names, cats, task)
    lin_valid = linear.predict(split.valid)
    repeat = _fit_repeat_purchase(spec, split.train, labels.train)
    repeat_valid = repeat.predict(split.valid) if repeat is not None else None
    decision = _choose_blend(spec, labels.valid, cb_valid, lin_valid, repeat_valid)
    weight = decision["weight"]
    partner_valid = repeat_valid if decision["partner"] == "bg_nbd" else lin_valid
    raw_valid = weight * cb_valid + (1 - weight) * partner_valid
    method, trace = _choose_calibration(spec, labels.valid, raw_valid)
    # the selection model's own calibrator sets the threshold; the evaluated and deployed models
    # are calibrated on the most recent window each had not seen
    calibrator = fit_calibrator(method, labels.valid, raw_valid) if method else None
    threshold = 0.5
    if task == "binary":
        threshold = spec.training.threshold or best_f1_threshold(
            labels.valid, calibrate(calibrator, raw_valid)
        )
    return _Selection(
        fitted,
        linear,
        repeat,
        tree_depth,
        decision,
        method,
        trace,
        calibrator,
        raw_valid,
        threshold,
    )


def _fit_on(
    spec: PredictionSpec,
    rows: pd.DataFrame,
    y: np.ndarray,
    columns: FeatureColumns,
    labels: _Labels,
    selection: _Selection,
    *,
    train_rows: int,
    calibrator: dict[str, Any] | None,
    refit: bool = True,
) -> _Models:
    """CatBoost, the linear model, the tree and the rule's mapping, all on exactly ``rows``."""
    task, names, cats, classes = spec.task, columns.names, columns.cat_features, labels.classes
    model = (
        refit_catboost(selection.fitted, rows, y, names, cats, task, train_rows=train_rows)
        if refit
        else selection.fitted.model
    )
    linear = (
        LinearModel.fit(rows, y, names, cats, task, classes or None) if refit else selection.linear
    )
    repeat = (
        _fit_repeat_purchase(spec, rows, y)
        if refit and selection.repeat is not None
        else selection.repeat
    )
    predictor = Predictor(
        task,
        model,
        names,
        cats,
        classes,
        weight=selection.decision["weight"],
        linear=linear,
        calibrator=calibrator,
        repeat=repeat if selection.decision.get("partner") == "bg_nbd" else None,
    )
    ids = rows["entity_id"].to_numpy()
    tree = fit_tree_at(linear.encoder.transform(rows), y, task, selection.tree_depth)
    rule_calibrator = None
    if spec.rule and task == "binary":
        points = _rule_points(spec, rows, names)
        if np.ptp(points) > 0:
            rule_calibrator = fit_calibrator("platt", y, 1 / (1 + np.exp(-points)))
    through = rows["anchor_at"].max() if rows["anchor_at"].notna().any() else None
    fit_ids = {"catboost": ids, "linear": ids, "tree": ids, "rule": ids}
    if repeat is not None:
        fit_ids["bg_nbd"] = ids
    return _Models(
        predictor,
        tree,
        rule_calibrator,
        repeat,
        fit_ids=fit_ids,
        rows=len(rows),
        fit_through=through.isoformat() if through is not None else None,
    )


def _rule_points(spec: PredictionSpec, rows: pd.DataFrame, names: list[str]) -> np.ndarray:
    try:
        return rule_scores(rows, spec.rule)
    except KeyError as exc:
        close = difflib.get_close_matches(str(exc.args[0]), names, n=1)
        raise ScoringError(
            f"prediction '{spec.name}': rule: feature '{exc.args[0]}' does not exist"
            + (f" (did you mean '{close[0]}'?)" if close else "")
            + f"; features are: {', '.join(names[:30])}"
        ) from None


def _baseline_predictions(
    spec: PredictionSpec,
    test: pd.DataFrame,
    models: _Models,
    labels: _Labels,
    y_fit: np.ndarray,
    names: list[str],
) -> dict[str, np.ndarray]:
    """Each baseline's holdout predictions, from baselines fitted on the model's own rows."""
    task, classes = spec.task, labels.classes
    linear = models.predictor.linear
    assert linear is not None
    out: dict[str, np.ndarray] = {
        "ridge" if task == "regression" else "logistic": linear.predict(test),
        "tree": tree_predict(models.tree, linear.encoder.transform(test), task, len(classes)),
    }
    if spec.rule and task == "binary":
        points = _rule_points(spec, test, names)
        out["rule"] = (
            calibrate(models.rule_calibrator, 1 / (1 + np.exp(-points)))
            if models.rule_calibrator
            else np.full(len(test), float(y_fit.mean()))
        )
    if task == "multiclass":
        prior = np.bincount(y_fit, minlength=len(classes)) / len(y_fit)
        out["prior"] = np.tile(prior, (len(test), 1))
    if task == "regression":
        out["mean"] = np.full(len(test), float(y_fit.mean()))
        if models.repeat is not None:
            out["bg_nbd"] = models.repeat.predict(test)
    return out


def _holdout_frame(
    task: str,
    test: pd.DataFrame,
    prediction: np.ndarray,
    baseline_preds: dict[str, np.ndarray],
    classes: list[str],
) -> pd.DataFrame:
    holdout = test[["entity_id", "anchor_at", "label"]].reset_index(drop=True).copy()
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
    return holdout


def _calibration_report(
    y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, trace: dict[str, Any]
) -> dict[str, Any]:
    """Holdout calibration before and after recalibration: log loss, Brier, ECE, reliability."""

    def figures(p: np.ndarray) -> dict[str, Any]:
        m = binary_metrics(y, p, tables=True)
        return {
            "log_loss": m["log_loss"],
            "brier": m["brier"],
            "ece": m["ece"],
            "reliability": m.get("tables", {}).get("reliability", []),
        }

    return {**trace, "holdout_raw": figures(raw), "holdout": figures(calibrated)}


# The warning threshold of a moved base rate (newest period vs oldest, either way).
BASE_RATE_MOVE = 1.5


def _label_level(task: str, y: np.ndarray, n_classes: int) -> Any:
    if not len(y):
        return None
    if task == "binary":
        return round(float(np.mean(y)), 4)
    if task == "regression":
        return round(float(np.mean(y)), 4)
    return [round(float(v), 4) for v in np.bincount(y, minlength=n_classes) / len(y)]


def _measure_drift(
    spec: PredictionSpec, split: Split, labels: _Labels, columns: FeatureColumns
) -> tuple[dict[str, Any], list[str]]:
    """Label-rate and feature shift between training, validation and holdout; warnings."""
    task = spec.task
    levels = {
        part: _label_level(task, y, len(labels.classes))
        for part, y in (("train", labels.train), ("valid", labels.valid), ("test", labels.test))
    }
    warnings: list[str] = []
    factor = None
    if task in ("binary", "regression"):
        values = [v for v in levels.values() if v is not None]
        low, high = min(values), max(values)
        if low > 0:
            factor = round(high / low, 3)
            if factor > BASE_RATE_MOVE:
                what = "positive rate" if task == "binary" else "mean label"
                fmt = (lambda v: f"{v:.1%}") if task == "binary" else (lambda v: f"{v:,.4g}")
                warnings.append(
                    f"the {what} moved by a factor of {factor:.1f} between periods "
                    f"(training {fmt(levels['train'])}, validation {fmt(levels['valid'])}, "
                    f"holdout {fmt(levels['test'])}): the model was recalibrated on the newest "
                    "labelled window; retrain often and watch `leadscore monitor`"
                )
    profile = build_profile(split.train, columns, np.zeros(len(split.train)))
    shift = measure_drift(profile, split.test, np.zeros(len(split.test)))
    top = dict(list(shift.features.items())[:8])
    return {
        "label": levels,
        "label_factor": factor,
        "feature_psi": {k: round(v, 4) for k, v in top.items()},
    }, warnings


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

    The steps: (1) examples and point-in-time features; (2) settings, recency treatment, trees,
    blend and calibration method chosen on validation with models fitted on the training rows;
    (3) the evaluated model and every baseline refitted on exactly the same rows (training +
    validation), calibrated on validation, scored once on the holdout; (4) the deployed model
    fitted on every labelled example (``training.deploy_fit = "all"``) and recalibrated on the
    holdout, the most recent window it had not seen.

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
    task = spec.task
    training = _build_training_set(con, spec, as_of, exclude_fields, traits, progress)
    # split and sample the examples (entity, anchor, label) before any feature is computed: a
    # training row left out of the sample never gets features, so memory follows the sample
    split = split_examples(training.examples.frame, task, spec.training)
    progress(f"{split.method} split: {split.reason}")
    labels = _encode_split(spec, split)
    full_train, full_y = split.train, labels.train
    sampling: dict[str, Any] | None = None
    limit = spec.training.sample_above
    if task == "binary" and limit is not None and len(split.train) > limit:
        sampled, y_sampled, rate = stratified_sample(
            split.train, labels.train, limit, spec.training.random_seed
        )
        progress(
            f"training on a stratified sample: {len(sampled):,} of {len(split.train):,} rows "
            f"(every positive, {rate:.1%} of the negatives, weighted back)"
        )
        sampling = {
            "train_rows": len(split.train),
            "sampled_rows": len(sampled),
            "positives": int((labels.train == 1).sum()),
            "negative_rate": round(rate, 6),
        }
        split = replace(split, train=sampled)
        labels = replace(labels, train=y_sampled)
    training, split = _with_features(con, spec, training, split, progress)
    columns, names = training.columns, training.columns.names
    selection = _select_on_validation(spec, split, labels, columns, thread_count, progress)
    if sampling is not None:
        progress("measuring what the sample costs on the holdout")
        sampling.update(
            _sampling_loss(
                spec,
                full_train,
                full_y,
                split.test,
                labels.test,
                columns,
                selection,
                features=lambda rows: _features(con, training, rows),
            )
        )
    del full_train, full_y

    progress("refitting the model and the baselines on training + validation rows")
    refit = refit_wanted(spec.training, len(split.train))
    before_holdout = (
        pd.concat([split.train, split.valid], ignore_index=True) if refit else split.train
    )
    y_before = np.concatenate([labels.train, labels.valid]) if refit else labels.train
    evaluated = _fit_on(
        spec,
        before_holdout,
        y_before,
        columns,
        labels,
        selection,
        train_rows=len(split.train),
        calibrator=None,
        refit=refit,
    )
    if task == "binary" and selection.calibration:
        y_window, raw_window, window = _recent_window(spec, split, labels, columns, selection)
        evaluated.predictor.calibrator = fit_calibrator(selection.calibration, y_window, raw_window)
        selection.calibration_trace["evaluated_fitted_on"] = window
    progress("evaluating on the holdout")
    raw_test = evaluated.predictor.raw(split.test)
    prediction = evaluated.predictor.predict(split.test)
    metrics = _metrics(
        task, labels.test, prediction, labels.classes, selection.threshold, tables=True
    )
    baseline_preds = _baseline_predictions(spec, split.test, evaluated, labels, y_before, names)
    baselines = {
        name: _metrics(task, labels.test, pred, labels.classes, selection.threshold)
        for name, pred in baseline_preds.items()
    }
    holdout = _holdout_frame(task, split.test, prediction, baseline_preds, labels.classes)
    calibration = (
        _calibration_report(labels.test, raw_test, prediction, selection.calibration_trace)
        if task == "binary"
        else None
    )
    deployed = evaluated
    if spec.training.deploy_fit == "all":
        progress("fitting the deployed model on every labelled example")
        everything = pd.concat([split.train, split.valid, split.test], ignore_index=True)
        deployed = _fit_on(
            spec,
            everything,
            np.concatenate([labels.train, labels.valid, labels.test]),
            columns,
            labels,
            selection,
            train_rows=len(split.train),
            calibrator=None,
        )
        if task == "binary" and selection.calibration:
            # the most recent labelled window, predicted by a model that had not seen it
            deployed.predictor.calibrator = fit_calibrator(
                selection.calibration, labels.test, raw_test
            )
    drift, drift_warnings = _measure_drift(spec, split, labels, columns)
    warnings = [
        *drift_warnings,
        *_leakage(
            spec, training.entity, columns, split.train, labels.train, split.valid, labels.valid
        ),
    ]
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
    decision = {
        **selection.decision,
        "calibrator": deployed.predictor.calibrator,
        "calibration": {
            "method": selection.calibration,
            "used": deployed.predictor.calibrator is not None,
            "fitted_on": "holdout" if deployed is not evaluated else "validation",
        },
    }
    metadata = _metadata(
        spec,
        as_of,
        training,
        split,
        labels,
        selection,
        metrics=metrics,
        baselines=baselines,
        decision=decision,
        deploy={
            "fit": spec.training.deploy_fit,
            "rows": deployed.rows,
            "fit_through": deployed.fit_through,
            "evaluated_rows": evaluated.rows,
            "evaluated_fit_through": evaluated.fit_through,
        },
        drift=drift,
        calibration=calibration,
        warnings=warnings,
        started=started,
    )
    # The endpoint scores without the store: it words reasons with the labels known at training.
    metadata["reason_labels"] = read_labels(con).to_json()
    if sampling is not None:
        metadata["sampling"] = sampling
        if sampling["auc_loss"] > spec.training.quality_tolerance:
            warnings.append(
                f"the stratified training sample cost {sampling['auc_loss']:.4f} AUC on the "
                "holdout (measured on a full-data comparison at probe size); raise "
                "training.sample_above or unset it to train on every row"
            )
    return TrainOutcome(
        deployed.predictor,
        metadata,
        holdout,
        warnings,
        split.test.reset_index(drop=True),
        fit_ids={
            **{f"evaluated_{k}": v for k, v in evaluated.fit_ids.items()},
            **{f"deployed_{k}": v for k, v in deployed.fit_ids.items()},
        },
        evaluated=evaluated.predictor,
    )


def _sampling_loss(
    spec: PredictionSpec,
    train: pd.DataFrame,
    y: np.ndarray,
    test: pd.DataFrame,
    y_test: np.ndarray,
    columns: FeatureColumns,
    selection: _Selection,
    *,
    features: Callable[[pd.DataFrame], pd.DataFrame],
) -> dict[str, Any]:
    """The holdout AUC lost by training on the stratified sample, measured at a probe size.

    Full-data training is what the sample avoids, so the comparison is made on a random probe of
    ``sample_above`` training rows: the chosen settings fitted on the whole probe and on its
    stratified sample at the same negative rate, both scored on the whole holdout. With more
    rows the sample loses less, so this is an upper estimate of the loss at full size.

    ``train`` is the whole training part's examples without features; ``features`` computes
    them for the probe's rows only, here, so they are held just while the probe is fitted.
    """
    limit = spec.training.sample_above or len(train)
    rng = np.random.default_rng(spec.training.random_seed + 1)
    rows = np.sort(rng.choice(len(train), min(limit, len(train)), replace=False))
    probe, y_probe = features(train.iloc[rows]).reset_index(drop=True), y[rows]
    share = limit / max(len(train), 1)
    sampled, y_sampled, _ = stratified_sample(
        probe, y_probe, round(limit * share) or 1, spec.training.random_seed
    )
    names, cats = columns.names, columns.cat_features
    aucs = []
    for frame, labels in ((probe, y_probe), (sampled, y_sampled)):
        model = refit_catboost(
            selection.fitted, frame, labels, names, cats, "binary", train_rows=len(frame)
        )
        aucs.append(
            float(roc_auc_score(y_test, catboost_predict(model, test, names, cats, "binary")))
        )
    return {
        "probe_rows": len(probe),
        "probe_sampled_rows": len(sampled),
        "probe_auc_full": round(aucs[0], 4),
        "probe_auc_sampled": round(aucs[1], 4),
        "auc_loss": round(aucs[0] - aucs[1], 4),
    }


def _split_summary(split: Split) -> dict[str, Any]:
    def part(rows: pd.DataFrame) -> dict[str, Any]:
        timed = len(rows) and rows["anchor_at"].notna().any()
        return {
            "n": len(rows),
            "from": rows["anchor_at"].min().isoformat() if timed else None,
            "to": rows["anchor_at"].max().isoformat() if timed else None,
        }

    return {
        "method": split.method,
        "reason": split.reason,
        "train": part(split.train),
        "valid": part(split.valid),
        "test": part(split.test),
    }


def _metadata(
    spec: PredictionSpec,
    as_of: datetime | None,
    training: _TrainingSet,
    split: Split,
    labels: _Labels,
    selection: _Selection,
    *,
    metrics: dict[str, Any],
    baselines: dict[str, Any],
    decision: dict[str, Any],
    deploy: dict[str, Any],
    drift: dict[str, Any],
    calibration: dict[str, Any] | None,
    warnings: list[str],
    started: float,
) -> dict[str, Any]:
    """The JSON facts stored as ``metadata.json``."""
    task, frame, examples = spec.task, training.examples.frame, training.examples
    fitted = selection.fitted
    importance = dict(
        sorted(
            zip(
                training.columns.names,
                (float(v) for v in fitted.model.get_feature_importance()),
                strict=True,
            ),
            key=lambda kv: -kv[1],
        )
    )
    return {
        "task": task,
        "entity": spec.entity,
        "entity_table": training.entity.table,
        "classes": labels.classes,
        "config_hash": spec_hash(spec),
        "target_hash": target_hash(spec),
        "spec": spec.model_dump(mode="json"),
        "as_of": as_of.isoformat() if as_of else None,
        "features": asdict(training.columns),
        "feature_notes": training.notes,
        "feature_importance": importance,
        "traits": {"used": training.traits_used, "skipped": training.traits_skipped},
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
        "split": _split_summary(split),
        "metrics": metrics,
        "baselines": baselines,
        "baseline_settings": {
            "tree_depth": selection.tree_depth,
            "rule": bool(spec.rule),
            "fitted_on": "the evaluated model's rows (training + validation)",
        },
        "deployed": decision,
        "deploy": deploy,
        "drift": drift,
        "calibration": calibration,
        "training": {**fitted.params, "search": fitted.search, "train_seconds": fitted.seconds},
        "warnings": warnings,
        "catboost_version": catboost.__version__,
        "seconds": round(time.perf_counter() - started, 3),
    }


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
    rows, new_value, basis = _unseen_by_champion(spec, outcome, champion_metadata, new_value)
    tolerance = spec.training.quality_tolerance
    if rows is None:
        old_value = (champion_metadata.get("metrics") or {}).get(metric)
    else:
        entity = resolve_entity(con, spec)
        create_events_view(con, entity, entity_sources(con, entity, spec))
        columns = FeatureColumns(**champion_metadata["features"])
        data = build_features(con, entity, rows[["entity_id", "anchor_at"]], columns)
        y, classes = rows["label"], outcome.predictor.classes
        if spec.task == "multiclass":
            y = pd.Categorical(y, categories=classes).codes
        old = _metrics(spec.task, np.asarray(y), champion.predict(data), classes, 0.5)
        old_value = old.get(metric)
    if old_value is None or new_value is None:
        ok = True
    elif higher:
        ok = new_value >= old_value - tolerance  # AUC: absolute
    else:
        ok = new_value <= old_value * (1 + tolerance)  # log loss, RMSE: relative to their scale
    direction = "higher" if higher else "lower"
    reason = (
        f"holdout {metric} {new_value:.4f} vs champion {old_value:.4f} {basis} "
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


# The gate needs this many holdout rows the champion was not fitted on to compare on them.
MIN_GATE_ROWS = 100


def _unseen_by_champion(
    spec: PredictionSpec,
    outcome: TrainOutcome,
    champion_metadata: dict[str, Any],
    new_value: float | None,
) -> tuple[pd.DataFrame | None, float | None, str]:
    """The holdout rows to compare on, the new model's metric there, and how it was compared.

    A champion deployed on every labelled example (``deploy_fit = "all"``) has seen the older
    part of a later holdout; scoring it there would flatter it. It is compared on the holdout
    rows anchored after the newest row it was fitted on, when there are enough of them, and
    otherwise by its own recorded holdout metric.
    """
    holdout = outcome.holdout
    deploy = champion_metadata.get("deploy") or {}
    if deploy.get("fit") != "all":
        return holdout, new_value, "on the same holdout"
    through = deploy.get("fit_through")
    if through is not None and holdout["anchor_at"].notna().all():
        newer = holdout[pd.to_datetime(holdout["anchor_at"]) > pd.Timestamp(through)]
        y = newer["label"]
        enough = len(newer) >= MIN_GATE_ROWS and (spec.task == "regression" or y.nunique() > 1)
        if enough:
            classes = outcome.predictor.classes
            if spec.task == "multiclass":
                prediction = newer[[f"p_{c}" for c in classes]].to_numpy()
                y = pd.Categorical(y, categories=classes).codes
            else:
                prediction = newer["prediction"].to_numpy()
            value = _metrics(spec.task, np.asarray(y), prediction, classes, 0.5).get(
                headline(spec.task)[0]
            )
            return newer, value, f"on the {len(newer):,} holdout rows newer than its training data"
    return None, new_value, "(its own holdout: it was fitted on every row of this one)"


SCORE_BATCH_SIZE = 50_000
"""Entities scored per batch: features, predictions and reasons of one batch at a time."""


def score_entities(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    predictor: Predictor,
    metadata: dict[str, Any],
    *,
    score_time: datetime,
    reasons: bool = True,
    entity_ids: Collection[str] | None = None,
) -> pd.DataFrame:
    """Score every current entity as of ``score_time`` with a stored model, in one frame.

    The whole population at once (small stores, tests, benchmarks); the score job streams
    :func:`score_batches` instead. Regression scores and percentile tiers are relative to the
    whole population (:func:`population_scores`).

    Args:
        con: store connection.
        spec: the prediction (tiers).
        predictor: the stored predictor.
        metadata: its metadata (the exact feature columns it was trained with).
        score_time: features use only data strictly before this time.
        reasons: explain each score (top positive and negative factors).
        entity_ids: score only these entities (the fresh job); ids not in the store, or
            deleted, are left out.

    Returns:
        ``entity_id, model_version, probability, score, tier, reasons, scored_at,
        class_probabilities``, one row per entity. Multiclass: ``tier`` is the predicted class,
        ``probability`` its probability and ``class_probabilities`` every class's probability (a
        JSON object; None for other tasks); regression: ``probability`` holds the predicted value
        and ``score`` its percentile (0-100).
    """
    parts = list(
        score_batches(
            con,
            spec,
            predictor,
            metadata,
            score_time=score_time,
            reasons=reasons,
            batch_size=None,
            entity_ids=entity_ids,
        )
    )
    out = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return population_scores(spec, out)


def population_scores(spec: PredictionSpec, scores: pd.DataFrame) -> pd.DataFrame:
    """Set the parts of a scoring run that depend on the whole population.

    Regression scores are the predicted value's percentile and ``tier_by = "percentile"`` tiers
    are percentile cut-offs; both need every score of the run. :func:`score_batches` leaves them
    unset (the store computes them in SQL after the last batch); this is the in-memory form.

    Args:
        spec: the prediction.
        scores: every score of one run.

    Returns:
        The scores with ``score`` and ``tier`` final.
    """
    probability = scores["probability"].to_numpy(dtype=float)
    if spec.task == "regression":
        score = (
            np.rint(pd.Series(probability).rank(pct=True).to_numpy() * 100).astype(int)
            if len(probability)
            else np.zeros(0, dtype=int)
        )
        return scores.assign(score=score)
    if spec.task == "binary" and spec.tier_by == "percentile":
        tier = assign_tiers_by(probability, spec.tiers, spec.lowest_tier, by="percentile")
        return scores.assign(tier=tier)
    return scores


def needs_population(spec: PredictionSpec) -> bool:
    """Whether a run's scores or tiers depend on the whole population.

    See :func:`population_scores`.
    """
    return spec.task == "regression" or (spec.task == "binary" and spec.tier_by == "percentile")


def score_batches(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    predictor: Predictor,
    metadata: dict[str, Any],
    *,
    score_time: datetime,
    reasons: bool = True,
    batch_size: int | None = SCORE_BATCH_SIZE,
    entity_ids: Collection[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Score every current entity as of ``score_time``, one batch of entities at a time.

    Features, predictions and reasons are computed per batch, so memory depends on the batch
    size, not on the number of entities (only the sorted ids are held). Scores and tiers that
    depend on the whole population (:func:`needs_population`) are left as placeholders: the
    caller sets them once every batch is stored.

    Args:
        con: store connection.
        spec: the prediction (tiers).
        predictor: the stored predictor.
        metadata: its metadata (the exact feature columns it was trained with).
        score_time: features use only data strictly before this time.
        reasons: explain each score (top positive and negative factors).
        batch_size: entities per batch (None: all at once).
        entity_ids: only these entities (the fresh job); None: every current entity.

    Yields:
        Frames of :func:`score_entities`' columns, entities in id order.
    """
    try:
        entity = resolve_entity(con, spec)
        create_events_view(con, entity, entity_sources(con, entity, spec))
    except SpecError as exc:
        raise ScoringError(f"prediction '{spec.name}': {exc}") from None
    columns = FeatureColumns(**metadata["features"])
    labels = read_labels(con) if reasons else None
    # ids read batch by batch (keyset), and by key for a few entities: never the org's at once
    batches = current_entity_id_batches(con, entity, max(1, batch_size or 1 << 62), entity_ids)
    first = next(batches, None)
    # no entity at all: one empty batch, so that callers always get the columns
    parts = chain([first], batches) if first is not None else [pd.Series([], dtype=object)]
    for part in parts:
        anchors = pd.DataFrame({"entity_id": part, "anchor_at": pd.Timestamp(score_time)})
        data = build_features(con, entity, anchors, columns)
        yield score_features(
            spec,
            predictor,
            metadata,
            data,
            score_time=score_time,
            reasons=reasons,
            labels=labels,
        )
        del data, anchors


def score_features(
    spec: PredictionSpec,
    predictor: Predictor,
    metadata: dict[str, Any],
    data: pd.DataFrame,
    *,
    score_time: datetime,
    reasons: bool = True,
    labels: Labels | None = None,
) -> pd.DataFrame:
    """Outputs (probability, score, tier, reasons) of rows whose features are computed.

    Batch scoring (features in SQL) and the scoring endpoint (features in-process,
    :func:`scoring.features.features_from_records`) both end here.

    Args:
        spec: the prediction (tiers).
        predictor: the stored predictor.
        metadata: its metadata.
        data: ``entity_id`` and the feature columns.
        score_time: the scoring time.
        reasons: explain each score.
        labels: the field labels reasons are worded with (None: column names humanized).

    Returns:
        As :func:`score_entities` (scores and tiers that depend on the whole
        population are placeholders: see :func:`population_scores`).
    """
    pool = predictor.pool(data) if len(data) else None  # one pool: predict and explain
    out = predictor.predict(data, pool)
    class_probabilities: list[Any] = [None] * len(data)
    if spec.task == "binary":
        probability = np.round(out, 6)
        score = to_score(out)
        tier = (
            assign_tiers_by(out, spec.tiers, spec.lowest_tier, by=spec.tier_by)
            if spec.tier_by != "percentile"
            else np.full(len(out), None, dtype=object)
        )
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
        score = np.zeros(len(out), dtype=int)
        tier = np.full(len(out), None, dtype=object)
    text = (
        explain(predictor, data, pool, labels=labels or Labels())
        if reasons and len(data)
        else [None] * len(data)
    )
    return pd.DataFrame(
        {
            "entity_id": data["entity_id"].to_numpy(),
            "model_version": metadata["version"],
            "probability": probability,
            "score": score,
            "tier": tier,
            "reasons": text,
            "scored_at": pd.Timestamp(score_time),
            "class_probabilities": class_probabilities,
        }
    )
