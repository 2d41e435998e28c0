"""Operations data in the store: run history per job, alert state, drift and realized performance.

The tables are created by the store's migrations (``alert_state``, ``drift_history``,
``realized_performance``; ``run_log`` and ``writeback_ledger`` come from the first one). These
functions keep their SQL in one place so the scheduler, ``status``, alerts and the monitor read the
same facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from connector.store import Store, utc_now

if TYPE_CHECKING:  # pandas is imported by the queries that return frames, not by `status`
    import pandas as pd


# -- run history -----------------------------------------------------------------------------------


def fail_abandoned_runs(store: Store, error: str) -> int:
    """Mark runs still ``running`` as failed: called by the holder of the store's run lock.

    Only one process may run jobs on a store at a time, so a ``running`` row found by a new lock
    holder belongs to a process that died (``kill -9``, power loss) before it could record an end.

    Args:
        store: the store.
        error: the message to record.

    Returns:
        How many runs were marked.
    """
    with store.transaction() as con:
        rows = con.execute(
            "UPDATE run_log SET status = 'failed', finished_at = ?, error = ? "
            "WHERE status = 'running' RETURNING run_id",
            [utc_now(), error],
        ).fetchall()
    return len(rows)


def record_run(
    store: Store,
    job: str,
    *,
    started_at: datetime,
    finished_at: datetime,
    status: str,
    counts: dict[str, Any] | None = None,
    error: str | None = None,
) -> int:
    """Record a finished run in one step (skipped and missed runs, which never started).

    Args:
        store: the store.
        job: job name.
        started_at: when it was due or attempted (naive UTC).
        finished_at: when it was given up (naive UTC).
        status: ``skipped`` usually.
        counts: JSON-serialisable counts.
        error: why.

    Returns:
        The run id.
    """
    with store.transaction() as con:
        row = con.execute(
            "INSERT INTO run_log (run_id, job, started_at, finished_at, status, counts, "
            "api_calls, error) VALUES (nextval('run_id_seq'), ?, ?, ?, ?, ?, 0, ?) "
            "RETURNING run_id",
            [job, started_at, finished_at, status, json.dumps(counts or {}), error],
        ).fetchall()[0]
    return int(row[0])


@dataclass(frozen=True)
class JobHistory:
    """What the run log says about one job.

    Attributes:
        job: job name.
        last_run: the newest run (``run_id, started_at, finished_at, status, counts, api_calls,
            error``).
        last_ok_at: when the newest ``ok`` run finished.
        consecutive_failures: failed runs since the last run that was not failed or skipped.
        failures_24h: failed runs in the 24 hours before ``now``.
        runs: runs recorded in total.
    """

    job: str
    last_run: dict[str, Any] | None
    last_ok_at: datetime | None
    consecutive_failures: int
    failures_24h: int
    runs: int


def job_histories(store: Store, now: datetime | None = None) -> dict[str, JobHistory]:
    """Summarise the run log per job.

    Args:
        store: the store.
        now: reference time for the 24-hour failure count (naive UTC; default now).

    Returns:
        Job name -> its history, for every job that ever ran.
    """
    now = now or utc_now()
    stats = store.query_records(
        """SELECT job,
                  count(*) AS runs,
                  max(finished_at) FILTER (WHERE status = 'ok') AS last_ok_at,
                  count(*) FILTER (WHERE status = 'failed' AND started_at >= ?) AS failures_24h,
                  max(run_id) FILTER (WHERE status NOT IN ('failed', 'skipped', 'running'))
                    AS last_good_id
           FROM run_log GROUP BY job""",
        [now - timedelta(hours=24)],
    )
    last = store.query_records(
        """SELECT run_id, job, started_at, finished_at, status, counts, api_calls, error
           FROM run_log WHERE run_id IN (SELECT max(run_id) FROM run_log GROUP BY job)"""
    )
    streaks = store.query_records(
        """SELECT r.job, count(*) AS n FROM run_log r
           LEFT JOIN (SELECT job, max(run_id) FILTER (WHERE status NOT IN ('failed', 'skipped',
                                                                         'running')) AS good
                      FROM run_log GROUP BY job) g ON g.job = r.job
           WHERE r.status = 'failed' AND r.run_id > coalesce(g.good, 0)
           GROUP BY r.job"""
    )
    streak = {row["job"]: row["n"] for row in streaks}
    last_by_job = {}
    for run in last:
        run["counts"] = json.loads(run["counts"]) if run["counts"] else {}
        last_by_job[run["job"]] = run
    out = {}
    for row in stats:
        job = row["job"]
        out[job] = JobHistory(
            job=job,
            last_run=last_by_job.get(job),
            last_ok_at=row["last_ok_at"],
            consecutive_failures=int(streak.get(job, 0)),
            failures_24h=int(row["failures_24h"]),
            runs=int(row["runs"]),
        )
    return out


def last_started(store: Store) -> dict[str, datetime]:
    """When each job last started or was attempted (any status).

    Args:
        store: the store.

    Returns:
        Job name -> naive UTC start time.
    """
    rows = store.query_records("SELECT job, max(started_at) AS started FROM run_log GROUP BY job")
    return {row["job"]: row["started"] for row in rows}


def last_api_usage(store: Store) -> dict[str, Any] | None:
    """The org's API usage as last seen in a run's ``Sforce-Limit-Info`` header.

    Args:
        store: the store.

    Returns:
        ``used, max, remaining, as_of`` or None when no run recorded it.
    """
    rows = store.con.execute(
        """SELECT counts, finished_at FROM run_log
           WHERE json_exists(counts, '$.api_usage') ORDER BY run_id DESC LIMIT 1"""
    ).fetchall()
    if not rows:
        return None
    usage = json.loads(rows[0][0])["api_usage"]
    used, limit = int(usage["used"]), int(usage["max"])
    return {"used": used, "max": limit, "remaining": limit - used, "as_of": rows[0][1]}


def dead_letters(store: Store) -> int:
    """Ledger rows given up on (status ``dead``: rejected too often to retry automatically).

    Args:
        store: the store.

    Returns:
        Their number (0 when no write ever gave up).
    """
    rows = store.con.execute(
        "SELECT count(*) FROM writeback_ledger WHERE status = 'dead'"
    ).fetchall()
    return int(rows[0][0])


def dead_letter_rows(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The dead and gone ledger rows, grouped by target, object and reason.

    Args:
        store: the store.
        limit: most groups returned (largest first).

    Returns:
        Dicts ``target, object, status, reason, records, fields, example`` where ``reason`` is the
        error code and message of the last attempt and ``example`` one record id.
    """
    return store.query_records(
        """SELECT target, object, status, coalesce(last_error, 'UNKNOWN') AS reason,
                  count(DISTINCT record_id) AS records, count(*) AS fields,
                  min(record_id) AS example
           FROM writeback_ledger WHERE status IN ('dead', 'gone')
           GROUP BY ALL ORDER BY records DESC, target, object, reason LIMIT ?""",
        [limit],
    )


