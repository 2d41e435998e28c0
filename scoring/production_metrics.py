"""Monitoring a model in production: drift (PSI) and realized performance.

**Drift.** At training time a compact *reference profile* is saved in the model's metadata: for
each feature, quantile bins (numeric) or category shares (categorical), and the deciles of the
model's probabilities, all measured on the population the model would have scored at the end of
its training data (every current entity, features as of the training cut-off). The monitor
recomputes the same profile on the population scored now and compares them with the population
stability index

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

Like against like: both sides are "every current entity at scoring time", so a feature such as
``task_web_visit_7d`` is not compared with its value at anchor time in training examples, which
would differ by construction. Usual reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25
significant shift.

**Realized performance.** For a past scoring run at time T whose label window has closed
(T + within_days <= as_of), the label of each scored entity is whether the label event happened in
[T, T + within_days); entities whose label event happened before T are left out (they had already
converted). The conversion rate by tier and the AUC of the probabilities are what the data team
reports: do the leads we scored high convert more?

Pure: numpy/pandas, and DuckDB reads through the scoring modules' own functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from connector.store import quote_identifier
from scoring.events import (
    Entity,
    SpecError,
    create_events_view,
    entity_sources,
    resolve_entity,
)
from scoring.features import MISSING, FeatureColumns, build_features
from scoring.labels import current_entity_id_batches
from scoring.model import Predictor
from scoring.spec import PredictionSpec

PROFILE_VERSION = 1
QUANTILES = 10
TOP_CATEGORIES = 20
OTHER = "(other)"
# Shares are floored at this value in the PSI so an empty bin does not make it infinite.
PSI_FLOOR = 1e-4
# Entities a population profile is computed from: deciles and category shares of 200,000 random
# entities are within about 0.002 of the whole population's (standard error of a 10 % share),
# far below the PSI alert levels, and the features of 5M leads at once would need gigabytes.
POPULATION_SAMPLE = 200_000
ID_BATCH = 50_000


# -- profiles and PSI ------------------------------------------------------------------------------


def numeric_profile(values: Sequence[float] | np.ndarray, quantiles: int = QUANTILES) -> dict:
    """Quantile bins of a numeric column and the share of rows in each, plus the missing share.

    Args:
        values: the values (NaN = missing).
        quantiles: number of quantile bins (fewer when values repeat).

    Returns:
        ``{"kind": "numeric", "edges": [...], "shares": [...], "missing": share}``; ``edges`` are
        the interior cut points, so there are ``len(edges) + 1`` shares.
    """
    array = np.asarray(values, dtype=float)
    finite = array[~np.isnan(array)]
    if finite.size == 0:
        return {"kind": "numeric", "edges": [], "shares": [0.0], "missing": 1.0}
    cuts = np.quantile(finite, np.linspace(0, 1, quantiles + 1)[1:-1], method="lower")
    # Put each edge halfway into the gap after its quantile value: tied values (many leads share a
    # probability) then never straddle an edge, and rounding the stored scores cannot move them.
    distinct = np.unique(finite)
    above = np.searchsorted(distinct, cuts, side="right")
    edges = sorted(
        {
            float((c + distinct[i]) / 2) if i < distinct.size else float(c)
            for c, i in zip(cuts, above, strict=True)
        }
    )
    if edges and edges[-1] >= distinct[-1]:
        edges = edges[:-1]  # a cut at the maximum would leave an empty top bin
    profile = {"kind": "numeric", "edges": edges, "shares": [], "missing": 0.0}
    profile["shares"], profile["missing"] = _numeric_shares(profile, array)
    return profile


def _numeric_shares(profile: dict, array: np.ndarray) -> tuple[list[float], float]:
    n = array.size
    if n == 0:
        return [0.0] * (len(profile["edges"]) + 1), 0.0
    missing = np.isnan(array)
    # right-closed bins: (-inf, e1], (e1, e2], ..., (ek, inf)
    index = np.searchsorted(np.asarray(profile["edges"], dtype=float), array[~missing], "left")
    counts = np.bincount(index, minlength=len(profile["edges"]) + 1)
    return [float(c) / n for c in counts], float(missing.sum()) / n


def categorical_profile(values: Sequence[Any] | pd.Series, top: int = TOP_CATEGORIES) -> dict:
    """Shares of the most frequent categories; the rest are pooled as ``(other)``.

    Args:
        values: the values (missing values count as the ``(missing)`` category).
        top: categories kept by name.

    Returns:
        ``{"kind": "categorical", "shares": {category: share}, "other": share}``.
    """
    series = pd.Series(values, dtype=object).fillna(MISSING).astype(str)
    n = len(series)
    if n == 0:
        return {"kind": "categorical", "shares": {}, "other": 0.0}
    frequencies = series.value_counts()
    kept = frequencies.iloc[:top]
    return {
        "kind": "categorical",
        "shares": {str(k): float(v) / n for k, v in kept.items()},
        "other": float(frequencies.iloc[top:].sum()) / n,
    }


def profile_shares(profile: dict, values: Sequence[Any] | np.ndarray | pd.Series) -> list[float]:
    """Shares of ``values`` in a profile's bins, in the profile's order (expected vs actual).

    Args:
        profile: a numeric or categorical profile.
        values: the values to bin.

    Returns:
        Shares: numeric bins then missing; or categories in order then other.
    """
    if profile["kind"] == "numeric":
        shares, missing = _numeric_shares(profile, np.asarray(values, dtype=float))
        return [*shares, missing]
    series = pd.Series(values, dtype=object).fillna(MISSING).astype(str)
    n = len(series)
    if n == 0:
        return [0.0] * (len(profile["shares"]) + 1)
    frequencies = series.value_counts()
    known = [float(frequencies.get(c, 0)) / n for c in profile["shares"]]
    return [*known, max(0.0, 1.0 - sum(known))]


def expected_shares(profile: dict) -> list[float]:
    """A profile's own shares, in the order of :func:`profile_shares`.

    Args:
        profile: a numeric or categorical profile.

    Returns:
        The reference shares.
    """
    if profile["kind"] == "numeric":
        return [*profile["shares"], profile["missing"]]
    return [*profile["shares"].values(), profile["other"]]


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index between two distributions over the same bins.

    Args:
        expected: reference shares.
        actual: current shares.
        floor: minimum share used for empty bins.

    Returns:
        The PSI (0 for identical distributions).

    Raises:
        ValueError: the two have different numbers of bins.
    """
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins: {len(expected)} vs {len(actual)}")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        if e == 0 and a == 0:
            continue
        e, a = max(e, floor), max(a, floor)
        total += (a - e) * math.log(a / e)
    return total


