"""Computed engagement traits, as a CDP computes them, point-in-time for every anchor.

A trait (``[[traits]]`` in config) aggregates one Segment event over a window before the anchor:
the number of ``Email Clicked`` in 30 days, the number of ``Product Added`` in 90 days, the sum of
``revenue`` over every ``Order Completed``. Events count through every identity of the person (the
identity map joins user ids, anonymous ids and profile ids to the record), and only events strictly
before the anchor count, so a trait is what the CDP would have shown at that moment.

Traits become model features (``scoring/features.py``); their definitions are stored with each
model so scoring computes exactly the same ones.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector.store import quote_identifier, raw_table_name
from scoring.events import EVENT_SOURCES, Entity, identity_join_sql

if TYPE_CHECKING:  # the config reads trait specs without pandas; compute_traits imports it
    import pandas as pd

SEGMENT_EVENTS = raw_table_name("segment", "Event")
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_PROPERTY = r"^[A-Za-z0-9_][A-Za-z0-9_ .\-]{0,127}$"


class TraitSpec(BaseModel):
    """One computed trait (a ``[[traits]]`` entry).

    Attributes:
        name: the trait's name, also its feature column (``emails_clicked_30d``).
        event: the Segment event name as tracked (``Email Clicked``).
        window_days: days before the anchor; None counts the whole history before it.
        aggregate: ``count`` of the events, or ``sum`` of a numeric property.
        property: the property summed (``revenue``); required for ``sum``.
        where: property -> value the event must have (all must match), e.g.
            ``{ campaign = "newsletter" }``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_IDENTIFIER)
    event: str = Field(min_length=1, max_length=200)
    window_days: int | None = Field(None, gt=0, le=3650)
    aggregate: Literal["count", "sum"] = "count"
    property: str | None = Field(None, pattern=_PROPERTY)
    where: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> TraitSpec:
        if self.aggregate == "sum" and not self.property:
            raise ValueError(f"trait '{self.name}': aggregate = 'sum' needs a property")
        if self.aggregate == "count" and self.property:
            raise ValueError(f"trait '{self.name}': property is only used with aggregate = 'sum'")
        for key in self.where:
            if not re.fullmatch(_PROPERTY, key):
                raise ValueError(f"trait '{self.name}': where: '{key}' is not a property name")
        return self


def _path(name: str) -> str:
    """JSON path of a top-level property (quoted, so names with spaces or dots work)."""
    return '$."' + name.replace('"', "") + '"'


def _segment_source(entity: Entity) -> tuple[str, str] | None:
    """(identity joins, entity-id expression) for Segment events of an entity, if it has them."""
    for source in EVENT_SOURCES.get(entity.name, ()):
        if source.table == SEGMENT_EVENTS and source.identity_columns:
            return identity_join_sql(entity.name, source.identity_columns, "e")
    return None


def check_traits(
    con: duckdb.DuckDBPyConnection, traits: Sequence[TraitSpec]
) -> tuple[list[TraitSpec], dict[str, str]]:
    """Split traits into usable ones and ones whose event never occurs in the store.

    A trait over an event the store has never seen is a typo or a missing import; it would be a
    constant feature, so it is skipped and reported (with a did-you-mean) instead.

    Args:
        con: store connection.
        traits: configured traits.

    Returns:
        (usable traits, skipped trait name -> reason).
    """
    if not traits:
        return [], {}
    present = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [SEGMENT_EVENTS]
    ).fetchall()[0][0]
    known: list[str] = []
    if present:
        known = [
            r[0] for r in con.execute(f"SELECT DISTINCT event FROM {SEGMENT_EVENTS}").fetchall()
        ]
    usable, skipped = [], {}
    for trait in traits:
        if trait.event in known:
            usable.append(trait)
            continue
        close = difflib.get_close_matches(trait.event, known, n=1)
        skipped[trait.name] = f"no '{trait.event}' events in the store" + (
            f" (did you mean '{close[0]}'?)" if close else ""
        )
    return usable, skipped


def compute_traits(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    anchors: pd.DataFrame,
    traits: Sequence[TraitSpec],
) -> pd.DataFrame:
    """Compute traits for (entity_id, anchor_at) rows from Segment events strictly before anchors.

    Args:
        con: store connection.
        entity: the entity (its Segment events are resolved through the identity map).
        anchors: ``entity_id, anchor_at`` rows.
        traits: the traits.

    Returns:
        One row per anchor row, in the same order, one float column per trait (0 when no event).
    """
    import pandas as pd

    names = [t.name for t in traits]
    if not traits:
        return pd.DataFrame(index=range(len(anchors)))
    resolved = _segment_source(entity)
    frame = anchors[["entity_id", "anchor_at"]].reset_index(drop=True).copy()
    if resolved is None:
        return pd.DataFrame(0.0, index=range(len(frame)), columns=names)
    joins, entity_id = resolved
    q = quote_identifier
    aggregates, params = [], []
    for trait in traits:
        condition = ["ev.event = ?"]
        params_for: list[object] = [trait.event]
        if trait.window_days is not None:
            condition.append(f"ev.ts >= a.anchor_at - INTERVAL {int(trait.window_days)} DAY")
        for key, value in trait.where.items():
            condition.append("json_extract_string(ev.properties, ?) = ?")
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            params_for += [_path(key), text]
        where = " AND ".join(condition)
        if trait.aggregate == "count":
            aggregates.append(f"count(ev.ts) FILTER (WHERE {where}) AS {q(trait.name)}")
            params += params_for
        else:
            aggregates.append(
                "coalesce(sum(TRY_CAST(json_extract_string(ev.properties, ?) AS DOUBLE)) "
                f"FILTER (WHERE {where}), 0) AS {q(trait.name)}"
            )
            params += [_path(trait.property or ""), *params_for]
    events = sorted({t.event for t in traits})
    frame["_row"] = range(len(frame))
    con.register("_trait_anchors", frame)
    try:
        result = con.execute(
            f"""WITH ev AS (
                  SELECT {entity_id} AS entity_id, e."event" AS event,
                         CAST(e.ts AS TIMESTAMP) AS ts, e.properties
                  FROM {SEGMENT_EVENTS} e {joins}
                  WHERE e."event" IN ({", ".join("?" for _ in events)})
                    AND {entity_id} IS NOT NULL)
                SELECT a._row, {", ".join(aggregates)}
                FROM _trait_anchors a
                LEFT JOIN ev ON ev.entity_id = a.entity_id AND ev.ts < a.anchor_at
                GROUP BY a._row ORDER BY a._row""",
            [*events, *params],
        ).df()
    finally:
        con.unregister("_trait_anchors")
    return result.drop(columns="_row")[names].astype(float).reset_index(drop=True)
