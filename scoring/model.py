"""CatBoost: splits, settings chosen on validation, calibration, blending, prediction.

The split is by time when the examples have anchor times (train on the oldest, choose settings on
the next, test on the newest), stratified otherwise. CatBoost's settings are chosen on the
validation split: the number of trees by early stopping, then a small search over depth,
``l2_leaf_reg`` and ``one_hot_max_size`` (one-hot encoding for categoricals with few values,
ordered target statistics for the others).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from catboost import CatBoost, CatBoostClassifier, CatBoostRegressor, Pool
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from scoring.baselines import LinearModel
from scoring.metrics import loss
from scoring.repeat_purchase import RepeatPurchaseModel
from scoring.spec import TrainingSpec

EPS = 1e-7
# Below this many distinct anchor times, the data has no usable time order.
MIN_DISTINCT_TIMES = 10
# Rows used by the settings search (the final model uses every training row).
SEARCH_ROWS = 20_000
SEARCH_LEARNING_RATE = 0.12
# The final model's learning rate unless training.learning_rate sets one: with more rows than the
# search's subsample, each tree sees enough data for bigger steps (100k-lead interacting org,
# with the square-root refit: 129 -> 87 CPU-s to train, holdout AUC 0.8454 -> 0.8448).
LEARNING_RATE = 0.05
LARGE_DATA_LEARNING_RATE = 0.1


@dataclass(frozen=True)
class Split:
    """Examples split for training, model selection and the final evaluation.

    Attributes:
        train: examples to learn from (the oldest, for a time split).
        valid: examples for early stopping, the settings search, calibration and blending.
        test: held-out examples (the newest), touched once for the reported metrics.
        method: ``time`` or ``stratified``.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    method: str = "time"
    reason: str = ""


def split_by_time(
    frame: pd.DataFrame, time_column: str, *, test_fraction: float, validation_fraction: float
) -> Split:
    """Split examples by time so that evaluation is always on data later than training.

    Ties in time stay on one side of each boundary (no example shares an anchor time with one across
    the cut).

    Args:
        frame: examples.
        time_column: the anchor-time column.
        test_fraction: newest share for the test set.
        validation_fraction: next-newest share for early stopping.

    Returns:
        The split.
    """
    ordered = frame.sort_values(time_column, kind="stable", ignore_index=True)
    times = ordered[time_column].to_numpy()
    n = len(ordered)

    def cut(fraction_from_end: float) -> int:
        index = round(n * (1 - fraction_from_end))
        index = min(max(index, 0), n)
        # move the cut back to the first row of its timestamp so ties are not split
        while 0 < index < n and times[index - 1] == times[index]:
            index -= 1
        return index

    test_start = cut(test_fraction)
    valid_start = cut(test_fraction + validation_fraction)
    return Split(
        train=ordered.iloc[:valid_start],
        valid=ordered.iloc[valid_start:test_start],
        test=ordered.iloc[test_start:],
        method="time",
    )


def split_stratified(
    frame: pd.DataFrame,
    *,
    test_fraction: float,
    validation_fraction: float,
    stratify: bool,
    seed: int = 0,
) -> Split:
    """A random split, stratified by label for classification.

    Args:
        frame: examples with a ``label`` column.
        test_fraction: share for the test set.
        validation_fraction: share for validation.
        stratify: keep class shares equal across the parts.
        seed: random seed.

    Returns:
        The split.
    """
    rest, test = train_test_split(
        frame,
        test_size=test_fraction,
        random_state=seed,
        stratify=frame["label"] if stratify else None,
    )
    train, valid = train_test_split(
        rest,
        test_size=validation_fraction / (1 - test_fraction),
        random_state=seed + 1,
        stratify=rest["label"] if stratify else None,
    )
    return Split(
        train.reset_index(drop=True),
        valid.reset_index(drop=True),
        test.reset_index(drop=True),
        method="stratified",
    )


