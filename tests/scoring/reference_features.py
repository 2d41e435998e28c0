"""The point-in-time features query as it was before issue 11c (main at 8526f73): the oracle.

``scoring.features.build_features`` now fetches one line per event and aggregates in NumPy; the
tests in ``test_feature_equivalence.py`` check that it computes what this single query did.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from connector.store import quote_identifier
from scoring.events import Entity
from scoring.features import DATE_PARTS, MISSING, FeatureColumns
from scoring.traits import TraitSpec, compute_traits


def reference_features(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    anchors: pd.DataFrame,
    columns: FeatureColumns,
) -> pd.DataFrame:
    """Compute features for (entity_id, anchor_at) pairs from data strictly before each anchor.

    Args:
        con: store connection with the events view.
        entity: the entity.
        anchors: ``entity_id, anchor_at`` (extra columns are kept).
        columns: the features to compute.

    Returns:
        ``anchors`` joined with one column per feature, in the same row order. Categorical values
        are strings with missing values as ``(missing)``; numeric values are floats with NaN for
        missing (also for values that are not numbers).
    """
    q = quote_identifier
    # The window test uses the age of each event in seconds, computed once per joined row:
    # e.ts in [anchor - W days, anchor)  <=>  0 < age <= W * 86400.
    counts, outer = [], []
    params: list[object] = []
    for event in columns.events:
        for w in columns.windows_days:
            name = q(f"{event}_{w}d")
            counts.append(
                f"count(*) FILTER (WHERE j.event = ? AND j.age <= {int(w) * 86400}) AS {name}"
            )
            outer.append(f"coalesce(agg.{name}, 0) AS {name}")
            params.append(event)
    for event in columns.values:
        for w in columns.windows_days:
            inside = f"j.event = ? AND j.age <= {int(w) * 86400}"
            for stat, sql in (("sum", "sum"), ("mean", "avg"), ("max", "max")):
                name = q(f"{event}_value_{stat}_{w}d")
                counts.append(f"{sql}(j.value) FILTER (WHERE {inside}) AS {name}")
                default = "0" if stat == "sum" else "NULL"
                outer.append(f"coalesce(agg.{name}, {default}) AS {name}")
                params.append(event)
        rfm = {
            "days_since_last": "(epoch(max(j.anchor_at)) - epoch(max(j.ts) FILTER (WHERE "
            "j.event = ?))) / 86400.0",
            "days_since_first": "(epoch(max(j.anchor_at)) - epoch(min(j.ts) FILTER (WHERE "
            "j.event = ?))) / 86400.0",
            "count_all": "count(*) FILTER (WHERE j.event = ?)",
            "value_sum_all": "sum(j.value) FILTER (WHERE j.event = ?)",
            "active_days_all": "count(DISTINCT j.day) FILTER (WHERE j.event = ?)",
        }
        for part in columns.rfm_parts:
            name = q(f"{event}_{part}")
            counts.append(f"{rfm[part]} AS {name}")
            default = "0" if part in ("count_all", "value_sum_all", "active_days_all") else "NULL"
            outer.append(f"coalesce(agg.{name}, {default}) AS {name}")
            params.append(event)
    if columns.active_days:
        # one distinct count (over the longest window): each costs a hash set per row
        w = max(columns.windows_days)
        name = q(f"active_days_{w}d")
        counts.append(f"count(DISTINCT j.day) FILTER (WHERE j.age <= {int(w) * 86400}) AS {name}")
        outer.append(f"coalesce(agg.{name}, 0) AS {name}")
    event_filter = ", ".join("?" for _ in columns.events)
    params.extend(columns.events)
    attrs = [f"CAST(x.{q(c)} AS VARCHAR) AS {q(c)}" for c in columns.categorical]
    attrs += [f"TRY_CAST(x.{q(c)} AS DOUBLE) AS {q(c)}" for c in columns.numeric]
    if "days_since_created" in columns.derived and entity.created_column:
        attrs.append(
            f"epoch(a.anchor_at - CAST(x.{q(entity.created_column)} AS TIMESTAMP)) / 86400.0 "
            "AS days_since_created"
        )
    for part in columns.date_parts:
        attrs.append(f"strftime(a.anchor_at, '{DATE_PARTS[part]}') AS {q('anchor_' + part)}")
    if "days_since_last_event" in columns.derived:
        attrs.append("epoch(a.anchor_at - agg.last_ts) / 86400.0 AS days_since_last_event")
    frame = anchors[["entity_id", "anchor_at"]].reset_index(drop=True).copy()
    frame["anchor_at"] = pd.to_datetime(frame["anchor_at"])
    frame["_row"] = range(len(frame))
    if columns.events:
        aggregate = f"""SELECT j._row, {", ".join(counts)}, max(j.ts) AS last_ts
            FROM (SELECT a._row, a.anchor_at, e.event, e.ts, e.value,
                         CAST(e.ts AS DATE) AS day, epoch(a.anchor_at) - epoch(e.ts) AS age
                  FROM _anchors a JOIN {q(entity.events_view)} e
                    ON e.entity_id = a.entity_id AND e.ts < a.anchor_at
                   AND e.event IN ({event_filter})) j
            GROUP BY j._row"""
    else:
        aggregate = "SELECT NULL::BIGINT AS _row, NULL::TIMESTAMP AS last_ts WHERE false"
    selected = [*outer, *attrs]
    con.register("_anchors", frame)
    try:
        result = con.execute(
            f"""WITH agg AS ({aggregate})
                SELECT a._row {", " + ", ".join(selected) if selected else ""}
                FROM _anchors a
                LEFT JOIN agg ON agg._row = a._row
                LEFT JOIN {q(entity.table)} x
                  ON CAST(x.{q(entity.id_column)} AS VARCHAR) = a.entity_id
                ORDER BY a._row""",
            params,
        ).df()
    finally:
        con.unregister("_anchors")
    result = result.drop(columns="_row")
    if columns.traits:
        traits = compute_traits(
            con, entity, frame, [TraitSpec.model_validate(t) for t in columns.traits]
        )
        for name in traits.columns:
            result[name] = traits[name].to_numpy()
    categorical = set(columns.cat_features)
    for c in columns.cat_features:
        result[c] = result[c].astype(object).where(result[c].notna(), MISSING).astype(str)
    numeric_cols = [c for c in columns.names if c not in categorical]
    if numeric_cols:
        result[numeric_cols] = result[numeric_cols].astype(float)
    out = anchors.reset_index(drop=True).copy()
    for c in columns.names:
        out[c] = result[c].to_numpy()
    return out
