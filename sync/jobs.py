"""The jobs, one function each: the whole run reads from here.

``run_pull`` -> ``run_train`` -> ``run_score`` -> ``run_push``; ``run_all`` chains them. The CLI and
the scheduler only call these functions.

Every job records itself in the run log (start, end, status, counts, API calls, error). Expected
failures are :class:`~connector.errors.LeadscoreError` one-liners; they are logged in the run log
and re-raised for the caller.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import roc_auc_score

from connector.errors import Busy, ConfigError, Interrupted, LeadscoreError
from connector.history import (
    JobHistory,
    dead_letters,
    fail_abandoned_runs,
    job_histories,
    last_api_usage,
    read_alert_states,
    record_run,
)
from connector.http import CallCounter
from connector.salesforce import (
    SalesforceClient,
    db_type,
    describe_object,
    read_records,
    resolve_fields,
    since_with_overlap,
)
from connector.store import Store, raw_table_name, utc_now
from scoring.monitor import (
    reference_profile,
)
from scoring.pipeline import ScoringError, score_entities, train_prediction
from scoring.registry import load_champion, save_version
from sync.alerts import Condition, evaluate, job_conditions
from sync.config import JOB_NAMES, PredictionConfig, Settings, load_settings
from sync.demo import prepare_workdir, write_sandbox_files
from sync.health import overdue_jobs
from sync.lock import LockHolder, RunLock, lock_path
from sync.logs import run_context
from sync.monitoring import monitor_conditions, monitor_prediction, monitoring_page
from sync.progress import Reporter, SilentReporter
from sync.push import push_salesforce

SILENT = SilentReporter()
log = logging.getLogger("leadscore.jobs")

# Checked between pages and batches: True asks the running job to stop at the next checkpoint.
StopCheck = Callable[[], bool]


@dataclass
class JobResult:
    """The outcome of one job run.

    Attributes:
        job: job name.
        status: ``ok``, ``partial``, ``failed`` or ``skipped``.
        counts: job-specific counts (JSON-serialisable).
        api_calls: calls made against remote API allowances.
        seconds: wall time.
        run_id: the run-log id.
        artifacts: in-process results that are not part of the JSON output (e.g. holdout
            predictions).
    """

    job: str
    status: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)
    api_calls: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable part."""
        return {
            "job": self.job,
            "status": self.status,
            "counts": self.counts,
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
        }


@contextmanager
def _recorded(store: Store, job: str, counter: CallCounter | None = None) -> Iterator[JobResult]:
    """Record a job in the run log around the block; failures are logged and re-raised."""
    result = JobResult(job)
    result.run_id = store.start_run(job)
    calls_before = counter.api_calls if counter else 0
    started = time.perf_counter()

    def counts() -> dict[str, Any]:
        # the org's allowance as last reported by Sforce-Limit-Info, for `status` and alerts
        if counter is not None and counter.org_usage is not None:
            used, limit = counter.org_usage
            return {**result.counts, "api_usage": {"used": used, "max": limit}}
        return result.counts

    with run_context(job, result.run_id):
        log.info("%s started", job)
        try:
            yield result
        except BaseException as exc:
            # A stop request ends the run at a checkpoint: what it did is committed (partial).
            result.status = "partial" if isinstance(exc, Interrupted) else "failed"
            message = (
                str(exc)
                if isinstance(exc, LeadscoreError | ScoringError)
                else f"{type(exc).__name__}: {exc}"
            )
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            result.seconds = time.perf_counter() - started
            result.api_calls = (counter.api_calls - calls_before) if counter else 0
            store.finish_run(
                result.run_id,
                status=result.status,
                counts=counts(),
                api_calls=result.api_calls,
                error=message,
            )
            # INFO: the caller decides how loudly to report it (the CLI prints one line, the
            # scheduler logs an error).
            log.info(
                "%s %s after %.1f s: %s",
                job,
                "stopped" if result.status == "partial" else "failed",
                result.seconds,
                message,
            )
            raise
        result.seconds = time.perf_counter() - started
        result.api_calls = (counter.api_calls - calls_before) if counter else 0
        store.finish_run(
            result.run_id, status=result.status, counts=counts(), api_calls=result.api_calls
        )
        log.info(
            "%s %s in %.1f s (%d API calls)", job, result.status, result.seconds, result.api_calls
        )


