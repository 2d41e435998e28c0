"""Why a record scored as it did: per-record factors from SHAP values, as short human text.

For every scored record the top positive and top negative factors come from the model's SHAP
values (CatBoost's TreeSHAP, read from a per-leaf table built once per model by
:mod:`scoring.tree_shap`; with a blend, the linear model's contributions are mixed in with the same
weight) and are rendered as text that fits a 255-character Salesforce text field, e.g.
``+ Title: VP Engineering; + 3 web visits in 7d; - Employees: 8``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from catboost import Pool

from connector.store import FIELD_LABELS
from scoring.features import MISSING
from scoring.model import Predictor, small_frame_threads
from scoring.tree_shap import tree_shap

MAX_REASON_CHARS = 255
# Contributions (log-odds, or the regression's units relative to its spread) below this are noise.
MIN_EFFECT = 0.02
# rows whose leaf indexes are computed at once (see contributions)
LEAF_BLOCK_ROWS = 8192
_COUNT = re.compile(r"^(?P<event>.+)_(?P<days>\d+)d$")


@dataclass(frozen=True)
class Labels:
    """What reps read instead of column names.

    Attributes:
        fields: column -> (label, type) from the CRM's describe (``Seniority__c`` ->
            ``("Seniority", "picklist")``; type ``currency:USD`` for amounts).
        currency: the currency of amounts that carry none of their own (order values).
    """

    fields: dict[str, tuple[str, str]] = field(default_factory=dict)
    currency: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The labels as JSON (a model's metadata keeps them for scoring without the store)."""
        return {"fields": {k: list(v) for k, v in self.fields.items()}, "currency": self.currency}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Labels:
        """Labels from :meth:`to_json` (None: no labels)."""
        if not data:
            return cls()
        fields = {str(k): (str(v[0]), str(v[1])) for k, v in data.get("fields", {}).items()}
        return cls(fields, data.get("currency"))


def read_labels(con: duckdb.DuckDBPyConnection) -> Labels:
    """The labels the store remembered from describe (empty before the first pull).

    Args:
        con: the store's read connection.

    Returns:
        The labels.
    """
    try:
        rows = con.execute(f"SELECT field, label, type FROM {FIELD_LABELS}").fetchall()
    except duckdb.Error:
        return Labels()
    fields = {str(f): (str(lbl), str(t)) for f, lbl, t in rows}
    currencies = sorted(
        {t.split(":", 1)[1] for _, t in fields.values() if t.startswith("currency:")}
    )
    return Labels(fields, currencies[0] if currencies else None)


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


def feature_label(feature: str, labels: Labels | None = None) -> str:
    """A feature's name for charts and tables: ``task_web_visit_7d`` -> ``Web visits in 7d``.

    Args:
        feature: feature name.
        labels: field labels from describe (default: names humanized).

    Returns:
        The label.
    """
    labels = labels or Labels()
    value = _VALUE.match(feature)
    if value:
        return f"{_title(value['event'])} {_STAT_WORDS[value['stat']]} in {value['days']}d"
    rfm = _RFM.match(feature)
    if rfm:
        return f"{_title(rfm['event'])}: {_RFM_WORDS[rfm['part']]}"
    match = _COUNT.match(feature)
    if match:
        return f"{_title(_event_words(match['event'], plural=True))} in {match['days']}d"
    if feature in labels.fields:
        return labels.fields[feature][0]
    return _DATE_PARTS.get(feature) or humanize(feature)


_VALUE = re.compile(r"^(?P<event>.+)_value_(?P<stat>sum|mean|max)_(?P<days>\d+)d$")
_RFM = re.compile(
    r"^(?P<event>.+)_(?P<part>days_since_last|days_since_first|count_all|value_sum_all"
    r"|active_days_all)$"
)
_STAT_WORDS = {"sum": "total", "mean": "average", "max": "largest"}
_RFM_WORDS = {
    "days_since_last": "days since the last",
    "days_since_first": "days since the first",
    "count_all": "count, all time",
    "value_sum_all": "total, all time",
    "active_days_all": "days with one, all time",
}
_DATE_PARTS = {"anchor_weekday": "Weekday", "anchor_month": "Month", "anchor_hour": "Hour"}
# "Object Action" names of Segment's spec (Page Viewed, Order Completed): counted as times
_PAST = re.compile(r"(ed|ent)$")


