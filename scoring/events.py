"""Entities and their events, as SQL over the raw tables of the store.

Every prediction is phrased in events: an entity becomes scoreable at the first ``anchor`` event,
    its label is
whether the ``label`` event follows within N days, and its engagement features count events before
the anchor. The ``<entity>_events(entity_id, event, ts)`` view unifies the sources below; a source
whose table or columns are not in the store (stream not pulled, field not configured) is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from connector.store import quote_identifier, raw_table_name


@dataclass(frozen=True)
class Entity:
    """A scoreable thing and where it lives in the store.

    Attributes:
        name: entity name used in config (``lead``).
        table: raw table.
        id_column: primary key.
        created_column: creation timestamp.
        stream: the stream that fills the table (its source types are in ``source_field``).
        deleted_column: soft-delete flag, when the table has one.
        alias_columns: columns holding other ids the entity is known by. Salesforce moves a
            converted lead's Tasks and Events to the new Contact, so a Task's ``WhoId`` may be the
            lead's ``ConvertedContactId``; without the alias, a converted lead would lose its
            pre-conversion engagement.
    """

    name: str
    table: str
    id_column: str
    created_column: str
    stream: str
    deleted_column: str | None = "IsDeleted"
    alias_columns: tuple[str, ...] = ()

    @property
    def events_view(self) -> str:
        """Name of the entity's events view."""
        return f"{self.name}_events"


@dataclass(frozen=True)
class EventSource:
    """One way events arise from a raw table.

    Attributes:
        table: raw table.
        entity_column: column holding the entity id.
        time_column: column holding the event time (dates are taken as midnight UTC).
        name_sql: SQL expression naming the event (a literal, or derived from a column).
        condition_column: boolean column that must be true, or None.
        required: columns that must exist for the source to be used (besides the three above).
        event_names: the fixed event name, when ``name_sql`` is a literal.
        reveals: entity-table columns that encode the event itself: never features when it is the
            label.
        identity_columns: ``(column, id_type)`` pairs: the row's entity is found by looking the
            column up in the identity map (``sync/identity.py``) under that identity type, the
            first pair that resolves wins. Used for sources that know people by CDP identities
            (user id, anonymous id) rather than by the entity's id.
    """

    table: str
    entity_column: str
    time_column: str
    name_sql: str
    condition_column: str | None = None
    required: tuple[str, ...] = ()
    event_names: tuple[str, ...] = ()
    reveals: tuple[str, ...] = ()
    identity_columns: tuple[tuple[str, str], ...] = ()


IDENTITY_MAP = "identity_map"
"""(entity, id_type, id_value, entity_id, ...): every identity of every person, by entity."""
_PLAIN = re.compile(r"^[a-z][a-z0-9_.]*$")


def identity_join_sql(
    entity: str, pairs: tuple[tuple[str, str], ...], alias: str
) -> tuple[str, str]:
    """SQL resolving a row to its entity through the identity map.

    Args:
        entity: entity name.
        pairs: ``(column, id_type)`` pairs tried in order.
        alias: the alias of the table holding the columns.

    Returns:
        ``(LEFT JOIN clauses, expression of the entity id)``; the expression is NULL for rows no
        identity resolves.
    """
    for name in (entity, *(t for _, t in pairs)):
        if not _PLAIN.match(name):  # code-defined names, but never pasted into SQL unchecked
            raise ValueError(f"not a plain name: {name!r}")
    q = quote_identifier
    joins, ids = [], []
    for index, (column, id_type) in enumerate(pairs):
        m = f"_id{index}"
        joins.append(
            f"LEFT JOIN {IDENTITY_MAP} {m} ON {m}.entity = '{entity}' AND "
            f"{m}.id_type = '{id_type}' AND {m}.id_value = {alias}.{q(column)}"
        )
        ids.append(f"{m}.entity_id")
    return " ".join(joins), f"coalesce({', '.join(ids)})"


ENTITIES: dict[str, Entity] = {
    "lead": Entity(
        "lead",
        raw_table_name("salesforce", "Lead"),
        "Id",
        "CreatedDate",
        "Lead",
        alias_columns=("ConvertedContactId",),
    ),
}

_LEAD = raw_table_name("salesforce", "Lead")

