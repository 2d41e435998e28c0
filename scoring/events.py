"""Entities and their events, as SQL over the tables of the store.

Every prediction is phrased in events: an entity becomes scoreable at its anchor, an event label
aggregates the label event in the window after it, and engagement features count events before
it. The ``<entity>_events(entity_id, event, ts, value)`` view unifies the sources of an entity; a
built-in source whose table or columns are not in the store (stream not pulled, field not
configured) is left out, a configured one (``[[predictions.events]]``) must exist.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import duckdb

from connector.store import (
    IDENTITY_MAP,
    is_row_order,
    number_time_problem,
    quote_identifier,
    raw_table_name,
)
from scoring.spec import EventSourceSpec, PredictionSpec, ValueFilter


class SpecError(Exception):
    """A prediction refers to something the store does not have (table, column, event)."""


@dataclass(frozen=True)
class Entity:
    """A scoreable thing and where it lives in the store.

    Attributes:
        name: entity name used in config (``lead``).
        table: the table.
        id_column: primary key.
        created_column: creation timestamp, or None when the table has no time order.
        stream: the stream that fills the table (its source types are in ``source_field``), or
            None for imported tables (types come from the table).
        deleted_column: soft-delete flag, when the table has one.
        alias_columns: columns holding other ids the entity is known by. Salesforce moves a
            converted lead's Tasks and Events to the new Contact, so a Task's ``WhoId`` may be the
            lead's ``ConvertedContactId``; without the alias, a converted lead would lose its
            pre-conversion engagement.
        post_outcome: columns known to be filled after the outcome (leakage warning when used).
        row_order: the creation column is a sequence number imported as ``row_order``: its times
            order the rows but have no calendar, so no weekday, month or hour features.
    """

    name: str
    table: str
    id_column: str
    created_column: str | None
    stream: str | None = None
    deleted_column: str | None = "IsDeleted"
    alias_columns: tuple[str, ...] = ()
    post_outcome: tuple[str, ...] = ()
    row_order: bool = False

    @property
    def events_view(self) -> str:
        """Name of the entity's events view."""
        return f"{self.name}_events"

    @property
    def created_event(self) -> str:
        """The event marking creation."""
        return f"{self.name}_created"


@dataclass(frozen=True)
class EventSource:
    """One way events arise from a table.

    Attributes:
        table: the table.
        entity_column: column holding the entity id.
        time_column: column holding the event time (dates are taken as midnight UTC).
        name_sql: SQL expression naming the event (a literal, or derived from a column).
        condition_column: boolean column that must be true, or None.
        required: columns that must exist for the source to be used (besides the three above).
        event_names: the fixed event name, when ``name_sql`` is a literal.
        reveals: entity-table columns that encode the event itself: never features when it is the
            label.
        value_column: numeric column carried as the event's value (summed by ``sum`` labels).
        configured: from the prediction's config (must exist) rather than built in.
        identity_columns: ``(column, id_type)`` pairs: the row's entity is found by looking the
            column up in the identity map (``connector/store/identity.py``) under that identity
            type, the first pair that resolves wins. Used for sources that know people by CDP
            identities (user id, anonymous id) rather than by the entity's id.
    """

    table: str
    entity_column: str
    time_column: str
    name_sql: str
    condition_column: str | None = None
    required: tuple[str, ...] = ()
    event_names: tuple[str, ...] = ()
    reveals: tuple[str, ...] = ()
    value_column: str | None = None
    configured: bool = False
    identity_columns: tuple[tuple[str, str], ...] = ()


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


_LEAD = raw_table_name("salesforce", "Lead")

