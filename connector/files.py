"""Files in and out of the store: CSV and Parquet tables, and Segment exports.

They carry historical backfills, exports from other systems (Segment warehouse and Profiles Sync
exports among them) and benchmark datasets.

DuckDB reads the files directly (parallel, streaming), so imports never hold a whole file in Python.
"""

from __future__ import annotations

import csv
import gzip
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from connector.errors import ConfigError
from connector.segment import DEFAULT_ID_TYPES, MAX_MESSAGE_BYTES
from connector.store import Store
from connector.store.imports import (
    SegmentImportResult,
    import_segment_rows,
    imported_versions,
    replace_table,
)


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


_DELIMITERS = ",;\t|"
"""Delimiters guessed from the header line when none is configured (the most frequent wins)."""


def check_csv(path: Path, delimiter: str | None = None) -> int:
    """Read a CSV file once, line by line, and refuse damage DuckDB's reader would accept.

    DuckDB's sniffer takes a ragged file for a headerless one (and finds no id column), keeps an
    unterminated quote as text and NUL bytes in values; a damaged export must instead be named
    with its line.

    Args:
        path: the file (``.gz`` is read compressed).
        delimiter: the configured delimiter (None: the most frequent of ``, ; tab |`` in the
            header line).

    Returns:
        The number of data rows (blank lines not counted).

    Raises:
        ConfigError: the file is empty, not UTF-8 text, holds a NUL byte, a row whose field count
            differs from the header's, or a quote that is never closed.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    rows = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as text:  # type: ignore[operator]
            header_line = text.readline()
            if not header_line.strip():
                raise ConfigError(
                    f"{path}: the file is empty (no header line)",
                    hint="export the table again; the previous import is kept",
                )
            if "\x00" in header_line:
                raise ConfigError(
                    f"{path}: line 1 holds a NUL byte: a binary or damaged file, not CSV text",
                    hint="export the table again as CSV",
                )
            sep = delimiter or max(_DELIMITERS, key=header_line.count)
            text.seek(0)
            reader = csv.reader(text, delimiter=sep, strict=True)
            width: int | None = None
            start = 1
            try:
                for record in reader:
                    line = start
                    start = reader.line_num + 1
                    if not record:
                        continue
                    if any("\x00" in value for value in record):
                        raise ConfigError(
                            f"{path}: line {line} holds a NUL byte: a damaged file",
                            hint="export the table again, or remove the byte",
                        )
                    if width is None:
                        width = len(record)
                        continue
                    if len(record) != width:
                        raise ConfigError(
                            f"{path}: line {line} has {len(record)} fields, the header has "
                            f"{width} (delimiter {sep!r})",
                            hint="fix the row or export the table again; the previous import "
                            "is kept",
                        )
                    rows += 1
            except csv.Error as exc:
                where = (
                    f"a quote opened on line {start} is never closed"
                    if ("end of data" in str(exc) or "EOF" in str(exc))
                    else f"line {start} cannot be read ({exc})"
                )
                raise ConfigError(
                    f"{path}: {where}",
                    hint="fix the quoting or export the table again; the previous import is kept",
                ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} of a block cannot be decoded): a binary "
            "file, or another encoding",
            hint="export the table as UTF-8 CSV",
        ) from None
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})", hint="check the file") from None
    return rows


def import_table(
    store: Store,
    path: str | Path,
    table: str,
    *,
    id_column: str | None = None,
    delimiter: str | None = None,
    null_values: tuple[str, ...] = (),
    clean_names: bool = False,
    allow_empty: bool = False,
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
        allow_empty: a file without rows may replace a table that has rows (by default such a
            file is refused: a truncated export must not wipe the data).

    Returns:
        The table's row count and columns.

    Raises:
        ConfigError: the file is missing, unreadable or damaged (named with its line), the id
            column is absent or not unique, or an empty file would replace a table with rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found", hint="check the path")
    fmt = detect_format(path)
    spaced: Path | None = None
    if fmt == "csv":
        check_csv(path, None if delimiter == "whitespace" else delimiter)
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
        rows, columns = replace_table(
            store,
            table,
            source,
            params,
            id_column=id_column,
            clean_names=clean_names,
            what=path,
            allow_empty=allow_empty,
        )
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


# -- Segment warehouse / Profiles Sync exports ----------------------------------------------------

SEGMENT_KINDS = ("tracks", "identifies", "id_graph")
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line DuckDB's reader accepts; a longer one makes the file unreadable (one error)."""
_BAD_ENCODING = "\x02leadscore:not-utf-8"
"""Stands in for a line that is not UTF-8 (DuckDB's reader refuses such files; see below)."""
_OVERSIZE = "\x02leadscore:oversize:"
"""Followed by the byte count, stands in for a line longer than ``MAX_LINE_BYTES``."""

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
    "wrong_type": "an id or the event name is not a string (e.g. a number or an object)",
}

