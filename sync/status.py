"""``leadscore status``: the run log, the models and the next runs, read without waiting."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector.clock import to_naive_utc
from connector.errors import ConfigError
from connector.store import Store, utc_now
from connector.store.runs import (
    dead_letter_rows,
    dead_letters,
    job_histories,
    last_api_usage,
    read_alert_states,
)
from scoring.metrics import headline
from scoring.registry import (
    load_champion,
)
from sync.config import JOB_NAMES, Settings
from sync.health_server import overdue_jobs
from sync.lock import RunLock, lock_path


def _open_for_reading(path: Path, wait_seconds: float = 5.0) -> Store | None:
    """Open the store read-only, waiting briefly while a run in another process has it open.

    DuckDB lets one process write a file, or several read it, not both.

    Returns:
        The store, or None when it stayed busy.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return Store(path, read_only=True)
        except ConfigError as exc:
            if "in use" not in str(exc) or time.monotonic() >= deadline:
                if "in use" in str(exc):
                    return None
                raise
            time.sleep(0.2)


def _model_age(champion: Any, now: datetime) -> dict[str, Any]:
    """Version, headline holdout metric (AUC for binary) and age of a champion model."""
    trained = champion.metadata.get("trained_at")
    if trained is None:
        try:  # version ids start with the UTC training time: 20250601T120000Z-ab12
            trained = datetime.strptime(champion.version[:16], "%Y%m%dT%H%M%SZ").isoformat()
        except ValueError:
            trained = datetime.fromtimestamp(champion.path.stat().st_mtime, UTC).isoformat()
    trained_at = datetime.fromisoformat(str(trained)).replace(tzinfo=None)
    metrics = champion.metadata.get("metrics", {})
    metric, _ = headline(champion.metadata.get("task", "binary"))
    return {
        "version": champion.version,
        "auc": metrics.get("auc"),
        "metric": metric,
        "value": metrics.get(metric),
        "trained_at": trained_at,
        "age_days": round((now - trained_at).total_seconds() / 86400, 2),
    }


def next_run_times(settings: Settings, now: datetime) -> dict[str, datetime]:
    """When each scheduled job runs next by the configured schedule.

    An interval schedule counts from when ``serve`` starts, so its next time is ``now`` plus the
    interval here.

    Args:
        settings: configuration.
        now: naive UTC.

    Returns:
        Job -> next time (naive UTC).
    """
    aware = now.replace(tzinfo=UTC)
    out = {}
    for job in settings.schedule.jobs():
        trigger = settings.schedule.trigger(job)
        nxt = trigger.get_next_fire_time(None, aware)
        if nxt is not None:
            out[job] = to_naive_utc(nxt)
    return out


def read_status(
    settings: Settings, *, limit: int = 10, now: datetime | None = None
) -> dict[str, Any]:
    """Everything ``leadscore status`` shows: per job, the store's health, the models.

    Args:
        settings: configuration.
        limit: how many recent runs to list.
        now: reference time (naive UTC; default now).

    Returns:
        ``store``, ``busy`` (the holder of the run lock, when a run is going on), ``serving`` (the
        ``serve`` process, when one runs), ``runs`` (newest first), ``jobs`` (per job: schedule,
        last run, next run (None while no ``serve`` runs), failures), ``dead_letters``,
        ``api_usage``, ``alerts`` (active conditions), ``models`` (champion, AUC, age).
    """
    now = now or utc_now()
    holder = RunLock(lock_path(settings.store.path), "status").holder()
    # scheduled jobs run only while `serve` runs: without it there is no next run to show
    serving = RunLock(lock_path(settings.store.path, "serve"), "status").holder()
    runs: list[dict[str, Any]] = []
    histories: dict[str, Any] = {}
    dead, usage, alerts = None, None, []
    dead_rows: list[dict[str, Any]] = []
    latency: dict[str, Any] | None = None
    readable = False
    if settings.store.path.exists():
        store = _open_for_reading(settings.store.path)
        if store is not None:
            readable = True
            with store:
                runs = store.recent_runs(limit)
                histories = job_histories(store, now)
                dead = dead_letters(store)
                dead_rows = dead_letter_rows(store)
                usage = last_api_usage(store)
                alerts = [
                    {"key": k, "since": v["since"], "message": v["message"]}
                    for k, v in sorted(read_alert_states(store).items())
                    if v["active"]
                ]
                if (settings.fresh is not None or "fresh" in histories) and store.table_exists(
                    "fresh_latency"
                ):
                    latency = store.fresh_latency_summary(now - timedelta(days=1))
    upcoming = next_run_times(settings, now)
    schedules = settings.schedule.jobs()
    # Overdue by the run log alone (serve may not be running at all): due at the first scheduled
    # time after the job was last active, and not started within the misfire grace since.
    active = {
        name: max(t for t in (h.last_run["started_at"], h.last_run["finished_at"]) if t)
        for name, h in histories.items()
        if h.last_run is not None and h.last_run["status"] != "skipped"
    }
    overdue = {
        name: when.replace(tzinfo=None)
        for name, when in overdue_jobs(
            settings.schedule,
            {k: v.replace(tzinfo=UTC) for k, v in active.items() if k in schedules},
            since=datetime(1970, 1, 1, tzinfo=UTC),
            running=set() if holder is None else {holder.job},
            now=now.replace(tzinfo=UTC),
        ).items()
        if name in active
    }
    jobs_out: dict[str, Any] = {}
    for job in [*JOB_NAMES, *sorted(set(histories) - set(JOB_NAMES))]:
        history = histories.get(job)
        if history is None and job not in schedules:
            continue
        last = history.last_run if history else None
        jobs_out[job] = {
            "schedule": schedules[job].describe() if job in schedules else None,
            "last_run": (
                {k: last[k] for k in ("run_id", "started_at", "finished_at", "status", "error")}
                if last
                else None
            ),
            "next_run": upcoming.get(job) if serving is not None else None,
            "overdue_since": overdue.get(job),
            "last_ok_at": history.last_ok_at if history else None,
            "consecutive_failures": history.consecutive_failures if history else 0,
            "failures_24h": history.failures_24h if history else 0,
        }
    models: dict[str, Any] = {}
    for spec in settings.predictions:
        champion = load_champion(settings.store.models_dir, spec.name)
        models[spec.name] = _model_age(champion, now) if champion else None
    return {
        "store": str(settings.store.path),
        "readable": readable or not settings.store.path.exists(),
        "busy": holder.describe() if holder else None,
        "serving": serving.describe() if serving else None,
        "runs": runs,
        "jobs": jobs_out,
        "dead_letters": dead,
        "dead_letter_rows": dead_rows,
        "api_usage": usage,
        "alerts": alerts,
        "models": models,
        **({"fresh": _fresh_status(histories.get("fresh"), latency)} if latency else {}),
    }


def _fresh_status(history: Any, latency: dict[str, Any]) -> dict[str, Any]:
    """The fresh job's last cycle and its creation -> score latency over the last day."""
    last = history.last_run if history is not None else None
    return {
        "last_cycle": (
            {k: last[k] for k in ("run_id", "started_at", "finished_at", "status", "error")}
            if last
            else None
        ),
        "latency_24h": latency,
    }
