"""The sandbox's SQLite store: one table per sObject plus bookkeeping tables.

One read-write connection serves the HTTP handlers; ``ThreadingHTTPServer`` runs each connection
in its own thread, so every use of it happens under :attr:`Database.lock`. A second connection,
opened read-only, serves :meth:`Database.inspect` for tests and benchmarks. The file runs in WAL
mode, so that reader sees committed data without blocking the writer.

Bookkeeping tables (names start with an underscore, except ``write_log`` which the contract names):

- ``_meta(key, value)``: generation parameters (seed, leads, as_of, generator version).
- ``_ground_truth``: the hidden model's per-lead answer (see ``docs/sandbox.md``).
- ``write_log(object, record_id, field, value, at)``: one row per field written through the API;
  ``value`` is JSON text, ``at`` epoch seconds.
- ``seg_*``: the Segment side (profiles, identities, traits, events, identifies, received
  messages), see ``connector/sandbox/profiles.py``; empty unless generated with Segment.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connector.sandbox.profiles import INDEXES as SEGMENT_INDEXES
from connector.sandbox.profiles import SCHEMA as SEGMENT_SCHEMA
from connector.sandbox.schema import OBJECTS, create_table_sql

DATABASE_NAME = "sandbox.sqlite"

_BOOKKEEPING = (
    "CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE _ground_truth (lead_id TEXT PRIMARY KEY, anchor_at INTEGER, p_true REAL, "
    "label INTEGER, window_closed INTEGER, converted_at INTEGER, web_visits_7d INTEGER, "
    "web_visits_30d INTEGER, email_clicks_30d INTEGER, webinars_30d INTEGER, "
    "content_downloads_90d INTEGER, product_usage_14d INTEGER, order_revenue_90d REAL)",
    "CREATE TABLE write_log (object TEXT, record_id TEXT, field TEXT, value TEXT, at INTEGER)",
)

# Indexes serve the access paths the connector uses: Id lookups, incremental pulls
# (WHERE SystemModstamp > x ORDER BY SystemModstamp, Id; IsDeleted rides along so the scan is
# covering), per-lead activity and membership lookups, and the CampaignMember duplicate rule.
_INDEXES = (
    'CREATE INDEX "{t}_modstamp" ON "{t}" ("SystemModstamp", "Id"{deleted})',
    'CREATE UNIQUE INDEX "{t}_id" ON "{t}" ("Id")',
)
_EXTRA_INDEXES = (
    'CREATE INDEX "Task_who" ON "Task" ("WhoId")',
    'CREATE INDEX "Event_who" ON "Event" ("WhoId")',
    'CREATE INDEX "CampaignMember_lead" ON "CampaignMember" ("LeadId")',
    'CREATE INDEX "CampaignMember_campaign" ON "CampaignMember" ("CampaignId", "LeadId")',
    'CREATE INDEX "Lead_email" ON "Lead" ("Email" COLLATE NOCASE)',
    'CREATE INDEX "Contact_email" ON "Contact" ("Email" COLLATE NOCASE)',
)


class Database:
    """The sandbox database file and its two connections.

    Args:
        path: The SQLite file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    @property
    def connection(self) -> sqlite3.Connection:
        """The read-write connection; hold :attr:`lock` while using it."""
        return self._conn

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a statement on the read-write connection and return every row.

        Args:
            sql: SQL text.
            params: Bound parameters.

        Returns:
            The rows.
        """
        with self.lock:
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block in one write transaction, rolled back if the block raises.

        Yields:
            The read-write connection.
        """
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def inspect(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only statement on a separate read-only connection.

        Args:
            sql: SQL text (writes fail: the connection is read-only).
            params: Bound parameters.

        Returns:
            The rows.
        """
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
                self._reader.execute("PRAGMA query_only=1")
            return self._reader.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close both connections."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self.lock:
            self._conn.close()


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every object table and the bookkeeping tables in an empty database.

    Args:
        conn: Connection to the new database.
    """
    for obj in OBJECTS.values():
        conn.execute(create_table_sql(obj))
    for statement in (*_BOOKKEEPING, *SEGMENT_SCHEMA):
        conn.execute(statement)


def create_indexes(conn: sqlite3.Connection) -> None:
    """Create the indexes (after the bulk load, which is faster than maintaining them).

    Args:
        conn: Connection to the loaded database.
    """
    for obj in OBJECTS.values():
        deleted = ', "IsDeleted"' if obj.has_is_deleted else ""
        for template in _INDEXES:
            conn.execute(template.format(t=obj.table, deleted=deleted))
    for statement in (*_EXTRA_INDEXES, *SEGMENT_INDEXES):
        conn.execute(statement)
    conn.execute("CREATE INDEX write_log_record ON write_log (object, record_id)")
    conn.execute("ANALYZE")