# Fields that must be JSON strings when present (null counts as absent): Segment sends ids and
# event names as strings, and a number or object there is a damaged or foreign line, not an id.
_STRING_FIELDS = {
    "tracks": ("event", "userId", "user_id", "anonymousId", "anonymous_id", "messageId"),
    "identifies": ("userId", "user_id", "anonymousId", "anonymous_id", "messageId"),
}


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
    strings = _STRING_FIELDS.get(kind, ())
    typed = wrong = ""
    if strings:
        # the raw JSON of each field that must be a string: anything but "..." or null is wrong
        raw_paths = ", ".join(f"'$.{n}'" for n in strings)
        typed = f""",
                 CASE WHEN ok AND size <= {MAX_MESSAGE_BYTES}
                      THEN json_extract(text, [{raw_paths}]) END AS j"""
        wrong = (
            "\n                WHEN "
            + " OR ".join(
                f"NOT (j[{i}] IS NULL OR starts_with(CAST(j[{i}] AS VARCHAR), '\"') "
                f"OR CAST(j[{i}] AS VARCHAR) = 'null')"
                for i in range(1, len(strings) + 1)
            )
            + " THEN 'wrong_type'"
        )
    head = f"""WITH raw AS ({_lines_sql(fmt, numbered=numbered)}),
        p AS (
          SELECT line, text,
                 CASE WHEN starts_with(text, '{_OVERSIZE}')
                      THEN CAST(substr(text, {len(_OVERSIZE) + 1}) AS BIGINT)
                      ELSE strlen(text) END AS size,
                 -- an object, not an array or a scalar (cheaper than json_type)
                 json_valid(text) AND starts_with(ltrim(text), '{{') AS ok
          FROM raw WHERE text IS NOT NULL AND trim(text) <> ''),
        x AS (
          SELECT line, text, size, ok,
                 CASE WHEN ok AND size <= {MAX_MESSAGE_BYTES}
                      THEN json_extract_string(text, [{paths}]) END AS f{typed}
          FROM p)"""
    early = f"""WHEN text = '{_BAD_ENCODING}' THEN 'bad_encoding'
                WHEN size > {MAX_MESSAGE_BYTES} THEN 'oversize_message'
                WHEN NOT ok THEN 'bad_json'{wrong}"""
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
               f[11] AS segment_id, f[7] AS raw_ts, j
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
               f[6] AS raw_ts, j
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
    strings = _STRING_FIELDS.get(kind, ())
    # which field has the wrong type, and what it holds: "userId = 42"
    wrong = (
        "WHEN 'wrong_type' THEN left(CASE "
        + " ".join(
            f"WHEN NOT (j[{i}] IS NULL OR starts_with(CAST(j[{i}] AS VARCHAR), '\"') "
            f"OR CAST(j[{i}] AS VARCHAR) = 'null') THEN '{name} = ' || CAST(j[{i}] AS VARCHAR)"
            for i, name in enumerate(strings, start=1)
        )
        + " END, 120)"
        if strings
        else ""
    )
    return f"""CASE reason
        WHEN 'bad_json' THEN left(text, 120)
        WHEN 'oversize_message' THEN CAST(size AS VARCHAR) || ' bytes'
        WHEN 'bad_timestamp' THEN left(raw_ts, 120)
        WHEN 'other_type' THEN left(json_extract_string(text, '$.type'), 120)
        {wrong}
        {id_type} END"""


def _sanitised_copy(path: Path, directory: Path) -> Path:
    """Copy a JSON-lines file, replacing each line DuckDB's reader cannot take by a marker line.

    DuckDB's reader refuses a whole file when one line is not UTF-8 or longer than
    ``MAX_LINE_BYTES``; the copy keeps every line in place (so line numbers stay right) and lets
    the bad ones be counted as ``bad_encoding`` or ``oversize_message``.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    target = directory / "sanitised.jsonl"
    marker = _BAD_ENCODING.encode()
    with opener(path, "rb") as source, open(target, "wb") as out:
        for raw in source:
            line = raw.rstrip(b"\r\n")
            if len(line) > MAX_MESSAGE_BYTES:
                line = f"{_OVERSIZE}{len(line)}".encode()
            else:
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
    previous = imported_versions(store, resolved, kind)
    same = [row for row in previous if row[1] == stat.st_size and row[2] == modified]
    if same and not force:
        return SegmentImportResult(str(path), kind, already_imported=True, file_id=int(same[0][0]))
    sql = {
        "parsed": _parsed_sql(kind, fmt, numbered=False),
        "numbered": _parsed_sql(kind, fmt, numbered=True),
        "reject_detail": _reject_detail(kind),
    }
    try:
        return import_segment_rows(
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
            **sql,
        )
    except duckdb.Error as exc:
        message = str(exc)
        if fmt == "jsonl":
            # a line that is not UTF-8 or too long for the reader: import a copy in which such
            # lines are markers, counted as skipped like any other bad line
            try:
                with tempfile.TemporaryDirectory(prefix="leadscore-import-") as tmp:
                    copy = _sanitised_copy(path, Path(tmp))
                    return import_segment_rows(
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
                        **sql,
                    )
            except duckdb.Error as again:
                message = str(again)
            except (OSError, EOFError):
                pass  # not readable by Python either (e.g. not gzip): DuckDB's message says why
        raise ConfigError(
            f"{path}: cannot read the file as {fmt}: {message.splitlines()[0][:200]}",
            hint=f"lines must be shorter than {MAX_LINE_BYTES // (1024 * 1024)} MB; "
            "check the format and compression",
        ) from None