ENTITIES: dict[str, Entity] = {
    "lead": Entity(
        "lead",
        _LEAD,
        "Id",
        "CreatedDate",
        "Lead",
        alias_columns=("ConvertedContactId",),
        # sales fill these in after contact; they correlate with the outcome by construction
        post_outcome=("Status", "Rating", "LastActivityDate", "ConvertedDate", "IsConverted"),
    ),
}

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


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Columns of a table (lower-case name -> exact name); empty when the table is missing.

    Args:
        con: store connection.
        table: table name.

    Returns:
        The mapping.
    """
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return {r[0].lower(): r[0] for r in rows}


def require_column(con: duckdb.DuckDBPyConnection, table: str, column: str, *, setting: str) -> str:
    """The exact name of a column, or a clear error naming the setting and close matches.

    Args:
        con: store connection.
        table: the table.
        column: the column as configured (case-insensitive).
        setting: the config key that names it (for the message).

    Returns:
        The column's exact name.

    Raises:
        SpecError: the table or the column does not exist.
    """
    columns = table_columns(con, table)
    if not columns:
        raise SpecError(f"{setting}: table '{table}' is not in the store (import or pull it first)")
    if column.lower() in columns:
        return columns[column.lower()]
    close = difflib.get_close_matches(column, list(columns.values()), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise SpecError(f"{setting}: column '{column}' is not in table '{table}'{hint}")


def require_time_column(
    con: duckdb.DuckDBPyConnection, table: str, column: str, *, setting: str
) -> str:
    """:func:`require_column` for a time column, which must not hold plain numbers.

    Raises:
        SpecError: the column is missing, or holds numbers without a declared time format.
    """
    name = require_column(con, table, column, setting=setting)
    problem = number_time_problem(con, table, name)
    if problem:
        raise SpecError(f"{setting}: {problem}")
    return name


def resolve_entity(con: duckdb.DuckDBPyConnection, spec: PredictionSpec) -> Entity:
    """The entity of a prediction: built in, or the configured table (checked against the store).

    Args:
        con: store connection.
        spec: the prediction.

    Returns:
        The entity.

    Raises:
        SpecError: the configured table or its columns are missing.
    """
    if spec.entity_table is None:
        return ENTITIES[spec.entity]
    t = spec.entity_table
    id_column = require_column(con, t.table, t.id_column, setting="entity_table.id_column")
    time_column = (
        require_time_column(con, t.table, t.time_column, setting="entity_table.time_column")
        if t.time_column
        else None
    )
    return Entity(
        spec.entity,
        t.table,
        id_column,
        time_column,
        stream=None,
        deleted_column=None,
        post_outcome=tuple(spec.post_outcome_fields),
        row_order=bool(time_column) and is_row_order(con, t.table, time_column),
    )


def _configured_source(con: duckdb.DuckDBPyConnection, e: EventSourceSpec, i: int) -> EventSource:
    setting = f"events[{i}]"
    entity_column = require_column(
        con, e.table, e.entity_column, setting=f"{setting}.entity_column"
    )
    time_column = require_time_column(con, e.table, e.time_column, setting=f"{setting}.time_column")
    value_column = (
        require_column(con, e.table, e.value_column, setting=f"{setting}.value_column")
        if e.value_column
        else None
    )
    if value_column is not None:
        _require_numeric(con, e.table, value_column, setting=f"{setting}.value_column")
    return EventSource(
        e.table,
        entity_column,
        time_column,
        f"'{e.event}'",  # an identifier by validation: safe as a literal
        event_names=(e.event,),
        value_column=value_column,
        configured=True,
    )


def _require_numeric(
    con: duckdb.DuckDBPyConnection, table: str, column: str, *, setting: str
) -> None:
    """A value column must hold numbers: name the table, the column and a value that is not."""
    q = quote_identifier
    bad = con.execute(
        f"SELECT CAST({q(column)} AS VARCHAR) FROM {q(table)} WHERE {q(column)} IS NOT NULL "
        f"AND TRY_CAST({q(column)} AS DOUBLE) IS NULL LIMIT 1"
    ).fetchall()
    if bad:
        raise SpecError(
            f"{setting}: column '{column}' of table '{table}' is not numeric (e.g. {bad[0][0]!r}); "
            "name a column of amounts, or clean the file"
        )


def entity_sources(
    con: duckdb.DuckDBPyConnection, entity: Entity, spec: PredictionSpec
) -> list[EventSource]:
    """The event sources of a prediction's entity that the store can serve.

    Built-in sources whose table or columns are missing are left out (stream not pulled, field not
    configured); configured sources must exist. An entity with a time column gets a
    ``<entity>_created`` event.

    Args:
        con: store connection.
        entity: the entity.
        spec: the prediction.

    Returns:
        Usable sources.

    Raises:
        SpecError: a configured source refers to a missing table or column.
    """
    candidates: list[EventSource] = list(EVENT_SOURCES.get(entity.name, ()))
    if entity.name not in EVENT_SOURCES and entity.created_column:
        candidates.append(
            EventSource(
                entity.table,
                entity.id_column,
                entity.created_column,
                f"'{entity.created_event}'",
                event_names=(entity.created_event,),
            )
        )
    usable = [source for source in candidates if _usable(con, source)]
    usable += [_configured_source(con, e, i) for i, e in enumerate(spec.events)]
    return usable


def _usable(con: duckdb.DuckDBPyConnection, source: EventSource) -> bool:
    """Whether the store holds a built-in source's table and columns (and its identity map)."""
    if source.identity_columns and not table_columns(con, IDENTITY_MAP):
        return False
    needed = {source.entity_column, source.time_column, *source.required}
    if source.condition_column:
        needed.add(source.condition_column)
    return {c.lower() for c in needed} <= set(table_columns(con, source.table))