@contextmanager
def _open_store(
    settings: Settings,
    job: str,
    *,
    should_stop: StopCheck | None = None,
    reporter: Reporter = SILENT,
    wait_seconds: float | None = None,
) -> Iterator[Store]:
    """Take the store's run lock for ``job``, then open the store.

    Only one process may write a DuckDB file, and two runs of a job must never overlap, so every
    job holds the lock (re-entrant: ``sync`` holds it around its pull, score and push). A run waits
    up to ``schedule.lock_wait_seconds`` for another to finish, then gives up with :class:`Busy`.
    """

    def waiting(holder: LockHolder | None) -> None:
        who = holder.describe() if holder else "another leadscore process"
        reporter.stage(f"waiting up to {wait:g} s for {who} to finish")
        log.info("%s: waiting up to %g s for %s to finish", job, wait, who)

    wait = settings.schedule.lock_wait_seconds if wait_seconds is None else wait_seconds
    lock = RunLock(
        lock_path(settings.store.path),
        job,
        wait_seconds=wait,
        should_stop=should_stop,
        on_wait=waiting,
    )
    with lock:
        store = Store(settings.store.path)
        try:
            if lock.took_over is not None:
                abandoned = fail_abandoned_runs(
                    store,
                    f"abandoned: {lock.took_over.describe()} ended without recording an outcome "
                    "(killed or crashed); committed pages and batches are kept",
                )
                if abandoned:
                    log.warning("marked %d abandoned run(s) as failed", abandoned)
            yield store
        finally:
            store.close()


def _check_stop(should_stop: StopCheck | None, job: str, where: str) -> None:
    """Raise :class:`Interrupted` at a checkpoint when a stop was requested."""
    if should_stop is not None and should_stop():
        raise Interrupted(
            f"{job}: stopped on request {where}; committed work is kept and the next run resumes"
        )


def _scoring_error(exc: ScoringError) -> LeadscoreError:
    return LeadscoreError(str(exc))


# -- pull ------------------------------------------------------------------------------------------
# ---------


def run_pull(
    settings: Settings,
    *,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
    should_stop: StopCheck | None = None,
) -> JobResult:
    """Pull every configured Salesforce stream incrementally into the store.

    Each stream is read by ``SystemModstamp`` (or its configured cursor field) from the committed
    cursor minus the overlap window; every page is upserted together with its cursor in one
    transaction.

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client (``run_all`` shares one).
        should_stop: checked between pages; True stops the run after the committed page (the
            stream is not marked complete, so the next pull resumes from its cursor).

    Returns:
        Counts per stream: fetched, new, changed, unchanged.

    Raises:
        Interrupted: a stop was requested (the run is recorded as partial).
    """
    sf = client or SalesforceClient(settings.salesforce)
    with (
        _open_store(settings, "pull", should_stop=should_stop, reporter=reporter) as store,
        _recorded(store, "pull", sf.counter) as result,
    ):
        sf.connect()
        totals = {"fetched": 0, "new": 0, "changed": 0, "unchanged": 0}
        streams: dict[str, dict[str, int]] = {}
        for sobject, stream in settings.salesforce.streams.items():
            setting = f"salesforce.streams.{sobject}"
            description = describe_object(sf, sobject)
            fields = resolve_fields(
                description,
                ["Id", stream.cursor_field, *stream.fields],
                setting=f"{setting}.fields",
            )
            cursor = description.field(stream.cursor_field)
            if cursor is None or cursor.type != "datetime":
                raise ConfigError(
                    f"{setting}.cursor_field: '{stream.cursor_field}' is not a datetime field "
                    f"of {description.name}",
                    hint="use SystemModstamp",
                )
            table = raw_table_name("salesforce", description.name)
            columns = {
                name: (
                    description.fields[name.lower()].type,
                    db_type(description.fields[name.lower()].type),
                )
                for name in fields
            }
            added = store.ensure_table(description.name, table, columns, key="Id")
            if added:
                # New columns are empty for rows already stored: read the stream again in full to
                # fill them.
                reporter.stage(
                    f"{description.name}: new fields {', '.join(added)}; re-reading it in full"
                )
                store.reset_cursor(description.name)
            since = since_with_overlap(
                store.read_cursor(description.name), settings.salesforce.overlap_seconds
            )
            query_started = utc_now()
            counts = {"fetched": 0, "new": 0, "changed": 0, "unchanged": 0}
            with reporter.track(f"pull {description.name}") as task:
                for page in read_records(
                    sf,
                    description.name,
                    fields,
                    cursor_field=cursor.name,
                    since=since,
                    on_total=task.set_total,
                ):
                    frame = pd.DataFrame.from_records(page, columns=fields)
                    page_counts = store.upsert_page(
                        description.name, table, frame, key="Id", cursor_field=cursor.name
                    )
                    counts["fetched"] += len(page)
                    counts["new"] += page_counts.inserted
                    counts["changed"] += page_counts.updated
                    counts["unchanged"] += page_counts.unchanged
                    task.advance(len(page))
                    result.counts = {"streams": {**streams, description.name: counts}}
                    _check_stop(should_stop, "pull", f"after a page of {description.name}")
            store.mark_synced(description.name, query_started)
            streams[description.name] = counts
            for key in totals:
                totals[key] += counts[key]
        result.counts = {**totals, "pulled": totals["new"] + totals["changed"], "streams": streams}
    return result