def _event_words(event: str, *, plural: bool = False) -> str:
    """An event's readable name: ``seg_page_viewed`` -> ``page viewed``.

    ``task_call`` -> ``calls`` (plural); never the store's prefixes, never a window twice.
    """
    words = re.sub(r"^(task|seg)_", "", event).replace("_", " ").strip()
    words = re.sub(r"\s\d+d$", "", words)  # a trait already named for its window
    if plural and not _PAST.search(words) and not words.endswith("s"):
        words += "s"
    return words


def _title(words: str) -> str:
    words = _event_words(words) if "_" in words else words
    return words[:1].upper() + words[1:]


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "unknown"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _money(value: Any, currency: str | None) -> str:
    if value is None or not math.isfinite(float(value)):
        return "unknown"
    amount = f"{float(value):,.0f}" if abs(float(value)) >= 100 else f"{float(value):,.2f}"
    return f"{currency} {amount}" if currency else amount


def _count(event: str, days: str, value: Any) -> str:
    n = 0 if value is None or not math.isfinite(float(value)) else int(value)
    words = _event_words(event)
    if _PAST.search(words):  # Page viewed 8 times in 90d
        times = "once" if n == 1 else f"{n} times"
        return f"{_title(words)} {times} in {days}d"
    plural = _event_words(event, plural=True)
    what = plural if n != 1 else words
    return f"{n if n else 'no'} {what} in {days}d"


def describe(feature: str, value: Any, counts: frozenset[str], labels: Labels | None = None) -> str:
    """One factor as text: ``3 web visits in 7d``, ``Industry: Software``.

    Args:
        feature: feature name.
        value: the record's value.
        counts: names of the event-count features.
        labels: field labels and currency from describe (default: names humanized).

    Returns:
        The text.
    """
    labels = labels or Labels()
    amount = _VALUE.match(feature)
    if amount:
        return f"{feature_label(feature)}: {_money(value, labels.currency)}"
    rfm = _RFM.match(feature)
    if rfm:
        event = _event_words(rfm["event"])
        if value is None or not math.isfinite(float(value)):
            return f"no {event} yet"
        if rfm["part"] == "value_sum_all":
            return f"{_title(event)} total: {_money(value, labels.currency)}"
        if rfm["part"] == "count_all":
            return _count(rfm["event"], "all", value).replace(" in alld", " in all")
        if rfm["part"] == "active_days_all":  # purchases on 6 days in all
            n = float(value)
            what = event if n == 1 else _event_words(rfm["event"], plural=True)
            return f"{what} on {_number(n)} day{'' if n == 1 else 's'} in all"
        first = "first" if rfm["part"] == "days_since_first" else "last"
        return f"{first} {event} {_number(float(value))} days ago"
    if feature in counts:
        match = _COUNT.match(feature)
        assert match is not None
        return _count(match["event"], match["days"], value)
    if feature == "days_since_created":
        return "created " + (f"{_number(float(value))} days ago" if pd.notna(value) else "?")
    if feature == "days_since_last_event":
        if value is None or not math.isfinite(float(value)):
            return "no activity yet"
        return f"last activity {_number(float(value))} days ago"
    label, kind = labels.fields.get(feature, (None, ""))
    label = label or feature_label(feature, labels)
    if isinstance(value, str):
        text = value if value != MISSING else "unknown"
        return f"{label}: {text[:40]}"
    if value is None:
        return f"{label}: unknown"
    if kind.startswith("currency:"):
        return f"{label}: {_money(value, kind.split(':', 1)[1])}"
    return f"{label}: {_number(float(value))}"


