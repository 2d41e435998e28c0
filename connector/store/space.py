"""Disk space: will the store's disk hold the next big step? Estimated before it starts.

A first sync writes every record of every stream, a first push a ledger row per record and output
field. Running out of disk half way leaves a store that cannot checkpoint; saying so before the
step starts costs nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from connector.errors import ConfigError

# DuckDB's compressed columns took about 110 bytes per raw row of the sandbox org's streams
# (Lead ~20 fields, Task ~10; issue 17); per value plus a row's fixed part, doubled for the
# WAL and the page file a bulk read writes beside the store.
BYTES_PER_VALUE = 16
BYTES_PER_ROW = 48
SAFETY = 2.0
# A ledger row: target, object, record id, field, value and attempt columns.
BYTES_PER_LEDGER_ROW = 120


def raw_rows_bytes(rows: int, columns: int) -> int:
    """Disk a raw table of ``rows`` rows of ``columns`` fields needs, with the safety margin."""
    return int(rows * (columns * BYTES_PER_VALUE + BYTES_PER_ROW) * SAFETY)


def ledger_rows_bytes(records: int, fields: int) -> int:
    """Disk the ledger rows of a first push of ``records`` records needs, with the margin."""
    return int(records * fields * BYTES_PER_LEDGER_ROW * SAFETY)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_free_space(path: Path, needed: int, what: str) -> None:
    """Refuse to start a step the store's disk cannot hold.

    Args:
        path: the store file.
        needed: bytes the step is estimated to write.
        what: the step, for the message (``first sync of Task``).

    Raises:
        ConfigError: less space is free than the step needs (one line: the store path, the space
            needed and free, what to do).
    """
    folder = Path(path).resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ConfigError(
            f"store {path}: the {what} needs about {_size(needed)} of disk, {_size(free)} is free",
            hint="free space on that disk or set store.path to a bigger one",
        )
