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
from typing import Any

import duckdb
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
MISSING = "(missing)"


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
    """

    categorical: list[str]
    numeric: list[str]
    events: list[str]
    windows_days: list[int]
    derived: list[str] = field(
        default_factory=lambda: ["days_since_created", "days_since_last_event"]
    )
    traits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """All feature column names, in model order."""
        counts = [f"{e}_{w}d" for e in self.events for w in self.windows_days]
        traits = [t["name"] for t in self.traits]
        return [*self.categorical, *self.numeric, *counts, *self.derived, *traits]

    @property
    def cat_features(self) -> list[str]:
        """The categorical ones."""
        return list(self.categorical)


def select_attributes(
    con: duckdb.DuckDBPyConnection, entity: Entity, stream: str, exclude: set[str]
) -> tuple[list[str], list[str]]:
    """Choose the entity's attribute features from the source types of its columns.

    Args:
        con: store connection.
        entity: the entity.
        stream: the stream the entity table is pulled by (for ``source_field``).
        exclude: lower-case column names never to use (configured exclusions, output fields, label
            columns).

    Returns:
        (categorical columns, numeric columns).
    """
    types = dict(
        con.execute(
            "SELECT name, source_type FROM source_field WHERE stream = ?", [stream]
        ).fetchall()
    )
    present = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ?",
            [entity.table],
        ).fetchall()
    }
    skip = exclude | _SKIP_FIELDS | {entity.id_column.lower(), entity.created_column.lower()}
    categorical, numeric = [], []
    for name in sorted(present):
        kind = types.get(name)
        if kind is None or name.lower() in skip or kind in _SKIP_TYPES:
            continue
        if kind in _NUMERIC_TYPES:
            numeric.append(name)
        elif kind in _CATEGORICAL_TYPES:
            categorical.append(name)
    if categorical:
        col = quote_identifier
        row = con.execute(
            "SELECT count(*), "
            + ", ".join(f"approx_count_distinct({col(c)})" for c in categorical)
            + f" FROM {col(entity.table)}"
        ).fetchall()[0]
        assert row is not None
        total = max(int(row[0]), 1)
        categorical = [
            c
            for c, distinct in zip(categorical, row[1:], strict=True)
            if total < 20 or distinct / total <= MAX_CATEGORY_SHARE
        ]
    return categorical, numeric


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
        missing.
    """
    q = quote_identifier
    counts = []
    params: list[object] = []
    for event in columns.events:
        for w in columns.windows_days:
            counts.append(
                "count(e.ts) FILTER (WHERE e.event = ? "
                f"AND e.ts >= a.anchor_at - INTERVAL {int(w)} DAY) "
                f"AS {q(f'{event}_{w}d')}"
            )
            params.append(event)
    event_filter = (
        f"AND e.event IN ({', '.join('?' for _ in columns.events)})"
        if columns.events
        else "AND false"
    )
    params.extend(columns.events)
    attrs = [f"CAST(x.{q(c)} AS VARCHAR) AS {q(c)}" for c in columns.categorical]
    attrs += [f"CAST(x.{q(c)} AS DOUBLE) AS {q(c)}" for c in columns.numeric]
    frame = anchors[["entity_id", "anchor_at"]].reset_index(drop=True).copy()
    frame["_row"] = range(len(frame))
    con.register("_anchors", frame)
    try:
        result = con.execute(
            f"""WITH agg AS (
                  SELECT a._row, a.entity_id, a.anchor_at,
                         {", ".join(counts) + "," if counts else ""}
                         max(e.ts) AS last_ts
                  FROM _anchors a
                  LEFT JOIN {q(entity.events_view)} e
                    ON e.entity_id = a.entity_id AND e.ts < a.anchor_at {event_filter}
                  GROUP BY a._row, a.entity_id, a.anchor_at)
                SELECT agg.* EXCLUDE (last_ts, entity_id, anchor_at),
                       {", ".join(attrs) + "," if attrs else ""}
                       epoch(agg.anchor_at - CAST(x.{q(entity.created_column)} AS TIMESTAMP))
                         / 86400.0
                         AS days_since_created,
                       epoch(agg.anchor_at - agg.last_ts) / 86400.0 AS days_since_last_event
                FROM agg LEFT JOIN {q(entity.table)} x ON x.{q(entity.id_column)} = agg.entity_id
                ORDER BY agg._row""",
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
    for c in columns.categorical:
        result[c] = result[c].astype(object).where(result[c].notna(), MISSING).astype(str)
    numeric_cols = [c for c in columns.names if c not in columns.categorical]
    result[numeric_cols] = result[numeric_cols].astype(float)
    out = anchors.reset_index(drop=True).copy()
    for c in columns.names:
        out[c] = result[c].to_numpy()
    return out