def contributions(
    predictor: Predictor,
    frame: pd.DataFrame,
    rows_class: np.ndarray | None = None,
    pool: Pool | None = None,
) -> np.ndarray:
    """Per-record, per-feature contributions to the prediction.

    Binary: log-odds; multiclass: the log-odds of each record's predicted class; regression: the
    value's units.

    Args:
        predictor: the deployed predictor.
        frame: rows with the feature columns.
        rows_class: multiclass: each row's class index to explain (default: argmax).
        pool: the frame's pool (:meth:`Predictor.pool`), when the caller built it already.

    Returns:
        Matrix (rows, features).
    """
    n, f = len(frame), len(predictor.features)
    if n == 0:
        return np.zeros((0, f))
    if pool is None:
        pool = predictor.pool(frame)
    if predictor.task == "multiclass" and rows_class is None:
        rows_class = predictor.predict(frame, pool).argmax(axis=1)
    table = tree_shap(predictor.model, f)
    if table is not None:
        threads = small_frame_threads(n)
        values = np.empty((n, f))
        # Leaf indexes a block of rows at a time: they are uint32 per row and tree (2.5 KB a row
        # for a 620-tree model, 124 MB for a 50,000-lead batch at once), and the tree count grows
        # with the training data, so a whole batch's would grow with the org.
        for start in range(0, n, LEAF_BLOCK_ROWS):
            end = min(start + LEAF_BLOCK_ROWS, n)
            part = pool if n <= LEAF_BLOCK_ROWS else pool.slice(np.arange(start, end))
            leaves = np.asarray(predictor.model.calc_leaf_indexes(part, thread_count=threads))
            values[start:end] = table.contributions(
                leaves, rows_class[start:end] if rows_class is not None else None
            )
    else:
        shap = np.asarray(predictor.model.get_feature_importance(data=pool, type="ShapValues"))
        values = shap[np.arange(n), rows_class, :f] if rows_class is not None else shap[:, :f]
    if predictor.weight < 1.0 and predictor.repeat is not None:
        # the textbook model's share is not itemised by feature: reasons are CatBoost's share
        values = predictor.weight * values
    elif predictor.weight < 1.0 and predictor.linear is not None:
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
    labels: Labels | None = None,
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
        labels: field labels and currency from describe (what reps read).

    Returns:
        One string per row (empty when no factor stands out).
    """
    n = len(frame)
    if n == 0:
        return []
    counts = frozenset(f for f in features if _COUNT.match(f) and not _VALUE.match(f))
    k_pos, k_neg = min(positives, len(features)), min(negatives, len(features))
    top = np.argsort(-values, axis=1)[:, :k_pos]
    bottom = np.argsort(values, axis=1)[:, :k_neg]
    # The text of each chosen factor, worded once per distinct value of each feature: a batch of
    # 1,000 records has about 5,000 factors but only a few hundred distinct texts.
    chosen = np.concatenate([top, bottom], axis=1)
    sign = np.array(["+ "] * k_pos + ["- "] * k_neg, dtype=object)
    effect = np.take_along_axis(values, chosen, axis=1)
    shown = np.concatenate(
        [effect[:, :k_pos] >= min_effect, effect[:, k_pos:] <= -min_effect], axis=1
    )
    pieces = np.empty(chosen.shape, dtype=object)
    for j in np.unique(chosen[shown]):
        rows, slots = np.nonzero(shown & (chosen == j))
        column = frame[features[j]].to_numpy()[rows]
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        texts = [describe(features[j], value, counts, labels) for value in uniques]
        if (codes < 0).any():  # missing values, worded from the missing value itself
            texts.append(describe(features[j], column[codes < 0][0], counts, labels))
        # code -1 (missing) picks the last text, the missing one
        pieces[rows, slots] = sign[slots] + np.array(texts, dtype=object)[codes]
    # "; ".join of each row's shown pieces, one column at a time (element-wise in C)
    lines = np.full(n, "", dtype=object)
    for k in range(chosen.shape[1]):
        show = shown[:, k]
        first = show & (lines == "")
        lines[first] = pieces[first, k]
        rest = show & ~first
        lines[rest] = lines[rest] + "; " + pieces[rest, k]
    out = lines.tolist()
    for i in np.nonzero(np.fromiter(map(len, out), dtype=np.int64, count=n) > max_chars)[0]:
        parts = [pieces[i, k] for k in range(chosen.shape[1]) if shown[i, k]]
        line = "; ".join(parts)
        while len(line) > max_chars and parts:
            parts.pop()
            line = "; ".join(parts)
        out[i] = line[:max_chars]
    return out


def explain(
    predictor: Predictor, frame: pd.DataFrame, pool: Pool | None = None, **options: Any
) -> list[str]:
    """Reasons text for each record (see :func:`render_reasons` for the options).

    Args:
        predictor: the deployed predictor.
        frame: rows with the feature columns.
        pool: the frame's pool (:meth:`Predictor.pool`), when the caller built it already.
        **options: passed to :func:`render_reasons`.

    Returns:
        One string per row.
    """
    values = contributions(predictor, frame, pool=pool)
    if predictor.task == "regression" and len(values):
        # express effects relative to the spread of the predictions, so MIN_EFFECT means the same
        spread = float(np.std(values.sum(axis=1))) or 1.0
        values = values / spread
    return render_reasons(frame, values, predictor.features, **options)
