"""The run, read top to bottom: ``run_sync`` = pull -> (train what has no model) -> score -> push.

Each job is one call into its stage module under ``sync/stages/``; ``run_job`` is the one entry
point the CLI and the scheduler use to run a job by name (it also settles the alerts its outcome
raises or clears). How every job is recorded (run log, run lock, typed result): ``sync/run.py``.

Where things are:

- ``sync/stages/pull.py``      pull every Salesforce stream and Segment source into the store
- ``sync/stages/imports.py``   ``[[sources]]`` files and Segment exports into the store
- ``sync/stages/train.py``     a model version per prediction
- ``sync/stages/score.py``     score every current entity with the champion
- ``sync/stages/fresh.py``     score and write the leads changed since the last cycle
- ``sync/stages/push.py``      write what changed to Salesforce and Segment
- ``sync/stages/plan.py``      what a push would write
- ``sync/stages/report.py``    the HTML report
- ``sync/stages/monitor.py``   drift and realized performance
- ``sync/stages/impact.py``    is the score used, and does it pay (``leadscore impact``)
- ``sync/admin.py``            model versions, retry, setup, doctor
- ``sync/status.py``           ``leadscore status``; ``sync/demo.py`` the sandbox and the demo
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from connector.errors import Busy, ConfigError, Interrupted, LeadscoreError
from connector.salesforce import SalesforceClient
from scoring.registry import load_champion
from sync.admin import (
    list_models,
    promote_model,
    rollback_model,
    run_doctor,
    run_retry,
    run_setup,
    show_model,
)
from sync.alerts import settle_alerts, settle_service_alerts
from sync.config import JOB_NAMES, Settings
from sync.impact import lift_conditions
from sync.monitor_checks import monitor_conditions
from sync.progress import Reporter
from sync.run import (
    SILENT,
    JobResult,
    StopCheck,
    check_stop,
    open_store,
    read_job_histories,
    record_skipped,
    recorded,
    salesforce_settings,
)
from sync.stages.fresh import run_fresh
from sync.stages.impact import run_impact
from sync.stages.imports import run_import, run_segment_import
from sync.stages.monitor import monitoring_html, run_monitor
from sync.stages.plan import run_plan
from sync.stages.pull import run_pull
from sync.stages.push import run_push
from sync.stages.report import run_report
from sync.stages.score import run_score
from sync.stages.train import run_train
from sync.stages.vacuum import run_vacuum
from sync.status import read_status

__all__ = [
    "JobResult",
    "list_models",
    "monitoring_html",
    "promote_model",
    "read_job_histories",
    "read_status",
    "record_skipped",
    "rollback_model",
    "run_doctor",
    "run_fresh",
    "run_impact",
    "run_import",
    "run_job",
    "run_monitor",
    "run_plan",
    "run_pull",
    "run_push",
    "run_report",
    "run_retry",
    "run_score",
    "run_segment_import",
    "run_setup",
    "run_sync",
    "run_train",
    "run_vacuum",
    "settle_service_alerts",
    "show_model",
]


def run_sync(
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
    client = SalesforceClient(salesforce_settings(settings))
    jobs: dict[str, JobResult] = {}
    try:
        with (
            open_store(settings, "sync", should_stop=should_stop, reporter=reporter) as store,
            recorded(store, "sync", client.counter) as result,
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
                check_stop(should_stop, "sync", "before training")
                jobs[f"train:{name}"] = run_train(settings, prediction=name, reporter=reporter)
            check_stop(should_stop, "sync", "before scoring")
            jobs["score"] = run_score(settings, reporter=reporter)
            check_stop(should_stop, "sync", "before pushing")
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
    if "segment" in jobs["push"].counts:
        result.counts["segment_written"] = sum(
            p["written"] for p in jobs["push"].counts["segment"].values()
        )
    for name, job in jobs.items():
        if name.startswith("train:"):
            result.artifacts.setdefault("holdout", {}).update(job.artifacts.get("holdout", {}))
            result.counts.setdefault("models", {}).update(job.counts["predictions"])


def run_job(
    settings: Settings,
    job: str,
    *,
    reporter: Reporter = SILENT,
    should_stop: StopCheck | None = None,
    prediction: str | None = None,
    sweep: bool = False,
    retier: bool = False,
) -> JobResult:
    """Run a job by name and raise or clear the alerts its outcome settles.

    Args:
        settings: configuration.
        job: ``pull``, ``score``, ``push``, ``sync``, ``train``, ``monitor``, ``fresh`` or
            ``vacuum``.
        reporter: progress.
        should_stop: cooperative stop (pull, push and sync check it between pages and batches).
        prediction: ``train`` only this prediction.
        sweep: ``pull`` also sweeps deletions purged from the recycle bin (see :func:`run_pull`).
        retier: ``score`` sets capacity-based tier cut-offs again (see :func:`run_score`).

    Returns:
        The job's result.

    Raises:
        ConfigError: no such job.
        Busy: another run held the store lock for longer than ``schedule.lock_wait_seconds``.
        LeadscoreError: the job failed (recorded in the run log, alerts evaluated).
    """
    runners: dict[str, Callable[[], JobResult]] = {
        "pull": lambda: run_pull(settings, reporter=reporter, should_stop=should_stop, sweep=sweep),
        "score": lambda: run_score(settings, reporter=reporter, retier=retier),
        "push": lambda: run_push(settings, reporter=reporter, should_stop=should_stop),
        "sync": lambda: run_sync(settings, reporter=reporter, should_stop=should_stop),
        "train": lambda: run_train(settings, prediction=prediction, reporter=reporter),
        "monitor": lambda: run_monitor(settings, reporter=reporter),
        "fresh": lambda: run_fresh(settings, reporter=reporter),
        "vacuum": lambda: run_vacuum(settings, reporter=reporter),
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
    conditions = (
        [*monitor_conditions(result.counts, settings), *lift_conditions(result.counts, settings)]
        if job == "monitor"
        else []
    )
    settle_alerts(settings, job, result.status, result.counts, None, extra=conditions)
    return result
