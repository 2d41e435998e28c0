"""Training examples: for each entity at its anchor time, the label from the window that follows.

Point-in-time rules:

- the anchor is the first occurrence of the anchor event, the entity's creation, or a fixed date,
  plus ``offset_days``;
- an event label aggregates the label event in ``[anchor, anchor + within_days)``;
- an entity whose window has not closed by the time the store is complete (``as_of``) is left out
  entirely: its negatives are not known yet, and keeping only its early positives would inflate
  the positive rate of the newest (test) period. The same holds for the window of a train-only
  event filter;
- for a one-time label event (``aggregate = "exists"``), an entity whose label event happened
  before its anchor is left out (it cannot happen "again");
- a field label is the column's current value; rows without a value are left out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from connector.store import quote_identifier
from scoring.events import (
    Entity,
    EventSource,
    SpecError,
    events_sql,
    filter_sql,
    require_column,
    table_columns,
)
from scoring.spec import ClassRange, LabelSpec, PredictionSpec

TRUTHY = frozenset({"1", "1.0", "true", "t", "yes", "y"})


@dataclass(frozen=True)
class Examples:
    """Labelled examples and what was left out.

    Attributes:
        frame: ``entity_id, anchor_at, label`` sorted by anchor time (label: 0/1 for binary, the
            class name for multiclass, a float for regression).
        anchored: entities with an anchor.
        censored: left out because their window is still open.
        label_before_anchor: left out because the (one-time) label event preceded the anchor.
        filtered: left out by ``train_only_when``.
        unlabelled: left out because the label field is empty or in no class.
        timed: the examples have anchor times (a time-based split is possible).
    """

    frame: pd.DataFrame
    anchored: int
    censored: int = 0
    label_before_anchor: int = 0
    filtered: int = 0
    unlabelled: int = 0
    timed: bool = True


def _not_deleted(con: duckdb.DuckDBPyConnection, entity: Entity) -> str:
    """SQL condition on alias ``x`` keeping rows that are not soft-deleted."""
    if entity.deleted_column and entity.deleted_column.lower() in table_columns(con, entity.table):
        return f"NOT coalesce(x.{quote_identifier(entity.deleted_column)}, false)"
    return "true"


def current_entity_ids(con: duckdb.DuckDBPyConnection, entity: Entity) -> pd.Series:
    """Ids of every entity in the store that is not deleted.

    Args:
        con: store connection.
        entity: the entity.

    Returns:
        Ids as strings, sorted.
    """
    whole = next(current_entity_id_batches(con, entity, 1 << 62), None)
    return whole if whole is not None else pd.Series([], dtype=object, name="entity_id")


def current_entity_id_batches(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    size: int,
    only: Collection[str] | None = None,
) -> Iterator[pd.Series]:
    """The ids of :func:`current_entity_ids`, sorted, ``size`` at a time.

    Each batch is read after the previous one (keyset: ids after the last one read), so the ids
    of a large org are never held together.

    Args:
        con: store connection.
        entity: the entity.
        size: ids per batch.
        only: only these ids (read by key: a few leads of a large org); None: every entity.

    Yields:
        Sorted batches of ids as strings (nothing when there is none).
    """
    key = quote_identifier(entity.id_column)
    wanted = None if only is None else sorted({str(i) for i in only})
    last: str | None = None
    while True:
        rows = con.execute(
            f"SELECT CAST(x.{key} AS VARCHAR) AS id FROM {quote_identifier(entity.table)} x "
            f"WHERE {_not_deleted(con, entity)} AND x.{key} IS NOT NULL "
            "AND (CAST(? AS VARCHAR) IS NULL OR CAST(x." + key + " AS VARCHAR) > ?) "
            "AND (CAST(? AS VARCHAR[]) IS NULL OR CAST(x." + key + " AS VARCHAR) "
            "IN (SELECT unnest(?))) ORDER BY 1 LIMIT ?",
            [last, last, wanted, wanted, int(size)],
        ).fetchall()
        if not rows:
            return
        batch = pd.Series([r[0] for r in rows], dtype=object, name="entity_id")
        yield batch
        if len(rows) < size:
            return
        last = str(rows[-1][0])


def anchor_times(
    con: duckdb.DuckDBPyConnection, entity: Entity, spec: PredictionSpec
) -> pd.DataFrame:
    """The anchor time of every (non-deleted) entity that has one.

    Args:
        con: store connection with the events view.
        entity: the entity.
        spec: the prediction (its ``anchor``).

    Returns:
        ``entity_id, anchor_at``; ``anchor_at`` is NaT for entities of a table without a time
        column anchored at creation (static data).
    """
    table, key = quote_identifier(entity.table), quote_identifier(entity.id_column)
    anchor = spec.anchor
    offset = f" + INTERVAL {int(anchor.offset_days)} DAY" if anchor.offset_days else ""
    alive = _not_deleted(con, entity)
    if anchor.event is not None:
        return con.execute(
            f"""SELECT e.entity_id, min(e.ts){offset} AS anchor_at
                FROM {quote_identifier(entity.events_view)} e
                JOIN {table} x ON CAST(x.{key} AS VARCHAR) = e.entity_id AND {alive}
                WHERE e.event = ?
                GROUP BY e.entity_id""",
            [anchor.event],
        ).df()
    created = (
        f"CAST(x.{quote_identifier(entity.created_column)} AS TIMESTAMP)"
        if entity.created_column
        else None
    )
    if anchor.date is not None:
        when = (
            pd.Timestamp(anchor.date).tz_localize(None)
            if anchor.date.tzinfo is None
            else (pd.Timestamp(anchor.date).tz_convert("UTC").tz_localize(None))
        )
        condition = f"{created} <= ?" if created else "true"
        params: list[object] = [when.to_pydatetime()] if created else []
        return con.execute(
            f"""SELECT CAST(x.{key} AS VARCHAR) AS entity_id,
                       CAST(? AS TIMESTAMP){offset} AS anchor_at
                FROM {table} x WHERE {alive} AND x.{key} IS NOT NULL AND {condition}""",
            [when.to_pydatetime(), *params],
        ).df()
    if created is None:
        return con.execute(
            f"""SELECT CAST(x.{key} AS VARCHAR) AS entity_id, NULL::TIMESTAMP AS anchor_at
                FROM {table} x WHERE {alive} AND x.{key} IS NOT NULL"""
        ).df()
    return con.execute(
        f"""SELECT CAST(x.{key} AS VARCHAR) AS entity_id, {created}{offset} AS anchor_at
            FROM {table} x WHERE {alive} AND x.{key} IS NOT NULL AND {created} IS NOT NULL"""
    ).df()


def classify(values: pd.Series, classes: list[ClassRange]) -> pd.Series:
    """Name the class range each value falls in (the first that matches; None when none does).

    Args:
        values: numbers.
        classes: the ranges.

    Returns:
        Class names (object), None where no range matches or the value is missing.
    """
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    out = np.full(len(v), None, dtype=object)
    free = ~np.isnan(v)
    for c in classes:
        hit = free.copy()
        if c.gt is not None:
            hit &= v > c.gt
        if c.ge is not None:
            hit &= v >= c.ge
        if c.lt is not None:
            hit &= v < c.lt
        if c.le is not None:
            hit &= v <= c.le
        out[hit] = c.name
        free &= ~hit
    return pd.Series(out, index=values.index, dtype=object)


def _binary_from_field(values: pd.Series, label: LabelSpec) -> pd.Series:
    """0/1 from a label column; NaN where the value is missing."""
    present = values.notna()
    text = values.astype(str).str.strip().str.lower()
    if label.positive is not None:
        wanted = {str(p).strip().lower() for p in label.positive}
        out = text.isin(wanted).astype(float)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        out = text.isin(TRUTHY).astype(float)
        out[numeric.notna()] = (numeric[numeric.notna()] != 0).astype(float)
    return out.where(present)


def _field_labels(
    con: duckdb.DuckDBPyConnection, entity: Entity, spec: PredictionSpec, anchors: pd.DataFrame
) -> pd.Series:
    column = require_column(con, entity.table, spec.label.field or "", setting="label.field")
    q = quote_identifier
    values = con.execute(
        f"SELECT CAST({q(entity.id_column)} AS VARCHAR) AS entity_id, {q(column)} AS v "
        f"FROM {q(entity.table)}"
    ).df()
    mapped = anchors[["entity_id"]].merge(values, on="entity_id", how="left")["v"]
    mapped.index = anchors.index
    if spec.task == "binary":
        return _binary_from_field(mapped, spec.label)
    if spec.task == "regression":
        numbers = pd.to_numeric(mapped, errors="coerce")
        if mapped.notna().sum() and numbers.notna().sum() < 0.99 * mapped.notna().sum():
            raise SpecError(
                f"label.field '{column}': a regression label must be numeric; "
                f"{int(mapped.notna().sum() - numbers.notna().sum())} values are not numbers"
            )
        return numbers
    if spec.label.classes:
        return classify(mapped, spec.label.classes)
    return (
        mapped.astype(object)
        .where(mapped.notna(), None)
        .map(lambda v: None if v is None else str(v))
    )


def _event_labels(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    spec: PredictionSpec,
    sources: list[EventSource],
    anchors: pd.DataFrame,
) -> pd.DataFrame:
    label = spec.label
    assert label.event is not None
    known = {n for s in sources for n in s.event_names}
    if label.event not in known and not any(not s.event_names for s in sources):
        raise SpecError(
            f"label.event '{label.event}' is not an event of entity '{entity.name}' "
            f"(known: {', '.join(sorted(known))})"
        )
    sql, params = events_sql(con, entity, sources, only_event=label.event, where=label.where)
    days = int(label.within_days)
    window = f"e.ts >= a.anchor_at AND e.ts < a.anchor_at + INTERVAL {days} DAY"
    con.register("_anchors", anchors[["entity_id", "anchor_at"]])
    try:
        return con.execute(
            f"""WITH ev AS ({sql})
                SELECT a.entity_id,
                       count(e.ts) FILTER (WHERE {window}) AS n_in,
                       coalesce(sum(e.value) FILTER (WHERE {window}), 0) AS s_in,
                       count(e.ts) FILTER (WHERE e.ts < a.anchor_at) AS n_before
                FROM _anchors a LEFT JOIN ev e ON e.entity_id = a.entity_id
                GROUP BY a.entity_id""",
            params,
        ).df()
    finally:
        con.unregister("_anchors")


def _train_filter_mask(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    spec: PredictionSpec,
    sources: list[EventSource],
    frame: pd.DataFrame,
) -> pd.Series:
    """True for examples meeting every ``train_only_when`` condition."""
    keep = pd.Series(True, index=frame.index)
    q = quote_identifier
    for i, f in enumerate(spec.train_only_when):
        setting = f"train_only_when[{i}]"
        if f.events:
            names = f.events
            ids: set[str] = set()
            con.register("_anchors", frame[["entity_id", "anchor_at"]])
            try:
                for name in names:
                    sql, params = events_sql(con, entity, sources, only_event=name)
                    rows = con.execute(
                        f"""WITH ev AS ({sql})
                            SELECT DISTINCT a.entity_id FROM _anchors a
                            JOIN ev e ON e.entity_id = a.entity_id
                             AND e.ts >= a.anchor_at
                             AND e.ts < a.anchor_at + INTERVAL {int(f.within_days)} DAY""",
                        params,
                    ).fetchall()
                    ids |= {r[0] for r in rows}
            finally:
                con.unregister("_anchors")
            keep &= frame["entity_id"].isin(ids)
            continue
        column_name = f.column or (f.where.column if f.where else "")
        column = require_column(con, entity.table, column_name, setting=f"{setting}.column")
        conditions: list[str] = []
        params = []
        if f.before is not None:
            conditions.append(f"CAST({q(column)} AS TIMESTAMP) < ?")
            params.append(pd.Timestamp(f.before).tz_localize(None).to_pydatetime())
        if f.after is not None:
            conditions.append(f"CAST({q(column)} AS TIMESTAMP) >= ?")
            params.append(pd.Timestamp(f.after).tz_localize(None).to_pydatetime())
        if f.where is not None:
            condition, values = filter_sql(f.where, q(column))
            conditions.append(condition)
            params.extend(values)
        rows = con.execute(
            f"SELECT CAST({q(entity.id_column)} AS VARCHAR) FROM {q(entity.table)} "
            f"WHERE {' AND '.join(conditions)}",
            params,
        ).fetchall()
        keep &= frame["entity_id"].isin({r[0] for r in rows})
    return keep


def build_examples(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    spec: PredictionSpec,
    as_of: datetime | None,
    sources: list[EventSource] | None = None,
) -> Examples:
    """Label every anchored entity whose window closed by ``as_of``.

    Args:
        con: store connection with the events view.
        entity: the entity.
        spec: the prediction.
        as_of: the store is complete up to this time (None: no window is open, e.g. a static
            table with a field label).
        sources: the event sources (default: the built-in sources in the events view).

    Returns:
        The examples and the counts of what was left out.

    Raises:
        SpecError: the label refers to a missing event or column, or needs anchor times the data
            does not have.
    """
    if sources is None:
        from scoring.events import create_events_view

        sources = create_events_view(con, entity)
    anchors = anchor_times(con, entity, spec).reset_index(drop=True)
    anchored = len(anchors)
    timed = (
        bool(anchors["anchor_at"].notna().any()) if anchored else entity.created_column is not None
    )
    label = spec.label
    open_window = pd.Series(False, index=anchors.index)
    before = pd.Series(False, index=anchors.index)
    if label.event is not None:
        if anchored and not timed:
            raise SpecError(
                f"label.event '{label.event}' needs anchor times, but entity '{entity.name}' has "
                "no time column; set entity_table.time_column, or use a label field"
            )
        agg = _event_labels(con, entity, spec, sources, anchors)
        agg = anchors[["entity_id"]].merge(agg, on="entity_id", how="left").fillna(0)
        value = agg["s_in"] if label.aggregate == "sum" else agg["n_in"]
        value.index = anchors.index
        if spec.task == "binary":
            threshold = 1.0 if label.threshold is None else float(label.threshold)
            hit = value >= threshold if label.comparison == ">=" else value < threshold
            y = hit.astype(int)
        elif spec.task == "regression":
            y = value.astype(float)
        else:
            y = classify(value.astype(float), label.classes or [])
        windows = [label.within_days, *(f.within_days for f in spec.train_only_when if f.events)]
        if as_of is not None:
            ends = anchors["anchor_at"] + pd.Timedelta(days=max(windows))
            open_window = ends > pd.Timestamp(as_of)
        if label.aggregate == "exists" and label.comparison == ">=":
            before = pd.Series(agg["n_before"].to_numpy() > 0, index=anchors.index)
    else:
        y = _field_labels(con, entity, spec, anchors)
    frame = pd.DataFrame(
        {
            "entity_id": anchors["entity_id"].astype(str),
            "anchor_at": anchors["anchor_at"],
            "label": y,
        }
    )
    eligible = ~open_window & ~before
    unlabelled = eligible & frame["label"].isna()
    eligible &= ~unlabelled
    kept = frame[eligible]
    mask = _train_filter_mask(con, entity, spec, sources, kept) if spec.train_only_when else None
    filtered = 0
    if mask is not None:
        filtered = int((~mask).sum())
        kept = kept[mask]
    kept = kept.copy()
    if spec.task == "binary":
        kept["label"] = kept["label"].astype(int)
    elif spec.task == "regression":
        kept["label"] = kept["label"].astype(float)
    else:
        kept["label"] = kept["label"].astype(str)
    out = kept.sort_values(["anchor_at", "entity_id"], kind="stable", ignore_index=True)
    return Examples(
        frame=out,
        anchored=anchored,
        censored=int((open_window & ~before).sum()),
        label_before_anchor=int(before.sum()),
        filtered=filtered,
        unlabelled=int(unlabelled.sum()),
        timed=timed,
    )
