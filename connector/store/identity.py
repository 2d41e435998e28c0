"""Identity resolution: which CRM record each CDP profile (and each of its identities) belongs to.

A person is one Lead (or Contact) in Salesforce and one profile in Segment, and the profile knows
them by several identities: a user id, one or more emails, anonymous ids (devices). This module
joins the two sides in SQL over the store and materialises the result, rebuilt after every pull:

- ``identity_map(entity, id_type, id_value, entity_id, profile_id, rule)``: every identity of every
  matched profile (plus the profile id itself as ``segment_id``), so that an event recorded under
  any of them - an anonymous page view before sign-up included - counts for the record
  (``scoring/events.py`` joins Segment events through it);
- ``identity_profile(entity, profile_id, entity_id, status, rule, candidates)``: one row per
  profile, matched or not and why. Unmatched profiles are counted and kept, never dropped silently.

Where profiles and identities come from: Profile API reads (``seg_external_id``, ``seg_trait``),
imported id graphs (``seg_external_id``), and imported identify calls (``seg_identify``: each
identify links its user id, anonymous id and ``traits.email``). A Profile API read or an identify
whose user or anonymous id the id graph knows joins that profile; otherwise it is a profile of its
own (keyed by its lookup, ``user_id:<id>`` or ``anonymous_id:<id>``).

The match rules, strongest first (a profile is matched to exactly one record per entity):

1. **External id**: a configured mapping (``[segment.identity] external_ids``), e.g. the
   ``salesforce_id`` trait holding the Lead's ``Id``. Salesforce ids compare in their 15-character
   form, so a 15-character id in Segment matches the 18-character one in the store.
2. **Primary email**: the profile's ``email`` trait equals the record's ``Email``, both trimmed and
   lower-cased.
3. **Other email**: any other email of the profile equals the record's ``Email``.

Ties - a profile with several emails of different records, or two records sharing one email - are
broken by: live records (not deleted) first, then the most recently created record (the one a new
form fill created and sales works now), then the smallest id. The other candidates are counted as
``ambiguous`` in the summary. An identity found in two matched profiles of different records is
given to one record by the same order (counted as ``conflicting_ids``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from connector.segment import IdentitySettings
from connector.store import Store, quote_identifier, raw_table_name


@dataclass(frozen=True)
class CrmRecords:
    """A CRM table whose records profiles are matched to.

    Attributes:
        entity: entity name (``lead``).
        table: raw table.
        id_column: primary key.
        email_column: the email field.
        created_column: creation timestamp (tie-break: newest first).
        deleted_column: soft-delete flag (tie-break: live first).
    """

    entity: str
    table: str
    id_column: str = "Id"
    email_column: str = "Email"
    created_column: str = "CreatedDate"
    deleted_column: str = "IsDeleted"


CRM_RECORDS: tuple[CrmRecords, ...] = (
    CrmRecords("lead", raw_table_name("salesforce", "Lead")),
    CrmRecords("contact", raw_table_name("salesforce", "Contact")),
)


@dataclass
class IdentityResult:
    """What identity resolution found.

    Attributes:
        profiles: distinct profiles known to the store.
        matched: profiles matched to a record, per entity.
        unmatched: profiles matched to no record, by reason (``anonymous_only``: the profile has
            only anonymous ids; ``no_crm_match``: its emails and external ids match no record).
        ambiguous: matched profiles that had more than one candidate record, per entity.
        conflicting_ids: identities claimed by profiles of different records, per entity.
        by_rule: matched profiles per rule (``external_id:<name>``, ``primary_email``,
            ``other_email``).
        identities: rows of ``identity_map``.
        records: records with at least one matched profile, per entity.
    """

    profiles: int = 0
    matched: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    ambiguous: dict[str, int] = field(default_factory=dict)
    conflicting_ids: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)
    identities: int = 0
    records: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The JSON-serialisable summary."""
        return {
            "profiles": self.profiles,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "ambiguous": self.ambiguous,
            "conflicting_ids": self.conflicting_ids,
            "by_rule": self.by_rule,
            "identities": self.identities,
            "records": self.records,
        }


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT lower(column_name), column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return dict(rows)


def _salesforce_key(sql: str) -> str:
    """SQL normalising a Salesforce id to its 15-character, case-sensitive form."""
    return (
        f"CASE WHEN length({sql}) IN (15, 18) AND regexp_full_match({sql}, '[A-Za-z0-9]+') "
        f"THEN left({sql}, 15) ELSE {sql} END"
    )


