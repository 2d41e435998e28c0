"""``leadscore serve``: APScheduler wiring around the jobs in :mod:`sync.jobs`, and nothing else.

- One APScheduler job per ``[schedule]`` entry, on one worker thread: DuckDB lets one process write
  the store and the run lock serialises runs anyway, so a second worker would only wait.
- ``max_instances=1``: a firing while the previous run of the same job is still going is skipped
  (and recorded as skipped). ``coalesce=True`` with ``misfire_grace_time``: after the machine
  slept, overdue firings of a job collapse into one run; a firing later than the grace is skipped
  and reported as missed.
- A failing job is logged, recorded and alerted on; the scheduler goes on.
- A watchdog thread checks for missed schedules (alerts, ``/healthz``) and refreshes next run
  times.
- ``[fresh]``: a fresh cycle every ``fresh.every`` on its own thread (not the worker: a cycle must
  not queue behind a sync or train). It borrows the store from a running job at that job's next
  checkpoint, which the worker's ``should_stop`` check offers (``sync.lock.checkpoint``).
- :meth:`Service.request_stop` (SIGTERM/SIGINT) stops new runs and asks the running one to stop
  at its next checkpoint (page or batch); :meth:`Service.wait` returns once it has, or after
  ``serve.stop_timeout_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from connector.errors import Busy, ConfigError, Interrupted, LeadscoreError
from sync import jobs
from sync.alerts import Condition
from sync.config import Settings
from sync.health_server import HealthServer, ServiceState, overdue_jobs
from sync.lock import RunLock, checkpoint, lock_path
from sync.score_api import Scorer
from sync.stages.fresh import run_fresh

log = logging.getLogger("leadscore.serve")

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    """The real clock (aware UTC)."""
    return datetime.now(UTC)


@dataclass
class _Skip:
    job: str
    at: datetime
    reason: str


@dataclass
class Service:
    """The scheduled service.

    Attributes:
        settings: configuration.
        clock: the current time (aware); tests inject their own.
        watch_seconds: how often the watchdog checks for missed schedules.
        runner: runs one job by name (``sync.jobs.run_job`` in production).
    """

    settings: Settings
    clock: Clock = utc_clock
    watch_seconds: float = 15.0
    runner: Callable[..., jobs.JobResult] = jobs.run_job
    state: ServiceState = field(init=False)
    health_server: HealthServer | None = field(init=False, default=None)
    _scheduler: BackgroundScheduler | None = field(init=False, default=None)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _idle: threading.Event = field(init=False, default_factory=threading.Event)
    _serve_lock: RunLock | None = field(init=False, default=None)
    _skips: list[_Skip] = field(init=False, default_factory=list)
    _skips_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _watchdog: threading.Thread | None = field(init=False, default=None)
    _fresh: threading.Thread | None = field(init=False, default=None)
    _fresh_said: str | None = field(init=False, default=None)
    _cdc: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.state = ServiceState(started_at=self.clock())
        self._idle.set()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Service:
        """Check the setup, load the run history, start the scheduler, watchdog and endpoint.

        Returns:
            The service.

        Raises:
            ConfigError: nothing is scheduled, or the store directory is not writable, or the
                health port cannot be bound.
            Busy: another ``serve`` runs for the same store.
        """
        schedule = self.settings.schedule
        if not schedule.jobs():
            raise ConfigError(
                "nothing to serve: [schedule] has no jobs",
                hint='add e.g. sync = { every = "15m" } under [schedule] (see config.example.toml)',
            )
        store = self.settings.store.path
        self._serve_lock = RunLock(
            lock_path(store, "serve"),
            "serve",
            busy_message=f"another leadscore serve is already running for {store}",
        ).acquire()
        try:
            self._load_history()
            self._start_health()
            self._start_scheduler()
        except BaseException:
            self._release()
            raise
        self._watchdog = threading.Thread(
            target=self._watch, name="leadscore-watchdog", daemon=True
        )
        self._watchdog.start()
        if self.settings.fresh is not None:
            self._fresh = threading.Thread(
                target=self._fresh_loop, name="leadscore-fresh", daemon=True
            )
            self._fresh.start()
            log.info("fresh cycles every %s", self.settings.fresh.every)
        return self

    def _load_history(self) -> None:
        """Seed the state from the run log (under the run lock: it also checks the store dir)."""
        for name, history in jobs.read_job_histories(self.settings).items():
            if history.last_run is not None:
                self.state.seed(name, history.last_run, history.last_ok_at)

    def _start_health(self) -> None:
        serve = self.settings.serve
        if serve.health_port is None:
            return
        try:
            fresh = self.settings.fresh
            token = fresh.api_token.get_secret_value() if fresh and fresh.api_token else None
            self.health_server = HealthServer(
                self.state,
                serve.health_host,
                serve.health_port,
                scorer=Scorer(self.settings),
                token=token,
                max_body_bytes=fresh.max_body_bytes if fresh else 1_000_000,
            ).start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the health endpoint on {serve.health_host}:{serve.health_port} "
                f"({exc.strerror or exc})",
                hint="pick a free serve.health_port, or leave it out to disable the endpoint",
            ) from None
        log.info(
            "health endpoint on http://%s:%d/healthz and /metrics (POST /v1/score)",
            serve.health_host,
            self.health_server.port,
        )

    def _start_scheduler(self) -> None:
        schedule = self.settings.schedule
        scheduler = BackgroundScheduler(
            timezone=schedule.zone,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": schedule.misfire_grace_seconds,
            },
        )
        for name in schedule.jobs():
            scheduler.add_job(
                self._run, trigger=schedule.trigger(name), args=[name], id=name, name=name
            )
        scheduler.add_listener(self._on_not_run, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        self._scheduler = scheduler
        self._refresh_schedule()
        for name, entry in schedule.jobs().items():
            nxt = self.state.job(name).next_run
            log.info(
                "scheduled %s: %s, next at %s",
                name,
                entry.describe(),
                f"{nxt:%Y-%m-%d %H:%M:%S %Z}" if nxt else "never",
            )

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop scheduling new runs; the running one stops at its next checkpoint.

        Args:
            reason: for the log (``SIGTERM``).
        """
        if self._stop.is_set():
            return
        running = ", ".join(sorted(self.state.running)) or "nothing"
        log.info(
            "%s: stopping (running: %s; waiting up to %g s for a checkpoint)",
            reason,
            running,
            self.settings.serve.stop_timeout_seconds,
        )
        self._stop.set()
        if self._cdc is not None:
            self._cdc.close()  # ends the subscription's wait for the next event
        if self._scheduler is not None:
            self._scheduler.pause()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested, then until the running job has stopped.

        Args:
            timeout: give up waiting for the stop request after this many seconds (tests).

        Returns:
            True when the service stopped cleanly; False when the running job did not reach a
            checkpoint within ``serve.stop_timeout_seconds`` (the caller should exit anyway:
            committed work is safe and the next run resumes).
        """
        if not self._stop.wait(timeout):
            return True
        clean = self._idle.wait(self.settings.serve.stop_timeout_seconds)
        if self._fresh is not None:
            self._fresh.join(self.settings.serve.stop_timeout_seconds)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if clean:
            self._flush_skips(wait_seconds=1.0)
        if self.health_server is not None:
            self.health_server.stop()
        self._release()
        if not clean:
            log.error(
                "%s did not reach a checkpoint within %g s; exiting anyway (every committed page "
                "and batch is kept; the next run resumes)",
                ", ".join(sorted(self.state.running)),
                self.settings.serve.stop_timeout_seconds,
            )
        return clean

    def _release(self) -> None:
        if self._serve_lock is not None:
            self._serve_lock.release()
            self._serve_lock = None

    @property
    def scheduler(self) -> BackgroundScheduler | None:
        """The APScheduler instance (None before :meth:`start`)."""
        return self._scheduler

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    # -- runs --------------------------------------------------------------------------------------

    def _run(self, name: str) -> None:
        """Run one scheduled job on the worker thread; never raises into APScheduler."""
        if self._stop.is_set():
            return
        self._idle.clear()
        self.state.begin(name)
        started = self.clock()
        try:
            self._flush_skips()
            result = self.runner(self.settings, name, should_stop=self._checkpoint)
        except Busy as exc:
            self._skip(name, started, str(exc))
        except Interrupted as exc:
            log.warning("%s", exc)
            self.state.finish(
                name, status="stopped", started=started, finished=self.clock(), error=str(exc)
            )
        except LeadscoreError as exc:
            log.error("%s failed: %s", name, exc)
            self.state.finish(
                name, status="failed", started=started, finished=self.clock(), error=str(exc)
            )
        except Exception as exc:
            log.exception("%s failed unexpectedly", name)
            self.state.finish(
                name,
                status="failed",
                started=started,
                finished=self.clock(),
                error=f"{type(exc).__name__}: {exc}",
            )
        else:
            self.state.finish(
                name,
                status=result.status,
                started=started,
                finished=self.clock(),
                counts=result.counts,
                api_calls=result.api_calls,
            )
        finally:
            self._refresh_schedule()
            self._idle.set()

    def _checkpoint(self) -> bool:
        """A running job's checkpoint: lend the store to a waiting fresh cycle; stop requested?"""
        checkpoint(lock_path(self.settings.store.path))
        return self._stop.is_set()

    def _fresh_loop(self) -> None:
        """Fresh cycles on their own thread, every ``fresh.every`` from the start of the last."""
        assert self.settings.fresh is not None
        interval = self.settings.fresh.interval_seconds
        client = None
        try:
            from connector.salesforce import SalesforceClient
            from sync.run import salesforce_settings

            client = SalesforceClient(salesforce_settings(self.settings))
            if self.settings.fresh.trigger == "cdc":
                self._follow_changes(client)
                return
            wait = 0.0
            while not self._stop.wait(wait):
                started = time.monotonic()
                self.run_fresh_cycle(client)
                wait = max(0.0, interval - (time.monotonic() - started))
        except Exception:  # the loop must not die silently
            log.exception("fresh cycles stopped")
        finally:
            if client is not None:
                client.close()

    def _follow_changes(self, client: Any) -> None:
        """``fresh.trigger = "cdc"``: follow change events until stopped (sync/stages/fresh_cdc)."""
        from sync.stages.fresh_cdc import ALERT_KEY, CdcTrigger

        def alert(active: bool, detail: str) -> None:
            condition = Condition(
                ALERT_KEY,
                active,
                "change data capture fell back to polling",
                detail,
            )
            try:
                jobs.settle_service_alerts(self.settings, [condition])
            except Exception as exc:  # an alert problem must not stop the trigger
                log.warning("fresh: the cdc alert was not evaluated: %s", exc)

        trigger = CdcTrigger(
            self.settings,
            client,
            lambda batch: self.run_fresh_cycle(client, batch=batch, catch_up=batch is None),
            alert,
            self._stop,
            observe=self.state.change_events,
        )
        self._cdc = trigger
        log.info("fresh follows change events (%s)", "/data/LeadChangeEvent")
        trigger.run()

    def run_fresh_cycle(
        self, client: Any = None, *, batch: Any = None, catch_up: bool = False
    ) -> jobs.JobResult | None:
        """One fresh cycle, recorded in the state like a scheduled run; never raises.

        Args:
            client: a connected Salesforce client kept between cycles.
            batch: the leads of a group of change events (cdc trigger); None polls.
            catch_up: poll although the trigger is ``cdc`` (its catch-up).

        Returns:
            The cycle's result, or None when it was skipped or failed.
        """
        started = self.clock()
        self.state.begin("fresh")
        try:
            result = run_fresh(self.settings, client=client, batch=batch, catch_up=catch_up)
        except Busy as exc:
            log.warning("fresh skipped: %s", exc)
            self.state.skipped("fresh", str(exc))
            return None
        except LeadscoreError as exc:
            self._say_once(f"fresh failed: {exc}", logging.ERROR)
            self.state.finish(
                "fresh", status="failed", started=started, finished=self.clock(), error=str(exc)
            )
            return None
        except Exception as exc:
            log.exception("fresh failed unexpectedly")
            self.state.finish(
                "fresh",
                status="failed",
                started=started,
                finished=self.clock(),
                error=f"{type(exc).__name__}: {exc}",
            )
            return None
        skipped = [
            f"{name}: {p['skipped']}"
            for name, p in result.counts.get("predictions", {}).items()
            if "skipped" in p
        ]
        if skipped:
            self._say_once("fresh waits: " + "; ".join(skipped), logging.WARNING)
        else:
            self._fresh_said = None
        self.state.finish(
            "fresh",
            status=result.status,
            started=started,
            finished=self.clock(),
            counts=result.counts,
            api_calls=result.api_calls,
        )
        return result

    def _say_once(self, message: str, level: int) -> None:
        """Log a message once until it changes (a missing champion is said once, not every 30 s)."""
        if message != self._fresh_said:
            log.log(level, "%s", message)
            self._fresh_said = message

    def _on_not_run(self, event: JobExecutionEvent | JobSubmissionEvent) -> None:
        """A firing that did not run: too late (missed) or the previous run was still going."""
        name = event.job_id
        # APScheduler 3.11 reports a miss with one time (JobExecutionEvent) and an overlap with
        # the list of coalesced times (JobSubmissionEvent.scheduled_run_times): the newest counts.
        times = getattr(event, "scheduled_run_times", None)
        when = max(times) if times else event.scheduled_run_time
        if event.code == EVENT_JOB_MISSED:
            late = (self.clock() - when).total_seconds()
            reason = (
                f"missed: due at {when:%Y-%m-%d %H:%M:%S %Z}, {late:.0f} s late (more than "
                f"schedule.misfire_grace_seconds = {self.settings.schedule.misfire_grace_seconds})"
            )
        else:
            reason = "skipped: the previous run of this job was still going"
        self._skip(name, when, reason)

    def _skip(self, name: str, when: datetime, reason: str) -> None:
        log.warning("%s %s", name, reason)
        self.state.skipped(name, reason)
        with self._skips_lock:
            self._skips.append(_Skip(name, when, reason))

    def _flush_skips(self, wait_seconds: float | None = None) -> None:
        """Write skipped runs to the run log (from the worker, which may take the lock)."""
        with self._skips_lock:
            pending, self._skips = self._skips, []
        if not pending:
            return
        try:
            jobs.record_skipped(
                self.settings,
                [(s.job, s.at, s.reason) for s in pending],
                wait_seconds=wait_seconds,
            )
        except LeadscoreError as exc:
            log.warning("skipped runs not yet recorded in the run log: %s", exc)
            with self._skips_lock:
                self._skips = pending + self._skips

    # -- watchdog ----------------------------------------------------------------------------------

    def _refresh_schedule(self) -> dict[str, datetime]:
        """Update next run times and overdue jobs; return the overdue ones."""
        next_runs: dict[str, datetime | None] = {}
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                next_runs[job.id] = job.next_run_time
        last_active = {
            name: max(t for t in (s.last_started, s.last_finished) if t)
            for name, s in self.state.jobs.items()
            if s.last_started or s.last_finished
        }
        overdue = overdue_jobs(
            self.settings.schedule,
            last_active,
            since=self.state.started_at,
            running=set(self.state.running),
            now=self.clock(),
        )
        self.state.set_schedule(next_runs, overdue)
        return overdue

    def check(self) -> list[Condition]:
        """One watchdog pass: refresh the schedule and settle missed-schedule alerts.

        Returns:
            The missed-schedule conditions that were evaluated.
        """
        overdue = self._refresh_schedule()
        conditions = [
            Condition(
                f"missed:{name}",
                name in overdue,
                f"{name} missed its schedule",
                (
                    f"it was due at {overdue[name]:%Y-%m-%d %H:%M:%S} UTC and has not started "
                    f"({self.settings.schedule.jobs()[name].describe()}); check that leadscore "
                    "serve is running and not blocked by a long run"
                )
                if name in overdue
                else f"{name} runs on schedule again",
            )
            for name in self.settings.schedule.jobs()
        ]
        jobs.settle_service_alerts(self.settings, conditions)
        return conditions

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_seconds):
            try:
                self.check()
            except Exception:  # the watchdog must outlive any single failure
                log.exception("watchdog pass failed")


def describe_schedule(settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """The configured jobs with their schedules and next times (for the CLI).

    Args:
        settings: configuration.
        now: reference time (aware; default now).

    Returns:
        One dict per job: ``job, schedule, next_run``.
    """
    now = now or utc_clock()
    out = []
    for name, entry in settings.schedule.jobs().items():
        trigger = settings.schedule.trigger(name)
        out.append(
            {
                "job": name,
                "schedule": entry.describe(),
                "next_run": trigger.get_next_fire_time(None, now),
            }
        )
    return out


def sleep_until_stopped(service: Service, poll: float = 0.5) -> None:
    """Block the main thread until the service is asked to stop (signals arrive in between).

    Args:
        service: the service.
        poll: seconds between checks.
    """
    while not service.stopping:
        time.sleep(poll)