def split_examples(frame: pd.DataFrame, task: str, spec: TrainingSpec) -> Split:
    """Time split when the examples have enough distinct anchor times, stratified otherwise.

    Args:
        frame: examples (``anchor_at``, ``label``, features).
        task: the task (stratification applies to classification).
        spec: training settings.

    Returns:
        The split.
    """
    times = frame["anchor_at"]
    distinct = int(times.nunique())
    if times.notna().all() and distinct >= MIN_DISTINCT_TIMES:
        split = split_by_time(
            frame,
            "anchor_at",
            test_fraction=spec.test_fraction,
            validation_fraction=spec.validation_fraction,
        )
        return replace(split, reason=f"{distinct:,} distinct anchor times: newest rows held out")
    if times.isna().all():
        reason = "the examples have no anchor time (no time column): a random split"
    elif distinct == 1:
        reason = (
            f"every example has the same anchor time ({times.iloc[0]:%Y-%m-%d %H:%M}, a fixed-date "
            "anchor): no time order to split by, so a random split"
        )
    else:
        reason = (
            f"only {distinct} distinct anchor times (fewer than {MIN_DISTINCT_TIMES}): "
            "a random split"
        )
    split = split_stratified(
        frame,
        test_fraction=spec.test_fraction,
        validation_fraction=spec.validation_fraction,
        stratify=task != "regression",
        seed=spec.random_seed,
    )
    return replace(split, reason=reason + (" stratified by label" if task != "regression" else ""))


# Up to this many rows a model is applied on one thread (small_frame_threads).
SMALL_FRAME_ROWS = 5000
# Up to this many rows a pool is built from a NumPy object matrix: CatBoost reads a DataFrame
# column by column at a fixed cost that dominates small requests (1 row: 0.27 against 1.0 ms),
# while for larger frames the columns are faster (1,000 rows: 2.0 against 3.3 ms).
MATRIX_ROWS = 400


