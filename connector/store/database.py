"""The local store: one DuckDB file.

It holds raw source tables, sync cursors, the run log, score history and the write-back ledger.

Layout (see ``docs/architecture.md``):

- raw tables, one per stream, keyed by the source id (``sf_lead``, ``sf_task``,
  ``sf_campaign_member``...), columns named exactly as in the source (``Industry``,
  ``SystemModstamp``) so TOML field names are valid SQL;
- ``source_field``: the source type of every raw column (from Salesforce describe);
- ``sync_cursor``: per stream, the cursor value and how far the store is complete, committed in the
  same transaction as the page it belongs to;
- ``stream_full_read``: per stream, when it was last read in full (periodic full reads);
- ``run_log``: one row per job run;
- ``score_history``: every score ever computed, by prediction and scoring run (``partial`` runs
  of the fresh job score some entities and overlay the latest full run);
- ``fresh_position``, ``fresh_latency``: where the fresh job's trigger stands, and how long new
  records waited for their first confirmed score;
- ``writeback_ledger``: per target record and field, the last value the target confirmed, plus the
  status and error of the latest attempt. Nothing is marked written until the target system
  confirmed it.

Timestamps are stored as naive ``TIMESTAMP`` in UTC. Identifiers in SQL are validated with
:func:`quote_identifier`; values are always bound parameters.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from connector.clock import utc_now
from connector.errors import ConfigError, LeadscoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

if TYPE_CHECKING:  # pandas costs 0.3 s to import; `leadscore status` never needs it
    import numpy as np
    import pandas as pd

# Columns every write moves, whoever makes it: not a change of the record's content.
_BOOKKEEPING = frozenset({"systemmodstamp", "lastmodifieddate", "lastmodifiedbyid"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def quote_identifier(name: str) -> str:
    """Validate a table or column name and quote it for DuckDB.

    Args:
        name: an identifier from config or from a source schema.

    Returns:
        The identifier in double quotes.

    Raises:
        ValueError: the name is not a plain identifier (letters, digits, underscores).
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid identifier: {name!r}")
    return f'"{name}"'


_SYSTEM_PREFIX = {"salesforce": "sf", "segment": "seg"}
# A Bulk API 2.0 result page, as DuckDB reads it: every value text (cast by the merge), RFC 4180
# quoting.
_READ_BULK_CSV = (
    "read_csv(?, header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"')"
)


# The tables other packages read by name. scoring/ imports these names rather than spelling a
# table another module fills (identity_map is rebuilt by connector/store/identity.py).
IDENTITY_MAP = "identity_map"
"""(entity, id_type, id_value, entity_id, profile_id, rule): every identity of every person."""
FIELD_LABELS = "field_labels"
"""What reps read: each pulled field's label and type from describe (``Seniority__c`` ->
``Seniority``; ``currency:USD`` for amounts), for score reasons and drift tables."""

LEDGER_CACHE_MB = 128
"""DuckDB's memory cap while a batch of push attempts or outcomes is written to the ledger.

Uncapped, DuckDB keeps every node of the ledger's primary-key index it has read, and a push of 3 %
of the leads touches nodes all over it: the process grew with the org (1M leads: +200 MB against
200k). Under a cap the unchanged nodes are evicted and read again when needed; 128 MB holds a
batch's new nodes until they are written (a 64 MB cap ran out of memory inserting the first
push's rows at 1M leads; 128 MB was measured flat up to a 25M-row ledger)."""

PAGE_CACHE_MB = 256
"""DuckDB's memory cap while one pulled page is merged into its raw table.

Uncapped, DuckDB keeps every block a sync writes up to 80 % of RAM, so a first sync's memory grew
with the org (819 MB at 1M leads, 2,095 MB at 5M). Under the cap, blocks already written are
evicted: a 30M-row table filled with 50,000-row pages levels off at 620-636 MB from its 15M-th row
on, where uncapped it grows 12.5 MB per 1M rows to 807 MB, at no more CPU
(``benchmarks/page_cache.py``)."""


def raw_table_name(system: str, stream: str) -> str:
    """The raw table a stream is stored in (``sf_campaign_member`` for ``CampaignMember``).

    Args:
        system: source system (``salesforce``, ``segment``).
        stream: stream or object name.

    Returns:
        The table name.
    """
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", stream).lower()
    return f"{_SYSTEM_PREFIX.get(system, system)}_{snake}"


