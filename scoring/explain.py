"""Why a record scored as it did: per-record factors from SHAP values, as short human text.

For every scored record the top positive and top negative factors come from CatBoost's SHAP values
(``get_feature_importance(type="ShapValues")``; with a blend, the linear model's contributions are
mixed in with the same weight) and are rendered as text that fits a 255-character Salesforce text
field, e.g. ``+ Title: VP Engineering; + 3 web visits in 7d; - Employees: 8``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
from catboost import Pool

from scoring.features import MISSING
from scoring.model import Predictor, pool_data

MAX_REASON_CHARS = 255
# Contributions (log-odds, or the regression's units relative to its spread) below this are noise.
MIN_EFFECT = 0.02
_COUNT = re.compile(r"^(?P<event>.+)_(?P<days>\d+)d$")


def humanize(name: str) -> str:
    """A column name as a label: ``NumberOfEmployees`` -> ``Number of employees``.

    Args:
        name: column name.

    Returns:
        The label.
    """
    base = re.sub(r"__c$", "", name)
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", base).replace("_", " ").strip()
    words = base.split()
    if not words:
        return name
    return " ".join([words[0][:1].upper() + words[0][1:], *(w.lower() for w in words[1:])])


def feature_label(feature: str) -> str:
    """A feature's name for charts: ``task_web_visit_7d`` -> ``Web visits in 7d``.

    Args:
        feature: feature name.

    Returns:
        The label.
    """
    match = _COUNT.match(feature)
    if match:
        words = _event_words(match["event"])
        return f"{words[:1].upper()}{words[1:]} in {match['days']}d"
    return humanize(feature)


def _event_words(event: str) -> str:
    words = event.removeprefix("task_").replace("_", " ")
    return words if words.endswith("s") else words + "s"


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "unknown"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def describe(feature: str, value: Any, counts: frozenset[str]) -> str:
    """One factor as text: ``3 web visits in 7d``, ``Industry: Software``.

    Args:
        feature: feature name.
        value: the record's value.
        counts: names of the event-count features.

    Returns:
        The text.
    """
    if feature in counts:
        match = _COUNT.match(feature)
        assert match is not None
        n = 0 if value is None or not math.isfinite(float(value)) else int(value)
        what = _event_words(match["event"])
        if n == 1:
            what = what[:-1]
        return f"{n if n else 'no'} {what} in {match['days']}d"
    if feature == "days_since_created":
        return "created " + (f"{_number(float(value))} days ago" if pd.notna(value) else "?")
    if feature == "days_since_last_event":
        if value is None or not math.isfinite(float(value)):
            return "no activity yet"
        return f"last activity {_number(float(value))} days ago"
    label = humanize(feature)
    if isinstance(value, str):
        text = value if value != MISSING else "unknown"
        return f"{label}: {text[:40]}"
    if value is None:
        return f"{label}: unknown"
    return f"{label}: {_number(float(value))}"


def contributions(
    predictor: Predictor, frame: pd.DataFrame, rows_class: np.ndarray | None = None
) -> np.ndarray:
    """Per-record, per-feature contributions to the prediction.

    Binary: log-odds; multiclass: the log-odds of each record's predicted class; regression: the
    value's units.

    Args:
        predictor: the deployed predictor.
        frame: rows with the feature columns.
        rows_class: multiclass: each row's class index to explain (default: argmax).

    Returns:
        Matrix (rows, features).
    """
    n, f = len(frame), len(predictor.features)
    if n == 0:
        return np.zeros((0, f))
    pool = Pool(
        pool_data(frame, predictor.features),
        cat_features=[predictor.features.index(c) for c in predictor.cat_features],
    )
    shap = np.asarray(predictor.model.get_feature_importance(data=pool, type="ShapValues"))
    if predictor.task == "multiclass":
        if rows_class is None:
            rows_class = predictor.predict(frame).argmax(axis=1)
        values = shap[np.arange(n), rows_class, :f]
    else:
        values = shap[:, :f]
    if predictor.weight < 1.0 and predictor.linear is not None:
        output = 0
        linear = (
            np.stack(
                [
                    predictor.linear.contributions(frame, predictor.features, k)
                    for k in range(len(predictor.classes))
                ]
            )[rows_class, np.arange(n)]
            if predictor.task == "multiclass"
            else predictor.linear.contributions(frame, predictor.features, output)
        )
        values = predictor.weight * values + (1 - predictor.weight) * linear
    return values


def render_reasons(
    frame: pd.DataFrame,
    values: np.ndarray,
    features: list[str],
    *,
    positives: int = 3,
    negatives: int = 2,
    max_chars: int = MAX_REASON_CHARS,
    min_effect: float = MIN_EFFECT,
) -> list[str]:
    """Text of the strongest factors of each record, within ``max_chars``.

    Args:
        frame: rows with the feature columns.
        values: contributions (rows, features).
        features: feature names (columns of ``values``).
        positives: at most this many factors that raise the score.
        negatives: at most this many factors that lower it.
        max_chars: the text limit (Salesforce text fields hold 255).
        min_effect: contributions smaller than this are left out.

    Returns:
        One string per row (empty when no factor stands out).
    """
    n = len(frame)
    if n == 0:
        return []
    counts = frozenset(f for f in features if _COUNT.match(f))
    k_pos, k_neg = min(positives, len(features)), min(negatives, len(features))
    top = np.argsort(-values, axis=1)[:, :k_pos]
    bottom = np.argsort(values, axis=1)[:, :k_neg]
    columns = [frame[f].to_numpy() for f in features]
    cache: dict[tuple[int, Any], str] = {}

    def text(j: int, value: Any) -> str:
        key = (j, value if not isinstance(value, float) or value == value else None)
        hit = cache.get(key)
        if hit is None:
            hit = describe(features[j], value, counts)
            cache[key] = hit
        return hit

    out = []
    for i in range(n):
        parts = ["+ " + text(j, columns[j][i]) for j in top[i] if values[i, j] >= min_effect] + [
            "- " + text(j, columns[j][i]) for j in bottom[i] if values[i, j] <= -min_effect
        ]
        line = "; ".join(parts)
        while len(line) > max_chars and parts:
            parts.pop()
            line = "; ".join(parts)
        out.append(line[:max_chars])
    return out


def explain(predictor: Predictor, frame: pd.DataFrame, **options: Any) -> list[str]:
    """Reasons text for each record (see :func:`render_reasons` for the options).

    Args:
        predictor: the deployed predictor.
        frame: rows with the feature columns.
        **options: passed to :func:`render_reasons`.

    Returns:
        One string per row.
    """
    values = contributions(predictor, frame)
    if predictor.task == "regression" and len(values):
        # express effects relative to the spread of the predictions, so MIN_EFFECT means the same
        spread = float(np.std(values.sum(axis=1))) or 1.0
        values = values / spread
    return render_reasons(frame, values, predictor.features, **options)