def pool_data(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame | np.ndarray:
    """The feature columns in model order, as CatBoost reads them fastest for the frame's size.

    Args:
        frame: rows.
        features: feature columns in model order.

    Returns:
        A NumPy object matrix for small frames, the DataFrame's columns otherwise (the values are
        the same either way).
    """
    if len(frame) <= MATRIX_ROWS:
        return frame.to_numpy(dtype=object)[:, frame.columns.get_indexer(features)]
    return frame[features]


def small_frame_threads(rows: int) -> int:
    """CatBoost's thread count for applying a model to ``rows`` rows.

    Up to ``SMALL_FRAME_ROWS`` one thread: starting and joining threads costs more than the work
    (the scoring endpoint: 1 to 1,000 records), and much more on a busy machine. Batch scoring
    uses every core (-1).

    Args:
        rows: the number of rows.

    Returns:
        1 or -1.
    """
    return 1 if rows <= SMALL_FRAME_ROWS else -1


SAMPLE_WEIGHT = "sample_weight"
"""Column of a stratified training sample's weights (1 for a positive, 1/rate for a negative)."""


def stratified_sample(
    frame: pd.DataFrame, y: np.ndarray, keep: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Every positive and a random share of the negatives, weighted back (binary labels).

    The share keeps about ``keep`` rows, and at least one negative per positive.

    Args:
        frame: the training rows.
        y: their labels (0/1).
        keep: rows to keep (about).
        seed: random seed.

    Returns:
        The sampled rows (with :data:`SAMPLE_WEIGHT`), their labels, and the negatives' rate.
    """
    positives = np.flatnonzero(y == 1)
    negatives = np.flatnonzero(y != 1)
    # at least one negative per positive: below that the sample says little about negatives
    floor = len(positives) / max(len(negatives), 1)
    rate = min(1.0, max((keep - len(positives)) / max(len(negatives), 1), floor))
    rng = np.random.default_rng(seed)
    chosen = negatives[rng.random(len(negatives)) < rate]
    rows = np.sort(np.concatenate([positives, chosen]))
    out = frame.iloc[rows].copy()
    out[SAMPLE_WEIGHT] = np.where(y[rows] == 1, 1.0, 1.0 / rate)
    return out.reset_index(drop=True), y[rows], rate


def make_pool(
    frame: pd.DataFrame,
    features: list[str],
    cat_features: list[str],
    label: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> Pool:
    """A CatBoost pool of the feature columns.

    Args:
        frame: rows.
        features: feature columns in model order.
        cat_features: the categorical ones.
        label: labels (class codes for multiclass), or None to predict.
        weight: sample weights (recency treatments), or None.

    Returns:
        The pool.
    """
    if SAMPLE_WEIGHT in frame.columns:
        # negatives of a stratified training sample count for the ones left out
        sampled = frame[SAMPLE_WEIGHT].fillna(1.0).to_numpy(dtype=float)
        weight = sampled if weight is None else weight * sampled
    return Pool(
        # predictions only: training keeps reading the DataFrame as it always did
        pool_data(frame, features) if label is None else frame[features],
        label=label,
        cat_features=[features.index(c) for c in cat_features],
        weight=weight,
    )


# -- recency treatments ----------------------------------------------------------------------------

NO_RECENCY: dict[str, Any] = {"name": "none"}
# A treatment must lower the validation loss by this share to be preferred to none (a weighted
# or shortened fit throws data away; on data that does not drift it should not be chosen by noise).
RECENCY_MIN_GAIN = 0.002


def recency_candidates(anchor_at: pd.Series) -> list[dict[str, Any]]:
    """Recency treatments worth trying for rows spanning these anchor times.

    Half-lives and the window are fractions of the span of the training rows, in days, so that a
    treatment chosen on training rows means the same on the longer history of a refit.

    Args:
        anchor_at: the anchor times of the training rows.

    Returns:
        ``none``, time-decay weights with half-lives of 1/2 and 1/4 of the span, and a window of
        the newest half of the span.
    """
    times = pd.to_datetime(anchor_at)
    span = (times.max() - times.min()).total_seconds() / 86400 if len(times) else 0.0
    if not np.isfinite(span) or span < 8:
        return [NO_RECENCY]
    return [
        NO_RECENCY,
        {"name": "decay", "half_life_days": round(span / 2, 1)},
        {"name": "decay", "half_life_days": round(span / 4, 1)},
        {"name": "window", "days": round(span / 2, 1)},
    ]


def recency_weights(anchor_at: pd.Series, treatment: dict[str, Any]) -> np.ndarray | None:
    """Sample weights of a recency treatment, relative to the newest of these rows.

    Args:
        anchor_at: anchor times of the rows a model is fitted on.
        treatment: from :func:`recency_candidates`.

    Returns:
        Weights (a window gives 0 to rows before it, so every row stays in the fit's row set),
        or None for ``none``.
    """
    if treatment["name"] == "none" or not len(anchor_at):
        return None
    times = pd.to_datetime(anchor_at)
    age = ((times.max() - times).dt.total_seconds() / 86400).to_numpy(dtype=float)
    if treatment["name"] == "decay":
        return np.power(0.5, age / float(treatment["half_life_days"]))
    return (age <= float(treatment["days"])).astype(float)


def final_learning_rate(spec: TrainingSpec, train_rows: int) -> float:
    """The learning rate of the selection model and its refits.

    Args:
        spec: training settings (``learning_rate`` wins when set).
        train_rows: rows in the training part.

    Returns:
        ``training.learning_rate``, else 0.05, or 0.1 above ``SEARCH_ROWS`` training rows.
    """
    if spec.learning_rate is not None:
        return spec.learning_rate
    return LARGE_DATA_LEARNING_RATE if train_rows > SEARCH_ROWS else LEARNING_RATE


def prior_shift(y_train: np.ndarray, y_valid: np.ndarray) -> float:
    """The logit offset from the training rows' base rate to the validation rows' (prior shift).

    When only the base rate changes, ``P_valid(y | x)`` is ``P_train(y | x)`` with its logit
    moved by exactly this constant; it needs the labels only.

    Args:
        y_train: training labels (0/1).
        y_valid: validation labels (0/1).

    Returns:
        ``logit(mean(y_valid)) - logit(mean(y_train))``.
    """
    train_rate = float(np.clip(np.mean(y_train), EPS, 1 - EPS))
    valid_rate = float(np.clip(np.mean(y_valid), EPS, 1 - EPS))
    return float(np.log(valid_rate / (1 - valid_rate)) - np.log(train_rate / (1 - train_rate)))


def _params(task: str, spec: TrainingSpec, n_classes: int, thread_count: int) -> dict[str, Any]:
    loss_function = {"binary": "Logloss", "multiclass": "MultiClass", "regression": "RMSE"}[task]
    params: dict[str, Any] = {
        "loss_function": loss_function,
        "iterations": spec.max_iterations,
        "learning_rate": spec.learning_rate or LEARNING_RATE,
        "random_seed": spec.random_seed,
        "od_type": "Iter",
        "od_wait": spec.early_stopping_rounds,
        "use_best_model": True,
        "thread_count": thread_count,
        "allow_writing_files": False,
        "verbose": False,
        # Plain boosting: CatBoost picks the slower Ordered scheme for small data by default; the
        # target statistics of categoricals stay ordered (no target leakage) either way
        "boosting_type": "Plain",
        # categorical combinations of at most 2 features: 4 (the default) costs more time than it
        # buys on CRM data
        "max_ctr_complexity": 2,
    }
    if task == "multiclass":
        params["classes_count"] = n_classes
    return params


def _new_model(task: str, params: dict[str, Any]) -> CatBoost:
    if task == "regression":
        return CatBoostRegressor(**params)
    return CatBoostClassifier(**params)


def catboost_predict(
    model: CatBoost,
    frame: pd.DataFrame,
    features: list[str],
    cat_features: list[str],
    task: str,
    pool: Pool | None = None,
) -> np.ndarray:
    """Raw CatBoost predictions: P(positive), class probabilities, or values.

    Args:
        model: the model.
        frame: rows.
        features: feature columns in model order.
        cat_features: the categorical ones.
        task: the task.
        pool: the frame's pool, when the caller built it already (:func:`make_pool`).

    Returns:
        Predictions.
    """
    if frame.empty:
        return np.zeros((0, 0)) if task == "multiclass" else np.zeros(0)
    if pool is None:
        pool = make_pool(frame, features, cat_features)
    threads = small_frame_threads(len(frame))
    if task == "regression":
        return np.asarray(model.predict(pool, thread_count=threads), dtype=float)
    proba = np.asarray(model.predict_proba(pool, thread_count=threads), dtype=float)
    return proba[:, 1] if task == "binary" else proba


@dataclass
class Fitted:
    """A trained CatBoost model and how its settings were chosen.

    Attributes:
        model: the deployed model (refitted on training + validation rows when ``refit``).
        params: the chosen settings.
        search: one row per tried setting with its validation loss.
        seconds: training wall time.
        selection_model: the model trained on training rows only; its validation predictions are
            what calibration and blending are fitted on (the refitted model has seen them).
    """

    model: CatBoost
    params: dict[str, Any]
    search: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    selection_model: CatBoost | None = None


def refit_wanted(spec: TrainingSpec, train_rows: int) -> bool:
    """Whether to retrain on training + validation rows once everything is chosen.

    Args:
        spec: training settings.
        train_rows: rows in the training part.

    Returns:
        True to refit.
    """
    del train_rows  # "auto" refitted only small data before issue 11; now it always does
    return spec.refit != "never"


def fit_catboost(
    split: Split,
    y_train: np.ndarray,
    y_valid: np.ndarray,
    features: list[str],
    cat_features: list[str],
    task: str,
    spec: TrainingSpec,
    *,
    n_classes: int = 0,
    thread_count: int = -1,
    recency: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Fitted:
    """Train CatBoost on the training rows with settings chosen on the validation split.

    The search runs at a higher learning rate on at most ``SEARCH_ROWS`` training rows: depth
    first (``l2_leaf_reg`` = 3), then ``l2_leaf_reg`` at the best depth, then ``one_hot_max_size``
    when some categorical has more values than the smallest candidate, then (``recency``) the
    recency treatment (:func:`recency_candidates`). The model is trained on every training row at
    the configured learning rate, with early stopping on validation: it is the *selection model*
    whose validation predictions choose the blend and the calibration; :func:`refit_catboost`
    trains the evaluated and the deployed models with the same settings on more rows.

    Args:
        split: the split.
        y_train: training labels (class codes for multiclass).
        y_valid: validation labels.
        features: feature columns in model order.
        cat_features: the categorical ones.
        task: the task.
        spec: training settings.
        n_classes: classes (multiclass).
        thread_count: CPU threads (-1: all cores).
        recency: try the recency treatments (time splits).
        progress: receives a line per tried setting (the search is the long part of training).

    Returns:
        The fitted model and the search trace.
    """
    started = time.perf_counter()
    base = _params(task, spec, n_classes, thread_count)
    train, valid = split.train, split.valid
    if len(train) > SEARCH_ROWS:
        rng = np.random.default_rng(spec.random_seed)
        rows = np.sort(rng.choice(len(train), SEARCH_ROWS, replace=False))
    else:
        rows = np.arange(len(train))
    search_train, search_y = train.iloc[rows], y_train[rows]
    # Early stopping judges each tree on validation with the base rate's change taken out (a
    # time split's validation period may have a different base rate; recalibration on the newest
    # window corrects that later). Without it, on an org whose base rate moved, the validation loss
    # bottoms out after a few trees that have not yet committed to the old rate and training stops
    # far too early (drifting org, 100k leads: 23 trees of depth 8; with the offset 233 of depth 4,
    # holdout AUC 0.8219 -> 0.8284, log loss / oracle's 1.043 -> 1.027).
    offset = prior_shift(y_train, y_valid) if task == "binary" and split.method == "time" else 0.0

    def zero(pool: Pool) -> Pool:
        # a pool of the evaluation set with a baseline needs one on the training pool too
        if offset:
            pool.set_baseline(np.zeros(pool.num_row()))
        return pool

    search_pool = zero(make_pool(search_train, features, cat_features, search_y))
    valid_pool = make_pool(valid, features, cat_features, y_valid)
    if offset:
        valid_pool.set_baseline(np.full(len(valid), offset))
    trace: list[dict[str, Any]] = []
    tried: dict[tuple[Any, ...], float] = {}
    treatment = NO_RECENCY

    def trial(depth: int, l2: float, one_hot: int) -> float:
        key = (depth, l2, one_hot, str(treatment))
        if key not in tried:
            params = {
                **base,
                "depth": depth,
                "l2_leaf_reg": l2,
                "one_hot_max_size": one_hot,
                "learning_rate": max(spec.learning_rate or LEARNING_RATE, SEARCH_LEARNING_RATE),
                "iterations": min(spec.max_iterations, 1000),
                "od_wait": min(spec.early_stopping_rounds, 30),
            }
            model = _new_model(task, params)
            weights = recency_weights(train["anchor_at"], treatment)
            pool = search_pool
            if weights is not None:
                pool = zero(
                    make_pool(search_train, features, cat_features, search_y, weights[rows])
                )
            model.fit(pool, eval_set=valid_pool)
            value = loss(
                task, y_valid, catboost_predict(model, valid, features, cat_features, task)
            )
            tried[key] = value
            if progress is not None:
                recency_note = "" if treatment == NO_RECENCY else f", recency {treatment['name']}"
                progress(
                    f"search: depth {depth}, l2_leaf_reg {l2:g}, one_hot_max_size {one_hot}"
                    f"{recency_note}: "
                    f"{model.tree_count_} trees, validation loss {value:.4f} "
                    f"({time.perf_counter() - started:.0f} s)"
                )
            trace.append(
                {
                    "depth": depth,
                    "l2_leaf_reg": l2,
                    "one_hot_max_size": one_hot,
                    "recency": dict(treatment),
                    "trees": int(model.tree_count_),
                    "valid_loss": round(value, 6),
                }
            )
        return tried[key]

    one_hots = sorted(set(spec.one_hot_max_sizes))
    one_hot = one_hots[0]
    depths = [spec.depth] if spec.depth is not None else list(dict.fromkeys(spec.depths))
    l2s = list(dict.fromkeys(spec.l2_leaf_regs))
    first_l2 = 3.0 if 3.0 in l2s else l2s[0]
    if len(depths) == 1 and len(l2s) == 1 and len(one_hots) == 1:
        depth, l2 = depths[0], l2s[0]
    else:
        depth = min(depths, key=lambda d: trial(d, first_l2, one_hot))
        l2 = min(l2s, key=lambda r: trial(depth, r, one_hot))
        cardinality = max((train[c].nunique() for c in cat_features), default=0)
        if cardinality > one_hots[0]:
            one_hot = min(one_hots, key=lambda o: trial(depth, l2, o))
    recency_losses: dict[str, float] = {}
    if recency:
        candidates = recency_candidates(train["anchor_at"])
        for candidate in candidates:
            treatment = candidate
            recency_losses[_treatment_name(candidate)] = trial(depth, l2, one_hot)
        best = min(candidates, key=lambda c: recency_losses[_treatment_name(c)])
        none_loss = recency_losses[_treatment_name(NO_RECENCY)]
        gain = (none_loss - recency_losses[_treatment_name(best)]) / max(abs(none_loss), EPS)
        treatment = best if gain > RECENCY_MIN_GAIN else NO_RECENCY
    else:
        treatment = NO_RECENCY
    params = {
        **base,
        "depth": depth,
        "l2_leaf_reg": l2,
        "one_hot_max_size": one_hot,
        "learning_rate": final_learning_rate(spec, len(train)),
    }
    model = _new_model(task, params)
    model.fit(
        zero(
            make_pool(
                train,
                features,
                cat_features,
                y_train,
                recency_weights(train["anchor_at"], treatment),
            )
        ),
        eval_set=valid_pool,
    )
    chosen = {k: v for k, v in params.items() if k not in ("verbose", "allow_writing_files")}
    chosen["best_iteration"] = int(model.get_best_iteration() or 0)
    chosen["tree_count"] = int(model.tree_count_)
    chosen["early_stopping_offset"] = round(offset, 4)
    chosen["recency"] = {
        **treatment,
        "valid_loss": {k: round(v, 6) for k, v in recency_losses.items()},
    }
    return Fitted(model, chosen, trace, round(time.perf_counter() - started, 3), model)


def _treatment_name(treatment: dict[str, Any]) -> str:
    if treatment["name"] == "decay":
        return f"decay half-life {treatment['half_life_days']:g} d"
    if treatment["name"] == "window":
        return f"newest {treatment['days']:g} d"
    return "none"


def refit_catboost(
    fitted: Fitted,
    frame: pd.DataFrame,
    y: np.ndarray,
    features: list[str],
    cat_features: list[str],
    task: str,
    *,
    train_rows: int,
) -> CatBoost:
    """The chosen settings trained again on more rows, without early stopping.

    As many trees as early stopping chose on ``train_rows`` rows, scaled by the square root of
    the larger data's share (AutoML's "refit full"), with the chosen recency treatment relative
    to the newest row.

    Args:
        fitted: the selection model and its settings.
        frame: the rows (training + validation for the evaluated model; every labelled row for
            the deployed one).
        y: their labels.
        features: feature columns in model order.
        cat_features: the categorical ones.
        task: the task.
        train_rows: rows the selection model was trained on.

    Returns:
        The model.
    """
    params = {
        k: v
        for k, v in fitted.params.items()
        if k
        not in (
            "best_iteration",
            "tree_count",
            "recency",
            "od_type",
            "od_wait",
            "early_stopping_offset",
        )
    }
    # more rows carry more signal per tree, so the refit needs more trees than early stopping
    # chose, but fewer than in proportion: the square root of the row ratio (1.14 x for
    # training + validation, 1.24 x for every labelled row, instead of 1.3 x and 1.55 x)
    ratio = (len(frame) / max(train_rows, 1)) ** 0.5
    trees = max(1, round(int(fitted.params["tree_count"]) * ratio))
    params.update(iterations=trees, use_best_model=False, verbose=False, allow_writing_files=False)
    treatment = fitted.params.get("recency") or NO_RECENCY
    weights = recency_weights(frame["anchor_at"], treatment) if "anchor_at" in frame else None
    model = _new_model(task, params)
    model.fit(make_pool(frame, features, cat_features, y, weights))
    return model


# -- calibration -----------------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_calibrator(method: str, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Fit a probability calibrator on validation rows, as JSON.

    Args:
        method: ``intercept`` (prior shift: the logit moves by one constant so that the mean
            probability matches the observed rate), ``platt`` (logistic on the logit) or
            ``isotonic``.
        y: labels.
        p: raw probabilities.

    Returns:
        ``{"method": "platt", "a": ..., "b": ...}`` or ``{"method": "isotonic", "x": [...],
        "y": [...]}``.
    """
    if method == "intercept":
        return {"method": "intercept", "b": _intercept_shift(y, p)}
    if method == "platt":
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    iso = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS).fit(p, y)
    return {
        "method": "isotonic",
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


def _intercept_shift(y: np.ndarray, p: np.ndarray) -> float:
    """The logit shift that makes the mean probability equal the observed rate (its MLE)."""
    z = _logit(p)
    rate = float(np.clip(np.mean(y), EPS, 1 - EPS))
    low, high = -20.0, 20.0
    for _ in range(60):  # bisection: the mean of sigmoid(z + b) grows with b
        mid = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(z + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def calibrate(calibrator: dict[str, Any] | None, p: np.ndarray) -> np.ndarray:
    """Apply a stored calibrator (None: unchanged).

    Args:
        calibrator: from :func:`fit_calibrator`.
        p: raw probabilities.

    Returns:
        Calibrated probabilities.
    """
    if not calibrator or len(p) == 0:
        return np.asarray(p, dtype=float)
    if calibrator["method"] in ("platt", "intercept"):
        z = calibrator.get("a", 1.0) * _logit(p) + calibrator["b"]
        return 1.0 / (1.0 + np.exp(-z))
    return np.clip(np.interp(p, calibrator["x"], calibrator["y"]), EPS, 1 - EPS)


# -- the deployed predictor --------------------------------------------------------------------


@dataclass
class Predictor:
    """What scoring applies: CatBoost, optionally blended with a partner, then calibrated.

    ``p = calibrate(weight * catboost + (1 - weight) * partner)``; weight 1 is CatBoost alone,
    weight 0 a fall-back to the partner: the linear model, or for value regressions the textbook
    BG/NBD x Gamma-Gamma model when ``repeat`` is set.

    Attributes:
        task: the task.
        model: the CatBoost model.
        features: feature columns in model order.
        cat_features: the categorical ones.
        classes: class names (multiclass).
        weight: CatBoost's weight in the blend.
        linear: the linear model (needed when weight < 1).
        calibrator: binary calibration, or None.
        repeat: the textbook value model, when it is the blend partner instead of ``linear``.
    """

    task: str
    model: CatBoost
    features: list[str]
    cat_features: list[str]
    classes: list[str] = field(default_factory=list)
    weight: float = 1.0
    linear: LinearModel | None = None
    calibrator: dict[str, Any] | None = None
    repeat: RepeatPurchaseModel | None = None

    def pool(self, frame: pd.DataFrame) -> Pool:
        """The CatBoost pool of a frame's feature columns (build once, predict and explain)."""
        return make_pool(frame, self.features, self.cat_features)

    def raw(self, frame: pd.DataFrame, pool: Pool | None = None) -> np.ndarray:
        """The blend before calibration (``pool``: the frame's, when built already)."""
        out = catboost_predict(self.model, frame, self.features, self.cat_features, self.task, pool)
        partner = self.repeat if self.repeat is not None else self.linear
        if self.weight < 1.0 and partner is not None and len(frame):
            out = self.weight * out + (1 - self.weight) * partner.predict(frame)
        return out

    def predict(self, frame: pd.DataFrame, pool: Pool | None = None) -> np.ndarray:
        """Predictions: P(positive), class probabilities, or values.

        Args:
            frame: rows with the feature columns (missing values and unseen categories are fine).
            pool: the frame's pool (:meth:`pool`), when the caller built it already.

        Returns:
            Predictions.
        """
        out = self.raw(frame, pool)
        if self.task == "binary":
            return calibrate(self.calibrator, out)
        return out
