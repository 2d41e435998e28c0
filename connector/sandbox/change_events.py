"""Change Data Capture in the sandbox: change events recorded with the writes that cause them.

Every create, update and delete of a captured object (``Lead`` by default) through the REST,
Collections, composite and Bulk APIs, or as a user in the UI, appends one row to
``_change_events`` **in the same SQLite transaction as the write**: a rolled-back record (or an
all-or-none request that fails) leaves no event, and a committed one always has its event. The
row holds the Avro-encoded payload (``LeadChangeEvent``: a ``ChangeEventHeader`` plus every
field, unchanged ones null), the schema id it was written with and its commit time; the row id is
the event's replay id (8 bytes, big-endian, opaque to clients). The Pub/Sub API server
(``connector/sandbox/pubsub_server.py``) reads from here.

Facts from ``shared/docs/api-contracts-realorg.md`` section 4.4: header fields, change types,
``changedFields`` as a bitmap of schema positions (element 0: top-level fields, ``'p-0xNN'``:
the fields of the compound field at position p), epoch-millisecond times, 72 h retention.
Inferred (not documented there): date fields as days since the epoch, the ``Name`` compound
holding ``FirstName``/``LastName``, ``Id``/``IsDeleted``/``SystemModstamp`` left out of the
payload, one event per record (Salesforce may merge identical changes into one event with
several ``recordIds``; clients must accept both).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fastavro

from connector.sandbox.schema import API_VERSION, FieldDef, ObjectDef

DEFAULT_RETENTION_SECONDS = 72 * 3600
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
    "SNAPSHOT",
)
# Left out of the payload: the record id travels in the header's recordIds.
_OMITTED = frozenset({"Id", "IsDeleted", "SystemModstamp", "Name"})
_NAME_PARTS = ("FirstName", "LastName")
_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS _change_events (
    replay INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    event_uuid TEXT NOT NULL,
    schema_id TEXT NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
)
"""
_HEADER = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {"type": "enum", "name": "ChangeType", "symbols": list(CHANGE_TYPES)},
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}
_AVRO_TYPES = {
    "boolean": "boolean",
    "int": "int",
    "double": "double",
    "currency": "double",
    "percent": "double",
    "datetime": "long",
    "date": "int",
}


def replay_bytes(replay: int) -> bytes:
    """Encode a replay id as the opaque bytes clients see (8 bytes, big-endian)."""
    return replay.to_bytes(8, "big")


def replay_number(value: bytes) -> int | None:
    """Decode replay id bytes; None when they are not an id this sandbox issued."""
    if len(value) != 8:
        return None
    return int.from_bytes(value, "big")


def bitmap(positions: Iterable[int]) -> str:
    """Encode field positions as Salesforce's hex bitmap (bit i = position i), whole bytes."""
    value = sum(1 << position for position in set(positions))
    digits = format(value, "X")
    if len(digits) % 2:
        digits = "0" + digits
    return "0x" + digits


@dataclass(frozen=True)
class EventSchema:
    """One object's change event schema as served by ``GetSchema``.

    Attributes:
        entity: Object API name.
        schema_id: Fingerprint of ``schema_json``.
        schema_json: The Avro schema, JSON text.
        positions: Top-level field name -> position in the schema's ``fields``.
        name_position: Position of the ``Name`` compound field (None if the object has none).
        parsed: The schema parsed by fastavro (what the payloads are written with).
        types: Top-level field name -> Salesforce field type (value conversion).
    """

    entity: str
    schema_id: str
    schema_json: str
    positions: dict[str, int]
    name_position: int | None
    parsed: Any
    types: dict[str, str]


def _field_schema(definition: FieldDef) -> dict[str, Any]:
    return {
        "name": definition.name,
        "type": ["null", _AVRO_TYPES.get(definition.type, "string")],
        "default": None,
    }


def build_schema(obj: ObjectDef) -> EventSchema:
    """Build ``<Object>ChangeEvent``'s Avro schema from the org's current fields.

    A field added through the Tooling API changes the schema and so its id, as in Salesforce:
    clients must look schemas up by the id each event carries.

    Args:
        obj: The object.

    Returns:
        The schema.
    """
    fields: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": _HEADER}]
    types: dict[str, str] = {}
    has_name = all(obj.field(part) is not None for part in _NAME_PARTS)
    name_position: int | None = None
    for definition in obj.fields.values():
        if definition.name in _OMITTED:
            continue
        if definition.name in _NAME_PARTS:
            if has_name and name_position is None:
                name_position = len(fields)
                fields.append(
                    {
                        "name": "Name",
                        "type": [
                            "null",
                            {
                                "type": "record",
                                "name": "Switchable_PersonName",
                                "fields": [
                                    {"name": part, "type": ["null", "string"], "default": None}
                                    for part in _NAME_PARTS
                                ],
                            },
                        ],
                        "default": None,
                    }
                )
            continue
        types[definition.name] = definition.type
        fields.append(_field_schema(definition))
    schema = {
        "type": "record",
        "name": f"{obj.name}ChangeEvent",
        "namespace": "com.sforce.eventbus",
        "fields": fields,
    }
    text = json.dumps(schema, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).digest()
    schema_id = base64.urlsafe_b64encode(digest).decode()[:22]
    positions = {field["name"]: index for index, field in enumerate(fields)}
    return EventSchema(
        entity=obj.name,
        schema_id=schema_id,
        schema_json=text,
        positions=positions,
        name_position=name_position,
        parsed=fastavro.parse_schema(schema),
        types=types,
    )


