"""Imported files in the store: the rows of Segment exports and the record of each file."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from connector.errors import ConfigError
from connector.store.database import Store, quote_identifier, utc_now

# DuckDB's numeric type names (prefixes: DECIMAL(18,2) is a DECIMAL), shared with scoring/.
NUMERIC_DB_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "REAL",
    "DECIMAL",
)


@dataclass(frozen=True)
class SegmentImportResult:
    """What importing one export file did.

    Attributes:
        path: the file.
        kind: ``tracks``, ``identifies`` or ``id_graph``.
        lines: non-blank lines (or Parquet rows) read.
        imported: rows added to the store.
        duplicates: rows already in the store or repeated in the file (same message id or identity).
        skipped: skipped lines by reason (see ``SKIP_REASONS``).
        examples: the first skipped lines as ``path:line: reason (detail)``.
        already_imported: the same file (path, size, modification time) was imported before.
        file_id: its id in ``seg_import_file``.
    """

    path: str
    kind: str
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    already_imported: bool = False
    file_id: int | None = None

    @property
    def skipped_total(self) -> int:
        """Lines skipped for any reason."""
        return sum(self.skipped.values())


def _insert_sql(parsed: str, kind: str, file_id: int, *, fresh_only: bool) -> str:
    """The INSERT of a file's importable rows.

    Ids already stored are skipped; an empty table needs no anti-join, which keeps the first
    import of a big file fast.
    """
    if kind == "tracks":
        fresh = "AND message_id NOT IN (SELECT message_id FROM seg_event)" if fresh_only else ""
        return f"""INSERT INTO seg_event
            SELECT message_id, event, user_id, anonymous_id, segment_id, ts,
                   -- warehouse tables flatten properties into columns: keep the whole row then
                   coalesce(json_extract(text, '$.properties'), CAST(text AS JSON)), {file_id}
            FROM ({parsed}) parsed WHERE reason IS NULL {fresh}"""
    if kind == "identifies":
        fresh = "AND message_id NOT IN (SELECT message_id FROM seg_identify)" if fresh_only else ""
        return f"""INSERT INTO seg_identify
            SELECT message_id, user_id, anonymous_id, segment_id, email, ts,
                   coalesce(json_extract(text, '$.traits'), CAST(text AS JSON)), {file_id}
            FROM ({parsed}) parsed WHERE reason IS NULL {fresh}"""
    return f"""INSERT OR IGNORE INTO seg_external_id
        SELECT profile_id, id_type, id_value, 'id_graph:{file_id}', min(ts)
        FROM ({parsed}) parsed WHERE reason IS NULL GROUP BY profile_id, id_type, id_value"""


def _forget_file(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    """Remove what an earlier import of a file added (before importing it again)."""
    con.execute("DELETE FROM seg_event WHERE file_id = ?", [file_id])
    con.execute("DELETE FROM seg_identify WHERE file_id = ?", [file_id])
    con.execute("DELETE FROM seg_external_id WHERE source = ?", [f"id_graph:{file_id}"])
    con.execute("DELETE FROM seg_import_reject WHERE file_id = ?", [file_id])
    con.execute("DELETE FROM seg_import_file WHERE file_id = ?", [file_id])


def _dedupe_file_rows(con: duckdb.DuckDBPyConnection, table: str, file_id: int) -> int:
    """Remove repeats of a message id within one imported file; return how many were removed.

    Segment delivers at least once, so exports can repeat a message. The check compares the count
    of rows with the count of distinct 64-bit hashes of their ids: equal counts prove there is no
    repeat (a collision could only lower the distinct count), and only then is the exact, slower
    de-duplication skipped.
    """
    t = quote_identifier(table)
    total, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT hash(message_id)) FROM {t} WHERE file_id = ?", [file_id]
    ).fetchall()[0]
    if total == distinct:
        return 0
    removed = con.execute(
        f"""DELETE FROM {t} WHERE file_id = ? AND rowid IN (
              SELECT rowid FROM (
                SELECT rowid, row_number() OVER (PARTITION BY message_id ORDER BY ts, rowid) AS n
                FROM {t} WHERE file_id = ?) WHERE n > 1)""",
        [file_id, file_id],
    ).fetchall()
    return int(removed[0][0]) if removed else 0


def import_segment_rows(
    store: Store,
    read_path: Path,
    resolved: str,
    kind: str,
    fmt: str,
    size: int,
    modified: datetime,
    previous: list[tuple[Any, ...]],
    id_types: Collection[str],
    example_limit: int,
    *,
    source: str,
    parsed: str,
    numbered: str,
    reject_detail: str,
) -> SegmentImportResult:
    """Import one file's rows into its ``seg_*`` table in one transaction, and record the file.

    Args:
        store: the store.
        read_path: the file DuckDB reads (a sanitised copy when the original is not UTF-8).
        resolved: the original file's resolved path (the file's identity, with size and mtime).
        kind: ``tracks``, ``identifies`` or ``id_graph``.
        fmt: ``jsonl`` or ``parquet``.
        size: the original file's size.
        modified: the original file's modification time (naive UTC).
        previous: earlier imports of the same file (replaced).
        id_types: identity types accepted in an id graph.
        example_limit: how many skipped lines to quote.
        source: the path as the user gave it (quoted in examples).
        parsed: SQL of the file's lines, parsed and validated (``connector/files.py``).
        numbered: the same with line numbers (the second pass over files with skipped lines).
        reject_detail: SQL expression of a skipped line's detail.

    Returns:
        What the import did.
    """
    params: list[Any] = [str(read_path)]
    if kind == "id_graph":
        params.append(sorted(id_types))
    table = {"tracks": "seg_event", "identifies": "seg_identify", "id_graph": "seg_external_id"}
    target = table[kind]
    with store.transaction() as con:
        # Timestamps without an offset are UTC (Segment always sends UTC; warehouses store UTC).
        con.execute("SET TimeZone = 'UTC'")
        for earlier, *_ in previous:
            _forget_file(con, int(earlier))
        file_id = int(con.execute("SELECT nextval('seg_import_file_seq')").fetchall()[0][0])
        before = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        con.execute(_insert_sql(parsed, kind, file_id, fresh_only=bool(before)), params)
        added = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0] - before
        repeated = _dedupe_file_rows(con, target, file_id) if kind != "id_graph" else 0
        imported = int(added) - repeated
        lines = con.execute(f"SELECT count(*) FROM ({parsed}) t", params).fetchall()[0][0]
        skipped: dict[str, int] = {}
        examples: list[str] = []
        accounted = imported + repeated
        if kind == "id_graph" or accounted < lines:
            # Only files with skipped lines pay for this second pass.
            con.execute(
                f"INSERT INTO seg_import_reject SELECT {file_id}, line, reason, "
                f"{reject_detail} FROM ({numbered}) t WHERE reason IS NOT NULL",
                params,
            )
            reasons = con.execute(
                "SELECT reason, count(*) FROM seg_import_reject WHERE file_id = ? "
                "GROUP BY reason ORDER BY reason",
                [file_id],
            ).fetchall()
            skipped = {str(r): int(n) for r, n in reasons}
            examples = [
                f"{source}:{line}: {reason}" + (f" ({detail})" if detail else "")
                for line, reason, detail in con.execute(
                    "SELECT line, reason, detail FROM seg_import_reject WHERE file_id = ? "
                    "ORDER BY line LIMIT ?",
                    [file_id, example_limit],
                ).fetchall()
            ]
        duplicates = int(lines) - imported - sum(skipped.values())
        con.execute(
            "INSERT INTO seg_import_file VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                file_id,
                resolved,
                kind,
                size,
                modified,
                utc_now(),
                int(lines),
                imported,
                duplicates,
                json.dumps(skipped),
            ],
        )
    return SegmentImportResult(
        path=source,
        kind=kind,
        lines=int(lines),
        imported=imported,
        duplicates=duplicates,
        skipped=skipped,
        examples=examples,
        file_id=file_id,
    )


def imported_versions(store: Store, resolved: str, kind: str) -> list[tuple[Any, ...]]:
    """Earlier imports of a file: ``(file_id, size, modified_at)`` rows.

    Args:
        store: the store.
        resolved: the file's resolved path.
        kind: the export kind.

    Returns:
        The rows, oldest first.
    """
    return store.con.execute(
        "SELECT file_id, size, modified_at FROM seg_import_file WHERE path = ? AND kind = ? "
        "ORDER BY file_id",
        [resolved, kind],
    ).fetchall()


def replace_table(
    store: Store,
    table: str,
    source: str,
    params: list[object],
    *,
    id_column: str | None,
    clean_names: bool,
    what: object,
    allow_empty: bool = False,
) -> tuple[int, list[str]]:
    """Replace a table with the rows of a DuckDB table function, in one transaction.

    Args:
        store: the store.
        table: the table (a plain identifier).
        source: the table function reading the file (``read_csv(?, ...)``, ``read_parquet(?)``).
        params: its bound values.
        id_column: a column that must exist and hold unique, non-null values.
        clean_names: rename columns that are not plain identifiers (see ``clean_column_name``).
        what: the file, named in errors.
        allow_empty: no rows may replace a table that has rows.

    Returns:
        The row count and the columns.

    Raises:
        ConfigError: the id column is absent or not unique, or no rows would replace a table
            with rows (the previous table is kept).
        duckdb.Error: the file cannot be read.
    """
    target = quote_identifier(table)
    before = (
        store.con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        if store.table_exists(table)
        else 0
    )
    with store.transaction() as con:
        con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {source}", params)
        columns = [r[0] for r in con.execute(f"DESCRIBE {target}").fetchall()]
        if clean_names:
            renamed: dict[str, str] = {}
            for column in columns:
                new = clean_column_name(column)
                while new.lower() in {v.lower() for v in renamed.values()}:
                    new += "_"
                renamed[column] = new
            for old, new in renamed.items():
                if old != new:
                    con.execute(
                        f"ALTER TABLE {target} RENAME COLUMN {_quote_any(old)} TO "
                        f"{quote_identifier(new)}"
                    )
            if id_column is not None and id_column not in renamed.values():
                id_column = renamed.get(id_column, id_column)
            columns = list(renamed.values())
        if id_column is not None:
            if id_column not in columns:
                raise ConfigError(
                    f"{what}: id column '{id_column}' not found",
                    hint=f"columns are: {', '.join(columns[:20])}",
                )
            key = quote_identifier(id_column)
            total, distinct, nulls = con.execute(
                f"SELECT count(*), count(DISTINCT {key}), count(*) - count({key}) FROM {target}"
            ).fetchall()[0]
            if nulls or distinct != total:
                raise ConfigError(
                    f"{what}: id column '{id_column}' is not a unique key "
                    f"({nulls} empty, {total - nulls - distinct} duplicated values)",
                    hint="choose a column that identifies each row",
                )
        rows = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        if rows == 0 and before and not allow_empty:
            raise ConfigError(
                f"{what}: holds no rows; {table} keeps its {before:,} rows",
                hint="a truncated export? To empty the table, set allow_empty = true in the source",
            )
    return int(rows), columns


def clean_column_name(name: str) -> str:
    """A plain identifier for a column name: ``Lead Origin`` -> ``Lead_Origin``.

    Args:
        name: the name in the file.

    Returns:
        Letters, digits and underscores, not starting with a digit.
    """
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", name.strip()).strip("_") or "column"
    return f"_{clean}" if clean[0].isdigit() else clean[:127]


def _quote_any(name: str) -> str:
    """Quote a column name read from a file (it may hold spaces or quotes)."""
    return '"' + name.replace('"', '""') + '"'


# -- time columns of imported tables --------------------------------------------------------------

TIME_FORMATS = (
    "timestamp",
    "date",
    "epoch_seconds",
    "epoch_milliseconds",
    "yyyymmdd",
    "row_order",
)
"""How a file's time column is written. ``row_order``: an integer that only orders the rows (a
sequence number); it becomes a timestamp ``ROW_ORDER_ORIGIN`` + n seconds, so splits by time
follow it, while windows of days cover every earlier row."""
ROW_ORDER_ORIGIN = "2000-01-01"
# The column comment that marks a converted row_order column, so that scoring knows its times
# carry an order but no calendar (no weekday or hour features): see :func:`is_row_order`.
ROW_ORDER_COMMENT = "leadscore:row_order"
_TIME_SQL = {
    "timestamp": "try_cast({c} AS TIMESTAMP)",
    "date": "CAST(try_cast({c} AS DATE) AS TIMESTAMP)",
    "epoch_seconds": "make_timestamp(CAST(try_cast({c} AS DOUBLE) * 1000000 AS BIGINT))",
    "epoch_milliseconds": "make_timestamp(CAST(try_cast({c} AS DOUBLE) * 1000 AS BIGINT))",
    "yyyymmdd": "try_strptime(CAST(try_cast({c} AS BIGINT) AS VARCHAR), '%Y%m%d')",
    "row_order": f"TIMESTAMP '{ROW_ORDER_ORIGIN}' + to_seconds(try_cast({{c}} AS BIGINT))",
}


def convert_time_columns(
    store: Store, table: str, formats: dict[str, str], *, path: Path | str
) -> None:
    """Turn declared time columns of an imported table into timestamps (in place).

    Args:
        store: the store.
        table: the imported table.
        formats: column -> one of ``TIME_FORMATS``.
        path: the file the table came from (for messages).

    Raises:
        ConfigError: a column is missing, or a value cannot be read in its format (the message
            names the first bad value and its line in the file).
    """
    if not formats:
        return
    target = quote_identifier(table)
    with store.transaction() as con:
        present = {r[0].lower(): r[0] for r in con.execute(f"DESCRIBE {target}").fetchall()}
        exprs, ordinal = {}, []
        for column, fmt in formats.items():
            # the file's own spelling ("Lead Number") names the cleaned column (Lead_Number) too
            column = column if column.lower() in present else clean_column_name(column)
            if column.lower() not in present:
                raise ConfigError(
                    f"{path}: time_formats: column '{column}' not found",
                    hint=f"columns are: {', '.join(list(present.values())[:20])}",
                )
            name = present[column.lower()]
            exprs[name] = _TIME_SQL[fmt].format(c=quote_identifier(name))
            if fmt == "row_order":
                ordinal.append(name)
            bad = con.execute(
                f"SELECT n, CAST(v AS VARCHAR) FROM (SELECT row_number() OVER () AS n, "
                f"{quote_identifier(name)} AS v, {exprs[name]} AS t FROM {target}) "
                "WHERE v IS NOT NULL AND t IS NULL ORDER BY n LIMIT 1"
            ).fetchall()
            if bad:
                raise ConfigError(
                    f"{path}: line {int(bad[0][0]) + 1}: time column '{name}' value "
                    f"{bad[0][1]!r} is not a {fmt} value",
                    hint=f"fix the value, or declare the column's format in time_formats "
                    f"({', '.join(TIME_FORMATS)})",
                )
        replaced = ", ".join(f"{e} AS {quote_identifier(c)}" for c, e in exprs.items())
        con.execute(
            f"CREATE OR REPLACE TABLE {target} AS SELECT * REPLACE ({replaced}) FROM {target}"
        )
        for name in ordinal:
            _mark_row_order(con, table, name)


def number_time_problem(con: duckdb.DuckDBPyConnection, table: str, column: str) -> str | None:
    """Why a numeric column cannot be used as a time column as it is, with the fix; else None.

    Numbers (``19970101``, ``1700000000``, a sequence number) only become times through a
    declared ``time_formats`` entry; the format is guessed from the values' range for the hint.

    Args:
        con: store connection.
        table: the table.
        column: the configured time column (exact name).

    Returns:
        One sentence naming the column, a sample value and the ``time_formats`` entry to add, or
        None when the column is not numeric.
    """
    kind = con.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_schema = 'main' "
        "AND lower(table_name) = lower(?) AND lower(column_name) = lower(?)",
        [table, column],
    ).fetchall()
    if not kind or not str(kind[0][0]).upper().startswith(NUMERIC_DB_TYPES):
        return None
    q = quote_identifier(column)
    low, high = con.execute(f"SELECT min({q}), max({q}) FROM {quote_identifier(table)}").fetchall()[
        0
    ]
    if low is None or (low >= 19000101 and high <= 21001231):
        guess = "yyyymmdd"
    elif low >= 1e8 and high < 1e11:
        guess = "epoch_seconds"
    elif low >= 1e11 and high < 1e14:
        guess = "epoch_milliseconds"
    else:
        guess = "row_order"
    return (
        f"column '{column}' of table '{table}' holds numbers ({kind[0][0]}, e.g. {low}), not "
        f'times: declare its format in the source\'s time_formats, e.g. {{ {column} = "{guess}" }}'
    )


def _mark_row_order(con: duckdb.DuckDBPyConnection, table: str, column: str) -> None:
    con.execute(
        f"COMMENT ON COLUMN {quote_identifier(table)}.{quote_identifier(column)} "
        f"IS '{ROW_ORDER_COMMENT}'"
    )


def is_row_order(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether a time column was imported as ``row_order`` (a sequence number, no calendar).

    Args:
        con: store connection.
        table: the table.
        column: the time column.

    Returns:
        True for a column converted from ``row_order`` (or derived from one).
    """
    rows = con.execute(
        "SELECT comment FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND lower(table_name) = lower(?) AND lower(column_name) = lower(?)",
        [table, column],
    ).fetchall()
    return bool(rows) and rows[0][0] == ROW_ORDER_COMMENT