EVENT_SOURCES: dict[str, tuple[EventSource, ...]] = {
    "lead": (
        EventSource(_LEAD, "Id", "CreatedDate", "'lead_created'", event_names=("lead_created",)),
        EventSource(
            _LEAD,
            "Id",
            "ConvertedDate",
            "'converted'",
            condition_column="IsConverted",
            event_names=("converted",),
            reveals=(
                "IsConverted",
                "ConvertedDate",
                "ConvertedAccountId",
                "ConvertedContactId",
                "ConvertedOpportunityId",
                "Status",  # "Closed - Converted"
            ),
        ),
        EventSource(
            raw_table_name("salesforce", "CampaignMember"),
            "LeadId",
            "FirstRespondedDate",
            "'campaign_response'",
            condition_column="HasResponded",
            event_names=("campaign_response",),
        ),
        EventSource(
            raw_table_name("salesforce", "Task"),
            "WhoId",
            "CreatedDate",
            # one event per Task type: task_call, task_web_visit... (names are [a-z0-9_] by
            # construction)
            "'task_' || lower(regexp_replace(trim(coalesce(\"Type\", 'other')), "
            "'[^A-Za-z0-9]+', '_', 'g'))",
            required=("Type",),
        ),
        # Segment track events, one event per name: seg_feature_used, seg_order_completed...,
        # counted for the lead through every identity of the person (user id, anonymous ids, the
        # profile's segment id), so anonymous usage before sign-up counts too.
        EventSource(
            raw_table_name("segment", "Event"),
            "user_id",
            "ts",
            "'seg_' || trim(lower(regexp_replace(trim(e.\"event\"), '[^A-Za-z0-9]+', '_', 'g')), "
            "'_')",
            required=("event", "anonymous_id", "segment_id"),
            identity_columns=(
                ("user_id", "user_id"),
                ("anonymous_id", "anonymous_id"),
                ("segment_id", "segment_id"),
            ),
        ),
    ),
}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {r[0].lower() for r in rows}


def available_sources(con: duckdb.DuckDBPyConnection, entity: Entity) -> list[EventSource]:
    """The event sources whose table and columns exist in the store.

    Args:
        con: store connection.
        entity: the entity.

    Returns:
        Usable sources.
    """
    usable = []
    for source in EVENT_SOURCES[entity.name]:
        present = _columns(con, source.table)
        if source.identity_columns and not _columns(con, IDENTITY_MAP):
            continue
        needed = {source.entity_column, source.time_column, *source.required}
        if source.condition_column:
            needed.add(source.condition_column)
        if {c.lower() for c in needed} <= present:
            usable.append(source)
    return usable


def create_events_view(con: duckdb.DuckDBPyConnection, entity: Entity) -> list[EventSource]:
    """Create (or replace) the temporary ``<entity>_events(entity_id, event, ts)`` view.

    Args:
        con: store connection.
        entity: the entity.

    Returns:
        The sources the view is built from.
    """
    sources = available_sources(con, entity)
    q = quote_identifier
    parts = []
    for s in sources:
        where = f"WHERE {q(s.condition_column)} " if s.condition_column else ""
        if s.identity_columns:
            joins, entity_id = identity_join_sql(entity.name, s.identity_columns, "e")
            parts.append(
                f"SELECT {entity_id} AS source_id, {s.name_sql} AS event, "
                f"CAST(e.{q(s.time_column)} AS TIMESTAMP) AS ts FROM {q(s.table)} e {joins} "
                f"WHERE {entity_id} IS NOT NULL"
            )
            continue
        parts.append(
            f"SELECT CAST({q(s.entity_column)} AS VARCHAR) AS source_id, "
            f"{s.name_sql} AS event, CAST({q(s.time_column)} AS TIMESTAMP) AS ts "
            f"FROM {q(s.table)} {where}"
        )
    if not parts:
        parts = [
            "SELECT NULL::VARCHAR AS source_id, NULL::VARCHAR AS event, NULL::TIMESTAMP AS ts "
            "WHERE false"
        ]
    # Every id an entity is known by (its own, and e.g. the contact a lead was converted to) maps to
    # the entity, so events recorded against any of them count for it.
    present = _columns(con, entity.table)
    aliases = [
        f"SELECT CAST({q(entity.id_column)} AS VARCHAR) AS source_id, "
        f"CAST({q(entity.id_column)} AS VARCHAR) AS entity_id FROM {q(entity.table)}"
    ]
    aliases += [
        f"SELECT CAST({q(c)} AS VARCHAR), CAST({q(entity.id_column)} AS VARCHAR) "
        f"FROM {q(entity.table)} WHERE {q(c)} IS NOT NULL"
        for c in entity.alias_columns
        if c.lower() in present
    ]
    if not present:
        aliases = ["SELECT NULL::VARCHAR AS source_id, NULL::VARCHAR AS entity_id WHERE false"]
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {q(entity.events_view)} AS "
        f"SELECT ids.entity_id, e.event, e.ts FROM ({' UNION ALL '.join(parts)}) e "
        f"JOIN ({' UNION ALL '.join(aliases)}) ids ON ids.source_id = e.source_id "
        "WHERE e.ts IS NOT NULL"
    )
    return sources


def event_names(con: duckdb.DuckDBPyConnection, entity: Entity) -> list[str]:
    """Distinct event names present in the entity's events view.

    Args:
        con: store connection (the view must exist).
        entity: the entity.

    Returns:
        Sorted event names.
    """
    rows = con.execute(
        f"SELECT DISTINCT event FROM {quote_identifier(entity.events_view)} ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def columns_revealing(entity: Entity, event: str, sources: list[EventSource]) -> set[str]:
    """Columns of the entity table that encode an event (never features of its label).

    Args:
        entity: the entity.
        event: event name.
        sources: the sources in use.

    Returns:
        Column names, lower-case.
    """
    out: set[str] = set()
    for s in sources:
        if s.table == entity.table and event in s.event_names:
            out |= {c.lower() for c in s.reveals}
    return out
