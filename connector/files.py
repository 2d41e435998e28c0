"""Files in and out of the store: CSV and Parquet tables.

They carry historical backfills, exports from other systems and benchmark datasets.

DuckDB reads the files directly (parallel, streaming), so imports never hold a whole file in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from connector.errors import ConfigError
from connector.store import Store, quote_identifier

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
    if fmt == "csv":
        options = ["header = true"]
        params: list[object] = [str(path)]
        if delimiter is not None:
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
    return ImportResult(table=table, rows=int(rows), columns=columns)