def newest_time(store: Store, table: str) -> datetime | None:
    """The newest date or timestamp in any time column of a table: how recent its data is.

    Args:
        store: the store.
        table: the table.

    Returns:
        A naive UTC datetime, or None when the table has no time column or no value.
    """
    target = quote_identifier(table)
    with store.transaction() as con:
        columns = [
            r[0]
            for r in con.execute(f"DESCRIBE {target}").fetchall()
            if str(r[1]).upper() in ("DATE", "TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS")
            or str(r[1]).upper().startswith("TIMESTAMP")
        ]
        if not columns:
            return None
        newest = con.execute(
            "SELECT greatest("
            + ", ".join(f"max(CAST({quote_identifier(c)} AS TIMESTAMP))" for c in columns)
            + f") FROM {target}"
        ).fetchall()[0][0]
    return newest


def derive_entities(
    store: Store, source_table: str, table: str, id_column: str, time_column: str
) -> int:
    """An entity table from an event table: one row per id with its first event time.

    Args:
        store: the store.
        source_table: the imported event table (orders, transactions).
        table: the entity table to (re)create: ``<id_column>, first_event_at``.
        id_column: the event table's entity id column.
        time_column: the event table's time column.

    Returns:
        The number of entities.

    Raises:
        ConfigError: a column is missing.
    """
    source = quote_identifier(source_table)
    with store.transaction() as con:
        present = {r[0].lower(): r[0] for r in con.execute(f"DESCRIBE {source}").fetchall()}
        for key, column in (("id_column", id_column), ("time_column", time_column)):
            if column.lower() not in present:
                raise ConfigError(
                    f"sources: entities.{key}: column '{column}' not in table '{source_table}'",
                    hint=f"columns are: {', '.join(list(present.values())[:20])}",
                )
        problem = number_time_problem(con, source_table, present[time_column.lower()])
        if problem:
            raise ConfigError(f"sources: entities.time_column: {problem}")
        key, ts = (
            quote_identifier(present[id_column.lower()]),
            quote_identifier(present[time_column.lower()]),
        )
        con.execute(
            f"CREATE OR REPLACE TABLE {quote_identifier(table)} AS SELECT {key}, "
            f"min(CAST({ts} AS TIMESTAMP)) AS first_event_at FROM {source} "
            f"WHERE {key} IS NOT NULL GROUP BY {key} ORDER BY first_event_at, {key}"
        )
        if is_row_order(con, source_table, present[time_column.lower()]):
            _mark_row_order(con, table, "first_event_at")
        return int(con.execute(f"SELECT count(*) FROM {quote_identifier(table)}").fetchall()[0][0])
