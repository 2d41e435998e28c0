"""Retention: which old rows the store keeps, and reclaiming the space of the rest.

Score history grows by one row per lead per scoring run; with hourly scoring of millions of leads
that is gigabytes a day. :func:`apply_retention` thins it to what is worth keeping:

- per lead, one row per *stretch* of runs in which its score held: a new stretch starts when
  the tier or the model changed, when the score moved by more than ``score_change_points``, and
  on a new day when the score moved at all (so small moves are kept once a day). The stretch's
  row is its last, with ``valid_from`` set to when the stretch began: every run's score of every
  lead can still be read (:meth:`Store.scores_at` reads the rows valid at a run's time);
- so the latest run of each prediction stays whole (what a push writes);
- nothing older than ``score_history_days``; ``score_run`` keeps each run's time and size.

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


# Per lead, runs fall into stretches: a stretch starts at the lead's first row, at a change of
# tier or model, at a move of more than N points from the previous row, and at the first row of
# a new day whose score differs from the previous row's. A stretch keeps one row, its last (so
# the latest run stays whole), with valid_from set to the stretch's first time.
_STRETCHES = """
CREATE OR REPLACE TEMP TABLE _stretch AS
SELECT prediction, entity_id, score_run_id,
       max(score_run_id) OVER g AS last_run,
       min(since) OVER g AS since
FROM (
    SELECT *, sum(CAST(starts AS INTEGER)) OVER (
                  PARTITION BY prediction, entity_id ORDER BY score_run_id
                  ROWS UNBOUNDED PRECEDING) AS stretch
    FROM (
        SELECT prediction, entity_id, score_run_id,
               coalesce(valid_from, scored_at) AS since,
               (lag(score_run_id) OVER w IS NULL
                OR tier IS DISTINCT FROM lag(tier) OVER w
                OR model_version IS DISTINCT FROM lag(model_version) OVER w
                OR abs(score - lag(score) OVER w) > ?
                OR (CAST(coalesce(valid_from, scored_at) AS DATE)
                        <> CAST(lag(scored_at) OVER w AS DATE)
                    AND score IS DISTINCT FROM lag(score) OVER w)) AS starts
        FROM score_history
        WINDOW w AS (PARTITION BY prediction, entity_id ORDER BY score_run_id)))
WINDOW g AS (PARTITION BY prediction, entity_id, stretch)
"""

_THIN_SCORES = """
DELETE FROM score_history USING _stretch s
WHERE score_history.prediction = s.prediction AND score_history.entity_id = s.entity_id
  AND score_history.score_run_id = s.score_run_id AND s.score_run_id <> s.last_run
"""

_STRETCH_START = """
UPDATE score_history SET valid_from = s.since FROM _stretch s
WHERE score_history.prediction = s.prediction AND score_history.entity_id = s.entity_id
  AND score_history.score_run_id = s.score_run_id AND s.score_run_id = s.last_run
  AND s.since < score_history.scored_at
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
            con.execute(_STRETCHES, [policy.score_change_points])
            out.score_rows += _deleted(con, _THIN_SCORES, [])
            con.execute(_STRETCH_START)
            con.execute("DROP TABLE _stretch")
        if policy.score_history_days is not None:
            cutoff = now - timedelta(days=policy.score_history_days)
            out.score_rows += _deleted(con, _OLD_SCORES, [cutoff])
            con.execute(
                "DELETE FROM score_run WHERE scored_at < ? AND score_run_id NOT IN "
                "(SELECT max(score_run_id) FROM score_run GROUP BY prediction)",
                [cutoff],
            )
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
