"""The local DuckDB store: the only code that creates tables or writes to them.

- ``database.py``  the :class:`Store`: schema migrations, raw tables per stream, sync cursors,
  bulk checkpoints, scores, the write-back ledger, the run log's start and finish.
- ``runs.py``      queries over the run log, alert states and dead letters.
- ``identity.py``  identity resolution: Segment profiles matched to CRM records (``identity_*``).
- ``imports.py``   the rows of imported files (``[[sources]]`` tables and Segment exports).

Other packages call these named functions; ``scoring/`` reads tables another module fills by the
names exported here (``IDENTITY_MAP``, ``FIELD_LABELS``, :func:`raw_table_name`), never by a
literal.
"""

from connector.store.database import (
    FIELD_LABELS,
    IDENTITY_MAP,
    MIGRATIONS,
    PageCounts,
    Store,
    out_of_space,
    quote_identifier,
    raw_table_name,
    utc_now,
)
from connector.store.imports import NUMERIC_DB_TYPES, is_row_order, number_time_problem

__all__ = [
    "FIELD_LABELS",
    "IDENTITY_MAP",
    "MIGRATIONS",
    "NUMERIC_DB_TYPES",
    "PageCounts",
    "Store",
    "is_row_order",
    "number_time_problem",
    "out_of_space",
    "quote_identifier",
    "raw_table_name",
    "utc_now",
]
