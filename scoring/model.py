"""CatBoost: time-ordered split, training with early stopping, prediction and holdout metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from scoring.spec import TrainingSpec


@dataclass(frozen=True)
class Split:
    """Examples split by time: train on the oldest, stop early on the next, test on the newest.

    Attributes:
        train: oldest examples.
        valid: examples after ``train``, for early stopping.
        test: newest examples, touched once for the reported metrics.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


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
    )


def _pool(
    frame: pd.DataFrame, features: list[str], cat_features: list[str], label: str | None
) -> Pool:
    return Pool(
        frame[features],
        label=frame[label].to_numpy() if label else None,
        cat_features=[features.index(c) for c in cat_features],
    )


def train_classifier(
    split: Split,
    features: list[str],
    cat_features: list[str],
    spec: TrainingSpec,
    *,
    label: str = "label",
    thread_count: int = -1,
) -> tuple[CatBoostClassifier, dict[str, Any]]:
    """Train a binary CatBoost classifier; early stopping on ``valid`` picks the tree count.

    Args:
        split: time-ordered split.
        features: feature columns in model order.
        cat_features: the categorical ones (native CatBoost categorical handling).
        spec: training settings.
        label: label column.
        thread_count: CPU threads (-1: all cores).

    Returns:
        The model and training facts (best iteration, seconds, parameters).
    """
    params: dict[str, Any] = {
        "loss_function": "Logloss",
        "eval_metric": "AUC",
        "iterations": spec.max_iterations,
        "learning_rate": spec.learning_rate,
        "depth": spec.depth,
        "random_seed": spec.random_seed,
        "od_type": "Iter",
        "od_wait": spec.early_stopping_rounds,
        "use_best_model": True,
        "thread_count": thread_count,
        "allow_writing_files": False,
        "verbose": False,
    }
    model = CatBoostClassifier(**params)
    started = time.perf_counter()
    model.fit(
        _pool(split.train, features, cat_features, label),
        eval_set=_pool(split.valid, features, cat_features, label),
    )
    info = {
        "best_iteration": int(model.get_best_iteration() or 0),
        "tree_count": int(model.tree_count_),
        "train_seconds": round(time.perf_counter() - started, 3),
        "params": {k: v for k, v in params.items() if k not in ("verbose", "allow_writing_files")},
    }
    return model, info


def predict_proba(
    model: CatBoostClassifier, frame: pd.DataFrame, features: list[str], cat_features: list[str]
) -> np.ndarray:
    """Probability of the positive class for each row.

    Args:
        model: trained classifier.
        frame: rows with the feature columns.
        features: feature columns in model order.
        cat_features: the categorical ones.

    Returns:
        Probabilities, one per row.
    """
    if frame.empty:
        return np.zeros(0)
    return model.predict_proba(_pool(frame, features, cat_features, None))[:, 1]


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    """Holdout metrics of a binary score.

    Args:
        y: labels (0/1).
        p: predicted probabilities.

    Returns:
        ``n, positive_rate, auc, pr_auc, log_loss, brier``; AUCs are None when only one class is
        present.
    """
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "positive_rate": float(y.mean()) if len(y) else None,
        "auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
    }