# A profile read through the Profile API is keyed by its lookup (``email:...``); when the id graph
# knows one of its user or anonymous ids, it is the same person and takes that profile's id.
_ALIASES = """SELECT a.profile_id AS alias, min(b.profile_id) AS canonical
               FROM seg_external_id a JOIN seg_external_id b
                 ON b.id_type = a.id_type AND b.id_value = a.id_value
                AND b.source <> 'profile_api'
               WHERE a.source = 'profile_api' AND a.id_type IN ('user_id', 'anonymous_id')
               GROUP BY a.profile_id"""
# An identify call belongs to the profile that already owns its user id or anonymous id (from the
# id graph or the Profile API); only identities no profile knows form a profile of their own.
_OWNERS = """SELECT id_type, id_value, min(profile_id) AS profile_id FROM seg_external_id
             WHERE id_type IN ('user_id', 'anonymous_id') GROUP BY id_type, id_value"""
_IDENTIFIES = f"""SELECT coalesce(i.segment_id, u.profile_id, a.profile_id,
                                  'user_id:' || i.user_id, 'anonymous_id:' || i.anonymous_id)
                           AS profile_id, i.*
                  FROM seg_identify i
                  LEFT JOIN ({_OWNERS}) u ON u.id_type = 'user_id' AND u.id_value = i.user_id
                  LEFT JOIN ({_OWNERS}) a
                    ON a.id_type = 'anonymous_id' AND a.id_value = i.anonymous_id"""


def _profile_ids_sql(settings: IdentitySettings) -> tuple[str, list[object]]:
    """Every (profile_id, id_type, id_value) the store knows, emails normalised."""
    params: list[object] = []
    external = list(settings.external_ids)
    parts = [
        """SELECT profile_id, id_type,
                  CASE WHEN id_type = 'email' THEN lower(trim(id_value)) ELSE id_value END
                    AS id_value
           FROM seg_external_id""",
        # the profile itself, as the segment_id identity (Profiles Sync events carry it)
        "SELECT profile_id, 'segment_id', profile_id FROM seg_external_id",
        "SELECT profile_id, 'segment_id', profile_id FROM seg_trait",
        """SELECT profile_id, 'email', lower(trim(json_extract_string(value, '$')))
           FROM seg_trait WHERE name = 'email'""",
        "SELECT profile_id, 'user_id', user_id FROM _identifies WHERE user_id IS NOT NULL",
        "SELECT profile_id, 'anonymous_id', anonymous_id FROM _identifies "
        "WHERE anonymous_id IS NOT NULL",
        "SELECT profile_id, 'email', email FROM _identifies WHERE email IS NOT NULL",
        "SELECT profile_id, 'segment_id', profile_id FROM _identifies",
    ]
    if external:
        parts.append(
            "SELECT profile_id, name, json_extract_string(value, '$') FROM seg_trait "
            "WHERE list_contains(?, name)"
        )
        params.append(external)
        parts.append(
            """SELECT profile_id, k.name, json_extract_string(traits, '$.' || k.name)
               FROM _identifies, (SELECT unnest(?) AS name) k
               WHERE json_extract_string(traits, '$.' || k.name) IS NOT NULL"""
        )
        params.append(external)
    union = " UNION ".join(f"({p})" for p in parts)
    return (
        "SELECT DISTINCT coalesce(a.canonical, t.profile_id) AS profile_id, t.id_type, "
        f"t.id_value FROM ({union}) t(profile_id, id_type, id_value) "
        "LEFT JOIN _aliases a ON a.alias = t.profile_id "
        "WHERE t.id_value IS NOT NULL AND t.id_value <> ''",
        params,
    )


def _primary_email_sql() -> str:
    """The profile's primary email: its latest ``email`` trait (last write wins, as in Segment)."""
    return """SELECT coalesce(a.canonical, e.profile_id) AS profile_id,
                      arg_max(e.email, e.updated_at) AS email FROM (
                 SELECT profile_id, lower(trim(json_extract_string(value, '$'))) AS email,
                        updated_at
                 FROM seg_trait WHERE name = 'email'
                 UNION ALL
                 SELECT profile_id, email, ts FROM _identifies WHERE email IS NOT NULL) e
               LEFT JOIN _aliases a ON a.alias = e.profile_id
               GROUP BY 1"""