# -- alert state -----------------------------------------------------------------------------------


def read_alert_states(store: Store) -> dict[str, dict[str, Any]]:
    """Every alert condition's state.

    Args:
        store: the store.

    Returns:
        Key -> ``active, since, message, notified, updated_at``.
    """
    rows = store.query_records(
        "SELECT key, active, since, message, notified, updated_at FROM alert_state"
    )
    return {row.pop("key"): row for row in rows}


def write_alert_state(
    store: Store, key: str, *, active: bool, since: datetime, message: str, notified: bool
) -> None:
    """Insert or replace one alert condition's state.

    Args:
        store: the store.
        key: condition key (``failed:push``, ``drift:lead_conversion``).
        active: whether the condition holds.
        since: when it last changed.
        message: the latest message (already redacted).
        notified: whether the latest change was delivered to every channel.
    """
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO alert_state VALUES (?, ?, ?, ?, ?, ?)",
            [key, active, since, message, notified, utc_now()],
        )


# -- monitoring history ----------------------------------------------------------------------------


def append_drift(store: Store, row: dict[str, Any]) -> None:
    """Record one drift measurement.

    Args:
        store: the store.
        row: ``prediction, measured_at, model_version, scored_at, rows, score_psi,
            max_feature_psi, max_feature, features`` (features: name -> PSI).
    """
    with store.transaction() as con:
        con.execute(
            "INSERT INTO drift_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                row["prediction"],
                row["measured_at"],
                row["model_version"],
                row["scored_at"],
                row["rows"],
                row["score_psi"],
                row["max_feature_psi"],
                row["max_feature"],
                json.dumps(row["features"]),
            ],
        )


def drift_history(store: Store, prediction: str) -> pd.DataFrame:
    """Drift measurements of a prediction, oldest first.

    Args:
        store: the store.
        prediction: prediction name.

    Returns:
        ``measured_at, model_version, scored_at, rows, score_psi, max_feature_psi, max_feature``.
    """
    return store.query_df(
        "SELECT measured_at, model_version, scored_at, rows, score_psi, max_feature_psi, "
        "max_feature FROM drift_history WHERE prediction = ? ORDER BY measured_at",
        [prediction],
    )


def evaluated_score_runs(store: Store, prediction: str) -> set[int]:
    """Score runs whose realized performance is already recorded.

    Args:
        store: the store.
        prediction: prediction name.

    Returns:
        Their score run ids.
    """
    rows = store.con.execute(
        "SELECT score_run_id FROM realized_performance WHERE prediction = ?", [prediction]
    ).fetchall()
    return {int(r[0]) for r in rows}


def append_realized(store: Store, prediction: str, rows: list[dict[str, Any]]) -> None:
    """Record realized performance of score runs.

    Args:
        store: the store.
        prediction: prediction name.
        rows: ``score_run_id, scored_at, model_version, window_days, leads, conversions, auc,
            bands`` (bands: list of dicts).
    """
    if not rows:
        return
    now = utc_now()
    with store.transaction() as con:
        for r in rows:
            con.execute(
                "INSERT OR REPLACE INTO realized_performance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    prediction,
                    r["score_run_id"],
                    r["scored_at"],
                    r["model_version"],
                    r["window_days"],
                    now,
                    r["leads"],
                    r["conversions"],
                    r["auc"],
                    json.dumps(r["bands"]),
                ],
            )


def realized_history(store: Store, prediction: str) -> list[dict[str, Any]]:
    """Realized performance of a prediction's score runs, oldest first.

    Args:
        store: the store.
        prediction: prediction name.

    Returns:
        Rows with ``bands`` decoded.
    """
    out = store.query_records(
        "SELECT score_run_id, scored_at, model_version, window_days, evaluated_at, leads, "
        "conversions, auc, bands FROM realized_performance WHERE prediction = ? "
        "ORDER BY scored_at",
        [prediction],
    )
    for row in out:
        row["bands"] = json.loads(row["bands"]) if row["bands"] else []
    return out
