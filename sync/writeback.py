"""What every push shares, whatever the target: counts, the ledger policy, a batch's outcomes.

Both targets push the same way, plan -> batches -> ledger (``docs/architecture.md``): the plan is
``sync/diff.py``'s, the batches are the target's (``sync/salesforce_writeback.py``,
``sync/segment_sync.py``), and every answered batch ends here, in :func:`record_batch`, which
counts each record's outcome and writes its fields' ledger rows in one call to the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connector.store import Store
from sync.config import WritebackSettings


def ledger_policy(writeback: WritebackSettings | None) -> dict[str, Any]:
    """``Store.record_outcomes`` options from ``[writeback]`` (attempts, backoff)."""
    w = writeback or WritebackSettings()
    return {
        "max_attempts": w.max_attempts,
        "backoff_seconds": w.retry_backoff_seconds,
        "max_backoff_seconds": w.max_backoff_seconds,
    }


def error_code(error: str | None) -> str:
    """The code of a target's error text (``CODE: message``), the key failures are counted by."""
    return (error or "UNKNOWN").split(":")[0].strip()


@dataclass
class TargetCounts:
    """What a push to one target object did, in the counts every target shares.

    Attributes:
        records: records considered.
        unchanged: records whose values all equal what the target confirmed.
        written: records the target confirmed.
        failed: records the target rejected (or that were not sent because it would have).
        errors: failed records by error code.
    """

    records: int = 0
    unchanged: int = 0
    written: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def count_failure(self, error: str | None) -> None:
        """Count one failed record by its error's code."""
        self.failed += 1
        self.errors[error_code(error)] += 1


@dataclass
class RecordOutcome:
    """A target's final answer for one record: the fields sent, and whether it took them."""

    record_id: str
    fields: dict[str, Any]
    success: bool
    error: str | None = None
    gone: bool = False


def record_batch(
    store: Store,
    target: str,
    sobject: str,
    outcomes: Iterable[RecordOutcome],
    counts: TargetCounts,
    writeback: WritebackSettings | None,
) -> None:
    """Count an answered batch's records and write their ledger rows (one transaction).

    Args:
        store: the store (its write-back ledger).
        target: ``salesforce`` or ``segment``.
        sobject: the target object.
        outcomes: each record's final outcome (after the target's own retries).
        counts: the push's counts, updated.
        writeback: ``[writeback]`` settings (attempts and backoff of rejected rows).
    """
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        if outcome.success:
            counts.written += 1
        else:
            counts.count_failure(outcome.error)
        rows += [
            {
                "record_id": outcome.record_id,
                "field": name,
                "value": value,
                "success": outcome.success,
                "error": outcome.error,
                "gone": outcome.gone,
            }
            for name, value in outcome.fields.items()
        ]
    store.record_outcomes(target, sobject, rows, **ledger_policy(writeback))