def _avro_value(field_type: str, value: Any) -> Any:
    """Stored sandbox value -> the event's value (epoch ms datetimes, epoch-day dates)."""
    if value is None:
        return None
    if field_type == "datetime":
        return int(value) * 1000
    if field_type == "date":
        return (dt.date.fromisoformat(str(value)[:10]) - dt.date(1970, 1, 1)).days
    if field_type == "boolean":
        return bool(value)
    if field_type == "int":
        return int(value)
    if field_type in ("double", "currency", "percent"):
        return float(value)
    return str(value)


@dataclass
class _Transaction:
    key: str
    origin: str
    sequence: int = 0


class ChangeEventLog:
    """The captured objects' change events, written in the writes' transactions.

    Args:
        connection: The sandbox database's read-write connection (used under its lock).
        lock: The database lock.
        entities: Objects with change data capture enabled.
        retention_seconds: How long events stay replayable.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        lock: threading.RLock,
        entities: Iterable[str] = ("Lead",),
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self._conn = connection
        self._lock = lock
        self.entities = frozenset(entities)
        self.retention_seconds = retention_seconds
        self._schemas: dict[str, EventSchema] = {}
        self._by_id: dict[str, EventSchema] = {}
        self._transaction: _Transaction | None = None
        self._commit_number = 0
        self._floor = 0
        """Highest replay id removed from retention (a CUSTOM replay id below it is expired)."""
        self.changed = threading.Condition()
        with self._lock:
            self._conn.execute(_TABLE_SQL)
            row = self._conn.execute(
                "SELECT MIN(replay), MAX(replay) FROM _change_events"
            ).fetchone()
            if row[0] is not None:
                self._floor = row[0] - 1

    # Schemas ------------------------------------------------------------------------------

    def schema_for(self, obj: ObjectDef) -> EventSchema:
        """The current schema of an object's change events (rebuilt when its fields change)."""
        schema = build_schema(obj)
        known = self._by_id.get(schema.schema_id)
        if known is not None:
            return known
        self._schemas[obj.name] = schema
        self._by_id[schema.schema_id] = schema
        return schema

    def schema_by_id(self, schema_id: str) -> EventSchema | None:
        """A schema any served event was written with."""
        return self._by_id.get(schema_id)

    # Capture (inside the writes' transaction, under the database lock) ---------------------------

    def begin(self, origin: str) -> None:
        """Start a transaction: its events share one transaction key."""
        self._transaction = _Transaction(key=str(uuid.uuid4()), origin=origin)

    def end(self, committed: bool) -> None:
        """End the transaction; wake subscribers when events were committed."""
        transaction, self._transaction = self._transaction, None
        if committed and transaction is not None and transaction.sequence:
            with self.changed:
                self.changed.notify_all()

    def capture(
        self,
        obj: ObjectDef,
        record_id: str,
        change_type: str,
        values: dict[str, Any],
        now: int,
        user_id: str,
    ) -> None:
        """Append one record's change event to the open transaction (no-op if not captured).

        Args:
            obj: The object written.
            record_id: The record.
            change_type: ``CREATE``, ``UPDATE`` or ``DELETE``.
            values: The stored values: the whole row for a create, the assigned columns for an
                update (their names become ``changedFields``).
            now: Commit time, epoch seconds.
            user_id: The user the write acts as.
        """
        if obj.name not in self.entities:
            return
        transaction = self._transaction
        if transaction is None:  # a write outside _apply_writes: its own transaction
            transaction = _Transaction(key=str(uuid.uuid4()), origin="")
        transaction.sequence += 1
        schema = self.schema_for(obj)
        record: dict[str, Any] = {name: None for name in schema.positions}
        changed: list[int] = []
        name_bits: list[int] = []
        name_values: dict[str, Any] = {}
        if change_type != "DELETE":
            for name, value in values.items():
                if name in _NAME_PARTS and schema.name_position is not None:
                    name_values[name] = None if value is None else str(value)
                    name_bits.append(_NAME_PARTS.index(name))
                    continue
                position = schema.positions.get(name)
                if position is None or name not in schema.types:
                    continue
                record[name] = _avro_value(schema.types[name], value)
                changed.append(position)
        if name_values:
            record["Name"] = {part: name_values.get(part) for part in _NAME_PARTS}
        changed_fields: list[str] = []
        if change_type == "UPDATE":
            changed_fields = [bitmap(changed)] if changed else []
            if name_bits and schema.name_position is not None:
                changed_fields.append(f"{schema.name_position}-{bitmap(name_bits)}")
        self._commit_number += 1
        record["ChangeEventHeader"] = {
            "entityName": obj.name,
            "recordIds": [record_id],
            "changeType": change_type,
            "changeOrigin": transaction.origin,
            "transactionKey": transaction.key,
            "sequenceNumber": transaction.sequence,
            "commitTimestamp": int(now) * 1000,
            "commitNumber": self._commit_number,
            "commitUser": user_id,
            "nulledFields": [],
            "diffFields": [],
            "changedFields": changed_fields,
        }
        self._append(obj.name, schema, record, int(now) * 1000)

    def emit_gap(
        self, obj: ObjectDef, record_ids: list[str], change_type: str, now: int, user_id: str
    ) -> int:
        """Commit a gap event (no field data), as Salesforce does when it cannot build one.

        Args:
            obj: The object.
            record_ids: The records the gap names.
            change_type: ``GAP_CREATE``, ``GAP_UPDATE``, ``GAP_DELETE``, ``GAP_UNDELETE`` or
                ``GAP_OVERFLOW``.
            now: Commit time, epoch seconds.
            user_id: The user.

        Returns:
            The event's replay id.
        """
        if not change_type.startswith("GAP_"):
            raise ValueError(f"not a gap change type: {change_type}")
        schema = self.schema_for(obj)
        record: dict[str, Any] = {name: None for name in schema.positions}
        with self._lock:
            self._commit_number += 1
            record["ChangeEventHeader"] = {
                "entityName": obj.name,
                "recordIds": list(record_ids),
                "changeType": change_type,
                "changeOrigin": "",
                "transactionKey": str(uuid.uuid4()),
                "sequenceNumber": 1,
                "commitTimestamp": int(now) * 1000,
                "commitNumber": self._commit_number,
                "commitUser": user_id,
                "nulledFields": [],
                "diffFields": [],
                "changedFields": [],
            }
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                replay = self._append(obj.name, schema, record, int(now) * 1000)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        with self.changed:
            self.changed.notify_all()
        return replay

    def _append(self, entity: str, schema: EventSchema, record: dict[str, Any], at_ms: int) -> int:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema.parsed, record)
        cursor = self._conn.execute(
            "INSERT INTO _change_events (entity, event_uuid, schema_id, committed_at_ms, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            [entity, str(uuid.uuid4()), schema.schema_id, at_ms, buffer.getvalue()],
        )
        return int(cursor.lastrowid or 0)

    # Reads (the Pub/Sub server) -------------------------------------------------------------------

    def expire(self, now: float, retention_seconds: float | None = None) -> int:
        """Drop events older than the retention window.

        Args:
            now: Current time, epoch seconds.
            retention_seconds: Window to apply (default: the log's own).

        Returns:
            The number of events dropped.
        """
        window = self.retention_seconds if retention_seconds is None else retention_seconds
        cutoff_ms = int((now - window) * 1000)
        with self._lock:
            top = self._conn.execute(
                "SELECT MAX(replay) FROM _change_events WHERE committed_at_ms <= ?", [cutoff_ms]
            ).fetchone()[0]
            if top is None:
                return 0
            dropped = self._conn.execute(
                "DELETE FROM _change_events WHERE replay <= ?", [top]
            ).rowcount
            self._floor = max(self._floor, int(top))
            return dropped

    @property
    def floor(self) -> int:
        """Highest replay id no longer retained (0: nothing expired yet)."""
        return self._floor

    def latest(self) -> int:
        """The newest committed replay id (the floor when the log is empty)."""
        with self._lock:
            top = self._conn.execute("SELECT MAX(replay) FROM _change_events").fetchone()[0]
        return max(int(top or 0), self._floor)

    def after(
        self, entities: frozenset[str], replay: int, limit: int
    ) -> list[tuple[int, str, str, bytes]]:
        """Committed events after a replay id, oldest first.

        Args:
            entities: The topic's objects.
            replay: Exclusive lower bound.
            limit: At most this many.

        Returns:
            ``(replay, event uuid, schema id, payload)`` rows.
        """
        marks = ", ".join("?" * len(entities))
        with self._lock:
            rows = self._conn.execute(
                "SELECT replay, event_uuid, schema_id, payload FROM _change_events "
                f"WHERE replay > ? AND entity IN ({marks}) ORDER BY replay LIMIT ?",
                [replay, *sorted(entities), limit],
            ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]


def origin_for(path: str) -> str:
    """``changeOrigin`` for a request path (``com/salesforce/api/<kind>/<version>``)."""
    if path.startswith("/services/async/") or "/jobs/ingest" in path:
        kind = "bulkapi"
    elif path.startswith("/services/Soap/"):
        kind = "soap"
    else:
        kind = "rest"
    return f"com/salesforce/api/{kind}/{API_VERSION};client="
