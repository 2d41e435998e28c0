"""Retention: which old rows the store keeps, and reclaiming the space of the rest.

Score history grows by one row per lead per scoring run; with hourly scoring of millions of leads
that is gigabytes a day. :func:`apply_retention` thins it to what is worth keeping:

- every row of the latest run of each prediction (what a push writes);
- per lead, every row whose tier or model version changed, or whose score moved by more than
  ``score_change_points`` since the lead's previous kept row (a vacuum after every run compares
  with the last row kept, so slow drifts are kept once they add up);
- otherwise one row per lead per day: its last of that day, so the last run of every day stays
  whole (realized performance is measured on it);
- nothing older than ``score_history_days``.

Run-log rows older than ``run_log_days`` (each job's latest run excepted) and the rejects of
files imported more than ``import_reject_days`` ago are deleted too. :func:`reclaim_space`
checkpoints, and rewrites the file when enough of it is free (DuckDB reuses freed blocks but never
shrinks a file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from connector.store.database import Store


@dataclass(frozen=True)
class RetentionPolicy:
    """What the store keeps (``[store.retention]``; None days: keep everything).

    Attributes:
        score_history_days: days of score history kept.
        score_change_points: a score move of more than this is always kept.
        compact_scores: thin score history (tier changes, big moves, one row per lead per day).
        run_log_days: days of run-log rows kept.
        import_reject_days: days of import rejects kept.
    """

    score_history_days: int | None = None
    score_change_points: int = 5
    compact_scores: bool = True
    run_log_days: int | None = None
    import_reject_days: int | None = None


@dataclass
class RetentionOutcome:
    """What a vacuum removed and reclaimed.

    Attributes:
        score_rows: score-history rows deleted.
        score_rows_kept: score-history rows left.
        run_log_rows: run-log rows deleted.
        import_rejects: import-reject rows deleted.
        bytes_before: the store file's size before.
        bytes_after: its size after.
        rewritten: the file was rewritten to give freed space back to the disk.
    """

    score_rows: int = 0
    score_rows_kept: int = 0
    run_log_rows: int = 0
    import_rejects: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rewritten: bool = False


_THIN_SCORES = """
DELETE FROM score_history h USING (
    SELECT score_run_id, entity_id FROM (
        SELECT score_run_id, entity_id, scored_at, score, tier, model_version,
               lag(score) OVER w AS prev_score,
               lag(tier) OVER w AS prev_tier,
               lag(model_version) OVER w AS prev_model,
               lead(scored_at) OVER w AS next_at,
               max(score_run_id) OVER (PARTITION BY prediction) AS latest_run
        FROM score_history
        WINDOW w AS (PARTITION BY prediction, entity_id ORDER BY score_run_id))
    WHERE score_run_id <> latest_run
      AND prev_score IS NOT NULL
      AND tier IS NOT DISTINCT FROM prev_tier
      AND model_version = prev_model
      AND abs(score - prev_score) <= ?
      AND next_at IS NOT NULL
      AND CAST(next_at AS DATE) = CAST(scored_at AS DATE)) d
WHERE h.score_run_id = d.score_run_id AND h.entity_id = d.entity_id
"""

_OLD_SCORES = """
DELETE FROM score_history WHERE scored_at < ?
  AND score_run_id NOT IN (SELECT max(score_run_id) FROM score_history GROUP BY prediction)
"""

_OLD_RUNS = """
DELETE FROM run_log WHERE started_at < ?
  AND run_id NOT IN (SELECT max(run_id) FROM run_log GROUP BY job)
"""

_OLD_REJECTS = """
DELETE FROM seg_import_reject
WHERE file_id IN (SELECT file_id FROM seg_import_file WHERE imported_at < ?)
"""


def _deleted(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> int:
    row = con.execute(sql, params).fetchall()
    return int(row[0][0]) if row else 0


def apply_retention(store: Store, policy: RetentionPolicy, now: datetime) -> RetentionOutcome:
    """Delete the rows the policy does not keep, in one transaction.

    Args:
        store: the store.
        policy: what to keep.
        now: the reference time (naive UTC).

    Returns:
        Rows deleted per table (sizes are :func:`reclaim_space`'s).
    """
    out = RetentionOutcome()
    with store.transaction() as con:
        if policy.compact_scores:
            out.score_rows += _deleted(con, _THIN_SCORES, [policy.score_change_points])
        if policy.score_history_days is not None:
            cutoff = now - timedelta(days=policy.score_history_days)
            out.score_rows += _deleted(con, _OLD_SCORES, [cutoff])
        if policy.run_log_days is not None:
            out.run_log_rows = _deleted(con, _OLD_RUNS, [now - timedelta(days=policy.run_log_days)])
        if policy.import_reject_days is not None:
            out.import_rejects = _deleted(
                con, _OLD_REJECTS, [now - timedelta(days=policy.import_reject_days)]
            )
        out.score_rows_kept = int(
            con.execute("SELECT count(*) FROM score_history").fetchall()[0][0]
        )
    return out


def _blocks(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(total blocks, free blocks) of the open database file."""
    row = con.execute("SELECT total_blocks, free_blocks FROM pragma_database_size()").fetchall()
    return int(row[0][0]), int(row[0][1])


def reclaim_space(store: Store, *, rewrite_share: float = 0.25) -> tuple[int, int, bool]:
    """Checkpoint; rewrite the file when at least ``rewrite_share`` of its blocks are free.

    DuckDB reuses the blocks of deleted rows after a checkpoint but never gives them back to the
    disk; a copy of the database (``COPY FROM DATABASE``, sequences included) does. The copy is
    written beside the store and replaces it atomically; the store's connection is reopened.

    Args:
        store: the store (its caller holds the run lock: nobody else has the file open).
        rewrite_share: share of free blocks above which the file is rewritten (1 or more: never).

    Returns:
        ``(bytes before, bytes after, rewritten)``.
    """
    path = Path(store.path)
    before = path.stat().st_size if path.exists() else 0
    store.con.execute("CHECKPOINT")
    total, free = _blocks(store.con)
    rewritten = False
    if total and free / total >= rewrite_share:
        staging = path.with_name(path.name + ".vacuum")
        staging.unlink(missing_ok=True)
        name = store.con.execute("SELECT current_database()").fetchall()[0][0]
        store.con.execute(f"ATTACH '{staging}' AS leadscore_vacuum")
        try:
            store.con.execute(f'COPY FROM DATABASE "{name}" TO leadscore_vacuum')
        finally:
            store.con.execute("DETACH leadscore_vacuum")
        store.con.close()
        os.replace(staging, path)
        Path(f"{staging}.wal").unlink(missing_ok=True)
        store.con = duckdb.connect(str(path))
        store.con.execute("SET enable_progress_bar = false")
        rewritten = True
    return before, path.stat().st_size, rewritten
