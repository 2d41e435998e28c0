"""Point-in-time features, computed in DuckDB from data strictly before each anchor time.

For each (entity, anchor_at) row:

- engagement counts: for every event type and window W, the number of events in [anchor_at - W days,
  anchor_at); the label event is never counted;
- recency: days since the last event of any counted type before the anchor, and days since creation;
- attributes: categorical and numeric fields of the entity row.

Attribute values are the entity's current values: Salesforce keeps no history of most fields, so
fields that are filled in after the outcome (``Status``, ``Rating``) must be excluded in the
prediction's ``exclude_fields``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from connector.store import quote_identifier
from scoring.events import Entity
from scoring.traits import TraitSpec, compute_traits

# Source types that are never features by themselves.
_SKIP_TYPES = frozenset(
    {
        "id",
        "reference",
        "email",
        "phone",
        "url",
        "textarea",
        "encryptedstring",
        "base64",
        "address",
        "location",
        "date",
        "datetime",
        "time",
        "anyType",
        "complexvalue",
    }
)
_CATEGORICAL_TYPES = frozenset({"string", "picklist", "multipicklist", "combobox", "boolean"})
_NUMERIC_TYPES = frozenset({"int", "double", "currency", "percent", "long"})
# System and identity fields: bookkeeping, not signal.
_SKIP_FIELDS = frozenset(
    f.lower()
    for f in (
        "IsDeleted",
        "CreatedById",
        "LastModifiedById",
        "LastActivityDate",
        "LastViewedDate",
        "LastReferencedDate",
        "FirstName",
        "LastName",
        "MiddleName",
        "Name",
        "Salutation",
        "Suffix",
        "Street",
        "PostalCode",
        "Jigsaw",
        "JigsawContactId",
        "EmailBouncedReason",
        "PhotoUrl",
    )
)
# A text column with more distinct values than this share of rows is an identifier (names,
# companies).
MAX_CATEGORY_SHARE = 0.5
# ...and so is one with many values that are each rare (company names: a few leads per company).
# Categories that generalise (titles, industries, countries) repeat far more often than this.
MIN_ROWS_PER_CATEGORY = 5
MANY_CATEGORIES = 100
MISSING = "(missing)"
# Statistics of an event's value over each window, and its RFM columns over all history.
VALUE_STATS = ("sum", "mean", "max")
RFM_PARTS = ("days_since_last", "days_since_first", "count_all", "value_sum_all")
# Anchor-time parts as categoricals: DuckDB strftime formats.
DATE_PARTS = {"weekday": "%a", "month": "%b", "hour": "%H"}


@dataclass(frozen=True)
class FeatureColumns:
    """The features a model uses; stored in its metadata so scoring uses exactly the same.

    Attributes:
        categorical: categorical attribute columns of the entity table.
        numeric: numeric attribute columns of the entity table.
        events: event types counted over windows.
        windows_days: the windows.
        derived: recency features.
        traits: computed engagement traits (``TraitSpec`` as dicts, so they store in metadata).
        values: events with a numeric value (order total, amount): the sum, mean and maximum of
            the value over each window, plus RFM over all history before the anchor (days since
            the last and the first event, the count and the value sum).
        active_days: count the distinct days with any counted event over the longest window.
        date_parts: parts of the anchor time used as categoricals (``weekday``, ``month``,
            ``hour``).
        dropped: computed columns left out of the model because they were constant over the
            labelled examples (``days_since_created`` at a creation anchor).
    """

    categorical: list[str]
    numeric: list[str]
    events: list[str]
    windows_days: list[int]
    derived: list[str] = field(
        default_factory=lambda: ["days_since_created", "days_since_last_event"]
    )
    traits: list[dict[str, Any]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    active_days: bool = False
    date_parts: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def value_names(self) -> list[str]:
        """The value and RFM columns, in model order."""
        windows = [
            f"{e}_value_{stat}_{w}d"
            for e in self.values
            for w in self.windows_days
            for stat in VALUE_STATS
        ]
        rfm = [f"{e}_{part}" for e in self.values for part in RFM_PARTS]
        return [*windows, *rfm]

    @property
    def computed(self) -> list[str]:
        """Every column :func:`build_features` computes, dropped ones included."""
        counts = [f"{e}_{w}d" for e in self.events for w in self.windows_days]
        active = [f"active_days_{max(self.windows_days)}d"] if self.active_days else []
        date_parts = [f"anchor_{part}" for part in self.date_parts]
        traits = [t["name"] for t in self.traits]
        return [
            *self.categorical,
            *date_parts,
            *self.numeric,
            *counts,
            *self.value_names,
            *active,
            *self.derived,
            *traits,
        ]

    @property
    def names(self) -> list[str]:
        """All feature column names, in model order."""
        dropped = set(self.dropped)
        return [c for c in self.computed if c not in dropped]

    @property
    def cat_features(self) -> list[str]:
        """The categorical ones."""
        dropped = set(self.dropped)
        parts = [f"anchor_{part}" for part in self.date_parts]
        return [c for c in (*self.categorical, *parts) if c not in dropped]


_NUMERIC_DB = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "REAL",
    "DECIMAL",
)
# A text column whose values are numbers at least this often is numeric with a few stray values.
NUMERIC_SHARE = 0.95


def _db_kind(db_type: str) -> str | None:
    upper = db_type.upper()
    if upper.startswith(_NUMERIC_DB):
        return "double"
    if upper in ("VARCHAR", "BOOLEAN") or upper.startswith("ENUM"):
        return "string" if upper != "BOOLEAN" else "boolean"
    return None


def select_attributes(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    exclude: set[str],
    *,
    categorical_fields: set[str] = frozenset(),  # type: ignore[assignment]
    notes: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Choose the entity's attribute features from the types of its columns.

    Salesforce tables use the source types from describe (``source_field``); other tables (e.g.
    imported from CSV) use their DuckDB types. Identifiers, free text with one value per row,
    constant columns, dates and system fields are left out. A text column whose values are almost
    all numbers is used as a number (the stray values become missing); a numeric column declared in
    ``categorical_fields`` is used as a category.

    Args:
        con: store connection.
        entity: the entity.
        exclude: lower-case column names never to use (configured exclusions, output fields, label
            columns).
        categorical_fields: lower-case names of numeric-coded categories.
        notes: receives one line per column that was left out or converted, for the metadata.

    Returns:
        (categorical columns, numeric columns).
    """
    notes = notes if notes is not None else []
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [entity.table],
    ).fetchall()
    db_types = {r[0]: r[1] for r in rows}
    source_types: dict[str, str] = {}
    if entity.stream:
        source_types = dict(
            con.execute(
                "SELECT name, source_type FROM source_field WHERE stream = ?", [entity.stream]
            ).fetchall()
        )
    skip = exclude | _SKIP_FIELDS | {entity.id_column.lower()}
    if entity.created_column:
        skip.add(entity.created_column.lower())
    categorical, numeric, text = [], [], []
    for name, db_type in db_types.items():
        kind = source_types.get(name) if entity.stream else _db_kind(db_type)
        if kind is None or name.lower() in skip or kind in _SKIP_TYPES:
            continue
        if name.lower() in categorical_fields:
            categorical.append(name)
        elif kind in _NUMERIC_TYPES:
            numeric.append(name)
        elif kind in _CATEGORICAL_TYPES:
            (text if kind != "boolean" and db_type.upper() == "VARCHAR" else categorical).append(
                name
            )
    col = quote_identifier
    candidates = categorical + text + numeric
    if not candidates:
        return [], []
    stats = con.execute(
        "SELECT count(*), "
        + ", ".join(
            f"approx_count_distinct({col(c)}), count({col(c)}), count(TRY_CAST({col(c)} AS DOUBLE))"
            for c in candidates
        )
        + f" FROM {col(entity.table)}"
    ).fetchall()[0]
    total = max(int(stats[0]), 1)
    per = {
        c: (int(stats[1 + 3 * i]), int(stats[2 + 3 * i]), int(stats[3 + 3 * i]))
        for i, c in enumerate(candidates)
    }
    keep_cat, keep_num = [], []
    for c in categorical + text:
        distinct, present, numbers = per[c]
        if present and distinct <= 1:
            notes.append(f"{c}: left out (one value only)")
        elif not present:
            notes.append(f"{c}: left out (always empty)")
        elif c in text and numbers >= NUMERIC_SHARE * present and distinct > 20:
            keep_num.append(c)
            if numbers < present:
                notes.append(
                    f"{c}: mixed types; used as a number, {present - numbers} non-numeric "
                    "values treated as missing"
                )
        elif total >= 20 and distinct / total > MAX_CATEGORY_SHARE:
            notes.append(f"{c}: left out (nearly one value per row: an identifier or free text)")
        elif distinct > MANY_CATEGORIES and present / distinct < MIN_ROWS_PER_CATEGORY:
            notes.append(
                f"{c}: left out ({distinct:,} values, {present / distinct:.1f} rows each on "
                "average: an identifier or free text)"
            )
        else:
            keep_cat.append(c)
    for c in numeric:
        distinct, present, _ = per[c]
        if not present or distinct <= 1:
            notes.append(f"{c}: left out ({'always empty' if not present else 'one value only'})")
        else:
            keep_num.append(c)
    order = {c: i for i, c in enumerate(db_types)}
    return sorted(keep_cat, key=order.get), sorted(keep_num, key=order.get)  # type: ignore[arg-type]