def build_profile(
    features: pd.DataFrame, columns: FeatureColumns, probabilities: np.ndarray
) -> dict[str, Any]:
    """The reference profile of a scored population.

    Args:
        features: one row per entity with every feature column.
        columns: the model's features.
        probabilities: the model's probabilities for the same rows.

    Returns:
        JSON-serialisable ``{"version", "rows", "features": {name: profile}, "score": profile}``.
    """
    return {
        "version": PROFILE_VERSION,
        "rows": len(features),
        "features": {
            name: categorical_profile(features[name])
            if name in columns.cat_features
            else numeric_profile(features[name].to_numpy(dtype=float))
            for name in columns.names
        },
        "score": numeric_profile(np.asarray(probabilities, dtype=float)),
    }


@dataclass(frozen=True)
class DriftReport:
    """PSI of each feature and of the score against the reference profile.

    Attributes:
        rows: entities in the current population.
        reference_rows: entities in the reference population.
        score_psi: PSI of the probabilities.
        features: feature name -> PSI, largest first.
        score_bins: reference and current shares of the score deciles (for plots).
    """

    rows: int
    reference_rows: int
    score_psi: float
    features: dict[str, float]
    score_bins: dict[str, list[float]] = field(default_factory=dict)

    @property
    def max_feature(self) -> str | None:
        """The feature that moved most."""
        return next(iter(self.features), None)

    @property
    def max_feature_psi(self) -> float:
        """Its PSI (0 without features)."""
        return next(iter(self.features.values()), 0.0)


def measure_drift(
    profile: dict[str, Any], features: pd.DataFrame, probabilities: np.ndarray
) -> DriftReport:
    """Compare a current population with a reference profile.

    Args:
        profile: from :func:`build_profile`.
        features: the current population's features (columns named as in the profile; features
            absent from the frame are skipped).
        probabilities: the current probabilities.

    Returns:
        The drift report.
    """
    values = {
        name: psi(expected_shares(p), profile_shares(p, features[name]))
        for name, p in profile["features"].items()
        if name in features.columns
    }
    ordered = dict(sorted(values.items(), key=lambda kv: -kv[1]))
    expected = expected_shares(profile["score"])
    actual = profile_shares(profile["score"], np.asarray(probabilities, dtype=float))
    return DriftReport(
        rows=len(features),
        reference_rows=int(profile.get("rows", 0)),
        score_psi=psi(expected, actual),
        features=ordered,
        score_bins={
            "edges": list(profile["score"]["edges"]),
            "reference": expected[:-1],
            "current": actual[:-1],
        },
    )


def population(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    predictor: Predictor,
    metadata: dict[str, Any],
    *,
    at: datetime,
    limit: int = POPULATION_SAMPLE,
) -> tuple[pd.DataFrame, np.ndarray, FeatureColumns]:
    """Current entities' features as of ``at`` (every one, or a random ``limit``), and scores.

    The score is what ``score_history.probability`` holds for the task: P(positive) for binary,
    the predicted class's probability for multiclass, the predicted value for regression.

    Args:
        con: store connection.
        spec: the prediction (its entity and event sources).
        predictor: the deployed predictor (CatBoost, blend, calibration).
        metadata: its metadata (feature columns).
        at: features use only data strictly before this time.
        limit: above this many current entities, a random sample of this many (the same sample
            on every call while the entities stay the same).

    Returns:
        Features, scores and the feature columns.

    Raises:
        ValueError: the prediction's entity or events are not in the store.
    """
    try:
        entity = resolve_entity(con, spec)
        create_events_view(con, entity, entity_sources(con, entity, spec))
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    columns = FeatureColumns(**metadata["features"])
    ids = sample_entity_ids(con, entity, limit)
    anchors = pd.DataFrame({"entity_id": ids, "anchor_at": pd.Timestamp(at)})
    data = build_features(con, entity, anchors, columns)
    out = np.asarray(predictor.predict(data) if len(data) else [], dtype=float)
    scores = out.max(axis=1) if out.ndim == 2 else out
    return data, scores, columns


