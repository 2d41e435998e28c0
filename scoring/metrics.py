"""Holdout metrics and the tables a report shows, for binary, multiclass and regression models."""

from __future__ import annotations

from typing import Any

import numpy as np

# scikit-learn's metrics take a second to import: each function below imports what it uses, so
# that `leadscore status` (which only needs `headline`) starts quickly.

EPS = 1e-7


def loss(task: str, y: np.ndarray, prediction: np.ndarray) -> float:
    """The loss a model is selected by: log loss (classification) or RMSE (regression).

    Args:
        task: the task.
        y: labels (class codes for multiclass).
        prediction: probabilities or values.

    Returns:
        The loss (lower is better).
    """
    from sklearn.metrics import log_loss

    if task == "regression":
        return float(np.sqrt(np.mean((np.asarray(y, float) - prediction) ** 2)))
    if task == "binary":
        p = np.clip(prediction, EPS, 1 - EPS)
        return float(log_loss(y, p, labels=[0, 1]))
    p = np.clip(prediction, EPS, 1)
    p = p / p.sum(axis=1, keepdims=True)
    return float(log_loss(y, p, labels=list(range(p.shape[1]))))


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold with the best F1 on these rows (used on validation).

    Args:
        y: labels.
        p: probabilities.

    Returns:
        The threshold.
    """
    best, best_f1 = 0.5, -1.0
    for t in np.unique(np.quantile(p, np.linspace(0.02, 0.98, 49))):
        predicted = p >= t
        tp = float((predicted & (y == 1)).sum())
        f1 = 2 * tp / max(float(predicted.sum() + (y == 1).sum()), 1.0)
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best


def threshold_table(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Precision, recall, F1 and the share flagged at a range of thresholds.

    Args:
        y: labels.
        p: probabilities.

    Returns:
        One row per threshold.
    """
    rows = []
    positives = max(int((y == 1).sum()), 1)
    for t in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        flagged = p >= t
        tp = int((flagged & (y == 1)).sum())
        precision = tp / flagged.sum() if flagged.sum() else None
        recall = tp / positives
        f1 = 2 * tp / (flagged.sum() + positives)
        rows.append(
            {
                "threshold": t,
                "flagged_share": _r(flagged.mean(), 4),
                "precision": _r(precision, 4) if precision is not None else None,
                "recall": _r(recall, 4),
                "f1": _r(f1, 4),
            }
        )
    return rows