def build_features(
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
        }
        for part in RFM_PARTS:
            name = q(f"{event}_{part}")
            counts.append(f"{rfm[part]} AS {name}")
            default = "0" if part in ("count_all", "value_sum_all") else "NULL"
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


def _as_text(value: Any) -> str:
    """A value as DuckDB's ``CAST(... AS VARCHAR)`` spells it (booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_float(value: Any) -> float:
    """``TRY_CAST(... AS DOUBLE)``: a number, or NaN for anything that is not one."""
    if value is None or isinstance(value, bool):
        return float(value) if isinstance(value, bool) else float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@dataclass(frozen=True)
class PostedEvents:
    """Events of posted records, flat: event ``i`` belongs to record ``row[i]``.

    In the order the records and their events were posted (sums add in that order, as the SQL
    definitions do per record).

    Attributes:
        row: (events,) the record each event belongs to (index into the records).
        name: (events,) event names (``task_call``, ``lead_created``).
        at: (events,) event times, naive UTC, ``datetime64[us]``.
        value: (events,) the event's numeric value, NaN when it has none.
    """

    row: np.ndarray
    name: list[str]
    at: np.ndarray
    value: np.ndarray


def features_from_records(
    entity: Entity,
    records: list[dict[str, Any]],
    events: PostedEvents,
    anchor_at: datetime,
    columns: FeatureColumns,
) -> pd.DataFrame:
    """Compute the features of posted records in-process, as :func:`build_features` would.

    The same definitions as the SQL above, over records and their events held in memory (the
    scoring endpoint: no database round trip per request), computed for all records at once with
    NumPy group sums, so a request of 1,000 records costs about as much as a few. ``tests``
    assert that a record scored both ways gets the same score.

    Args:
        entity: the entity (its creation column).
        records: one dict of entity fields per record.
        events: the records' events, including those the entity table implies itself
            (creation, conversion).
        anchor_at: the scoring time (naive UTC); only events strictly before it count.
        columns: the model's feature columns.

    Returns:
        One row per record with one column per feature (``entity_id`` from the id column).

    Raises:
        ValueError: the model uses computed traits, which need the store.
    """
    if columns.traits:
        raise ValueError("this model uses computed traits, which only batch scoring computes")
    n = len(records)
    nan = float("nan")
    data: dict[str, Any] = {
        "entity_id": np.array([_as_text(r.get(entity.id_column)) for r in records], dtype=object),
        "anchor_at": np.full(n, np.datetime64(anchor_at, "us")),
    }
    for c in columns.categorical:
        data[c] = np.array(
            [MISSING if (v := r.get(c)) is None else _as_text(v) for r in records], dtype=object
        )
    for part in columns.date_parts:
        data[f"anchor_{part}"] = np.full(n, anchor_at.strftime(DATE_PARTS[part]), dtype=object)
    for c in columns.numeric:
        data[c] = np.array([_as_float(r.get(c)) for r in records], dtype=float)

    # The events that count: a feature's event, strictly before the anchor.
    code_of = {name: k for k, name in enumerate(columns.events)}
    codes = np.array([code_of.get(name, -1) for name in events.name], dtype=np.int64)
    at = events.at.astype("datetime64[us]")
    age_us = (np.datetime64(anchor_at, "us") - at).astype(np.int64)
    keep = (codes >= 0) & (age_us > 0)
    row = events.row.astype(np.int64)[keep]
    code, age_us, at = codes[keep], age_us[keep], at[keep]
    value = events.value.astype(float)[keep]
    # seconds as timedelta.total_seconds() gives them (microseconds / 10**6)
    age = age_us / 1e6
    k = len(columns.events)
    key = row * k + code
    cells = n * k

    def per_event(counts: np.ndarray) -> np.ndarray:
        return counts.reshape(n, k) if k else np.zeros((n, 0))

    for w in columns.windows_days:
        inside = age <= w * 86400
        counts = per_event(np.bincount(key[inside], minlength=cells).astype(float))
        for j, event in enumerate(columns.events):
            data[f"{event}_{w}d"] = counts[:, j]
    valued = ~np.isnan(value)
    everyone = per_event(np.bincount(key, minlength=cells).astype(float))
    for event in columns.values:
        j = code_of.get(event)
        for w in columns.windows_days:
            if j is None:  # not a counted event: no value ever counts (as the SQL)
                stats = (np.zeros(n), np.full(n, nan), np.full(n, nan))
            else:
                inside = valued & (age <= w * 86400) & (code == j)
                total = np.bincount(row[inside], weights=value[inside], minlength=n)
                number = np.bincount(row[inside], minlength=n)
                largest = np.full(n, -np.inf)
                np.maximum.at(largest, row[inside], value[inside])
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(number > 0, total / np.maximum(number, 1), nan)
                stats = (total, mean, np.where(number > 0, largest, nan))
            for stat, values in zip(VALUE_STATS, stats, strict=True):
                data[f"{event}_value_{stat}_{w}d"] = values
        if j is None:
            newest, oldest = np.full(n, nan), np.full(n, nan)
            count, total = np.zeros(n), np.zeros(n)
        else:
            mine = code == j
            newest = _group_extreme(row[mine], age_us[mine], n, np.minimum)
            oldest = _group_extreme(row[mine], age_us[mine], n, np.maximum)
            count = everyone[:, j]
            sums = mine & valued
            total = np.bincount(row[sums], weights=value[sums], minlength=n)
        data[f"{event}_days_since_last"] = newest / 1e6 / 86400.0
        data[f"{event}_days_since_first"] = oldest / 1e6 / 86400.0
        data[f"{event}_count_all"] = count
        data[f"{event}_value_sum_all"] = total
    if columns.active_days:
        longest = max(columns.windows_days) if columns.windows_days else 0
        inside = age <= longest * 86400
        days = at[inside].astype("datetime64[D]").astype(np.int64)
        pairs = (
            np.unique(np.stack([row[inside], days]), axis=1) if inside.any() else np.zeros((2, 0))
        )
        data[f"active_days_{longest}d"] = np.bincount(
            pairs[0].astype(np.int64), minlength=n
        ).astype(float)
    if "days_since_created" in columns.derived:
        created = [r.get(entity.created_column) if entity.created_column else None for r in records]
        data["days_since_created"] = np.array(
            [
                (anchor_at - c).total_seconds() / 86400.0 if isinstance(c, datetime) else nan
                for c in created
            ],
            dtype=float,
        )
    if "days_since_last_event" in columns.derived:
        data["days_since_last_event"] = _group_extreme(row, age_us, n, np.minimum) / 1e6 / 86400.0
    return pd.DataFrame(
        {c: data[c] for c in ["entity_id", "anchor_at", *columns.names]}, copy=False
    )


def _group_extreme(groups: np.ndarray, values: np.ndarray, n: int, pick: np.ufunc) -> np.ndarray:
    """Per group 0..n-1, the smallest or largest value (``pick``), NaN for an empty group."""
    out = np.full(n, np.iinfo(np.int64).max if pick is np.minimum else np.iinfo(np.int64).min)
    pick.at(out, groups, values)
    present = np.bincount(groups, minlength=n) > 0
    return np.where(present, out.astype(float), float("nan"))
