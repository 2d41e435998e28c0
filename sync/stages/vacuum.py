"""The ``vacuum`` job: apply ``[store.retention]`` and give the freed space back to the disk."""

from __future__ import annotations

from connector.store import Store, utc_now
from connector.store.retention import RetentionPolicy, apply_retention, reclaim_space
from sync.config import RetentionSettings, Settings
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded


def retention_policy(settings: RetentionSettings) -> RetentionPolicy:
    """The store's retention policy from the ``[store.retention]`` section."""
    return RetentionPolicy(
        score_history_days=settings.score_history_days,
        score_change_points=settings.score_change_points,
        compact_scores=settings.compact_scores,
        run_log_days=settings.run_log_days,
        import_reject_days=settings.import_reject_days,
    )


def vacuum_store(store: Store, settings: Settings, reporter: Reporter = SILENT) -> dict[str, int]:
    """Delete what the retention policy does not keep, then reclaim the space.

    Args:
        store: the open store (the caller holds the run lock).
        settings: configuration (``[store.retention]``).
        reporter: progress.

    Returns:
        The counts: rows deleted per table, rows of score history kept, the file's size before
        and after (bytes) and whether it was rewritten.
    """
    reporter.stage("applying the retention policy")
    unfinished = store.discard_unfinished_score_runs()  # a run a crash cut short
    outcome = apply_retention(store, retention_policy(settings.store.retention), utc_now())
    reporter.stage("reclaiming space")
    before, after, rewritten = reclaim_space(store)
    return {
        "score_rows_deleted": outcome.score_rows + unfinished,
        "score_rows_kept": outcome.score_rows_kept,
        "run_log_rows_deleted": outcome.run_log_rows,
        "import_rejects_deleted": outcome.import_rejects,
        "bytes_before": before,
        "bytes_after": after,
        "rewritten": rewritten,
    }


def run_vacuum(settings: Settings, *, reporter: Reporter = SILENT) -> JobResult:
    """Apply ``[store.retention]`` (score history, run log, import rejects) and reclaim space.

    Args:
        settings: configuration.
        reporter: progress.

    Returns:
        What was deleted and the store file's size before and after.
    """
    with (
        open_store(settings, "vacuum", reporter=reporter) as store,
        recorded(store, "vacuum") as result,
    ):
        result.counts = vacuum_store(store, settings, reporter)
    return result