def sample_entity_ids(con: duckdb.DuckDBPyConnection, entity: Entity, limit: int) -> pd.Series:
    """Every current entity's id, or a random ``limit`` of them, sorted.

    Ids are read in keyset batches, so the ids of a large org are never held together: up to
    ``limit`` of them are kept while counting, and only an org with more is read a second time
    for its sample, drawn with a fixed seed from the count (the same while the entities are).

    Args:
        con: store connection.
        entity: the entity.
        limit: the most ids returned.

    Returns:
        Ids as strings, sorted.
    """
    held: list[pd.Series] = []
    total = 0
    for batch in current_entity_id_batches(con, entity, ID_BATCH):
        total += len(batch)
        if total <= limit:
            held.append(batch)
    if total <= limit:
        if not held:
            return pd.Series([], dtype=object, name="entity_id")
        return pd.concat(held, ignore_index=True)
    held.clear()
    keep = np.zeros(total, dtype=bool)
    keep[np.random.default_rng(0).choice(total, limit, replace=False)] = True
    parts, start = [], 0
    for batch in current_entity_id_batches(con, entity, ID_BATCH):
        parts.append(batch[keep[start : start + len(batch)]])
        start += len(batch)
    return pd.concat(parts, ignore_index=True)


def reference_profile(
    con: duckdb.DuckDBPyConnection,
    spec: PredictionSpec,
    predictor: Predictor,
    metadata: dict[str, Any],
    *,
    at: datetime,
) -> dict[str, Any]:
    """The profile saved with a newly trained model (the population it would score at ``at``).

    Args:
        con: store connection.
        spec: the prediction.
        predictor: the new predictor.
        metadata: its metadata.
        at: the training cut-off's scoring time.

    Returns:
        The profile, with ``at`` recorded.
    """
    data, p, columns = population(con, spec, predictor, metadata, at=at)
    return {**build_profile(data, columns, p), "at": pd.Timestamp(at).isoformat()}


# -- realized performance --------------------------------------------------------------------------


def outcomes_after(
    con: duckdb.DuckDBPyConnection, spec: PredictionSpec, *, at: datetime
) -> pd.DataFrame:
    """For every entity with the label event, whether it happened before ``at`` or in the window.

    Args:
        con: store connection.
        spec: a prediction whose label is an event (``converted``) within ``within_days``.
        at: the scoring time.

    Returns:
        ``entity_id, before, label`` for entities that have the event at all.

    Raises:
        ValueError: the label is not an event, or the entity is not in the store.
    """
    if not spec.label.event:
        raise ValueError(f"prediction '{spec.name}' has no label event")
    try:
        entity = resolve_entity(con, spec)
        create_events_view(con, entity, entity_sources(con, entity, spec))
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    return con.execute(
        f"""SELECT entity_id,
                   bool_or(ts < ?) AS before,
                   bool_or(ts >= ? AND ts < ? + INTERVAL {int(spec.label.within_days)} DAY)
                     AS label
            FROM {quote_identifier(entity.events_view)} WHERE event = ?
            GROUP BY entity_id""",
        [at, at, at, spec.label.event],
    ).df()


def realized_performance(
    scores: pd.DataFrame, outcomes: pd.DataFrame, bands: Sequence[str]
) -> dict[str, Any]:
    """Conversion by band and AUC of one scoring run, once its label window has closed.

    Args:
        scores: ``entity_id, probability, tier`` as scored (and written).
        outcomes: from :func:`outcomes_after`.
        bands: band (tier) names from the highest to the lowest.

    Returns:
        ``leads, conversions, rate, auc, bands: [{band, leads, conversions, rate}]``; AUC is None
        when only one class occurred.
    """
    merged = scores.merge(outcomes, on="entity_id", how="left")
    before = merged["before"].astype("boolean").fillna(False).astype(bool)
    kept = merged[~before]
    label = kept["label"].astype("boolean").fillna(False).astype(int).to_numpy()
    probability = kept["probability"].to_numpy(dtype=float)
    auc = float(roc_auc_score(label, probability)) if len(set(label.tolist())) == 2 else None
    rows = []
    tiers = kept["tier"].astype(str).to_numpy()
    for band in [*bands, *sorted(set(tiers) - set(bands))]:
        mask = tiers == band
        n, k = int(mask.sum()), int(label[mask].sum())
        rows.append({"band": band, "leads": n, "conversions": k, "rate": k / n if n else None})
    n, k = len(kept), int(label.sum())
    return {
        "leads": n,
        "conversions": k,
        "rate": k / n if n else None,
        "auc": auc,
        "bands": rows,
    }