# -- train
# --------------------------------------------------------------------------------------------------


def _as_of(store: Store, settings: Settings) -> datetime:
    """How far the store is complete: the earliest ``synced_through`` of the configured streams."""
    streams = [describe_name for describe_name in settings.salesforce.streams]
    rows = store.query_df("SELECT stream FROM sync_cursor")
    known = {s.lower(): s for s in rows["stream"]}
    through = store.synced_through([known.get(s.lower(), s) for s in streams])
    if through is None:
        raise LeadscoreError(
            "the store has not been fully pulled yet",
            hint="run `leadscore pull --config FILE` first",
        )
    return through


def _output_fields(settings: Settings, prediction: PredictionConfig) -> set[str]:
    """Fields any prediction writes to the scored object: never features."""
    out: set[str] = set()
    for p in settings.predictions:
        if p.entity == prediction.entity and p.salesforce is not None:
            out |= set(p.salesforce.fields.values())
    return out


def run_train(
    settings: Settings, *, prediction: str | None = None, reporter: Reporter = SILENT
) -> JobResult:
    """Train a model per prediction (or the named one) and store it as the champion.

    Args:
        settings: configuration.
        prediction: train only this prediction.
        reporter: progress.

    Returns:
        Per prediction: version, examples and holdout metrics. ``artifacts["holdout"]`` holds the
            holdout
        predictions by prediction name.
    """
    targets = [settings.prediction(prediction)] if prediction else list(settings.predictions)
    with (
        _open_store(settings, "train", reporter=reporter) as store,
        _recorded(store, "train") as result,
    ):
        as_of = _as_of(store, settings)
        trained: dict[str, Any] = {}
        holdouts: dict[str, pd.DataFrame] = {}
        for spec in targets:
            reporter.stage(f"{spec.name}: training set as of {as_of:%Y-%m-%d %H:%M} UTC")
            try:
                outcome = train_prediction(
                    store.con,
                    spec,
                    as_of=as_of,
                    exclude_fields={f.lower() for f in _output_fields(settings, spec)},
                    progress=lambda stage, name=spec.name: reporter.stage(f"{name}: {stage}"),
                )
            except ScoringError as exc:
                raise _scoring_error(exc) from None
            # Reference for drift monitoring: the population this model would score at the cut-off.
            reporter.stage(f"{spec.name}: profiling the scored population for drift monitoring")
            outcome.metadata["monitoring_profile"] = reference_profile(
                store.con, spec.entity, outcome.model, outcome.metadata, at=score_time_for(as_of)
            )
            version = save_version(
                settings.store.models_dir, spec.name, outcome.model, outcome.metadata, champion=True
            )
            holdouts[spec.name] = outcome.holdout
            trained[spec.name] = {
                "version": version.version,
                "champion": True,
                "examples": outcome.metadata["examples"]["used"],
                "metrics": outcome.metadata["metrics"],
                "seconds": outcome.metadata["seconds"],
            }
        result.counts = {"predictions": trained}
        result.artifacts["holdout"] = holdouts
    return result


# -- score
# --------------------------------------------------------------------------------------------------


def score_time_for(as_of: datetime) -> datetime:
    """The scoring time for data complete up to ``as_of``: floored to the hour.

    Flooring makes features (and so scores) identical for every run within the same hour, so a
    re-run writes nothing; events of the current hour count from the next hour on.

    Args:
        as_of: how far the store is complete.

    Returns:
        The scoring time.
    """
    return as_of.replace(minute=0, second=0, microsecond=0)