def _crm_sql(con: duckdb.DuckDBPyConnection, settings: IdentitySettings) -> tuple[str, list[str]]:
    """(entity, entity_id, email, live, created, ext_<name>...) for every CRM table present."""
    q = quote_identifier
    external = list(settings.external_ids)
    parts: list[str] = []
    for records in CRM_RECORDS:
        cols = _columns(con, records.table)
        if records.id_column.lower() not in cols:
            continue

        def col(name: str, default: str, cols: dict[str, str] = cols) -> str:
            actual = cols.get(name.lower())
            return f"x.{q(actual)}" if actual else default

        email = col(records.email_column, "NULL")
        live = f"NOT coalesce(CAST({col(records.deleted_column, 'false')} AS BOOLEAN), false)"
        created = f"CAST({col(records.created_column, 'NULL')} AS TIMESTAMP)"
        ext = []
        for index, name in enumerate(external):
            crm_field = settings.external_ids[name]
            value = f"CAST({col(crm_field, 'NULL')} AS VARCHAR)"
            if crm_field == "Id" or crm_field.endswith("Id"):
                value = _salesforce_key(value)
            ext.append(f"{value} AS ext_{index}")
        parts.append(
            f"SELECT '{records.entity}' AS entity, CAST(x.{q(cols[records.id_column.lower()])} "
            f"AS VARCHAR) AS entity_id, lower(trim(CAST({email} AS VARCHAR))) AS email, "
            f"{live} AS live, {created} AS created"
            + "".join(f", {e}" for e in ext)
            + f" FROM {q(records.table)} x"
        )
    if not parts:
        ext = "".join(f", NULL::VARCHAR AS ext_{i}" for i in range(len(external)))
        parts = [
            "SELECT NULL::VARCHAR AS entity, NULL::VARCHAR AS entity_id, NULL::VARCHAR AS email, "
            f"NULL::BOOLEAN AS live, NULL::TIMESTAMP AS created{ext} WHERE false"
        ]
    return " UNION ALL ".join(parts), external


