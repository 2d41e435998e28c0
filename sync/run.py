"""How every job runs: its typed result, its run-log record, the store's run lock."""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.clock import to_naive_utc
from connector.errors import ConfigError, Interrupted, LeadscoreError
from connector.http import CallCounter
from connector.salesforce import (
    SalesforceSettings,
)
from connector.store import Store, out_of_space, utc_now
from connector.store.runs import (
    JobHistory,
    fail_abandoned_runs,
    job_histories,
    record_run,
)
from scoring.errors import ScoringError
from sync.config import Settings
from sync.lock import LockHolder, RunLock, lock_path
from sync.logs import run_context
from sync.progress import Reporter, SilentReporter
from sync.results import Summary, summarise

SILENT = SilentReporter()


log = logging.getLogger("leadscore.jobs")


# Checked between pages and batches: True asks the running job to stop at the next checkpoint.
StopCheck = Callable[[], bool]


@dataclass
class JobResult:
    """The outcome of one job run.

    Attributes:
        job: job name.
        status: ``ok``, ``partial`` (some records rejected), ``stopped`` (on request, at a
            checkpoint), ``failed`` or ``skipped``.
        counts: job-specific counts (JSON-serialisable), as the run log records them; read
            them typed through :attr:`summary`.
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

    @property
    def summary(self) -> Summary | None:
        """The counts as the job's type (:mod:`sync.results`), or None for a job without one."""
        return summarise(self.job, self.counts)

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable part (the counts from the job's type, when it has one)."""
        summary = self.summary
        return {
            "job": self.job,
            "status": self.status,
            "counts": summary.to_json() if summary is not None else self.counts,
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
        }


@contextmanager
def recorded(store: Store, job: str, counter: CallCounter | None = None) -> Iterator[JobResult]:
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
            # A stop request ends the run at a checkpoint: what it did is committed (stopped;
            # `partial` is kept for runs whose records were rejected in part).
            result.status = "stopped" if isinstance(exc, Interrupted) else "failed"
            message = (
                str(exc)
                if isinstance(exc, LeadscoreError | ScoringError)
                else f"{type(exc).__name__}: {exc}"
            )
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            result.seconds = time.perf_counter() - started
            result.api_calls = (counter.api_calls - calls_before) if counter else 0
            try:
                store.finish_run(
                    result.run_id,
                    status=result.status,
                    counts=counts(),
                    api_calls=result.api_calls,
                    error=message,
                )
            except Exception as unrecorded:
                # A full disk or a database DuckDB invalidated after a fatal error: the run's
                # own error is the one to report; the next run closes this row as abandoned.
                log.warning("%s: could not record the run's end: %s", job, unrecorded)
            # INFO: the caller decides how loudly to report it (the CLI prints one line, the
            # scheduler logs an error).
            log.info(
                "%s %s after %.1f s: %s",
                job,
                result.status,
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
def open_store(
    settings: Settings,
    job: str,
    *,
    should_stop: StopCheck | None = None,
    reporter: Reporter = SILENT,
    wait_seconds: float | None = None,
    borrow: bool = False,
) -> Iterator[Store]:
    """Take the store's run lock for ``job``, then open the store.

    Only one process may write a DuckDB file, and two runs of a job must never overlap, so every
    job holds the lock (re-entrant: ``sync`` holds it around its pull, score and push). A run waits
    up to ``schedule.lock_wait_seconds`` for another to finish, then gives up with :class:`Busy`.
    ``borrow`` (the fresh job) borrows the lock from a long job of the same process at that job's
    next checkpoint instead of waiting for its end (:mod:`sync.lock`).
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
        borrow=borrow,
    )
    with lock:
        path = settings.store.path
        try:
            store = Store(path, memory_limit_mb=settings.store.memory_limit_mb)
        except Exception as exc:
            raise out_of_space(exc, path) or exc from None
        try:
            if lock.outermost:
                # Holding the lock, this process is the only one running jobs on the store: a
                # row still `running` belongs to a run that ended without recording its end
                # (killed, crashed, or a full disk that refused the last write).
                who = lock.took_over.describe() if lock.took_over else "an earlier run"
                abandoned = fail_abandoned_runs(
                    store,
                    f"abandoned: {who} ended without recording an outcome (killed, crashed or "
                    "out of disk space); committed pages and batches are kept",
                )
                if abandoned:
                    log.log(
                        logging.WARNING if lock.took_over else logging.INFO,
                        "marked %d abandoned run(s) as failed",
                        abandoned,
                    )
            yield store
        except Exception as exc:
            full = out_of_space(exc, path)
            if full is None:
                raise
            raise full from None
        finally:
            try:
                store.close()
            except Exception as exc:  # an invalidated database cannot checkpoint
                log.warning("closing the store %s: %s", path, exc)


BATCH_CACHE_MB = 64
"""DuckDB's memory cap while a job loops over batches of entities (:meth:`Store.bounded_cache`):
a batch's queries need well under it, and without it the block cache grows with the org."""


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
BATCH_MMAP_THRESHOLD = 1024 * 1024


def map_large_buffers() -> None:
    """Give every buffer over 1 MB its own mapping, returned to the OS when it is freed.

    glibc raises its mmap threshold (up to 32 MB) each time a mapped buffer is freed, so after
    the first batch a batch's arrays (features, leaf indexes, SHAP blocks) come from the heap,
    where they fragment and the peak creeps up batch after batch: score's grew by 100 MB over the
    20 batches of a 1M-lead org (``MALLOC_MMAP_THRESHOLD_`` documents the setting:
    https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html). A fixed
    threshold turns that off; the extra ``mmap`` calls cost 5-8 % of score's CPU. A no-op
    where glibc is not the C library.
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, BATCH_MMAP_THRESHOLD)


def release_memory() -> None:
    """Give freed memory back to the OS between batches (glibc keeps it otherwise).

    A batch's frames are freed when the next batch starts, but glibc keeps the freed pages in
    its arenas, fragmented, so the peak creeps up batch after batch; ``malloc_trim`` returns them.
    A no-op where glibc is not the C library.
    """
    import pyarrow  # imported by the batch jobs already; not at CLI start-up

    gc.collect()
    # Arrow's own allocator (mimalloc or jemalloc) holds the freed buffers of a batch's query
    # results the same way: https://arrow.apache.org/docs/python/generated/pyarrow.MemoryPool.html
    pyarrow.default_memory_pool().release_unused()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def check_stop(should_stop: StopCheck | None, job: str, where: str) -> None:
    """Raise :class:`Interrupted` at a checkpoint when a stop was requested."""
    if should_stop is not None and should_stop():
        raise Interrupted(
            f"{job}: stopped on request {where}; committed work is kept and the next run resumes"
        )


def salesforce_settings(settings: Settings) -> SalesforceSettings:
    """The ``[salesforce]`` settings, or a one-line error when the config file has none."""
    if settings.salesforce is None:
        raise ConfigError(
            "this configuration has no [salesforce] section",
            hint="add one (see config.example.toml) to pull from or push to Salesforce",
        )
    return settings.salesforce


def scoring_error(exc: ScoringError) -> LeadscoreError:
    """A scoring failure as the one-line error every job reports."""
    return LeadscoreError(str(exc))


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
    with open_store(settings, "serve") as store:
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
    with open_store(settings, "record skipped runs", wait_seconds=wait_seconds) as store:
        now = utc_now()
        for job, when, reason in skips:
            due = to_naive_utc(when)
            record_run(store, job, started_at=due, finished_at=now, status="skipped", error=reason)
