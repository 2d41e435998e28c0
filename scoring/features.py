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
import pyarrow as pa
import pyarrow.compute as pc

from connector.store import NUMERIC_DB_TYPES, quote_identifier
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
# ...and, for models trained since it was added (``FeatureColumns.repeat_days``), the distinct
# calendar days with the event over all history: the "frequency" of repeat-purchase models
# (several orders on one day are one purchase occasion).
REPEAT_DAYS = "active_days_all"
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
        repeat_days: for each event in ``values``, also count its distinct days over all
            history (``<event>_active_days_all``); False in models trained before it existed.
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
    repeat_days: bool = False

    @property
    def rfm_parts(self) -> tuple[str, ...]:
        """The all-history columns of each valued event, as suffixes."""
        return (*RFM_PARTS, REPEAT_DAYS) if self.repeat_days else RFM_PARTS

    @property
    def value_names(self) -> list[str]:
        """The value and RFM columns, in model order."""
        windows = [
            f"{e}_value_{stat}_{w}d"
            for e in self.values
            for w in self.windows_days
            for stat in VALUE_STATS
        ]
        rfm = [f"{e}_{part}" for e in self.values for part in self.rfm_parts]
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


# A text column whose values are numbers at least this often is numeric with a few stray values.
NUMERIC_SHARE = 0.95