def filter_sql(f: ValueFilter, column_sql: str) -> tuple[str, list[object]]:
    """SQL condition and bound values for a value filter on one column expression.

    Args:
        f: the filter.
        column_sql: the quoted column expression.

    Returns:
        ``(condition, params)``.
    """
    parts: list[str] = []
    params: list[object] = []
    if f.equals is not None:
        parts.append(f"CAST({column_sql} AS VARCHAR) = CAST(? AS VARCHAR)")
        params.append(f.equals)
    if f.in_ is not None:
        parts.append(
            f"CAST({column_sql} AS VARCHAR) IN ({', '.join('CAST(? AS VARCHAR)' for _ in f.in_)})"
        )
        params.extend(f.in_)
    for op, value in ((">", f.gt), (">=", f.ge), ("<", f.lt), ("<=", f.le)):
        if value is not None:
            parts.append(f"TRY_CAST({column_sql} AS DOUBLE) {op} ?")
            params.append(value)
    return " AND ".join(parts), params


def events_sql(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    sources: list[EventSource],
    *,
    only_event: str | None = None,
    where: ValueFilter | None = None,
    setting: str = "label.where",
) -> tuple[str, list[object]]:
    """A query of ``entity_id, event, ts, value`` rows from the sources.

    Args:
        con: store connection.
        entity: the entity.
        sources: the sources.
        only_event: keep only this event.
        where: keep only source rows matching this (its column must exist in each source table
            that yields ``only_event``).
        setting: config key of ``where`` (for messages).

    Returns:
        ``(sql, params)``.

    Raises:
        SpecError: the ``where`` column is missing from a source table.
    """
    q = quote_identifier
    parts: list[str] = []
    params: list[object] = []
    for s in sources:
        if only_event is not None and s.event_names and only_event not in s.event_names:
            continue
        # Columns are qualified with the source's alias "e": identity sources join the identity map.
        conditions = [f"e.{q(s.condition_column)}"] if s.condition_column else []
        if where is not None:
            column = require_column(con, s.table, where.column, setting=f"{setting}.column")
            condition, values = filter_sql(where, f"e.{q(column)}")
            conditions.append(condition)
            params.extend(values)
        value = f"TRY_CAST(e.{q(s.value_column)} AS DOUBLE)" if s.value_column else "NULL::DOUBLE"
        joins, source_id = "", f"CAST(e.{q(s.entity_column)} AS VARCHAR)"
        if s.identity_columns:
            # the row's person is found through the identity map: its entity id is the source id
            joins, source_id = identity_join_sql(entity.name, s.identity_columns, "e")
            conditions.append(f"{source_id} IS NOT NULL")
        parts.append(
            f"SELECT {source_id} AS source_id, {s.name_sql} AS event, "
            f"CAST(e.{q(s.time_column)} AS TIMESTAMP) AS ts, {value} AS value "
            f"FROM {q(s.table)} e {joins}"
            + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        )
    if not parts:
        parts = [
            "SELECT NULL::VARCHAR AS source_id, NULL::VARCHAR AS event, NULL::TIMESTAMP AS ts, "
            "NULL::DOUBLE AS value WHERE false"
        ]
    # Every id an entity is known by (its own, and e.g. the contact a lead was converted to) maps to
    # the entity, so events recorded against any of them count for it.
    present = table_columns(con, entity.table)
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
    sql = (
        "SELECT ids.entity_id, e.event, e.ts, e.value "
        f"FROM ({' UNION ALL '.join(parts)}) e "
        f"JOIN ({' UNION ALL '.join(aliases)}) ids ON ids.source_id = e.source_id "
        "WHERE e.ts IS NOT NULL"
    )
    if only_event is not None:
        sql += " AND e.event = ?"
        params.append(only_event)
    return sql, params


def create_events_view(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    sources: list[EventSource] | None = None,
) -> list[EventSource]:
    """Create (or replace) the temporary ``<entity>_events(entity_id, event, ts, value)`` view.

    Args:
        con: store connection.
        entity: the entity.
        sources: the sources (default: the entity's built-in sources present in the store).

    Returns:
        The sources the view is built from.
    """
    if sources is None:
        sources = [s for s in EVENT_SOURCES.get(entity.name, ()) if _usable(con, s)]
    sql, params = events_sql(con, entity, sources)
    assert not params  # no filters: the view needs no bound values
    con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_identifier(entity.events_view)} AS {sql}")
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
            if s.time_column.lower() != (entity.created_column or "").lower():
                out.add(s.time_column.lower())
    return out
