"""Training examples: for each entity at its anchor time, the label from the window that follows.

Point-in-time rules:

- the anchor is the first occurrence of the anchor event;
- the label is 1 when the label event happens in [anchor, anchor + within_days);
- an entity whose window has not closed by the time the store is complete (``as_of``) is left out
  entirely - its negatives are not known yet, and keeping only its early positives would inflate the
  positive rate of the newest (test) period;
- an entity whose label event happened before its anchor is left out (it cannot happen "again").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from connector.store import quote_identifier
from scoring.events import Entity
from scoring.spec import PredictionSpec


@dataclass(frozen=True)
class Examples:
    """Labelled examples and what was left out.

    Attributes:
        frame: ``entity_id, anchor_at, label`` sorted by anchor time.
        anchored: entities with an anchor.
        censored: left out because their label window is still open.
        label_before_anchor: left out because the label event preceded the anchor.
    """

    frame: pd.DataFrame
    anchored: int
    censored: int
    label_before_anchor: int


def _not_deleted(con: duckdb.DuckDBPyConnection, entity: Entity) -> str:
    """SQL condition on alias ``x`` keeping rows that are not soft-deleted."""
    if entity.deleted_column and _has_column(con, entity.table, entity.deleted_column):
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
    key = quote_identifier(entity.id_column)
    rows = con.execute(
        f"SELECT CAST(x.{key} AS VARCHAR) FROM {quote_identifier(entity.table)} x "
        f"WHERE {_not_deleted(con, entity)} ORDER BY 1"
    ).fetchall()
    return pd.Series([r[0] for r in rows], dtype=object, name="entity_id")


def anchor_times(con: duckdb.DuckDBPyConnection, entity: Entity, anchor_event: str) -> pd.DataFrame:
    """The anchor time of every (non-deleted) entity that has one.

    Args:
        con: store connection with the events view.
        entity: the entity.
        anchor_event: event name.

    Returns:
        ``entity_id, anchor_at``.
    """
    table, key = quote_identifier(entity.table), quote_identifier(entity.id_column)
    return con.execute(
        f"""SELECT e.entity_id, min(e.ts) AS anchor_at
            FROM {quote_identifier(entity.events_view)} e
            JOIN {table} x ON x.{key} = e.entity_id AND {_not_deleted(con, entity)}
            WHERE e.event = ?
            GROUP BY e.entity_id""",
        [anchor_event],
    ).df()


def build_examples(
    con: duckdb.DuckDBPyConnection, entity: Entity, spec: PredictionSpec, as_of: datetime
) -> Examples:
    """Label every anchored entity whose window closed by ``as_of``.

    Args:
        con: store connection with the events view.
        entity: the entity.
        spec: the prediction.
        as_of: the store is complete up to this time.

    Returns:
        The examples and the counts of what was left out.
    """
    anchors = anchor_times(con, entity, spec.anchor.event)
    days = int(spec.label.within_days)
    con.register("_anchors", anchors)
    try:
        frame = con.execute(
            f"""SELECT a.entity_id, a.anchor_at,
                       coalesce(bool_or(e.ts >= a.anchor_at
                                        AND e.ts < a.anchor_at + INTERVAL {days} DAY),
                                false) AS positive,
                       coalesce(bool_or(e.ts < a.anchor_at), false) AS before_anchor
                FROM _anchors a
                LEFT JOIN {quote_identifier(entity.events_view)} e
                  ON e.entity_id = a.entity_id AND e.event = ?
                GROUP BY a.entity_id, a.anchor_at""",
            [spec.label.event],
        ).df()
    finally:
        con.unregister("_anchors")
    window_closed = frame["anchor_at"] + pd.Timedelta(days=days) <= pd.Timestamp(as_of)
    before = frame["before_anchor"].astype(bool)
    kept = frame[window_closed & ~before]
    out = pd.DataFrame(
        {
            "entity_id": kept["entity_id"].astype(str),
            "anchor_at": kept["anchor_at"],
            "label": kept["positive"].astype(int),
        }
    ).sort_values(["anchor_at", "entity_id"], kind="stable", ignore_index=True)
    return Examples(
        frame=out,
        anchored=len(frame),
        censored=int((~window_closed & ~before).sum()),
        label_before_anchor=int(before.sum()),
    )


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? AND lower(column_name) = lower(?)",
        [table, column],
    ).fetchall()[0]
    return bool(row and row[0])
