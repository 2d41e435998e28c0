"""Files in and out of the store: CSV and Parquet tables, and Segment exports.

They carry historical backfills, exports from other systems (Segment warehouse and Profiles Sync
exports among them) and benchmark datasets.

DuckDB reads the files directly (parallel, streaming), so imports never hold a whole file in Python.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from connector.errors import ConfigError
from connector.segment import DEFAULT_ID_TYPES, MAX_MESSAGE_BYTES
from connector.store import Store, quote_identifier, utc_now

FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class ImportResult:
    """What an import did.

    Attributes:
        table: the table written.
        rows: rows in it after the import.
        columns: its columns, in order.
    """

    table: str
    rows: int
    columns: list[str]


def detect_format(path: Path) -> str:
    """Tell the file format from the file name.

    Args:
        path: the file.

    Returns:
        ``csv`` or ``parquet``.

    Raises:
        ConfigError: the extension is not one leadscore reads.
    """
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
        return "csv"
    raise ConfigError(
        f"{path}: unknown file type", hint="use a .csv (optionally .gz) or .parquet file"
    )


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


def _whitespace_to_tabs(path: Path, out: Path) -> None:
    """Rewrite a whitespace-separated file as tab-separated, streaming line by line.

    DuckDB's CSV reader takes one delimiter character; files written by fixed-width tools and
    many research datasets separate values by runs of blanks (pandas' whitespace separator), with
    leading blanks for alignment.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as src, out.open("w") as dst:  # type: ignore[operator]
        for line in src:
            dst.write("\t".join(line.split()) + "\n")


def import_table(
    store: Store,
    path: str | Path,
    table: str,
    *,
    id_column: str | None = None,
    delimiter: str | None = None,
    null_values: tuple[str, ...] = (),
    clean_names: bool = False,
) -> ImportResult:
    """Load a CSV or Parquet file into a store table, replacing the table.

    Column types are inferred by DuckDB (CSV: from a sample of the file). The table is replaced in
    one transaction: a failed import leaves the previous table as it was.

    Args:
        store: the store.
        path: the file.
        table: target table name (a plain identifier).
        id_column: a column that must exist and hold unique, non-null values.
        delimiter: CSV delimiter (default: detected).
        null_values: CSV strings that mean "missing" (e.g. ``"Select"`` in some CRM exports).
        clean_names: rename columns that are not plain identifiers (``Lead Origin`` ->
            ``Lead_Origin``) so that SQL and config can name them; ``id_column`` may be given
            either way.

    Returns:
        The table's row count and columns.

    Raises:
        ConfigError: the file is missing or unreadable, or the id column is absent or not unique.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found", hint="check the path")
    fmt = detect_format(path)
    target = quote_identifier(table)
    spaced: Path | None = None
    if fmt == "csv":
        options = ["header = true"]
        params: list[object] = [str(path)]
        if delimiter == "whitespace":
            # runs of spaces or tabs (leading and trailing blanks ignored): read as tabs
            spaced = Path(tempfile.mkdtemp(prefix="leadscore-ws-")) / f"{path.stem}.tsv"
            _whitespace_to_tabs(path, spaced)
            params[0] = str(spaced)
            options.append("delim = '\t'")
        elif delimiter is not None:
            options.append("delim = ?")
            params.append(delimiter)
        if null_values:
            # nullstr replaces DuckDB's default, so the empty string is kept as "missing" too
            options.append("nullstr = ?")
            params.append(["", *null_values])
        source = f"read_csv(?, {', '.join(options)})"
    else:
        source = "read_parquet(?)"
        params = [str(path)]
    try:
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
                        f"{path}: id column '{id_column}' not found",
                        hint=f"columns are: {', '.join(columns[:20])}",
                    )
                key = quote_identifier(id_column)
                total, distinct, nulls = con.execute(
                    f"SELECT count(*), count(DISTINCT {key}), count(*) - count({key}) FROM {target}"
                ).fetchall()[0]
                if nulls or distinct != total:
                    raise ConfigError(
                        f"{path}: id column '{id_column}' is not a unique key "
                        f"({nulls} empty, {total - nulls - distinct} duplicated values)",
                        hint="choose a column that identifies each row",
                    )
            rows = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise ConfigError(
            f"{path}: cannot read the file as {fmt}: {str(exc).splitlines()[0]}",
            hint="check the format, delimiter and encoding",
        ) from None
    finally:
        if spaced is not None:
            spaced.unlink(missing_ok=True)
            spaced.parent.rmdir()
    return ImportResult(table=table, rows=int(rows), columns=columns)


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
        exprs = {}
        for column, fmt in formats.items():
            if column.lower() not in present:
                raise ConfigError(
                    f"{path}: time_formats: column '{column}' not found",
                    hint=f"columns are: {', '.join(list(present.values())[:20])}",
                )
            name = present[column.lower()]
            exprs[name] = _TIME_SQL[fmt].format(c=quote_identifier(name))
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
        key, ts = (
            quote_identifier(present[id_column.lower()]),
            quote_identifier(present[time_column.lower()]),
        )
        con.execute(
            f"CREATE OR REPLACE TABLE {quote_identifier(table)} AS SELECT {key}, "
            f"min(CAST({ts} AS TIMESTAMP)) AS first_event_at FROM {source} "
            f"WHERE {key} IS NOT NULL GROUP BY {key} ORDER BY first_event_at, {key}"
        )
        return int(con.execute(f"SELECT count(*) FROM {quote_identifier(table)}").fetchall()[0][0])


# -- Segment warehouse / Profiles Sync exports ----------------------------------------------------

SEGMENT_KINDS = ("tracks", "identifies", "id_graph")
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line DuckDB's reader accepts; a longer one makes the file unreadable (one error)."""
_BAD_ENCODING = "\x02leadscore:not-utf-8"
"""Stands in for a line that is not UTF-8 (DuckDB's reader refuses such files; see below)."""

# Why each line that is not imported was skipped. Lines are never dropped silently: every skipped
# line is counted by reason and kept in ``seg_import_reject`` with its file and line number.
SKIP_REASONS = {
    "bad_json": "not a JSON object",
    "bad_encoding": "not UTF-8",
    "oversize_message": "larger than Segment's 32 KB message limit",
    "other_type": "a message of another type than the file's kind",
    "missing_timestamp": "no timestamp",
    "bad_timestamp": "timestamp is not an ISO 8601 date-time",
    "missing_identity": "neither a user id nor an anonymous id (id graph: no profile or id)",
    "missing_event": "a track without an event name",
    "unknown_identity_type": "an identity type leadscore does not know (see segment.identity)",
}


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


def _segment_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if {".jsonl", ".ndjson", ".json"} & set(suffixes):
        return "jsonl"
    raise ConfigError(
        f"{path}: unknown file type for a Segment export",
        hint="use .jsonl / .ndjson (optionally .gz) or .parquet",
    )


def _lines_sql(fmt: str, *, numbered: bool = True) -> str:
    """SQL yielding ``(line, text)``: one row per physical line (or Parquet row), numbered from 1.

    JSON lines are read by DuckDB's CSV reader as one VARCHAR column: the delimiter is byte 0x01,
    which valid JSON never contains raw (control characters must be escaped), and quoting is off.
    The numbering relies on DuckDB keeping insertion order, which it does by default. It also
    makes the scan single-threaded, so only the pass that reports skipped lines numbers them
    (``numbered``); the import pass reads in parallel.
    """
    line = "row_number() OVER ()" if numbered else "NULL::BIGINT"
    if fmt == "parquet":
        return f"SELECT {line} AS line, CAST(to_json(p) AS VARCHAR) AS text FROM read_parquet(?) p"
    return (
        f"SELECT {line} AS line, text FROM read_csv(?, "
        "columns = {'text': 'VARCHAR'}, delim = '\\x01', quote = '', escape = '', header = false, "
        f"auto_detect = false, strict_mode = false, max_line_size = {MAX_LINE_BYTES}, "
        f"buffer_size = {2 * MAX_LINE_BYTES})"
    )


_TRACK_FIELDS = (
    "$.type",
    "$.event",
    "$.userId",
    "$.user_id",
    "$.anonymousId",
    "$.anonymous_id",
    "$.timestamp",
    "$.messageId",
    "$.message_id",
    "$.id",
    "$.segment_id",
)
_IDENTIFY_FIELDS = (
    "$.type",
    "$.userId",
    "$.user_id",
    "$.anonymousId",
    "$.anonymous_id",
    "$.timestamp",
    "$.messageId",
    "$.message_id",
    "$.id",
    "$.segment_id",
    "$.traits.email",
    "$.email",
    "$.context.traits.email",
)
_ID_GRAPH_FIELDS = (
    "$.canonical_segment_id",
    "$.segment_id",
    "$.external_id_type",
    "$.external_id_value",
    "$.timestamp",
)


def _utc(text: str) -> str:
    """SQL parsing an ISO 8601 timestamp to naive UTC (NULL when unparseable).

    Segment writes UTC with a ``Z``, which the plain TIMESTAMP cast reads correctly and several
    times faster; other offsets go through TIMESTAMPTZ, and text without an offset is UTC (the
    import sets the session time zone to UTC).
    """
    return (
        f"CASE WHEN ends_with({text}, 'Z') THEN try_cast({text} AS TIMESTAMP) "
        f"ELSE timezone('UTC', try_cast({text} AS TIMESTAMPTZ)) END"
    )


def _parsed_sql(kind: str, fmt: str, *, numbered: bool = True) -> str:
    """A query of every non-blank line with its skip reason (NULL when importable).

    Each line is parsed once: ``json_extract_string`` with a list of paths returns all fields.
    Both the raw message shape (``userId``, ``messageId``: S3 archives, the Tracking API) and the
    warehouse shape (``user_id``, ``id``, ``segment_id``: warehouse and Profiles Sync tables) are
    accepted.
    """
    fields = {"tracks": _TRACK_FIELDS, "identifies": _IDENTIFY_FIELDS, "id_graph": _ID_GRAPH_FIELDS}
    paths = ", ".join(f"'{p}'" for p in fields[kind])
    head = f"""WITH raw AS ({_lines_sql(fmt, numbered=numbered)}),
        p AS (
          SELECT line, text, strlen(text) AS size,
                 -- an object, not an array or a scalar (cheaper than json_type)
                 json_valid(text) AND starts_with(ltrim(text), '{{') AS ok
          FROM raw WHERE text IS NOT NULL AND trim(text) <> ''),
        x AS (
          SELECT line, text, size, ok,
                 CASE WHEN ok AND size <= {MAX_MESSAGE_BYTES}
                      THEN json_extract_string(text, [{paths}]) END AS f
          FROM p)"""
    early = f"""WHEN text = '{_BAD_ENCODING}' THEN 'bad_encoding'
                WHEN NOT ok THEN 'bad_json'
                WHEN size > {MAX_MESSAGE_BYTES} THEN 'oversize_message'"""
    if kind == "tracks":
        return f"""{head},
        y AS (SELECT *, {_utc("f[7]")} AS ts FROM x)
        SELECT line, text, size, ts,
               CASE {early}
                    WHEN f[1] IS NOT NULL AND f[1] <> 'track' THEN 'other_type'
                    WHEN f[7] IS NULL THEN 'missing_timestamp'
                    WHEN ts IS NULL THEN 'bad_timestamp'
                    WHEN coalesce(f[3], f[4], f[5], f[6], f[11]) IS NULL THEN 'missing_identity'
                    WHEN f[2] IS NULL OR trim(f[2]) = '' THEN 'missing_event' END AS reason,
               coalesce(f[8], f[9], f[10], 'md5-' || md5(text)) AS message_id,
               f[2] AS event, coalesce(f[3], f[4]) AS user_id, coalesce(f[5], f[6]) AS anonymous_id,
               f[11] AS segment_id, f[7] AS raw_ts
        FROM y"""
    if kind == "identifies":
        return f"""{head},
        y AS (SELECT *, {_utc("f[6]")} AS ts FROM x)
        SELECT line, text, size, ts,
               CASE {early}
                    WHEN f[1] IS NOT NULL AND f[1] <> 'identify' THEN 'other_type'
                    WHEN f[6] IS NULL THEN 'missing_timestamp'
                    WHEN ts IS NULL THEN 'bad_timestamp'
                    WHEN coalesce(f[2], f[3], f[4], f[5], f[10]) IS NULL THEN 'missing_identity'
                    END AS reason,
               coalesce(f[7], f[8], f[9], 'md5-' || md5(text)) AS message_id,
               coalesce(f[2], f[3]) AS user_id, coalesce(f[4], f[5]) AS anonymous_id,
               f[10] AS segment_id, lower(trim(coalesce(f[11], f[12], f[13]))) AS email,
               f[6] AS raw_ts
        FROM y"""
    return f"""{head},
        y AS (SELECT *, {_utc("f[5]")} AS ts,
                     coalesce(f[1], f[2]) AS profile_id,
                     -- a row without an external id records a merge: segment_id -> canonical
                     CASE WHEN f[3] IS NULL AND f[1] IS NOT NULL AND f[2] IS NOT NULL
                          THEN 'segment_id' ELSE f[3] END AS id_type,
                     CASE WHEN f[3] IS NULL THEN f[2] ELSE f[4] END AS id_value
              FROM x)
        SELECT line, text, size, ts,
               CASE {early}
                    WHEN profile_id IS NULL OR id_type IS NULL OR id_value IS NULL
                         OR trim(id_value) = '' THEN 'missing_identity'
                    WHEN NOT list_contains(?, id_type) THEN 'unknown_identity_type'
                    WHEN f[5] IS NOT NULL AND ts IS NULL THEN 'bad_timestamp' END AS reason,
               profile_id, id_type,
               CASE WHEN id_type = 'email' THEN lower(trim(id_value)) ELSE id_value END
                 AS id_value,
               f[5] AS raw_ts
        FROM y"""


def _reject_detail(kind: str) -> str:
    """SQL for the detail kept with a skipped line (never more than 120 characters)."""
    id_type = "WHEN 'unknown_identity_type' THEN left(id_type, 120)" if kind == "id_graph" else ""
    return f"""CASE reason
        WHEN 'bad_json' THEN left(text, 120)
        WHEN 'oversize_message' THEN CAST(size AS VARCHAR) || ' bytes'
        WHEN 'bad_timestamp' THEN left(raw_ts, 120)
        WHEN 'other_type' THEN left(json_extract_string(text, '$.type'), 120)
        {id_type} END"""


def _sanitised_copy(path: Path, directory: Path) -> Path:
    """Copy a JSON-lines file, replacing each line that is not UTF-8 by a marker line.

    DuckDB's reader refuses a whole file when one line is not UTF-8; the copy keeps every line in
    place (so line numbers stay right) and lets the bad ones be counted as ``bad_encoding``.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    target = directory / "sanitised.jsonl"
    marker = _BAD_ENCODING.encode()
    with opener(path, "rb") as source, open(target, "wb") as out:
        for raw in source:
            line = raw.rstrip(b"\r\n")
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                line = marker
            out.write(line + b"\n")
    return target


def import_segment_export(
    store: Store,
    path: str | Path,
    kind: str,
    *,
    id_types: Collection[str] = DEFAULT_ID_TYPES,
    force: bool = False,
    example_limit: int = 5,
) -> SegmentImportResult:
    """Import one Segment warehouse / Profiles Sync export file into the ``seg_*`` tables.

    ``tracks`` go to ``seg_event``, ``identifies`` to ``seg_identify`` and ``id_graph`` rows
    (``canonical_segment_id``/``segment_id``, ``external_id_type``, ``external_id_value``) to
    ``seg_external_id``. DuckDB reads, validates and extracts every line in SQL, in parallel; no
    line is parsed in Python. Lines that cannot be imported are skipped, counted by reason and kept
    in ``seg_import_reject`` with their line number; the rest of the file is imported. Rows whose
    message id (or identity) is already in the store are counted as duplicates and not added again,
    so re-importing overlapping exports is safe. The file is imported in one transaction.

    Args:
        store: the store.
        path: a JSON-lines file (``.jsonl``, ``.ndjson``, optionally ``.gz``) or a Parquet file.
        kind: ``tracks``, ``identifies`` or ``id_graph``.
        id_types: identity types accepted in an id graph (others are skipped as unknown).
        force: import again a file that was imported before (its earlier rows are replaced).
        example_limit: how many skipped lines to quote in the result.

    Returns:
        Counts, skipped lines by reason, and the first skipped lines with file and line.

    Raises:
        ConfigError: the file is missing, of an unknown type or unreadable as a whole.
    """
    path = Path(path)
    if kind not in SEGMENT_KINDS:
        raise ConfigError(
            f"{path}: unknown Segment export kind '{kind}'", hint=f"use one of {SEGMENT_KINDS}"
        )
    if not path.is_file():
        raise ConfigError(f"{path}: file not found", hint="check the path")
    fmt = _segment_format(path)
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)
    resolved = str(path.resolve())
    previous = store.con.execute(
        "SELECT file_id, size, modified_at FROM seg_import_file WHERE path = ? AND kind = ?",
        [resolved, kind],
    ).fetchall()
    same = [row for row in previous if row[1] == stat.st_size and row[2] == modified]
    if same and not force:
        return SegmentImportResult(str(path), kind, already_imported=True, file_id=int(same[0][0]))
    try:
        return _import_segment(
            store,
            path,
            resolved,
            kind,
            fmt,
            stat.st_size,
            modified,
            previous,
            id_types,
            example_limit,
            source=str(path),
        )
    except duckdb.Error as exc:
        message = str(exc)
        if fmt == "jsonl" and ("unicode" in message.lower() or "utf-8" in message.lower()):
            with tempfile.TemporaryDirectory(prefix="leadscore-import-") as tmp:
                copy = _sanitised_copy(path, Path(tmp))
                return _import_segment(
                    store,
                    copy,
                    resolved,
                    kind,
                    fmt,
                    stat.st_size,
                    modified,
                    previous,
                    id_types,
                    example_limit,
                    source=str(path),
                )
        raise ConfigError(
            f"{path}: cannot read the file as {fmt}: {message.splitlines()[0][:200]}",
            hint=f"lines must be shorter than {MAX_LINE_BYTES // (1024 * 1024)} MB; "
            "check the format and compression",
        ) from None


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


def _import_segment(
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
) -> SegmentImportResult:
    parsed = _parsed_sql(kind, fmt, numbered=False)
    numbered = _parsed_sql(kind, fmt, numbered=True)
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
                f"{_reject_detail(kind)} FROM ({numbered}) t WHERE reason IS NOT NULL",
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