def resolve_identities(store: Store, settings: IdentitySettings) -> IdentityResult:
    """Match every CDP profile in the store to CRM records and rebuild the identity tables.

    Args:
        store: the store (``seg_*`` tables and the raw CRM tables).
        settings: the match rules (``[segment.identity]``).

    Returns:
        Counts of what matched, what did not and why, and how ambiguities were resolved.
    """
    con = store.con
    ids_sql, params = _profile_ids_sql(settings)
    crm_sql, external = _crm_sql(con, settings)
    candidates = []
    choice_params: list[object] = []
    for index, name in enumerate(external):
        key = settings.external_ids[name]
        value = "p.id_value"
        if key == "Id" or key.endswith("Id"):
            value = _salesforce_key(value)
        candidates.append(
            f"""SELECT p.profile_id, c.entity, c.entity_id, c.live, c.created, 1 AS strength,
                       ? AS rule
                FROM _ids p JOIN _crm c ON p.id_type = ? AND {value} = c.ext_{index}"""
        )
        choice_params += [f"external_id:{name}", name]
    if settings.email:
        candidates.append(
            """SELECT p.profile_id, c.entity, c.entity_id, c.live, c.created,
                      CASE WHEN pe.email = p.id_value THEN 2 ELSE 3 END AS strength,
                      CASE WHEN pe.email = p.id_value THEN 'primary_email' ELSE 'other_email' END
                        AS rule
               FROM _ids p JOIN _crm c ON p.id_type = 'email' AND p.id_value = c.email
               LEFT JOIN _primary pe ON pe.profile_id = p.profile_id"""
        )
    if not candidates:
        candidates.append(
            "SELECT NULL AS profile_id, NULL AS entity, NULL AS entity_id, NULL::BOOLEAN AS live, "
            "NULL::TIMESTAMP AS created, NULL::INTEGER AS strength, NULL AS rule WHERE false"
        )
    order = "strength, live DESC, created DESC NULLS LAST, entity_id"
    with store.transaction():
        con.execute(f"CREATE OR REPLACE TEMP TABLE _aliases AS {_ALIASES}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _identifies AS {_IDENTIFIES}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _ids AS {ids_sql}", params)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _crm AS {crm_sql}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _primary AS {_primary_email_sql()}")
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _choice AS
                SELECT *, count(DISTINCT entity_id) OVER (PARTITION BY entity, profile_id)
                            AS candidates
                FROM ({" UNION ALL ".join(candidates)}) c
                QUALIFY row_number() OVER (PARTITION BY entity, profile_id ORDER BY {order}) = 1""",
            choice_params,
        )
        con.execute("DELETE FROM identity_profile")
        con.execute("DELETE FROM identity_map")
        con.execute(
            """INSERT INTO identity_profile
               SELECT entity, profile_id, entity_id,
                      CASE WHEN candidates > 1 THEN 'ambiguous' ELSE 'matched' END, rule,
                      candidates
               FROM _choice"""
        )
        # Profiles that matched no record of any entity: kept, with the reason.
        con.execute(
            """INSERT INTO identity_profile
               SELECT NULL, p.profile_id, NULL, 'unmatched',
                      CASE WHEN bool_and(p.id_type IN ('anonymous_id', 'segment_id'))
                           THEN 'anonymous_only' ELSE 'no_crm_match' END, 0
               FROM _ids p
               WHERE p.profile_id NOT IN (SELECT profile_id FROM _choice)
               GROUP BY p.profile_id"""
        )
        con.execute(
            """INSERT INTO identity_map
                SELECT c.entity, p.id_type, p.id_value, c.entity_id, c.profile_id, c.rule
                FROM _choice c JOIN _ids p ON p.profile_id = c.profile_id
                QUALIFY row_number() OVER (
                  PARTITION BY c.entity, p.id_type, p.id_value
                  ORDER BY c.strength, c.live DESC, c.created DESC NULLS LAST, c.entity_id) = 1"""
        )
        conflicts = con.execute(
            """SELECT c.entity, count(*) FROM (
                 SELECT c.entity, p.id_type, p.id_value
                 FROM _choice c JOIN _ids p ON p.profile_id = c.profile_id
                 GROUP BY ALL HAVING count(DISTINCT c.entity_id) > 1) c
               GROUP BY c.entity"""
        ).fetchall()
        for temp in ("_aliases", "_identifies", "_ids", "_crm", "_primary", "_choice"):
            con.execute(f"DROP TABLE IF EXISTS {temp}")
    return _summary(store, dict(conflicts))


def _summary(store: Store, conflicts: dict[str, int]) -> IdentityResult:
    con = store.con
    result = IdentityResult(conflicting_ids={str(k): int(v) for k, v in conflicts.items()})
    result.profiles = int(
        con.execute("SELECT count(DISTINCT profile_id) FROM identity_profile").fetchall()[0][0]
    )
    for entity, status, count in con.execute(
        "SELECT entity, status, count(*) FROM identity_profile WHERE entity IS NOT NULL "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        result.matched[entity] = result.matched.get(entity, 0) + int(count)
        if status == "ambiguous":
            result.ambiguous[entity] = int(count)
    result.unmatched = {
        str(reason): int(count)
        for reason, count in con.execute(
            "SELECT rule, count(*) FROM identity_profile WHERE status = 'unmatched' "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    }
    result.by_rule = {
        str(rule): int(count)
        for rule, count in con.execute(
            "SELECT rule, count(*) FROM identity_profile WHERE status <> 'unmatched' "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    }
    result.identities = int(con.execute("SELECT count(*) FROM identity_map").fetchall()[0][0])
    result.records = {
        str(entity): int(count)
        for entity, count in con.execute(
            "SELECT entity, count(DISTINCT entity_id) FROM identity_map GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    }
    return result


def segment_recipients(
    store: Store, entity: str, entity_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """Whom to address each record's Segment messages to: its ``userId``, else an ``anonymousId``.

    A profile without a user id (a visitor who never logged in, matched by email or an external
    id) is still reachable: Segment's identify and track calls take an ``anonymousId`` instead.
    Among several ids, the one of the strongest match wins, then the smallest.

    Args:
        store: the store.
        entity: entity name.
        entity_ids: the records.

    Returns:
        entity id -> (``user_id`` or ``anonymous_id``, the id), for records that have one.
    """
    if not entity_ids:
        return {}
    wanted = pd.DataFrame({"entity_id": list(entity_ids)})
    with store.transaction() as con:
        con.register("_wanted", wanted)
        try:
            rows = con.execute(
                """SELECT m.entity_id,
                          arg_min([m.id_type, m.id_value],
                                  (CASE m.id_type WHEN 'user_id' THEN 0 ELSE 1 END,
                                   CASE WHEN m.rule LIKE 'external_id:%' THEN 1
                                        WHEN m.rule = 'primary_email' THEN 2
                                        ELSE 3 END, m.id_value))
                   FROM identity_map m JOIN _wanted w ON w.entity_id = m.entity_id
                   WHERE m.entity = ? AND m.id_type IN ('user_id', 'anonymous_id')
                     AND m.id_value IS NOT NULL
                   GROUP BY m.entity_id""",
                [entity],
            ).fetchall()
        finally:
            con.unregister("_wanted")
    return {str(k): (str(v[0]), str(v[1])) for k, v in rows if v is not None}


def segment_user_ids(store: Store, entity: str, entity_ids: Sequence[str]) -> dict[str, str]:
    """The Segment ``userId`` of each record that has one (see :func:`segment_recipients`).

    Args:
        store: the store.
        entity: entity name.
        entity_ids: the records.

    Returns:
        entity id -> user id, for records that have one.
    """
    return {
        record: value
        for record, (kind, value) in segment_recipients(store, entity, entity_ids).items()
        if kind == "user_id"
    }