# Each entry is one schema version; append, never edit, so existing stores migrate forward.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE sync_cursor (
            stream VARCHAR PRIMARY KEY,
            cursor_value TIMESTAMP,
            synced_through TIMESTAMP,
            updated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE source_field (
            stream VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            source_type VARCHAR NOT NULL,
            db_type VARCHAR NOT NULL,
            PRIMARY KEY (stream, name))""",
        "CREATE SEQUENCE run_id_seq START 1",
        """CREATE TABLE run_log (
            run_id BIGINT PRIMARY KEY,
            job VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            status VARCHAR NOT NULL,
            counts JSON,
            api_calls BIGINT,
            error VARCHAR)""",
        "CREATE SEQUENCE score_run_seq START 1",
        """CREATE TABLE score_history (
            score_run_id BIGINT NOT NULL,
            prediction VARCHAR NOT NULL,
            entity_id VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            probability DOUBLE,
            score INTEGER,
            tier VARCHAR,
            reasons VARCHAR,
            scored_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE writeback_ledger (
            target VARCHAR NOT NULL,
            object VARCHAR NOT NULL,
            record_id VARCHAR NOT NULL,
            field VARCHAR NOT NULL,
            value JSON,
            attempted_value JSON,
            status VARCHAR NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error VARCHAR,
            last_attempt_at TIMESTAMP,
            confirmed_at TIMESTAMP,
            PRIMARY KEY (target, object, record_id, field))""",
    ),
    # Operations (issue 7): alert state, drift and realized performance over time
    # (connector/store/runs.py reads and writes them).
    (
        """CREATE TABLE alert_state (
            key VARCHAR PRIMARY KEY,
            active BOOLEAN NOT NULL,
            since TIMESTAMP NOT NULL,
            message VARCHAR,
            notified BOOLEAN NOT NULL,
            updated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE drift_history (
            prediction VARCHAR NOT NULL,
            measured_at TIMESTAMP NOT NULL,
            model_version VARCHAR NOT NULL,
            scored_at TIMESTAMP,
            rows BIGINT,
            score_psi DOUBLE,
            max_feature_psi DOUBLE,
            max_feature VARCHAR,
            features JSON)""",
        """CREATE TABLE realized_performance (
            prediction VARCHAR NOT NULL,
            score_run_id BIGINT NOT NULL,
            scored_at TIMESTAMP NOT NULL,
            model_version VARCHAR,
            window_days INTEGER NOT NULL,
            evaluated_at TIMESTAMP NOT NULL,
            leads BIGINT NOT NULL,
            conversions BIGINT NOT NULL,
            auc DOUBLE,
            bands JSON,
            PRIMARY KEY (prediction, score_run_id))""",
    ),
    # Bulk API 2.0 pulls in progress: the job and the next page to read, committed with each
    # page, so that a crash resumes the download instead of starting over (issue 3).
    (
        """CREATE TABLE bulk_checkpoint (
            stream VARCHAR PRIMARY KEY,
            job_id VARCHAR NOT NULL,
            job_created TIMESTAMP NOT NULL,
            fields JSON NOT NULL,
            include_deleted BOOLEAN NOT NULL,
            locator VARCHAR,
            max_cursor TIMESTAMP,
            rows_stored BIGINT NOT NULL DEFAULT 0,
            started_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL)""",
    ),
    # Segment (issue 4): profiles read through the Profile API, events and identities imported from
    # warehouse / Profiles Sync exports, and the identity map joining CDP profiles to CRM records.
    (
        # One row per Profile API lookup (e.g. ``email:jane@acme.com``): found or not, and when.
        """CREATE TABLE seg_profile (
            lookup VARCHAR PRIMARY KEY,
            found BOOLEAN NOT NULL,
            fetched_at TIMESTAMP NOT NULL)""",
        # Identities of a profile. profile_id is the lookup for Profile API reads and the
        # canonical_segment_id for id-graph imports.
        """CREATE TABLE seg_external_id (
            profile_id VARCHAR NOT NULL,
            id_type VARCHAR NOT NULL,
            id_value VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            created_at TIMESTAMP,
            PRIMARY KEY (profile_id, id_type, id_value))""",
        """CREATE TABLE seg_trait (
            profile_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            value JSON,
            updated_at TIMESTAMP,
            source VARCHAR NOT NULL,
            PRIMARY KEY (profile_id, name))""",
        # Track events. No primary key: an ART index over millions of message ids costs more than
        # the import itself; imports de-duplicate on message_id instead (connector/files.py).
        """CREATE TABLE seg_event (
            message_id VARCHAR NOT NULL,
            event VARCHAR NOT NULL,
            user_id VARCHAR,
            anonymous_id VARCHAR,
            segment_id VARCHAR,
            ts TIMESTAMP NOT NULL,
            properties JSON,
            file_id INTEGER)""",
        """CREATE TABLE seg_identify (
            message_id VARCHAR NOT NULL,
            user_id VARCHAR,
            anonymous_id VARCHAR,
            segment_id VARCHAR,
            email VARCHAR,
            ts TIMESTAMP NOT NULL,
            traits JSON,
            file_id INTEGER)""",
        "CREATE SEQUENCE seg_import_file_seq START 1",
        """CREATE TABLE seg_import_file (
            file_id INTEGER PRIMARY KEY,
            path VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            size BIGINT NOT NULL,
            modified_at TIMESTAMP NOT NULL,
            imported_at TIMESTAMP NOT NULL,
            lines BIGINT NOT NULL,
            imported BIGINT NOT NULL,
            duplicates BIGINT NOT NULL,
            skipped JSON NOT NULL)""",
        # Every skipped line of every import, with its reason: nothing is dropped silently.
        """CREATE TABLE seg_import_reject (
            file_id INTEGER NOT NULL,
            line BIGINT NOT NULL,
            reason VARCHAR NOT NULL,
            detail VARCHAR)""",
        # Identity resolution output (connector/store/identity.py), rebuilt after every pull: one
        # row per profile (matched or not, and why), and one row per identity of a matched
        # person. entity is NULL for a profile that matched no record of any entity.
        """CREATE TABLE identity_profile (
            entity VARCHAR,
            profile_id VARCHAR NOT NULL,
            entity_id VARCHAR,
            status VARCHAR NOT NULL,
            rule VARCHAR,
            candidates INTEGER NOT NULL)""",
        """CREATE TABLE identity_map (
            entity VARCHAR NOT NULL,
            id_type VARCHAR NOT NULL,
            id_value VARCHAR NOT NULL,
            entity_id VARCHAR NOT NULL,
            profile_id VARCHAR NOT NULL,
            rule VARCHAR NOT NULL)""",
    ),
    # Write-back (issue 6): a failed ledger row waits until next_attempt_at before it is sent
    # again (backoff); multiclass scores keep every class's probability (JSON object).
    (
        "ALTER TABLE writeback_ledger ADD COLUMN next_attempt_at TIMESTAMP",
        "ALTER TABLE score_history ADD COLUMN class_probabilities JSON",
    ),
    # Periodic full reads (issue 15): when each stream was last read in full, for fields whose
    # changes do not move SystemModstamp (formulas, roll-up summaries).
    (
        """CREATE TABLE stream_full_read (
            stream VARCHAR PRIMARY KEY,
            read_at TIMESTAMP NOT NULL)""",
    ),
    # What reps read (issue 13): field labels and types from describe, for reasons and drift.
    (
        """CREATE TABLE field_labels (
            field VARCHAR PRIMARY KEY,
            label VARCHAR NOT NULL,
            type VARCHAR NOT NULL)""",
    ),
    # Speed to lead (issue 14): a scoring run of some entities only (the fresh job) overlays the
    # latest full run; where the fresh job's trigger stands (poll cursors, a CDC replay id),
    # committed after the work it triggered; creation -> confirmed write latency per new record.
    (
        "ALTER TABLE score_history ADD COLUMN partial BOOLEAN",
        """CREATE TABLE fresh_position (
            trigger VARCHAR PRIMARY KEY,
            position JSON NOT NULL,
            updated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE fresh_latency (
            prediction VARCHAR NOT NULL,
            entity_id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            confirmed_at TIMESTAMP NOT NULL,
            seconds DOUBLE NOT NULL,
            trigger VARCHAR NOT NULL,
            PRIMARY KEY (prediction, entity_id))""",
    ),
    # Change data capture (issue 14): every change event the fresh job's cdc trigger handled,
    # written in the transaction that commits its replay id (fresh_position), so an event is
    # either handled and recorded with its position, or neither (a restart replays it).
    (
        """CREATE TABLE change_events (
            trigger VARCHAR NOT NULL,
            replay_id VARCHAR NOT NULL,
            entity VARCHAR NOT NULL,
            change_type VARCHAR NOT NULL,
            record_ids JSON NOT NULL,
            outcome VARCHAR NOT NULL,
            committed_at TIMESTAMP,
            received_at TIMESTAMP NOT NULL,
            handled_at TIMESTAMP NOT NULL,
            PRIMARY KEY (trigger, replay_id))""",
    ),
    # Retention (issue 17): a thinned score-history row stands for a stretch of runs in which
    # the lead's score held, from valid_from (NULL: scored_at) to scored_at; score_run keeps
    # every finished run (its time, model and size) when its rows are thinned away.
    (
        "ALTER TABLE score_history ADD COLUMN valid_from TIMESTAMP",
        """CREATE TABLE score_run (
            score_run_id BIGINT PRIMARY KEY,
            prediction VARCHAR NOT NULL,
            scored_at TIMESTAMP NOT NULL,
            model_version VARCHAR,
            rows BIGINT NOT NULL,
            partial BOOLEAN)""",
        """INSERT INTO score_run SELECT score_run_id, any_value(prediction), max(scored_at),
                  any_value(model_version), count(*),
                  bool_or(coalesce(partial, false))
           FROM score_history GROUP BY score_run_id""",
    ),
)


@dataclass(frozen=True)
class PageCounts:
    """What one upserted page did to a raw table.

    Attributes:
        inserted: rows new to the store.
        updated: rows already stored with at least one different value.
        unchanged: rows fetched again with identical values (overlap or boundary rows).
        deleted: stored rows removed because the source reports them deleted.
    """

    inserted: int
    updated: int
    unchanged: int
    deleted: int = 0


def _owner_only(path: Path) -> None:
    """Make the store file (and its write-ahead log) readable by its owner only.

    The store holds personal data (names, emails, activity); DuckDB creates its files with the
    process umask, typically world-readable. A store created before is tightened on open.
    """
    for file in (path, path.with_name(path.name + ".wal")):
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except OSError:
            pass  # not there yet (no WAL), or not ours to change: nothing to tighten


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered frame; in a transaction an error aborted, the rollback drops it.

    Unregistering there raises "Current transaction is aborted", which would replace the error
    that aborted it (an out-of-memory error, a constraint) in what the user sees.
    """
    with suppress(duckdb.TransactionException):
        con.unregister(name)


class Store:
    """One DuckDB file. Not safe for concurrent use from several threads; open one per job run."""

    def __init__(
        self, path: str | Path, *, read_only: bool = False, memory_limit_mb: int | None = None
    ) -> None:
        """Open (and create or migrate) the store.

        Args:
            path: the DuckDB file; its directory is created when missing.
            read_only: open without taking the write lock (for ``status`` while a run is going on).
            memory_limit_mb: DuckDB's memory limit (its buffer pool caches the file's blocks up
                to it; operators spill to disk past it). None: DuckDB's default, 80 % of RAM.

        Raises:
            ConfigError: the file cannot be opened (unwritable directory, locked by another process,
                not DuckDB).
        """
        self.path = Path(path)
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except (duckdb.Error, OSError) as exc:
            reason = str(exc).splitlines()[0]
            if "lock" in reason.lower():
                raise ConfigError(
                    f"store {self.path} is in use by another leadscore process",
                    hint="wait for it to finish, or stop it",
                ) from None
            raise ConfigError(
                f"cannot open store {self.path}: {reason}",
                hint="check store.path and that its directory is writable",
            ) from None
        if not read_only:
            _owner_only(self.path)
        # DuckDB draws its own progress bar on stdout for long queries (a big import), which would
        # corrupt --json output; leadscore reports progress itself.
        self.con.execute("SET enable_progress_bar = false")
        self._memory_limit_mb = memory_limit_mb
        self._cache_cap_mb: int | None = None  # the innermost bounded_cache's
        # raw tables whose last merged page held only records they lacked (see _merge_page_into)
        self._new_pages: dict[str, bool] = {}
        if memory_limit_mb is not None:
            self.con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        self._lock = threading.RLock()
        if not read_only:
            self._migrate()

    # -- lifecycle
    # ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        self.con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.con.execute("SELECT max(version) FROM schema_version").fetchall()[0]
        current = row[0] if row and row[0] is not None else 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            with self.transaction():
                for statement in statements:
                    self.con.execute(statement)
                self.con.execute("INSERT INTO schema_version VALUES (?)", [version])

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run statements atomically: committed together or not at all.

        Yields:
            The connection.
        """
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    # -- queries
    # --------------------------------------------------------------------------------------------

    def query_df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a read query and return a DataFrame.

        Args:
            sql: SQL with ``?`` placeholders.
            params: bound values.

        Returns:
            The result.
        """
        with self._lock:
            return self.con.execute(sql, params or []).df()

    def query_records(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query and return its rows as plain dicts (NULL as None).

        Unlike :meth:`query_df` it needs no pandas, which keeps ``leadscore status`` quick.

        Args:
            sql: SQL with ``?`` placeholders.
            params: bound values.

        Returns:
            One dict per row, keyed by column name.
        """
        with self._lock:
            cursor = self.con.execute(sql, params or [])
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextmanager
    def bounded_cache(self, limit_mb: int) -> Iterator[None]:
        """Cap DuckDB's memory at ``limit_mb`` (or the store's lower limit) for a batch loop.

        A job that works in batches of entities reads every block of the event tables once per
        batch (the batch's tasks are spread over the whole table), and DuckDB's buffer pool keeps
        each block it read up to its memory limit (by default 80 % of RAM): the cache, and so the
        process's memory, would grow with the org (1M leads: 160 MB against 31 MB at 200k) although
        each batch needs the same. Past the cap DuckDB evicts blocks (re-read from the OS page
        cache) and spills operators to disk:
        https://duckdb.org/docs/stable/guides/performance/how_to_tune_workloads

        Caps nest: inside another, the lower one holds.

        Args:
            limit_mb: the cap in MB.

        Yields:
            Nothing; the previous limit is set back on exit.
        """
        outer = self._cache_cap_mb
        self._set_cache_cap(int(min(m for m in (limit_mb, self._memory_limit_mb, outer) if m)))
        try:
            yield
        finally:
            self._set_cache_cap(outer)

    def _set_cache_cap(self, cap_mb: int | None) -> None:
        """Set DuckDB's memory limit to ``cap_mb``, or (None) back to the store's own limit."""
        limit = cap_mb or self._memory_limit_mb
        # DuckDB refuses a limit below what it holds (an out-of-memory error): keep the old cap then
        if limit:
            self.con.execute(f"SET memory_limit = '{int(limit)}MB'")
        else:
            self.con.execute("RESET memory_limit")
        self._cache_cap_mb = cap_mb

    def _write_ledger(self, write: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """Run one ledger write in a transaction under :data:`LEDGER_CACHE_MB`."""

        def run() -> None:
            with self.transaction() as con:
                write(con)

        self._run_capped(LEDGER_CACHE_MB, run, "ledger write")

    def _run_capped(self, cap_mb: int, run: Callable[[], T], what: str) -> T:
        """Run one transaction (``run`` opens and commits it) under a memory cap of ``cap_mb``.

        If DuckDB cannot fit it under the cap (unusually large batches or pages), the rolled back
        transaction runs again under the store's own limit only (any job-wide cap is lifted for
        it): the cap saves memory, it must never fail a push whose records the target has already
        confirmed, nor a page already downloaded.
        """
        try:
            with self.bounded_cache(cap_mb):
                return run()
        except duckdb.OutOfMemoryException:
            log.info("%s over %d MB: run again without DuckDB's cap", what, cap_mb)
        outer = self._cache_cap_mb
        # the store's own limit (store.memory_limit_mb), if any, still holds
        self._set_cache_cap(None)
        try:
            return run()
        finally:
            self._set_cache_cap(outer)

    def read_connection(self) -> duckdb.DuckDBPyConnection:
        """The connection ``scoring/`` reads the store through (its feature and label SQL).

        Scoring builds point-in-time SQL over many tables, so it gets the connection rather than a
        function per query; it only reads (every write goes through a named method of the store).
        Outside ``connector/store`` this is the only way to the connection.

        Returns:
            The store's DuckDB connection.
        """
        return self.con

    def shared_values(
        self, table: str, key_column: str, value_column: str, keys: Collection[str]
    ) -> dict[str, tuple[str, int]]:
        """For some rows of a table: the text of one column, and how many rows share it.

        What an upsert needs of its external id field, read for one batch of records at a time
        (memory of a batch, not of the table): the key's value, and whether another row of the
        whole table holds the same value.

        Args:
            table: the table (a validated identifier).
            key_column: the key column.
            value_column: the value column.
            keys: the rows' keys.

        Returns:
            Key -> (value, rows of the table with that value), for rows whose value is not blank.
        """
        q = quote_identifier
        text = f"CAST({q(value_column)} AS VARCHAR)"
        values = f"""SELECT CAST({q(key_column)} AS VARCHAR) AS k, {text} AS v
                     FROM {q(table)}
                     WHERE length(trim({text}, ' \t\r\n')) > 0"""
        rows = self.con.execute(
            f"""WITH all_values AS ({values}),
                     mine AS (SELECT k, v FROM all_values WHERE k IN (SELECT unnest(?)))
                SELECT mine.k, mine.v, n.rows FROM mine JOIN (
                    SELECT v, count(*) AS rows FROM all_values
                    WHERE v IN (SELECT v FROM mine) GROUP BY v) n ON n.v = mine.v""",
            [_id_list(keys)],
        ).fetchall()
        return {str(k): (str(v), int(n)) for k, v, n in rows}

    def table_exists(self, table: str) -> bool:
        """Tell whether a table or view exists in the main schema.

        Args:
            table: its name.

        Returns:
            True when it exists.
        """
        row = self.con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'main' AND table_name = ?",
            [table],
        ).fetchall()[0]
        return bool(row and row[0])

    def table_columns(self, table: str) -> list[str]:
        """List a table's columns in order.

        Args:
            table: its name.

        Returns:
            Column names; empty when the table does not exist.
        """
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return [r[0] for r in rows]

    # -- raw tables and cursors
    # -----------------------------------------------------------------------------

    def ensure_table(
        self, stream: str, table: str, columns: dict[str, tuple[str, str]], key: str
    ) -> list[str]:
        """Create a raw table, or add the columns it lacks.

        Args:
            stream: stream name (for ``source_field``).
            table: table name.
            columns: column name -> (source type, DuckDB type), in order.
            key: primary-key column.

        Returns:
            Columns added to an existing table (its rows hold NULL there until re-pulled).
        """
        quoted = quote_identifier(table)
        existing = {c.lower() for c in self.table_columns(table)}
        added: list[str] = []
        with self.transaction() as con:
            if not existing:
                cols = ", ".join(f"{quote_identifier(n)} {t}" for n, (_, t) in columns.items())
                con.execute(
                    f"CREATE TABLE {quoted} ({cols}, PRIMARY KEY ({quote_identifier(key)}))"
                )
            else:
                for name, (_, db_type) in columns.items():
                    if name.lower() not in existing:
                        con.execute(
                            f"ALTER TABLE {quoted} ADD COLUMN {quote_identifier(name)} {db_type}"
                        )
                        added.append(name)
            for name, (source_type, db_type) in columns.items():
                con.execute(
                    "INSERT OR REPLACE INTO source_field VALUES (?, ?, ?, ?)",
                    [stream, name, source_type, db_type],
                )
        return added

    def read_cursor(self, stream: str) -> datetime | None:
        """The cursor value committed for a stream.

        Args:
            stream: stream name.

        Returns:
            The last committed cursor value, or None before the first page.
        """
        rows = self.con.execute(
            "SELECT cursor_value FROM sync_cursor WHERE stream = ?", [stream]
        ).fetchall()
        return rows[0][0] if rows else None

    def reset_cursor(self, stream: str) -> None:
        """Forget a stream's cursor so the next pull reads it in full.

        Args:
            stream: stream name.
        """
        with self.transaction() as con:
            con.execute("DELETE FROM sync_cursor WHERE stream = ?", [stream])

    def upsert_page(
        self,
        stream: str,
        table: str,
        page: pd.DataFrame,
        *,
        key: str,
        cursor_field: str,
        deleted_field: str | None = None,
    ) -> PageCounts:
        """Upsert one page of records and advance the stream's cursor, in one transaction.

        The query behind the page is ordered by the cursor, so the page's maximum cursor value is a
        safe checkpoint: a crash after this commit resumes from it, and boundary rows fetched again
        are recognised by id and counted as unchanged.

        Args:
            stream: stream name.
            table: raw table (created by :meth:`ensure_table`).
            page: records with the table's columns (plus ``deleted_field`` if it is not one).
            key: primary-key column.
            cursor_field: the column the stream is pulled by.
            deleted_field: boolean column marking records deleted at the source; they are removed
                from the table instead of upserted.

        Returns:
            Counts of new, changed, unchanged and deleted rows.
        """
        if page.empty:
            return PageCounts(0, 0, 0)

        def merge(new_only: bool) -> PageCounts:
            with self.transaction() as con:
                con.register("_page", page)
                try:
                    counts, newest = self._merge(
                        con,
                        table,
                        "_page",
                        list(page.columns),
                        key,
                        cursor_field,
                        deleted_field,
                        new_only=new_only,
                    )
                    self._advance_cursor(con, stream, newest)
                finally:
                    _unregister(con, "_page")
            return counts

        return self._merge_page_into(table, merge)

    def upsert_csv(
        self,
        stream: str,
        table: str,
        path: Path,
        *,
        key: str,
        cursor_field: str,
        deleted_field: str | None = None,
        locator: str | None = None,
    ) -> PageCounts:
        """Upsert one Bulk API 2.0 result page (a CSV file) and checkpoint the download.

        Bulk results are unordered, so the stream's cursor does not move; the page's rows, the
        newest cursor value seen and the locator of the next page are committed together in the
        stream's ``bulk_checkpoint`` (see :meth:`start_bulk`, :meth:`finish_bulk`).

        Args:
            stream: stream name.
            table: raw table.
            path: CSV file with a header row of column names; every value text, empty for null.
            key: primary-key column.
            cursor_field: the column the stream is pulled by.
            deleted_field: boolean column marking deleted records (removed from the table).
            locator: the next page's locator (None after the last page).

        Returns:
            Counts of new, changed, unchanged and deleted rows.
        """

        def merge(new_only: bool) -> PageCounts:
            with self.transaction() as con:
                # DuckDB reads the file itself: no row passes through Python.
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE _csv_page AS SELECT * FROM {_READ_BULK_CSV}",
                    [str(path)],
                )
                try:
                    columns = [r[0] for r in con.execute("DESCRIBE _csv_page").fetchall()]
                    counts, newest = self._merge(
                        con,
                        table,
                        "_csv_page",
                        columns,
                        key,
                        cursor_field,
                        deleted_field,
                        text=True,
                        new_only=new_only,
                    )
                finally:
                    with suppress(duckdb.TransactionException):
                        con.execute("DROP TABLE IF EXISTS _csv_page")
                con.execute(
                    """UPDATE bulk_checkpoint SET locator = ?,
                         max_cursor = greatest(max_cursor, CAST(? AS TIMESTAMP)),
                         rows_stored = rows_stored + ?, updated_at = ?
                       WHERE stream = ?""",
                    [
                        locator,
                        _py(newest),
                        counts.inserted + counts.updated + counts.unchanged,
                        utc_now(),
                        stream,
                    ],
                )
            return counts

        return self._merge_page_into(table, merge)

    def _merge_page_into(self, table: str, merge: Callable[[bool], PageCounts]) -> PageCounts:
        """Run a page's merge transaction, first as a plain insert while pages are all new.

        Telling new records from changed ones joins the page with the whole table, a scan whose
        cost grows with the table (a 50,000-row page: 0.04 s at 1M rows, 0.16 s at 5M), so a
        first sync's pages together cost the square of the org's size. A plain INSERT checks the
        page against the primary-key index instead, at a cost that does not grow (0.02 s). While
        a table's pages hold only records it lacks (a first sync), a page is inserted as it is;
        one that holds a record already stored (a record edited during the sync, a page fetched
        again after a crash) fails on the key, is rolled back whole and is merged again the full
        way, and so are the table's next pages until one is all new again.
        """
        if self._new_pages.get(table, True):
            try:
                counts = self._run_capped(PAGE_CACHE_MB, lambda: merge(True), f"page of {table}")
            except duckdb.ConstraintException:
                self._new_pages[table] = False
            else:
                return counts
        counts = self._run_capped(PAGE_CACHE_MB, lambda: merge(False), f"page of {table}")
        self._new_pages[table] = not (counts.updated or counts.unchanged or counts.deleted)
        return counts

    def _merge(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        source: str,
        source_columns: list[str],
        key: str,
        cursor_field: str,
        deleted_field: str | None,
        *,
        text: bool = False,
        changed: set[str] | None = None,
        new_only: bool = False,
    ) -> tuple[PageCounts, Any]:
        """Merge a registered page into a raw table (caller holds the transaction).

        ``changed``, when given, receives the keys of rows inserted, deleted or updated in a
        column other than the bookkeeping ones (cursor, ``LastModifiedDate``...): a record whose
        only change is a write by leadscore itself (it moves ``SystemModstamp``) is not in it.

        ``new_only`` inserts a page without deleted rows as it is, without looking for its
        records in the table: a record the table holds fails the insert on the primary key
        (``duckdb.ConstraintException``, the caller's transaction is then aborted).

        Returns:
            The counts and the page's newest cursor value (deleted rows included).
        """
        t, k = quote_identifier(table), quote_identifier(key)
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = ?",
                [table],
            ).fetchall()
        )
        columns = [c for c in source_columns if c in types]

        def cast(column: str, to: str) -> str:
            q = quote_identifier(column)
            if text and to.startswith("TIMESTAMP"):
                # Bulk CSV datetimes carry their offset (2024-05-20T20:49:32.000Z): read as UTC.
                return f"timezone('UTC', CAST({q} AS TIMESTAMPTZ))"
            # Cast explicitly: a column that is all NULL in a page arrives untyped from pandas.
            return f"CAST({q} AS {to})"

        quoted = [quote_identifier(c) for c in columns]
        casts = ", ".join(
            f"{cast(c, types[c])} AS {q}" for c, q in zip(columns, quoted, strict=True)
        )
        flag = (
            f"coalesce(CAST({quote_identifier(deleted_field)} AS BOOLEAN), false)"
            if deleted_field and deleted_field in source_columns
            else "false"
        )
        cursor = quote_identifier(cursor_field)
        # One row per id: the newest version wins.
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _merge_page AS
                SELECT {casts}, {flag} AS _ls_deleted FROM {quote_identifier(source)}
                QUALIFY row_number() OVER (
                    PARTITION BY {k} ORDER BY {cursor} DESC NULLS LAST) = 1"""
        )
        try:
            if new_only:
                rows, any_deleted, newest = con.execute(
                    f"SELECT count(*), coalesce(bool_or(_ls_deleted), false), max({cursor}) "
                    "FROM _merge_page"
                ).fetchall()[0]
                if not any_deleted:
                    con.execute(
                        f"INSERT INTO {t} ({', '.join(quoted)}) "
                        f"SELECT {', '.join(quoted)} FROM _merge_page"
                    )
                    return PageCounts(int(rows), 0, 0, 0), newest
            # Changed means any value changed: two edits within one second share a SystemModstamp
            # (Salesforce timestamps have second resolution), so the cursor alone cannot tell.
            differs = (
                " OR ".join(f"t.{q} IS DISTINCT FROM p.{q}" for q in quoted if q != k) or "false"
            )
            inserted, updated, unchanged, deleted, newest = con.execute(
                f"""SELECT
                      count(*) FILTER (WHERE NOT p._ls_deleted AND t.{k} IS NULL),
                      count(*) FILTER (WHERE NOT p._ls_deleted AND t.{k} IS NOT NULL
                                       AND ({differs})),
                      count(*) FILTER (WHERE NOT p._ls_deleted AND t.{k} IS NOT NULL
                                       AND NOT ({differs})),
                      count(*) FILTER (WHERE p._ls_deleted AND t.{k} IS NOT NULL),
                      max(p.{cursor})
                    FROM _merge_page p LEFT JOIN {t} t ON t.{k} = p.{k}"""
            ).fetchall()[0]
            if changed is not None:
                bookkeeping = {cursor_field.lower(), *_BOOKKEEPING}
                content = (
                    " OR ".join(
                        f"t.{q} IS DISTINCT FROM p.{q}"
                        for c, q in zip(columns, quoted, strict=True)
                        if q != k and c.lower() not in bookkeeping
                    )
                    or "false"
                )
                rows = con.execute(
                    f"""SELECT CAST(p.{k} AS VARCHAR) FROM _merge_page p
                        LEFT JOIN {t} t ON t.{k} = p.{k}
                        WHERE t.{k} IS NULL OR p._ls_deleted OR ({content})"""
                ).fetchall()
                changed.update(r[0] for r in rows)
            if deleted_field:
                con.execute(
                    f"DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM _merge_page WHERE _ls_deleted)"
                )
            # a page of records the table does not hold yet (a first sync's pages) skips the
            # conflict check against the primary key: a third of the insert's time at 3M rows
            verb = "INSERT" if not (updated or unchanged or deleted) else "INSERT OR REPLACE"
            con.execute(
                f"{verb} INTO {t} ({', '.join(quoted)}) "
                f"SELECT {', '.join(quoted)} FROM _merge_page WHERE NOT _ls_deleted"
            )
        finally:
            with suppress(duckdb.TransactionException):
                con.execute("DROP TABLE IF EXISTS _merge_page")
        counts = PageCounts(int(inserted), int(updated), int(unchanged), int(deleted))
        return counts, newest

    def save_field_labels(self, labels: Iterable[tuple[str, str, str]]) -> None:
        """Remember the label and type of pulled fields (the last describe wins).

        Args:
            labels: ``(field API name, label, type)``; type ``currency:XXX`` for amounts.
        """
        rows = [(f, lbl, t) for f, lbl, t in labels if f and lbl]
        if not rows:
            return
        with self.transaction() as con:
            con.executemany(
                f"INSERT OR REPLACE INTO {FIELD_LABELS} VALUES (?, ?, ?)",
                rows,
            )

    def advance_cursor(self, stream: str, through: datetime) -> None:
        """Move a stream's cursor forward to a time its finished read covers (never back).

        Args:
            stream: stream name.
            through: every change before it (minus the overlap) was read.
        """
        with self.transaction() as con:
            self._advance_cursor(con, stream, through)

    @staticmethod
    def _advance_cursor(con: duckdb.DuckDBPyConnection, stream: str, newest: Any) -> None:
        if newest is None:
            return
        con.execute(
            """INSERT INTO sync_cursor VALUES (?, ?, NULL, ?)
               ON CONFLICT (stream) DO UPDATE SET
                 cursor_value = greatest(sync_cursor.cursor_value, excluded.cursor_value),
                 updated_at = excluded.updated_at""",
            [stream, _py(newest), utc_now()],
        )

    # -- Bulk API 2.0 downloads in progress

    def start_bulk(
        self,
        stream: str,
        *,
        job_id: str,
        job_created: datetime,
        fields: Sequence[str],
        include_deleted: bool,
        started_at: datetime,
    ) -> None:
        """Record that a stream is being read by a bulk query job (before its first page).

        Args:
            stream: stream name.
            job_id: the job.
            job_created: the job's creation time (server clock, naive UTC).
            fields: the fields the job selects (a resumed job must select the same).
            include_deleted: whether the job is a ``queryAll``.
            started_at: when the pull started (becomes ``synced_through`` when it finishes).
        """
        now = utc_now()
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO bulk_checkpoint "
                "VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?)",
                [
                    stream,
                    job_id,
                    job_created,
                    json.dumps(list(fields)),
                    include_deleted,
                    started_at,
                    now,
                ],
            )

    def bulk_checkpoint(self, stream: str) -> dict[str, Any] | None:
        """The bulk download in progress for a stream, if any.

        Args:
            stream: stream name.

        Returns:
            ``job_id, job_created, fields, include_deleted, locator, max_cursor, rows_stored,
            started_at``, or None.
        """
        rows = self.con.execute(
            "SELECT job_id, job_created, fields, include_deleted, locator, max_cursor, "
            "rows_stored, started_at FROM bulk_checkpoint WHERE stream = ?",
            [stream],
        ).fetchall()
        if not rows:
            return None
        names = (
            "job_id",
            "job_created",
            "fields",
            "include_deleted",
            "locator",
            "max_cursor",
            "rows_stored",
            "started_at",
        )
        checkpoint = dict(zip(names, rows[0], strict=True))
        checkpoint["fields"] = json.loads(checkpoint["fields"])
        return checkpoint

    def finish_bulk(self, stream: str, cursor: datetime | None) -> None:
        """Close a finished bulk download: advance the cursor and drop the checkpoint, atomically.

        Args:
            stream: stream name.
            cursor: the cursor the finished job allows (None: keep the current one).
        """
        with self.transaction() as con:
            self._advance_cursor(con, stream, cursor)
            con.execute("DELETE FROM bulk_checkpoint WHERE stream = ?", [stream])

    def drop_bulk(self, stream: str) -> None:
        """Forget a bulk download that cannot be resumed (the job is gone or selects other fields).

        Args:
            stream: stream name.
        """
        with self.transaction() as con:
            con.execute("DELETE FROM bulk_checkpoint WHERE stream = ?", [stream])

    def mark_synced(self, stream: str, through: datetime) -> None:
        """Record that a stream is complete up to ``through`` (when the finished pull started).

        Args:
            stream: stream name.
            through: the data in the store reflects the source as of this time.
        """
        with self.transaction() as con:
            con.execute(
                """INSERT INTO sync_cursor VALUES (?, NULL, ?, ?)
                   ON CONFLICT (stream) DO UPDATE SET synced_through = excluded.synced_through,
                     updated_at = excluded.updated_at""",
                [stream, through, utc_now()],
            )

    def full_read_at(self, stream: str) -> datetime | None:
        """When a stream was last read in full (None: never, or not recorded).

        Args:
            stream: stream name.

        Returns:
            The start of that read (naive UTC), or None.
        """
        rows = self.con.execute(
            "SELECT read_at FROM stream_full_read WHERE stream = ?", [stream]
        ).fetchall()
        return rows[0][0] if rows else None

    def mark_full_read(self, stream: str, started: datetime) -> None:
        """Record that a stream was read in full by a pull that started at ``started``.

        Args:
            stream: stream name.
            started: when that pull started (naive UTC).
        """
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO stream_full_read VALUES (?, ?)", [stream, started])

    def cursor_streams(self) -> list[str]:
        """Every stream with a committed cursor or completion time.

        Returns:
            Stream names as recorded.
        """
        return [r[0] for r in self.con.execute("SELECT stream FROM sync_cursor").fetchall()]

    def mark_imported(self, stream: str, as_of: datetime) -> None:
        """Record that an imported table reflects its source as of ``as_of`` (cursor and through).

        Args:
            stream: the import's stream name (``file:<table>``).
            as_of: how recent the imported file is (naive UTC).
        """
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO sync_cursor (stream, cursor_value, synced_through, "
                "updated_at) VALUES (?, ?, ?, ?)",
                [stream, as_of, as_of, utc_now()],
            )

    def number_rows(self, table: str, column: str) -> None:
        """Add a row-number column in front of a table's columns (``[[sources]]`` ``row_id``).

        Args:
            table: the table.
            column: the new column's name.
        """
        t, c = quote_identifier(table), quote_identifier(column)
        with self.transaction() as con:
            con.execute(
                f"CREATE OR REPLACE TABLE {t} AS SELECT row_number() OVER () AS {c}, * FROM {t}"
            )

    def remove_absent(self, table: str, key: str, live_ids: Iterable[pd.DataFrame | Path]) -> int:
        """Delete the rows whose key is not among a source's live ids (a deletion sweep).

        Deletions purged from the source's recycle bin are invisible to incremental reads; a full
        read of the live ids shows them. Every id is staged first and the rows are deleted in one
        transaction at the end, so an interrupted sweep deletes nothing.

        Args:
            table: raw table.
            key: primary-key column.
            live_ids: pages of every live id: DataFrames, or Bulk API CSV files, with a ``key``
                column.

        Returns:
            The number of rows deleted.
        """
        k, t = quote_identifier(key), quote_identifier(table)
        self.con.execute("CREATE OR REPLACE TEMP TABLE _live_ids (id VARCHAR)")
        try:
            for page in live_ids:
                if isinstance(page, Path):
                    self.con.execute(
                        f"INSERT INTO _live_ids SELECT {k} FROM {_READ_BULK_CSV}", [str(page)]
                    )
                else:
                    self.con.register("_live_page", page[[key]])
                    try:
                        self.con.execute(f"INSERT INTO _live_ids SELECT {k} FROM _live_page")
                    finally:
                        _unregister(self.con, "_live_page")
            # Ids compare in their 15-character form: the API may answer either form.
            absent = f"left({k}, 15) NOT IN (SELECT left(id, 15) FROM _live_ids)"
            with self.transaction() as con:
                gone = con.execute(f"SELECT count(*) FROM {t} WHERE {absent}").fetchall()[0][0]
                con.execute(f"DELETE FROM {t} WHERE {absent}")
        finally:
            self.con.execute("DROP TABLE IF EXISTS _live_ids")
        return int(gone)

    def synced_through(self, streams: Sequence[str]) -> datetime | None:
        """How far all the given streams are complete: the earliest ``synced_through`` among them.

        Args:
            streams: stream names.

        Returns:
            The time up to which every stream is complete, or None when one was never fully pulled.
        """
        if not streams:
            return None
        rows = dict(
            self.con.execute(
                "SELECT stream, synced_through FROM sync_cursor WHERE stream IN "
                f"({', '.join('?' for _ in streams)})",
                list(streams),
            ).fetchall()
        )
        values = [rows.get(s) for s in streams]
        if any(v is None for v in values):
            return None
        return min(values)  # type: ignore[type-var]

    def source_fields(self, stream: str) -> dict[str, str]:
        """Source types of a stream's columns.

        Args:
            stream: stream name.

        Returns:
            Column name -> source type (e.g. ``picklist``, ``datetime``).
        """
        rows = self.con.execute(
            "SELECT name, source_type FROM source_field WHERE stream = ?", [stream]
        ).fetchall()
        return dict(rows)

    # -- run log
    # --------------------------------------------------------------------------------------------

    def start_run(self, job: str) -> int:
        """Record that a job started.

        Args:
            job: job name (``pull``, ``train``...).

        Returns:
            The run id.
        """
        with self.transaction() as con:
            row = con.execute(
                "INSERT INTO run_log (run_id, job, started_at, status) "
                "VALUES (nextval('run_id_seq'), ?, ?, 'running') RETURNING run_id",
                [job, utc_now()],
            ).fetchall()[0]
        assert row is not None
        return int(row[0])

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: dict[str, Any] | None = None,
        api_calls: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a job run ended.

        Args:
            run_id: from :meth:`start_run`.
            status: ``ok``, ``partial``, ``failed`` or ``skipped``.
            counts: job-specific counts (JSON-serialisable).
            api_calls: calls made against remote API allowances.
            error: the one-line error, when it failed.
        """
        with self.transaction() as con:
            con.execute(
                "UPDATE run_log SET finished_at = ?, status = ?, counts = ?, api_calls = ?, "
                "error = ? "
                "WHERE run_id = ?",
                [
                    utc_now(),
                    status,
                    json.dumps(counts or {}, default=str),
                    api_calls,
                    error,
                    run_id,
                ],
            )

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest job runs, newest first.

        Args:
            limit: how many.

        Returns:
            Run-log rows as dicts (``counts`` decoded).
        """
        runs = self.query_records(
            "SELECT run_id, job, started_at, finished_at, status, counts, api_calls, error "
            "FROM run_log ORDER BY run_id DESC LIMIT ?",
            [limit],
        )
        for run in runs:
            run["counts"] = json.loads(run["counts"]) if run["counts"] else {}
        return runs

    # -- scores
    # ---------------------------------------------------------------------------------------------

    def start_score_run(self) -> int:
        """A new scoring run id; its batches are appended with :meth:`append_scores`.

        Returns:
            The scoring run id.
        """
        with self._lock:
            row = self.con.execute("SELECT nextval('score_run_seq')").fetchall()[0]
        return int(row[0])

    def append_scores(
        self,
        prediction: str,
        scores: pd.DataFrame,
        *,
        score_run_id: int | None = None,
        partial: bool = False,
    ) -> int:
        """Append one scoring run, or one batch of it, to ``score_history``.

        Args:
            prediction: prediction name.
            scores: columns ``entity_id, model_version, probability, score, tier, reasons,
                scored_at`` and optionally ``class_probabilities`` (JSON text, multiclass).
            score_run_id: the run this batch belongs to (:meth:`start_score_run`); None: the
                frame is a whole run and gets a new id.
            partial: the run scored some entities only (the fresh job): it overlays the latest
                full run in :meth:`latest_scores` instead of replacing it.

        Returns:
            The scoring run id.
        """
        whole = score_run_id is None
        if score_run_id is None:
            score_run_id = self.start_score_run()
        with self.transaction() as con:
            frame = scores.assign(score_run_id=score_run_id, prediction=prediction, partial=partial)
            if "class_probabilities" not in frame.columns:
                frame = frame.assign(class_probabilities=None)
            frame["class_probabilities"] = frame["class_probabilities"].astype(object)
            con.register("_scores", frame)
            try:
                con.execute(
                    "INSERT INTO score_history (score_run_id, prediction, entity_id, "
                    "model_version, probability, score, tier, reasons, scored_at, "
                    "class_probabilities, partial) "
                    "SELECT score_run_id, prediction, entity_id, "
                    "model_version, probability, score, tier, reasons, scored_at, "
                    "CAST(class_probabilities AS JSON), partial FROM _scores"
                )
            finally:
                _unregister(con, "_scores")
            if whole:
                self._record_run(con, score_run_id)
        return score_run_id

    def finish_score_run(self, score_run_id: int) -> None:
        """Record a run appended in batches as finished (``score_run``: time, model, size).

        Args:
            score_run_id: the run.
        """
        with self.transaction() as con:
            self._record_run(con, score_run_id)

    @staticmethod
    def _record_run(con: duckdb.DuckDBPyConnection, score_run_id: int) -> None:
        con.execute(
            """INSERT OR REPLACE INTO score_run
               SELECT score_run_id, any_value(prediction), max(scored_at),
                      any_value(model_version), count(*), bool_or(coalesce(partial, false))
               FROM score_history WHERE score_run_id = ? GROUP BY score_run_id""",
            [score_run_id],
        )

    def discard_unfinished_score_runs(self) -> int:
        """Delete the rows of scoring runs that never finished (a process killed mid-run).

        Only where no run can be in progress: the start of a full scoring run or of a vacuum.

        Returns:
            The number of score rows deleted.
        """
        with self.transaction() as con:
            row = con.execute(
                "SELECT count(*) FROM score_history "
                "WHERE score_run_id NOT IN (SELECT score_run_id FROM score_run)"
            ).fetchall()[0]
            if row[0]:
                con.execute(
                    "DELETE FROM score_history "
                    "WHERE score_run_id NOT IN (SELECT score_run_id FROM score_run)"
                )
        return int(row[0])

    def discard_score_run(self, score_run_id: int) -> None:
        """Delete the rows of a scoring run that did not finish (so no reader takes it as latest).

        Args:
            score_run_id: the run.
        """
        with self.transaction() as con:
            con.execute("DELETE FROM score_history WHERE score_run_id = ?", [score_run_id])
            con.execute("DELETE FROM score_run WHERE score_run_id = ?", [score_run_id])

    def set_population_scores(
        self,
        score_run_id: int,
        *,
        percentile_score: bool = False,
        tiers: dict[str, float] | None = None,
        lowest_tier: str | None = None,
        tier_by: str = "probability",
    ) -> None:
        """Set the scores and tiers of a stored run that depend on its whole population.

        Computed in SQL over the run's rows, so that a run scored in batches never needs its
        scores in memory. The percentile is the mean rank of ties over the run's size, as
        ``scoring.tiers.percentiles`` computes it.

        Args:
            score_run_id: the run.
            percentile_score: set ``score`` to the probability's percentile (0-100, regression).
            tiers: tier name -> cut-off; the highest cut-off reached gives the tier.
            lowest_tier: the tier below every cut-off.
            tier_by: cut-offs on ``probability`` or on the ``percentile`` (0-1).
        """
        if not percentile_score and not tiers:
            return
        sets, params = [], []
        if percentile_score:
            sets.append("score = CAST(round(p.pct * 100) AS INTEGER)")
        if tiers:
            basis = "p.pct" if tier_by == "percentile" else "p.probability"
            cases = " ".join(
                f"WHEN {basis} >= ? THEN ?" for _ in sorted(tiers.items(), key=lambda kv: -kv[1])
            )
            for name, cutoff in sorted(tiers.items(), key=lambda kv: -kv[1]):
                params += [float(cutoff), name]
            sets.append(f"tier = CASE {cases} ELSE ? END")
            params.append(lowest_tier)
        with self.transaction() as con:
            con.execute(
                f"""UPDATE score_history SET {", ".join(sets)}
                    FROM (SELECT entity_id, probability,
                                 (rank() OVER w + count(*) OVER (w RANGE BETWEEN UNBOUNDED
                                   PRECEDING AND CURRENT ROW)) / 2.0 / count(*) OVER () AS pct
                          FROM score_history WHERE score_run_id = ?
                          WINDOW w AS (ORDER BY probability)) p
                    WHERE score_history.score_run_id = ?
                      AND score_history.entity_id = p.entity_id""",
                [*params, score_run_id, score_run_id],
            )

    def scores_at(self, prediction: str, at: datetime) -> pd.DataFrame:
        """Every lead's score as it stood at a run's time, also after retention thinned it.

        A thinned row holds from ``valid_from`` to ``scored_at`` (``connector/store/retention``);
        an unthinned row is its own run.

        Args:
            prediction: prediction name.
            at: the run's time (``score_run.scored_at``).

        Returns:
            ``entity_id, probability, tier``, one row per lead scored then.
        """
        return self.query_df(
            """SELECT entity_id, probability, tier FROM score_history
               WHERE prediction = ? AND coalesce(valid_from, scored_at) <= ? AND scored_at >= ?
               QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY score_run_id) = 1""",
            [prediction, at, at],
        )

    def score_run_rows(self, score_run_id: int, entity_ids: Iterable[str]) -> pd.DataFrame:
        """``entity_id, probability, tier`` of some entities of one run.

        Args:
            score_run_id: the run.
            entity_ids: the entities.

        Returns:
            Their rows.
        """
        import pandas as pd

        ids = pd.DataFrame({"entity_id": pd.Series(list(entity_ids), dtype=object)})
        with self._lock:
            self.con.register("_ids", ids)
            try:
                return self.con.execute(
                    "SELECT s.entity_id, s.probability, s.tier FROM score_history s "
                    "JOIN _ids USING (entity_id) WHERE s.score_run_id = ?",
                    [score_run_id],
                ).df()
            finally:
                _unregister(self.con, "_ids")

    def score_run_tiers(self, score_run_id: int) -> tuple[int, dict[str, int]]:
        """Rows of a run and its rows per tier.

        Args:
            score_run_id: the run.

        Returns:
            ``(rows, {tier: rows})`` (tiers sorted by name; rows without a tier left out).
        """
        rows = self.con.execute(
            "SELECT tier, count(*) FROM score_history WHERE score_run_id = ? GROUP BY tier",
            [score_run_id],
        ).fetchall()
        total = sum(int(n) for _, n in rows)
        return total, {str(t): int(n) for t, n in sorted(rows, key=lambda r: str(r[0])) if t}

    def latest_scores(
        self, prediction: str, entity_ids: Collection[str] | None = None
    ) -> pd.DataFrame:
        """The current scores of a prediction: its latest full run, overlaid by later partial runs.

        A partial run (the fresh job) scores a few entities; for those its row is newer than the
        full run's, for every other entity the full run's row stands.

        Args:
            prediction: prediction name.
            entity_ids: only these entities (the fresh job's few; read by key, not by scanning
                every score of the org); None: all.

        Returns:
            One row per entity (empty when never scored), with ``class_probabilities`` as JSON
            text (NULL but for multiclass).
        """
        return self.query_df(
            """SELECT entity_id, model_version, probability, score, tier, reasons, scored_at,
                      class_probabilities FROM (
                 SELECT entity_id, model_version, probability, score, tier, reasons, scored_at,
                        CAST(class_probabilities AS VARCHAR) AS class_probabilities,
                        row_number() OVER (PARTITION BY entity_id
                                           ORDER BY score_run_id DESC) AS nth
                 FROM score_history WHERE prediction = ? AND score_run_id >= coalesce(
                   (SELECT max(score_run_id) FROM score_run
                    WHERE prediction = ? AND NOT coalesce(partial, false)), 0)
                   -- finished runs only: a run still being written, or cut short by a crash,
                   -- has rows here but no score_run row yet
                   AND score_run_id IN (SELECT score_run_id FROM score_run WHERE prediction = ?)
                   AND (CAST(? AS VARCHAR[]) IS NULL OR entity_id IN (SELECT unnest(?))))
               WHERE nth = 1 ORDER BY entity_id""",
            [prediction, prediction, prediction, *[_id_list(entity_ids)] * 2],
        )

    def latest_run_id(self, prediction: str) -> int | None:
        """The id of a prediction's latest finished full scoring run (None: never scored).

        The fresh job's partial runs overlay it (:meth:`latest_scores`); they are not runs of
        their own for percentiles or batches. A run still being written (a fresh cycle may
        borrow the store between its batches) or cut short by a crash is not finished.
        """
        row = self.con.execute(
            "SELECT max(score_run_id) FROM score_run "
            "WHERE prediction = ? AND NOT coalesce(partial, false)",
            [prediction],
        ).fetchall()[0]
        return None if row[0] is None else int(row[0])

    def run_probabilities(self, score_run_id: int) -> np.ndarray:
        """Every probability of one run, sorted (8 bytes a lead: what percentiles are taken in).

        Args:
            score_run_id: the run.

        Returns:
            The sorted probabilities (NULLs left out).
        """
        with self._lock:
            table = self.con.execute(
                "SELECT probability FROM score_history WHERE score_run_id = ? "
                "AND probability IS NOT NULL ORDER BY probability",
                [score_run_id],
            ).fetchnumpy()
        import numpy as np

        return np.asarray(table["probability"], dtype=float)

    def latest_score_batches(
        self, prediction: str, batch_size: int
    ) -> Iterator[tuple[str, str, pd.DataFrame]]:
        """The latest scoring run of a prediction, in batches of entities in id order.

        Each batch is read when the previous one is done with, so a caller holds one batch.

        Args:
            prediction: prediction name.
            batch_size: entities per batch.

        Yields:
            ``(first id, last id, scores)`` with :meth:`latest_scores`' columns.
        """
        run = self.latest_run_id(prediction)
        if run is None:
            return
        bounds = [
            r[0]
            for r in self.con.execute(
                """SELECT entity_id FROM (
                     SELECT entity_id, row_number() OVER (ORDER BY entity_id) - 1 AS n
                     FROM score_history WHERE score_run_id = ?)
                   WHERE n % ? = 0 ORDER BY entity_id""",
                [run, int(batch_size)],
            ).fetchall()
        ]
        for i, low in enumerate(bounds):
            high = bounds[i + 1] if i + 1 < len(bounds) else None
            # the full run's rows, overlaid by the fresh job's later partial runs (whose new
            # entities may sort before the first bound: the first batch has no lower bound)
            frame = self.query_df(
                """SELECT entity_id, model_version, probability, score, tier, reasons, scored_at,
                          class_probabilities FROM (
                     SELECT entity_id, model_version, probability, score, tier, reasons,
                            scored_at, CAST(class_probabilities AS VARCHAR) AS class_probabilities,
                            row_number() OVER (PARTITION BY entity_id
                                               ORDER BY score_run_id DESC) AS nth
                     FROM score_history
                     WHERE prediction = ? AND score_run_id >= ?
                       AND (CAST(? AS VARCHAR) IS NULL OR entity_id >= ?)
                       AND (CAST(? AS VARCHAR) IS NULL OR entity_id < ?))
                   WHERE nth = 1 ORDER BY entity_id""",
                [prediction, run, None if i == 0 else low, low, high, high],
            )
            if not frame.empty:
                yield str(frame["entity_id"].iloc[0]), str(frame["entity_id"].iloc[-1]), frame

    # -- the fresh job
    # ----------------------------------------------------------------------------------

    def fresh_position(self, trigger: str) -> Any:
        """Where a fresh trigger stands (poll cursors, a replay id), or None before its first run.

        Args:
            trigger: the trigger's key (``poll``, ``cdc:/data/LeadChangeEvent``).

        Returns:
            The JSON value last committed with :meth:`commit_fresh_position`.
        """
        rows = self.con.execute(
            "SELECT CAST(position AS VARCHAR) FROM fresh_position WHERE trigger = ?", [trigger]
        ).fetchall()
        return json.loads(rows[0][0]) if rows else None

    def commit_fresh_position(
        self,
        trigger: str,
        position: Any,
        latencies: Sequence[dict[str, Any]] = (),
        events: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Commit a trigger's position with the first-write latencies of the work it triggered.

        Called after the triggered records were scored and their writes confirmed: a crash before
        this commit repeats the work, which the write-back ledger turns into no writes.

        Args:
            trigger: the trigger's key.
            position: JSON-serialisable position.
            latencies: ``prediction, entity_id, created_at, confirmed_at, trigger`` of records
                whose first score write was confirmed (a record keeps its first latency).
            events: the change events this work handled (``replay_id`` hex, ``entity``,
                ``change_type``, ``record_ids``, ``outcome``, ``committed_at``,
                ``received_at``): recorded with the position, never twice.
        """
        with self.transaction() as con:
            con.execute(
                """INSERT INTO fresh_position VALUES (?, ?, ?)
                   ON CONFLICT (trigger) DO UPDATE SET position = excluded.position,
                     updated_at = excluded.updated_at""",
                [trigger, json.dumps(position, default=str), utc_now()],
            )
            for row in latencies:
                seconds = (row["confirmed_at"] - row["created_at"]).total_seconds()
                con.execute(
                    "INSERT INTO fresh_latency VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [
                        row["prediction"],
                        row["entity_id"],
                        _py(row["created_at"]),
                        _py(row["confirmed_at"]),
                        seconds,
                        row["trigger"],
                    ],
                )
            handled_at = utc_now()
            for event in events:
                con.execute(
                    "INSERT INTO change_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        trigger,
                        event["replay_id"],
                        event["entity"],
                        event["change_type"],
                        json.dumps(list(event["record_ids"])),
                        event["outcome"],
                        _py(event["committed_at"]) if event.get("committed_at") else None,
                        _py(event["received_at"]),
                        handled_at,
                    ],
                )

    def change_event_counts(self, trigger: str) -> dict[str, int]:
        """How many handled change events had each outcome (``scored``, ``ignored_fields``, ...).

        Args:
            trigger: the trigger's key.

        Returns:
            Outcome -> count.
        """
        rows = self.con.execute(
            "SELECT outcome, count(*) FROM change_events WHERE trigger = ? GROUP BY outcome",
            [trigger],
        ).fetchall()
        return {str(outcome): int(count) for outcome, count in rows}

    def fresh_latency_summary(self, since: datetime) -> dict[str, Any]:
        """Creation -> first confirmed score write of leads written since a time.

        Args:
            since: only writes confirmed at or after this time (naive UTC).

        Returns:
            ``leads``, ``p50``, ``p95``, ``max`` (seconds; None without leads).
        """
        row = self.con.execute(
            "SELECT count(*), quantile_cont(seconds, 0.5), quantile_cont(seconds, 0.95), "
            "max(seconds) FROM fresh_latency WHERE confirmed_at >= ?",
            [since],
        ).fetchall()[0]
        return {"leads": int(row[0]), "p50": row[1], "p95": row[2], "max": row[3]}

    def values_by_key(
        self, table: str, key: str, column: str, keys: Iterable[str]
    ) -> dict[str, Any]:
        """One column of the rows of a table whose key is one of ``keys``.

        Args:
            table: the table (a validated identifier).
            key: the key column.
            column: the value column.
            keys: the keys.

        Returns:
            Key (as text) -> value, for the rows present.
        """
        wanted = sorted({str(k) for k in keys})
        if not wanted:
            return {}
        q = quote_identifier
        rows = self.con.execute(
            f"SELECT CAST({q(key)} AS VARCHAR), {q(column)} FROM {q(table)} "
            f"WHERE CAST({q(key)} AS VARCHAR) IN (SELECT unnest(?))",
            [wanted],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def rows_by_key(
        self, table: str, key: str, columns: Sequence[str], keys: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        """Some columns of the rows of a table whose key is one of ``keys``.

        The fresh job's change events apply an update's changed fields onto the stored record.

        Args:
            table: the table (a validated identifier).
            key: the key column.
            columns: the columns to return (validated identifiers, present in the table).
            keys: the keys.

        Returns:
            Key (as text) -> the row's columns by name, for the rows present.
        """
        wanted = sorted({str(k) for k in keys})
        if not wanted or not columns:
            return {}
        q = quote_identifier
        names = list(dict.fromkeys([key, *columns]))
        with self._lock:
            cursor = self.con.execute(
                f"SELECT {', '.join(q(c) for c in names)} FROM {q(table)} "
                f"WHERE CAST({q(key)} AS VARCHAR) IN (SELECT unnest(?))",
                [wanted],
            )
            rows = cursor.fetchall()
        return {str(row[0]): dict(zip(names, row, strict=True)) for row in rows}

    def merge_records(
        self,
        table: str,
        page: pd.DataFrame,
        *,
        key: str,
        cursor_field: str,
        deleted_field: str | None = None,
        changed: set[str] | None = None,
    ) -> PageCounts:
        """Upsert records read outside a stream's pull (the fresh job), leaving every cursor alone.

        The stream's own pull still reads them (and finds them unchanged); the fresh job commits
        its own position once the records are scored and written.

        Args:
            table: raw table (created by :meth:`ensure_table`).
            page: records with the table's columns.
            key: primary-key column.
            cursor_field: the stream's cursor column (newest version of a record wins).
            deleted_field: boolean column marking deleted records (removed from the table).
            changed: receives the keys of the rows that were new, changed or deleted.

        Returns:
            Counts of new, changed, unchanged and deleted rows.
        """
        if page.empty:
            return PageCounts(0, 0, 0)
        with self.transaction() as con:
            con.register("_page", page)
            try:
                counts, _ = self._merge(
                    con,
                    table,
                    "_page",
                    list(page.columns),
                    key,
                    cursor_field,
                    deleted_field,
                    changed=changed,
                )
            finally:
                _unregister(con, "_page")
        return counts

    # -- write-back ledger
    # ----------------------------------------------------------------------------------

    def ledger(
        self,
        target: str,
        sobject: str,
        between: tuple[str, str] | None = None,
        record_ids: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """Ledger rows of one target object.

        Args:
            target: target system (``salesforce``, ``segment``).
            sobject: object name.
            between: only records whose id is in this range (inclusive): one batch's ledger.
            record_ids: only these records (the fresh job's few).

        Returns:
            Columns ``record_id, field, value, status, attempts, last_error, attempted_value,
            next_attempt_at`` (values JSON-encoded; ``value`` is the last confirmed one).
        """
        low, high = between if between is not None else (None, None)
        return self.query_df(
            "SELECT record_id, field, value, status, attempts, last_error, attempted_value, "
            "next_attempt_at FROM writeback_ledger WHERE target = ? AND object = ? "
            "AND (CAST(? AS VARCHAR) IS NULL OR record_id BETWEEN ? AND ?) "
            "AND (CAST(? AS VARCHAR[]) IS NULL OR record_id IN (SELECT unnest(?)))",
            [target, sobject, low, low, high, *[_id_list(record_ids)] * 2],
        )

    def confirmed_times(
        self, target: str, sobject: str, record_ids: Iterable[str]
    ) -> dict[str, datetime]:
        """When a target last confirmed each record's writes (the earliest of its fields).

        Args:
            target: ``salesforce`` or ``segment``.
            sobject: object name.
            record_ids: the records.

        Returns:
            Record id -> confirmation time, for records with a confirmed value.
        """
        ids = sorted({str(r) for r in record_ids})
        if not ids:
            return {}
        rows = self.con.execute(
            "SELECT record_id, min(confirmed_at) FROM writeback_ledger "
            "WHERE target = ? AND object = ? AND confirmed_at IS NOT NULL "
            "AND record_id IN (SELECT unnest(?)) GROUP BY record_id",
            [target, sobject, ids],
        ).fetchall()
        return {str(r[0]): r[1] for r in rows}

    def confirmed_record_ids(self, sobject: str, field: str) -> set[str]:
        """Records for which a target confirmed a value of this object's field (any target).

        Args:
            sobject: object name (case-insensitive).
            field: field name (case-insensitive).

        Returns:
            Their record ids.
        """
        rows = self.con.execute(
            "SELECT record_id FROM writeback_ledger WHERE lower(object) = lower(?) "
            "AND lower(field) = lower(?) AND value IS NOT NULL",
            [sobject, field],
        ).fetchall()
        return {r[0] for r in rows}

    def record_attempts(self, target: str, sobject: str, attempts: list[dict[str, Any]]) -> None:
        """Record that a batch is about to be sent (status ``sending``), before it goes out.

        If the process dies before the target answers, the next push finds these rows still
        ``sending`` and reads the records back instead of sending them blindly again.

        Args:
            target: target system.
            sobject: object name.
            attempts: dicts with ``record_id, field, value``.
        """
        if not attempts:
            return
        import pandas as pd

        frame = pd.DataFrame(
            {
                "record_id": [a["record_id"] for a in attempts],
                "field": [a["field"] for a in attempts],
                "value": [json.dumps(a["value"]) for a in attempts],
            }
        )
        now = utc_now()

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.register("_attempts", frame)
            try:
                con.execute(
                    """INSERT INTO writeback_ledger (target, object, record_id, field, value,
                         attempted_value, status, attempts, last_attempt_at)
                         SELECT ?, ?, record_id, field, NULL, value, 'sending', 0, ? FROM _attempts
                       ON CONFLICT (target, object, record_id, field) DO UPDATE SET
                         attempted_value = excluded.attempted_value, status = 'sending',
                         last_attempt_at = excluded.last_attempt_at""",
                    [target, sobject, now],
                )
            finally:
                _unregister(con, "_attempts")

        self._write_ledger(write)

    def record_outcomes(
        self,
        target: str,
        sobject: str,
        outcomes: list[dict[str, Any]],
        *,
        max_attempts: int | None = None,
        backoff_seconds: float = 0.0,
        max_backoff_seconds: float = 86_400.0,
    ) -> None:
        """Record the confirmed outcome of one write batch, field by field, in one transaction.

        A success stores the value as confirmed (``written``). A failure keeps the last confirmed
        value and records the attempted value, the error and one more attempt; the row is sent
        again from ``next_attempt_at`` on (``backoff_seconds`` doubled per attempt, at most
        ``max_backoff_seconds``). A failure of a record that no longer exists (``gone`` in the
        outcome: deleted, merged) is ``gone`` and never retried automatically; a row that failed
        ``max_attempts`` times is ``dead`` (a dead letter: ``leadscore retry --dead`` sends it
        again).

        Args:
            target: target system.
            sobject: object name.
            outcomes: dicts with ``record_id, field, value, success, error`` (error: "CODE:
                message") and optionally ``gone``.
            max_attempts: attempts after which a failing row is dead (None: never).
            backoff_seconds: wait before the first retry.
            max_backoff_seconds: longest wait between retries.
        """
        if not outcomes:
            return
        import pandas as pd

        now = utc_now()
        frame = pd.DataFrame(
            {
                "record_id": [o["record_id"] for o in outcomes],
                "field": [o["field"] for o in outcomes],
                "value": [json.dumps(o["value"]) for o in outcomes],
                "success": [bool(o["success"]) for o in outcomes],
                "gone": [bool(o.get("gone")) for o in outcomes],
                "error": [o.get("error") for o in outcomes],
            }
        )
        # The status of a row after this outcome, given its attempts so far (``{a}``).
        status = """CASE WHEN {s}.success THEN 'written' WHEN {s}.gone THEN 'gone'
                         WHEN $max IS NOT NULL AND {a} + 1 >= $max THEN 'dead'
                         ELSE 'failed' END"""
        retry_at = """CASE WHEN {s}.success OR {s}.gone THEN NULL
                           ELSE $now + to_seconds(least($cap, $backoff * pow(2, {a}))) END"""

        def write(con: duckdb.DuckDBPyConnection) -> None:
            con.register("_outcomes", frame)
            try:
                con.execute(
                    f"""INSERT INTO writeback_ledger (target, object, record_id, field, value,
                           attempted_value, status, attempts, last_error, last_attempt_at,
                           confirmed_at, next_attempt_at)
                         SELECT $target, $object, record_id, field,
                                CASE WHEN success THEN value END, value,
                                {status.format(s="o", a="0")},
                                CASE WHEN success THEN 0 ELSE 1 END,
                                error, $now, CASE WHEN success THEN $now END,
                                {retry_at.format(s="o", a="0")}
                         FROM _outcomes o
                       ON CONFLICT (target, object, record_id, field) DO UPDATE SET
                         value = CASE WHEN excluded.status = 'written' THEN excluded.value
                                      ELSE writeback_ledger.value END,
                         attempted_value = excluded.attempted_value,
                         status = CASE WHEN excluded.status IN ('written', 'gone')
                                       THEN excluded.status
                                       WHEN $max IS NOT NULL
                                            AND writeback_ledger.attempts + 1 >= $max
                                       THEN 'dead' ELSE 'failed' END,
                         attempts = CASE WHEN excluded.status = 'written' THEN 0
                                         ELSE writeback_ledger.attempts + 1 END,
                         last_error = excluded.last_error,
                         last_attempt_at = excluded.last_attempt_at,
                         confirmed_at = CASE WHEN excluded.status = 'written'
                                             THEN excluded.confirmed_at
                                             ELSE writeback_ledger.confirmed_at END,
                         next_attempt_at = CASE WHEN excluded.status IN ('written', 'gone')
                                           THEN NULL
                                           ELSE $now + to_seconds(least($cap,
                                                $backoff * pow(2, writeback_ledger.attempts)))
                                           END""",
                    {
                        "target": target,
                        "object": sobject,
                        "now": now,
                        "max": max_attempts,
                        "backoff": float(backoff_seconds),
                        "cap": float(max_backoff_seconds),
                    },
                )
            finally:
                _unregister(con, "_outcomes")

        self._write_ledger(write)

    def revive_dead_letters(self, *, include_gone: bool = False) -> int:
        """Make dead ledger rows due again (``leadscore retry --dead``), once their cause is fixed.

        Their attempts start again from zero; the next push sends them (if their value still differs
        from the last confirmed one).

        Args:
            include_gone: also rows of records that were deleted or merged (restored since).

        Returns:
            How many rows were revived.
        """
        statuses = ["dead", "gone"] if include_gone else ["dead"]
        with self.transaction() as con:
            rows = con.execute(
                "UPDATE writeback_ledger SET status = 'failed', attempts = 0, "
                "next_attempt_at = NULL WHERE list_contains(?, status) RETURNING record_id",
                [statuses],
            ).fetchall()
        return len(rows)


def out_of_space(exc: BaseException, path: Path) -> LeadscoreError | None:
    """The one-line error for a write that failed because the store's disk is full, if it was.

    DuckDB reports a full disk as an ``IOException`` (the write) and then as a
    ``FatalException`` for every later statement ("database has been invalidated"); both carry
    the operating system's "No space left on device", as does an ``OSError`` with ``ENOSPC``.

    Args:
        exc: the exception (its causes are searched too).
        path: the store's file.

    Returns:
        The error naming the store and the space to free, or None for any other failure.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and all(seen is not e for e in chain):  # chains can loop
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if not any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)
        for e in chain
    ):
        return None
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    size = sum(f.stat().st_size for f in path.parent.glob(f"{path.name}*") if f.is_file())
    # a checkpoint rewrites changed blocks and the WAL grows with a run's writes: ask for the
    # store's size again (at least 100 MB), which covers a full rewrite
    needed = max(size, 100 * 2**20)
    return LeadscoreError(
        f"the store {path} ran out of disk space ({_mb(free)} free on {folder}); "
        "the run stopped and what it committed is kept",
        hint=f"free at least {_mb(needed)} there (the store is {_mb(size)}) or move store.path, "
        "then run again",
    )


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 1024:,.0f} KB"


def _py(value: Any) -> Any:
    """Convert a pandas/numpy scalar to a plain Python value DuckDB binds."""
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        return value.to_pydatetime()
    if hasattr(value, "item"):
        return value.item()
    return value


def _id_list(ids: Collection[str] | None) -> list[str] | None:
    """A bound list parameter of ids (``IN (SELECT unnest(?))``), or None for "all"."""
    return None if ids is None else sorted({str(i) for i in ids})