def _db_kind(db_type: str) -> str | None:
    upper = db_type.upper()
    if upper.startswith(NUMERIC_DB_TYPES):
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

    Two queries per call: one fetches, for every event of a counted type before its row's anchor,
    the row, the event's code and its age (plus its value and day where the features need them);
    the other fetches the entity's attributes per row. Counts, value statistics, RFM, active days
    and recency are then aggregated per row with NumPy (``bincount`` and ``ufunc.at``) from the
    same per-event quantities SQL compared before, so the result is the same (value sums up to the
    order of summation, which DuckDB's parallel aggregation never fixed either).

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
    frame = anchors[["entity_id", "anchor_at"]].reset_index(drop=True).copy()
    frame["anchor_at"] = pd.to_datetime(frame["anchor_at"])
    frame["_row"] = np.arange(len(frame), dtype=np.int64)
    con.register("_anchors", frame)
    try:
        result = _attribute_features(con, entity, columns)
        result.update(_event_features(con, entity, columns, len(frame)))
    finally:
        con.unregister("_anchors")
    if columns.traits:
        traits = compute_traits(
            con, entity, frame, [TraitSpec.model_validate(t) for t in columns.traits]
        )
        for name in traits.columns:
            result[name] = traits[name].to_numpy()
    categorical = set(columns.cat_features)
    features: dict[str, Any] = {}
    for c in columns.names:
        if c in categorical:  # from _fetch: text with (missing) filled in
            features[c] = result[c]
        else:
            features[c] = np.asarray(result[c], dtype=float)
    out = anchors.reset_index(drop=True)
    if any(c in out.columns for c in features):
        out = out.copy()
        for c, values in features.items():
            out[c] = values
        return out
    # one frame built from whole columns: assigning ~50 columns one by one costs more than the SQL
    return pd.concat([out, pd.DataFrame(features, index=out.index)], axis=1)


# The dtype of ``Series.astype(str)`` (pandas 3: Arrow-backed strings, pandas 2: objects): the one
# categorical features have always reached CatBoost in.
_TEXT = pd.Series([""], dtype=object).astype(str).dtype


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> dict[str, Any]:
    """Run a query and return its columns as arrays, through Arrow (no pandas frame, no tuples).

    Text columns come back as categorical feature values (missing as ``(missing)``, in the
    ``astype(str)`` dtype); other columns as NumPy arrays, NULL numbers as NaN.
    """
    relation = con.sql(sql, params=params)
    # DuckDB 2 renamed fetch_arrow_table (now deprecated) to to_arrow_table; 1.x has only arrow()
    table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    out: dict[str, Any] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            out[name] = pd.array(pc.fill_null(column, MISSING), dtype=_TEXT)
        else:
            out[name] = column.to_numpy()
    return out


def _attribute_features(
    con: duckdb.DuckDBPyConnection, entity: Entity, columns: FeatureColumns
) -> dict[str, Any]:
    """Attribute, creation-age and anchor-part columns per ``_anchors`` row, in row order."""
    q = quote_identifier
    attrs = [f"CAST(x.{q(c)} AS VARCHAR) AS {q(c)}" for c in columns.categorical]
    attrs += [f"TRY_CAST(x.{q(c)} AS DOUBLE) AS {q(c)}" for c in columns.numeric]
    if "days_since_created" in columns.derived and entity.created_column:
        attrs.append(
            f"epoch(a.anchor_at - CAST(x.{q(entity.created_column)} AS TIMESTAMP)) / 86400.0 "
            "AS days_since_created"
        )
    for part in columns.date_parts:
        attrs.append(f"strftime(a.anchor_at, '{DATE_PARTS[part]}') AS {q('anchor_' + part)}")
    attributes = _fetch(
        con,
        f"""SELECT a._row {", " + ", ".join(attrs) if attrs else ""}
            FROM _anchors a
            LEFT JOIN {q(entity.table)} x
              ON CAST(x.{q(entity.id_column)} AS VARCHAR) = a.entity_id
            ORDER BY a._row""",
        [],
    )
    del attributes["_row"]  # only there to give a query without attributes a column
    return attributes


def _event_features(
    con: duckdb.DuckDBPyConnection, entity: Entity, columns: FeatureColumns, rows: int
) -> dict[str, np.ndarray]:
    """Counts, value statistics, RFM, active days and recency per ``_anchors`` row.

    One join of the anchors with the events view fetches one line per event before its anchor;
    everything else is arithmetic on those arrays. The query this replaces grouped by row with one
    filtered aggregate per event and window, each comparing the event's name again (24 on the
    benchmark org), and a distinct count of days: here each window is one ``bincount``.
    """
    q = quote_identifier
    events = list(dict.fromkeys(columns.events))
    codes = {event: code for code, event in enumerate(events)}
    values = [e for e in columns.values if e in codes]
    wanted = ["a._row", "c.code", "epoch(a.anchor_at) - epoch(e.ts) AS age"]
    if "days_since_last_event" in columns.derived:
        # the old query's expression applied to each event: it falls as the event's time rises,
        # so its minimum per row is exactly its value at the last event
        wanted.append("epoch(a.anchor_at - e.ts) / 86400.0 AS ago")
    if columns.active_days or (values and columns.repeat_days):
        wanted.append("CAST(a.anchor_at AS DATE) - CAST(e.ts AS DATE) AS day_offset")
    if values:
        # NULL and NaN differ (SQL aggregates skip NULLs, NaN propagates): keep both
        wanted += ["e.value", "e.value IS NOT NULL AS has_value"]
    data: dict[str, Any] = {}
    if events:
        lookup = ", ".join(f"(?, {code})" for code in codes.values())
        data = _fetch(
            con,
            f"""SELECT {", ".join(wanted)}
                FROM _anchors a
                JOIN {q(entity.events_view)} e
                  ON e.entity_id = a.entity_id AND e.ts < a.anchor_at
                JOIN (VALUES {lookup}) c(event, code) ON c.event = e.event""",
            list(codes),
        )
    return aggregate_events(columns, rows, data)


def aggregate_events(
    columns: FeatureColumns, rows: int, data: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The event features per row, from one line per counted event before its row's anchor.

    Shared by batch scoring (lines from SQL) and the scoring endpoint (lines from posted events),
    so both compute every feature with the same arithmetic.

    Args:
        columns: the features to compute.
        rows: number of rows.
        data: per event line: ``_row``, ``code`` (index into the distinct ``columns.events``),
            ``age`` (seconds before the anchor), and where the features use them ``ago`` (days
            before the anchor), ``day_offset`` (calendar days before the anchor's day), ``value``
            and ``has_value``. Missing keys mean no lines.

    Returns:
        Feature name -> one value per row.
    """
    events = list(dict.fromkeys(columns.events))
    codes = {event: code for code, event in enumerate(events)}
    longest = max(columns.windows_days) if columns.windows_days else 0
    empty = np.zeros(0, dtype=np.int64)
    row = data.get("_row", empty).astype(np.int64)
    code = data.get("code", empty).astype(np.int64)
    age = data.get("age", empty).astype(float)
    out: dict[str, np.ndarray] = {}
    cell = row * len(events) + code  # one bin per (row, event)
    for w in columns.windows_days:
        inside = age <= int(w) * 86400
        counts = np.bincount(cell[inside], minlength=rows * len(events)).reshape(rows, -1)
        for event in events:
            out[f"{event}_{w}d"] = counts[:, codes[event]].astype(float)
    value = data.get("value", np.zeros(len(row))).astype(float)
    has_value = data.get("has_value", np.zeros(len(row), dtype=bool)).astype(bool)
    for event in columns.values:
        mine = code == codes[event] if event in codes else np.zeros(len(row), dtype=bool)
        valued = mine & has_value
        for w in columns.windows_days:
            m = valued & (age <= int(w) * 86400)
            n = np.bincount(row[m], minlength=rows)
            total = np.bincount(row[m], weights=value[m], minlength=rows)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            out[f"{event}_value_sum_{w}d"] = total
            out[f"{event}_value_mean_{w}d"] = mean
            out[f"{event}_value_max_{w}d"] = _extreme(np.maximum, row[m], value[m], rows)
        # RFM over all history before the anchor; an age's minimum is the last event's
        out[f"{event}_days_since_last"] = _extreme(np.minimum, row[mine], age[mine], rows) / 86400.0
        out[f"{event}_days_since_first"] = (
            _extreme(np.maximum, row[mine], age[mine], rows) / 86400.0
        )
        out[f"{event}_count_all"] = np.bincount(row[mine], minlength=rows).astype(float)
        out[f"{event}_value_sum_all"] = np.bincount(
            row[valued], weights=value[valued], minlength=rows
        )
        if columns.repeat_days:
            days = data.get("day_offset", empty)[mine].astype(np.int64)
            span = int(days.max(initial=0)) + 1
            # each distinct (row, day) pair once, encoded as one integer
            occasions = np.unique(row[mine] * span + days) // span
            out[f"{event}_{REPEAT_DAYS}"] = np.bincount(occasions, minlength=rows).astype(float)
    if columns.active_days:
        # An event counted over the longest window W is at most W calendar days before its
        # anchor's day (a whole number of days back from the anchor keeps its time of day), so
        # (row, day offset) indexes a dense rows x (W + 1) table of active days.
        inside = age <= int(longest) * 86400
        offset = data.get("day_offset", empty)[inside].astype(np.int64)
        active = np.zeros(rows * (longest + 1), dtype=bool)
        active[row[inside] * (longest + 1) + offset] = True
        out[f"active_days_{longest}d"] = active.reshape(rows, -1).sum(axis=1).astype(float)
    if "days_since_last_event" in columns.derived:
        ago = data.get("ago", np.zeros(0)).astype(float)
        out["days_since_last_event"] = _extreme(np.minimum, row, ago, rows)
    return out


def _extreme(ufunc: np.ufunc, row: np.ndarray, x: np.ndarray, rows: int) -> np.ndarray:
    """Per-row minimum or maximum of ``x`` (NaN propagates, as in SQL); NaN for rows without any.

    Args:
        ufunc: ``np.minimum`` or ``np.maximum``.
        row: the row of each value.
        x: the values.
        rows: number of rows.

    Returns:
        One float per row.
    """
    out = np.full(rows, np.inf if ufunc is np.minimum else -np.inf)
    with np.errstate(invalid="ignore"):  # a NaN value makes its row's result NaN, as in SQL
        ufunc.at(out, row, x)
    out[np.bincount(row, minlength=rows) == 0] = np.nan
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

    # The lines aggregate_events reads, as the SQL computes them: every event of a counted type
    # strictly before the anchor.
    code_of = {name: k for k, name in enumerate(dict.fromkeys(columns.events))}
    codes = np.array([code_of.get(name, -1) for name in events.name], dtype=np.int64)
    anchor = np.datetime64(anchor_at, "us")
    at = events.at.astype("datetime64[us]")
    age_us = (anchor - at).astype(np.int64)
    keep = (codes >= 0) & (age_us > 0)
    value = events.value.astype(float)[keep]
    age = age_us[keep] / 1e6  # seconds, as epoch() differences
    lines = {
        "_row": events.row.astype(np.int64)[keep],
        "code": codes[keep],
        "age": age,
        "ago": age / 86400.0,
        "day_offset": (anchor.astype("datetime64[D]") - at[keep].astype("datetime64[D]")).astype(
            np.int64
        ),
        "value": value,
        "has_value": ~np.isnan(value),  # posted values are finite: NaN is a null
    }
    data.update(aggregate_events(columns, n, lines))
    if "days_since_created" in columns.derived:
        created = [r.get(entity.created_column) if entity.created_column else None for r in records]
        data["days_since_created"] = np.array(
            [
                (anchor_at - c).total_seconds() / 86400.0 if isinstance(c, datetime) else nan
                for c in created
            ],
            dtype=float,
        )
    return pd.DataFrame(
        {c: data[c] for c in ["entity_id", "anchor_at", *columns.names]}, copy=False
    )