def decile_table(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Conversion rate, lift and cumulative gain by score decile (decile 1 = highest scores).

    Args:
        y: labels (or values, for regression: the mean actual per decile).
        p: scores.

    Returns:
        Ten rows (fewer for tiny holdouts).
    """
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    groups = np.array_split(order, min(10, len(order)))
    overall = float(y.mean()) if len(y) else 0.0
    total = float(y.sum()) or 1.0
    rows, cumulative = [], 0.0
    for i, g in enumerate(groups, start=1):
        if not len(g):
            continue
        rate = float(y[g].mean())
        cumulative += float(y[g].sum())
        rows.append(
            {
                "decile": i,
                "n": len(g),
                "min_score": _r(float(p[g].min()), 4),
                "max_score": _r(float(p[g].max()), 4),
                "mean_score": _r(float(p[g].mean()), 4),
                "actual": _r(rate, 4),
                "lift": _r(rate / overall, 3) if overall else None,
                "cumulative_gain": _r(cumulative / total, 4),
            }
        )
    return rows


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Mean predicted probability vs observed rate in equal-count bins.

    Args:
        y: labels.
        p: probabilities.
        bins: number of bins.

    Returns:
        One row per bin.
    """
    order = np.argsort(p, kind="stable")
    rows = []
    for g in np.array_split(order, min(bins, len(order))):
        if len(g):
            rows.append(
                {
                    "n": len(g),
                    "predicted": _r(float(p[g].mean()), 4),
                    "observed": _r(float(y[g].mean()), 4),
                }
            )
    return rows


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float | None:
    """ECE over equal-count bins: the row-weighted mean of |mean predicted - observed rate|.

    Args:
        y: labels (0/1).
        p: probabilities.
        bins: number of bins.

    Returns:
        The ECE, or None without rows.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if not len(y):
        return None
    order = np.argsort(p, kind="stable")
    total = sum(
        len(g) * abs(float(p[g].mean()) - float(y[g].mean()))
        for g in np.array_split(order, min(bins, len(order)))
        if len(g)
    )
    return total / len(y)


def binary_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, *, tables: bool = False
) -> dict[str, Any]:
    """Holdout metrics of a binary score.

    Args:
        y: labels (0/1).
        p: predicted probabilities.
        threshold: decision threshold for precision, recall and F1.
        tables: add the threshold, decile and reliability tables.

    Returns:
        ``n, positive_rate, auc, pr_auc, log_loss, brier, ece, threshold, precision, recall, f1``
        (ECE over 10 equal-count bins; AUCs
        None when only one class is present), plus ``tables``.
    """
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    both = len(np.unique(y)) == 2
    predicted = p >= threshold
    precision, recall, f1, _ = (
        precision_recall_fscore_support(y, predicted, average="binary", zero_division=0)
        if len(y)
        else (None, None, None, None)
    )
    out: dict[str, Any] = {
        "n": len(y),
        "positive_rate": _r(y.mean(), 4) if len(y) else None,
        "auc": _r(roc_auc_score(y, p)) if both else None,
        "pr_auc": _r(average_precision_score(y, p)) if both else None,
        "log_loss": _r(log_loss(y, p, labels=[0, 1])) if len(y) else None,
        "brier": _r(brier_score_loss(y, p)) if len(y) else None,
        "ece": _r(expected_calibration_error(y, p)) if len(y) else None,
        "threshold": _r(threshold, 4),
        "precision": _r(precision, 4) if precision is not None else None,
        "recall": _r(recall, 4) if recall is not None else None,
        "f1": _r(f1, 4) if f1 is not None else None,
    }
    if tables and len(y):
        out["tables"] = {
            "thresholds": threshold_table(y, p),
            "deciles": decile_table(y, p),
            "reliability": reliability_table(y, p),
        }
    return out


def multiclass_metrics(
    y: np.ndarray, proba: np.ndarray, classes: list[str], *, tables: bool = False
) -> dict[str, Any]:
    """Holdout metrics of class probabilities.

    Args:
        y: class codes (indexes into ``classes``).
        proba: probabilities, one column per class.
        classes: class names.
        tables: add per-class metrics and the confusion matrix.

    Returns:
        ``n, accuracy, macro_f1, log_loss`` plus ``tables``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y = np.asarray(y, dtype=int)
    predicted = proba.argmax(axis=1) if len(y) else np.zeros(0, dtype=int)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy": _r(float((predicted == y).mean()), 4) if len(y) else None,
        "macro_f1": _r(float(np.mean(f1)), 4),
        "log_loss": _r(loss("multiclass", y, proba)) if len(y) else None,
    }
    if tables:
        out["tables"] = {
            "per_class": [
                {
                    "class": c,
                    "precision": _r(precision[i], 4),
                    "recall": _r(recall[i], 4),
                    "f1": _r(f1[i], 4),
                    "support": int(support[i]),
                }
                for i, c in enumerate(classes)
            ],
            "confusion": {
                "classes": classes,
                "matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
            },
        }
    return out


def regression_metrics(
    y: np.ndarray, prediction: np.ndarray, *, tables: bool = False
) -> dict[str, Any]:
    """Holdout metrics of a numeric prediction.

    Args:
        y: actual values.
        prediction: predicted values.
        tables: add the decile table (mean predicted vs mean actual by predicted decile).

    Returns:
        ``n, mae, rmse, r2, mean_actual`` plus ``tables``.
    """
    from sklearn.metrics import mean_absolute_error, r2_score

    y = np.asarray(y, dtype=float)
    out: dict[str, Any] = {
        "n": len(y),
        "mae": _r(mean_absolute_error(y, prediction)) if len(y) else None,
        "rmse": _r(loss("regression", y, prediction)) if len(y) else None,
        "r2": _r(r2_score(y, prediction)) if len(y) > 1 else None,
        "mean_actual": _r(float(y.mean()), 4) if len(y) else None,
    }
    if tables and len(y):
        out["tables"] = {"deciles": decile_table(y, prediction)}
    return out


def headline(task: str) -> tuple[str, bool]:
    """The metric a model is compared by and whether higher is better.

    Args:
        task: the task.

    Returns:
        ``(metric name, higher is better)``.
    """
    return {
        "binary": ("auc", True),
        "multiclass": ("log_loss", False),
        "regression": ("rmse", False),
    }[task]