def run_score(
    settings: Settings, *, reporter: Reporter = SILENT, train_missing: bool = False
) -> JobResult:
    """Score every current entity of each prediction with its champion model.

    Args:
        settings: configuration.
        reporter: progress.
        train_missing: train first when a prediction has no model yet (``run``).

    Returns:
        Per prediction: model version, records scored and the tier distribution.
    """
    with (
        _open_store(settings, "score", reporter=reporter) as store,
        _recorded(store, "score") as result,
    ):
        as_of = _as_of(store, settings)
        score_time = score_time_for(as_of)
        scored: dict[str, Any] = {}
        for spec in settings.predictions:
            champion = load_champion(settings.store.models_dir, spec.name)
            if champion is None:
                raise LeadscoreError(
                    f"prediction '{spec.name}' has no trained model",
                    hint="run `leadscore train --config FILE` first",
                )
            reporter.stage(f"{spec.name}: scoring with model {champion.version}")
            scores = score_entities(
                store.con, spec, champion.load(), champion.metadata, score_time=score_time
            )
            store.append_scores(spec.name, scores)
            scored[spec.name] = {
                "version": champion.version,
                "scored": len(scores),
                "tiers": {
                    str(k): int(v) for k, v in scores["tier"].value_counts().sort_index().items()
                },
                "score_time": score_time.isoformat(),
            }
        result.counts = {"scored": sum(s["scored"] for s in scored.values()), "predictions": scored}
    return result


# -- push ------------------------------------------------------------------------------------------
# ---------


def run_push(
    settings: Settings,
    *,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
    should_stop: StopCheck | None = None,
) -> JobResult:
    """Write each prediction's latest scores to its configured Salesforce fields (changes only).

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client.
        should_stop: checked after each batch is recorded in the ledger; True stops the run
            before the next batch is sent.

    Returns:
        Per prediction: records considered, unchanged, sent, written, failed (with error codes).

    Raises:
        Interrupted: a stop was requested (the run is recorded as partial).
    """
    sf = client or SalesforceClient(settings.salesforce)
    with (
        _open_store(settings, "push", should_stop=should_stop, reporter=reporter) as store,
        _recorded(store, "push", sf.counter) as result,
    ):
        sf.connect()
        pushed: dict[str, Any] = {}
        for spec in settings.predictions:
            counts = push_salesforce(sf, store, spec, reporter, should_stop=should_stop)
            pushed[spec.name] = {
                "records": counts.records,
                "unchanged": counts.unchanged,
                "sent": counts.sent,
                "written": counts.written,
                "failed": counts.failed,
                "errors": dict(counts.errors),
                "recovered": counts.recovered,
            }
        failed = sum(p["failed"] for p in pushed.values())
        result.counts = {
            "written": sum(p["written"] for p in pushed.values()),
            "failed": failed,
            "predictions": pushed,
        }
        if failed:
            result.status = "partial"
    return result


# -- run -------------------------------------------------------------------------------------------
# ---------


def run_all(
    settings: Settings, *, reporter: Reporter = SILENT, should_stop: StopCheck | None = None
) -> JobResult:
    """Pull, train the predictions that have no model yet, score, push: the ``sync`` job.

    The run log gets a ``sync`` row around the rows of its parts, and the store's run lock is held
    throughout, so nothing else runs between the pull and the push.

    Args:
        settings: configuration.
        reporter: progress.
        should_stop: checked between pages, batches and steps.

    Returns:
        The combined result; ``counts`` has one entry per job and the headline numbers.

    Raises:
        Interrupted: a stop was requested (the run is recorded as partial).
    """
    client = SalesforceClient(settings.salesforce)
    jobs: dict[str, JobResult] = {}
    try:
        with (
            _open_store(settings, "sync", should_stop=should_stop, reporter=reporter) as store,
            _recorded(store, "sync", client.counter) as result,
        ):
            jobs["pull"] = run_pull(
                settings, reporter=reporter, client=client, should_stop=should_stop
            )
            missing = [
                p.name
                for p in settings.predictions
                if load_champion(settings.store.models_dir, p.name) is None
            ]
            for name in missing:
                _check_stop(should_stop, "sync", "before training")
                jobs[f"train:{name}"] = run_train(settings, prediction=name, reporter=reporter)
            _check_stop(should_stop, "sync", "before scoring")
            jobs["score"] = run_score(settings, reporter=reporter)
            _check_stop(should_stop, "sync", "before pushing")
            jobs["push"] = run_push(
                settings, reporter=reporter, client=client, should_stop=should_stop
            )
            _summarise_sync(result, jobs)
    finally:
        client.close()
    return result


def _summarise_sync(result: JobResult, jobs: dict[str, JobResult]) -> None:
    """Fill a sync result from the results of its parts."""
    result.status = "partial" if any(j.status != "ok" for j in jobs.values()) else "ok"
    result.counts = {
        "pulled": jobs["pull"].counts["pulled"],
        "scored": jobs["score"].counts["scored"],
        "written": jobs["push"].counts["written"],
        "failed": jobs["push"].counts["failed"],
        "trained": [name.split(":", 1)[1] for name in jobs if name.startswith("train:")],
        "jobs": {name: job.to_json() for name, job in jobs.items()},
    }
    for name, job in jobs.items():
        if name.startswith("train:"):
            result.artifacts.setdefault("holdout", {}).update(job.artifacts.get("holdout", {}))
            result.counts.setdefault("models", {}).update(job.counts["predictions"])


# -- status
# -------------------------------------------------------------------------------------------------


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
    """Version, holdout AUC and age of a champion model."""
    trained = champion.metadata.get("trained_at")
    if trained is None:
        try:  # version ids start with the UTC training time: 20250601T120000Z-ab12
            trained = datetime.strptime(champion.version[:16], "%Y%m%dT%H%M%SZ").isoformat()
        except ValueError:
            trained = datetime.fromtimestamp(champion.path.stat().st_mtime, UTC).isoformat()
    trained_at = datetime.fromisoformat(str(trained)).replace(tzinfo=None)
    return {
        "version": champion.version,
        "auc": champion.metadata.get("metrics", {}).get("auc"),
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
            out[job] = nxt.astimezone(UTC).replace(tzinfo=None)
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
        ``store``, ``busy`` (the holder of the run lock, when a run is going on), ``runs`` (newest
        first), ``jobs`` (per job: schedule, last run, next run, failures), ``dead_letters``,
        ``api_usage``, ``alerts`` (active conditions), ``models`` (champion, AUC, age).
    """
    now = now or utc_now()
    holder = RunLock(lock_path(settings.store.path), "status").holder()
    runs: list[dict[str, Any]] = []
    histories: dict[str, Any] = {}
    dead, usage, alerts = None, None, []
    readable = False
    if settings.store.path.exists():
        store = _open_for_reading(settings.store.path)
        if store is not None:
            readable = True
            with store:
                runs = store.recent_runs(limit)
                histories = job_histories(store, now)
                dead = dead_letters(store)
                usage = last_api_usage(store)
                alerts = [
                    {"key": k, "since": v["since"], "message": v["message"]}
                    for k, v in sorted(read_alert_states(store).items())
                    if v["active"]
                ]
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
            "next_run": upcoming.get(job),
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
        "runs": runs,
        "jobs": jobs_out,
        "dead_letters": dead,
        "api_usage": usage,
        "alerts": alerts,
        "models": models,
    }


# -- monitor ---------------------------------------------------------------------------------------


def run_monitor(
    settings: Settings, *, reporter: Reporter = SILENT, max_runs: int = 60
) -> JobResult:
    """Measure drift of each prediction and record the realized performance of past scores.

    Args:
        settings: configuration (``[monitor]`` thresholds).
        reporter: progress.
        max_runs: most scoring runs whose realized performance is computed in one go (the backlog
            is worked off over later runs).

    Returns:
        Per prediction: ``drift`` (level ``ok|warn|alert|unavailable``, score and feature PSIs) and
        ``realized`` (latest conversion by band and AUC).
    """
    with (
        _open_store(settings, "monitor", reporter=reporter) as store,
        _recorded(store, "monitor") as result,
    ):
        as_of = _as_of(store, settings)
        out = {}
        for spec in settings.predictions:
            reporter.stage(f"{spec.name}: drift and realized performance")
            out[spec.name] = monitor_prediction(store, settings, spec, as_of, max_runs)
        result.counts = {"predictions": out}
    return result


# -- one entry point for the CLI and the scheduler -------------------------------------------------


def monitoring_html(settings: Settings, result: JobResult) -> str:
    """A standalone HTML page of a monitor run (``leadscore monitor --html``).

    Args:
        settings: configuration.
        result: the monitor job's result.

    Returns:
        The page.
    """
    with _open_store(settings, "monitor report") as store:
        return monitoring_page(store, settings, result.counts)


def run_job(
    settings: Settings,
    job: str,
    *,
    reporter: Reporter = SILENT,
    should_stop: StopCheck | None = None,
    prediction: str | None = None,
) -> JobResult:
    """Run a job by name and raise or clear the alerts its outcome settles.

    Args:
        settings: configuration.
        job: ``pull``, ``score``, ``push``, ``sync``, ``train`` or ``monitor``.
        reporter: progress.
        should_stop: cooperative stop (pull, push and sync check it between pages and batches).
        prediction: ``train`` only this prediction.

    Returns:
        The job's result.

    Raises:
        ConfigError: no such job.
        Busy: another run held the store lock for longer than ``schedule.lock_wait_seconds``.
        LeadscoreError: the job failed (recorded in the run log, alerts evaluated).
    """
    runners: dict[str, Callable[[], JobResult]] = {
        "pull": lambda: run_pull(settings, reporter=reporter, should_stop=should_stop),
        "score": lambda: run_score(settings, reporter=reporter),
        "push": lambda: run_push(settings, reporter=reporter, should_stop=should_stop),
        "sync": lambda: run_all(settings, reporter=reporter, should_stop=should_stop),
        "train": lambda: run_train(settings, prediction=prediction, reporter=reporter),
        "monitor": lambda: run_monitor(settings, reporter=reporter),
    }
    if job not in runners:
        close = difflib.get_close_matches(job, JOB_NAMES, n=1)
        raise ConfigError(
            f"no job named '{job}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
            hint=f"jobs are {', '.join(JOB_NAMES)}",
        )
    try:
        result = runners[job]()
    except (Busy, Interrupted):
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, LeadscoreError) else f"{type(exc).__name__}: {exc}"
        settle_alerts(settings, job, "failed", {}, message)
        raise
    conditions = monitor_conditions(result.counts, settings) if job == "monitor" else []
    settle_alerts(settings, job, result.status, result.counts, None, extra=conditions)
    return result


def read_job_histories(settings: Settings) -> dict[str, JobHistory]:
    """The run log summarised per job (``serve`` seeds its state with it).

    Args:
        settings: configuration.

    Returns:
        Job -> history.

    Raises:
        ConfigError: the store directory is not writable.
        Busy: another process held the store for longer than ``schedule.lock_wait_seconds``.
    """
    with _open_store(settings, "serve") as store:
        return job_histories(store)


def record_skipped(
    settings: Settings,
    skips: list[tuple[str, datetime, str]],
    *,
    wait_seconds: float | None = None,
) -> None:
    """Record runs that never started (missed, overlapping, store busy) in the run log.

    Args:
        settings: configuration.
        skips: (job, when it was due, why).
        wait_seconds: how long to wait for the store (default ``schedule.lock_wait_seconds``).

    Raises:
        Busy: the store stayed busy.
    """
    with _open_store(settings, "record skipped runs", wait_seconds=wait_seconds) as store:
        now = utc_now()
        for job, when, reason in skips:
            due = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
            record_run(store, job, started_at=due, finished_at=now, status="skipped", error=reason)


def settle_service_alerts(settings: Settings, conditions: list[Condition]) -> None:
    """Evaluate conditions found by ``serve`` itself (missed schedules), without waiting.

    The watchdog must work while a job runs: when the run lock is held by this very process (its
    worker thread), the store is opened alongside the worker's connection; when another process
    holds it, the pass is skipped and the next one catches up.

    Args:
        settings: configuration.
        conditions: the conditions.
    """
    lock = RunLock(lock_path(settings.store.path), "alerts", wait_seconds=0)
    try:
        lock.acquire()
    except Busy:
        holder = lock.holder()
        if holder is None or holder.pid != os.getpid():
            return
        with Store(settings.store.path) as store:
            evaluate(store, settings, conditions)
        return
    try:
        with Store(settings.store.path) as store:
            evaluate(store, settings, conditions)
    finally:
        lock.release()


def settle_alerts(
    settings: Settings,
    job: str,
    status: str,
    counts: dict[str, Any],
    error: str | None,
    *,
    extra: list[Condition] | None = None,
) -> None:
    """Evaluate the alert conditions a run settles; never raises (alerts must not fail a job).

    Args:
        settings: configuration.
        job: job name.
        status: run status.
        counts: run counts.
        error: error line of a failed run.
        extra: more conditions (drift from ``monitor``, missed schedules from ``serve``).
    """
    conditions = [*job_conditions(job, status, counts, error, settings), *(extra or [])]
    if not conditions:
        return
    try:
        with _open_store(settings, f"alerts after {job}") as store:
            evaluate(store, settings, conditions)
    except Exception as exc:  # an alert problem is logged, never raised into the job's outcome
        log.warning("alerts after %s were not evaluated: %s", job, exc)


# -- sandbox and demo
# -----------------------------------------------------------------------------------------


def _generation_progress(reporter: Reporter):  # noqa: ANN202 - a closure over the reporter
    """Adapt the generator's (stage, done, total) callback to the reporter: a line per stage."""
    seen: set[str] = set()

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            reporter.stage(f"sandbox: {stage}")

    return on_progress


def run_sandbox(
    workdir: Path,
    *,
    port: int = 0,
    leads: int = 20_000,
    seed: int = 42,
    reporter: Reporter = SILENT,
    ready: Any = None,
) -> None:
    """Serve a generated org until interrupted, with config files for any client in ``workdir``.

    An existing sandbox in ``workdir`` (same data file) is served again rather than regenerated.

    Args:
        workdir: where the org's data, TLS material and the config files live.
        port: TCP port on 127.0.0.1 (0: any free port).
        leads: leads to generate when the org is new.
        seed: generator seed.
        reporter: progress.
        ready: called with the sandbox info once it is serving (used by tests).
    """
    from connector.sandbox import Sandbox

    prepare_workdir(workdir, fresh=False)
    sandbox = Sandbox(
        workdir / "sandbox",
        leads=leads,
        seed=seed,
        port=port,
        regenerate=False,
        on_progress=_generation_progress(reporter),
    )
    sandbox.start()
    try:
        write_sandbox_files(workdir, sandbox.info, command="sandbox")
        if ready is not None:
            ready(sandbox.info)
        sandbox.serve_forever()
    finally:
        sandbox.stop()


def run_demo(
    workdir: Path, *, leads: int = 20_000, seed: int = 42, reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Generate an org, serve it in-process and run pull, train, score and push against it.

    Args:
        workdir: working directory (cleared of a previous demo's files).
        leads: leads in the generated org.
        seed: generator seed.
        reporter: progress.

    Returns:
        Headline figures: ``leads, pulled, scored, written, api_calls, model_auc, oracle_auc,
            auc_ratio,
        seconds``, plus where the files are.
    """
    from connector.sandbox import Sandbox

    started = time.perf_counter()
    prepare_workdir(workdir, fresh=True)
    reporter.stage(f"generating a synthetic org with {leads:,} leads (seed {seed})")
    sandbox = Sandbox(
        workdir / "sandbox", leads=leads, seed=seed, on_progress=_generation_progress(reporter)
    )
    sandbox.start()
    try:
        config = write_sandbox_files(workdir, sandbox.info, command="demo")
        reporter.stage(f"sandbox serving at {sandbox.url}")
        settings = load_settings(config)
        result = run_all(settings, reporter=reporter)
        holdout = result.artifacts["holdout"]["lead_conversion"]
        truth = sandbox.ground_truth()
        # the org's leads as Salesforce lists them: the generator soft-deletes a few
        org_leads = int(sandbox.sql("SELECT count(*) FROM Lead WHERE NOT IsDeleted")[0][0])
    finally:
        sandbox.stop()
    merged = holdout.merge(
        truth[["lead_id", "p_true"]], left_on="entity_id", right_on="lead_id", how="inner"
    )
    model = result.counts["models"]["lead_conversion"]
    model_auc = model["metrics"]["auc"]
    oracle_auc = float(roc_auc_score(merged["label"], merged["p_true"]))
    return {
        "leads": org_leads,
        "pulled": result.counts["pulled"],
        "scored": result.counts["scored"],
        "written": result.counts["written"],
        "failed": result.counts["failed"],
        "api_calls": result.api_calls,
        "model_auc": round(model_auc, 4),
        "oracle_auc": round(oracle_auc, 4),
        "auc_ratio": round(model_auc / oracle_auc, 4),
        "holdout": len(holdout),
        "model_version": model["version"],
        "seconds": round(time.perf_counter() - started, 2),
        "workdir": str(workdir),
        "config": str(config),
    }
