"""What ``leadscore serve`` knows about itself, and the HTTP endpoint that tells it.

- :class:`ServiceState`: the last run of each job, counters, drift, what is running and what is
  overdue; updated by the scheduler, read by the endpoint (thread-safe, in memory, seeded from the
  run log at start).
- :func:`overdue_jobs`: the pure rule for a missed schedule.
- ``GET /healthz``: 200 ``{"status": "ok"}`` when no job's last run failed and none is overdue,
  else 503 with the reasons.
- ``GET /metrics``: Prometheus text format (version 0.0.4).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from sync.config import ScheduleSettings

if TYPE_CHECKING:  # the scoring endpoint loads pandas and CatBoost; `status` needs neither
    from sync.score_api import Scorer

log = logging.getLogger("leadscore.serve")


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def overdue_jobs(
    schedule: ScheduleSettings,
    last_active: dict[str, datetime],
    *,
    since: datetime,
    running: set[str],
    now: datetime,
) -> dict[str, datetime]:
    """Jobs that should have started by now and did not.

    A job is due at its first scheduled time after it was last active (started or finished) or,
    if later, after the service started. It is overdue (missed) when that time is more than
    ``misfire_grace_seconds`` ago and it is not running. Skipped runs are not activity: a skipped
    run is a missed run.

    Args:
        schedule: the ``[schedule]`` settings.
        last_active: job -> last start or finish of a run that actually ran.
        since: when the service started.
        running: jobs running (or queued) now.
        now: the current time.

    Returns:
        Job -> the time it was due, for the overdue ones.
    """
    now = _aware(now)
    grace = timedelta(seconds=schedule.misfire_grace_seconds)
    out: dict[str, datetime] = {}
    for job, entry in schedule.jobs().items():
        if job in running:
            continue
        ref = max(_aware(last_active.get(job, since)), _aware(since))
        interval = entry.interval_seconds
        if interval is not None:
            due: datetime | None = ref + timedelta(seconds=interval)
        else:
            due = schedule.trigger(job).get_next_fire_time(None, ref.astimezone(schedule.zone))
        if due is not None and due + grace < now:
            out[job] = due.astimezone(UTC)
    return out


@dataclass
class JobState:
    """The scheduler's view of one job.

    Attributes:
        last_status: status of the last run (``ok``, ``partial``, ``failed``, ``skipped``).
        last_started: start of the last run that ran.
        last_finished: its end.
        last_error: its error line.
        last_seconds: its duration.
        last_success: end of the last ``ok`` run.
        next_run: next scheduled time.
        overdue_since: when it was due, if it is overdue.
    """

    last_status: str | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_error: str | None = None
    last_seconds: float | None = None
    last_success: datetime | None = None
    next_run: datetime | None = None
    overdue_since: datetime | None = None


def _rows(job: str, counts: dict[str, Any]) -> dict[str, int]:
    """Rows a run moved, by kind, from its counts."""
    out = {}
    for kind in ("pulled", "scored", "written", "failed"):
        value = counts.get(kind)
        if isinstance(value, int) and not isinstance(value, bool):
            out[kind] = value
    return out


@dataclass
class ServiceState:
    """Thread-safe state of a running service.

    Attributes:
        started_at: when the service started.
        jobs: job -> its state.
        running: jobs running or queued now.
        runs: (job, status) -> runs since start.
        rows: (job, kind) -> rows since start (pulled, scored, written, failed).
        api_calls: job -> API calls since start.
        durations: job -> (sum of seconds, count) since start.
        drift: (prediction, measure) -> PSI from the last monitor run.
        impact: (prediction, measure) -> adoption and realized-value headline figures from the
            last monitor run (``sync.impact.headline``).
    """

    started_at: datetime
    jobs: dict[str, JobState] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    api_calls: dict[str, int] = field(default_factory=dict)
    durations: dict[str, tuple[float, int]] = field(default_factory=dict)
    drift: dict[tuple[str, str], float] = field(default_factory=dict)
    impact: dict[tuple[str, str], float] = field(default_factory=dict)
    fresh_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    fresh_leads: int = 0
    score_requests: dict[int, int] = field(default_factory=dict)
    score_seconds: Histogram = field(default_factory=lambda: Histogram(REQUEST_BUCKETS))
    cdc_events: dict[str, int] = field(default_factory=dict)
    cdc_lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def change_events(self, outcomes: dict[str, int], lags: list[float]) -> None:
        """Count change events the cdc trigger handled (``fresh.trigger = "cdc"``).

        Args:
            outcomes: events by outcome (``scored``, ``ignored_fields``, ``gap``, ...).
            lags: per event, seconds from its commit in Salesforce to its arrival here.
        """
        with self._lock:
            for outcome, count in outcomes.items():
                self.cdc_events[outcome] = self.cdc_events.get(outcome, 0) + count
            for lag in lags:
                self.cdc_lag.observe(lag)

    def scored(self, status: int, seconds: float) -> None:
        """Count one ``/v1/score`` request.

        Args:
            status: HTTP status answered.
            seconds: time to answer.
        """
        with self._lock:
            self.score_requests[status] = self.score_requests.get(status, 0) + 1
            if status == 200:
                self.score_seconds.observe(seconds)

    def job(self, name: str) -> JobState:
        """The state of a job (created on first use)."""
        return self.jobs.setdefault(name, JobState())

    def seed(self, name: str, last_run: dict[str, Any], last_ok_at: datetime | None) -> None:
        """Load a job's last run from the run log (at start).

        Args:
            name: job name.
            last_run: its newest run-log row.
            last_ok_at: end of its newest ``ok`` run.
        """
        with self._lock:
            state = self.job(name)
            state.last_status = last_run["status"]
            state.last_started = last_run["started_at"] and _aware(last_run["started_at"])
            state.last_finished = last_run["finished_at"] and _aware(last_run["finished_at"])
            state.last_error = last_run["error"]
            state.last_success = last_ok_at and _aware(last_ok_at)

    def begin(self, name: str) -> None:
        """Mark a job as queued or running."""
        with self._lock:
            self.running.add(name)

    def finish(
        self,
        name: str,
        *,
        status: str,
        started: datetime,
        finished: datetime,
        counts: dict[str, Any] | None = None,
        api_calls: int = 0,
        error: str | None = None,
    ) -> None:
        """Record a run that ran.

        Args:
            name: job name.
            status: its status.
            started: start time (aware).
            finished: end time (aware).
            counts: its counts.
            api_calls: API calls it made.
            error: its error line.
        """
        with self._lock:
            self.running.discard(name)
            state = self.job(name)
            state.last_status, state.last_error = status, error
            state.last_started, state.last_finished = started, finished
            state.last_seconds = (finished - started).total_seconds()
            state.overdue_since = None
            if status == "ok":
                state.last_success = finished
            self.runs[(name, status)] = self.runs.get((name, status), 0) + 1
            for kind, n in _rows(name, counts or {}).items():
                self.rows[(name, kind)] = self.rows.get((name, kind), 0) + n
            self.api_calls[name] = self.api_calls.get(name, 0) + api_calls
            total, count = self.durations.get(name, (0.0, 0))
            self.durations[name] = (total + state.last_seconds, count + 1)
            if name == "fresh":
                self.fresh_leads += int((counts or {}).get("leads", 0))
                for seconds in (counts or {}).get("latencies", []):
                    self.fresh_latency.observe(float(seconds))
            if name == "monitor":
                for prediction, figures in (counts or {}).get("predictions", {}).items():
                    drift = figures.get("drift") or {}
                    if "score_psi" in drift:
                        self.drift[(prediction, "score")] = float(drift["score_psi"])
                        self.drift[(prediction, "max_feature")] = float(drift["max_feature_psi"])
                    # The last run's figures replace the previous ones: a figure it could not
                    # measure is dropped, not kept from an earlier run.
                    for key in [k for k in self.impact if k[0] == prediction]:
                        del self.impact[key]
                    for measure, value in (figures.get("impact") or {}).items():
                        if isinstance(value, int | float) and not isinstance(value, bool):
                            self.impact[(prediction, measure)] = float(value)

    def skipped(self, name: str, reason: str) -> None:
        """Record a run that did not run (missed, overlapping, store busy).

        Args:
            name: job name.
            reason: why.
        """
        with self._lock:
            self.running.discard(name)
            self.runs[(name, "skipped")] = self.runs.get((name, "skipped"), 0) + 1
            state = self.job(name)
            state.last_status, state.last_error = "skipped", reason

    def set_schedule(
        self, next_runs: dict[str, datetime | None], overdue: dict[str, datetime]
    ) -> None:
        """Update next run times and overdue jobs (from the watchdog).

        Args:
            next_runs: job -> next scheduled time.
            overdue: job -> when it was due, for overdue jobs.
        """
        with self._lock:
            for name, when in next_runs.items():
                self.job(name).next_run = when
            for name, state in self.jobs.items():
                state.overdue_since = overdue.get(name)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The health verdict.

        Returns:
            (healthy, body): unhealthy when a job's last run failed or a job is overdue; partial
            and skipped runs are reported as warnings.
        """
        with self._lock:
            reasons, warnings, jobs = [], [], {}
            for name, s in sorted(self.jobs.items()):
                if s.last_status == "failed":
                    reasons.append(f"{name}: last run failed: {s.last_error}")
                elif s.last_status in ("partial", "stopped", "skipped"):
                    warnings.append(f"{name}: last run {s.last_status}: {s.last_error or ''}")
                if s.overdue_since is not None:
                    reasons.append(
                        f"{name}: overdue, was due at {s.overdue_since:%Y-%m-%d %H:%M:%S} UTC"
                    )
                jobs[name] = {
                    "last_status": s.last_status,
                    "last_started": s.last_started,
                    "last_finished": s.last_finished,
                    "last_success": s.last_success,
                    "next_run": s.next_run,
                    "overdue_since": s.overdue_since,
                    "running": name in self.running,
                }
            body = {
                "status": "unhealthy" if reasons else "ok",
                "reasons": reasons,
                "warnings": warnings,
                "jobs": jobs,
                "started_at": self.started_at,
            }
        return not reasons, body

    def metrics(self) -> str:
        """Prometheus text exposition.

        Returns:
            The metrics page.
        """
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {_number(value)}")

        with self._lock:
            family("leadscore_up", "gauge", "1 while leadscore serve runs.", [("", 1)])
            family(
                "leadscore_start_time_seconds",
                "gauge",
                "When the service started (Unix time).",
                [("", self.started_at.timestamp())],
            )
            family(
                "leadscore_runs_total",
                "counter",
                "Job runs since the service started, by job and status.",
                [(_labels(job=j, status=s), n) for (j, s), n in sorted(self.runs.items())],
            )
            family(
                "leadscore_rows_total",
                "counter",
                "Rows moved since start: pulled, scored, written (confirmed), failed (rejected).",
                [(_labels(job=j, kind=k), n) for (j, k), n in sorted(self.rows.items())],
            )
            family(
                "leadscore_scores_written_total",
                "counter",
                "Records whose scores Salesforce confirmed, since start.",
                [("", sum(n for (_, k), n in self.rows.items() if k == "written"))],
            )
            family(
                "leadscore_api_calls_total",
                "counter",
                "Calls against the Salesforce API allowance since start, by job.",
                [(_labels(job=j), n) for j, n in sorted(self.api_calls.items())],
            )
            family(
                "leadscore_run_duration_seconds",
                "summary",
                "Duration of job runs since start.",
                [
                    sample
                    for j, (total, count) in sorted(self.durations.items())
                    for sample in (
                        (_labels(job=j, suffix="_sum"), total),
                        (_labels(job=j, suffix="_count"), count),
                    )
                ],
            )
            family(
                "leadscore_last_run_timestamp_seconds",
                "gauge",
                "End of each job's last run (Unix time).",
                [
                    (_labels(job=j), s.last_finished.timestamp())
                    for j, s in sorted(self.jobs.items())
                    if s.last_finished
                ],
            )
            family(
                "leadscore_last_success_timestamp_seconds",
                "gauge",
                "End of each job's last ok run (Unix time).",
                [
                    (_labels(job=j), s.last_success.timestamp())
                    for j, s in sorted(self.jobs.items())
                    if s.last_success
                ],
            )
            family(
                "leadscore_next_run_timestamp_seconds",
                "gauge",
                "Next scheduled run of each job (Unix time).",
                [
                    (_labels(job=j), s.next_run.timestamp())
                    for j, s in sorted(self.jobs.items())
                    if s.next_run
                ],
            )
            family(
                "leadscore_job_running",
                "gauge",
                "1 while a job runs or waits for the worker.",
                [(_labels(job=j), int(j in self.running)) for j in sorted(self.jobs)],
            )
            family(
                "leadscore_job_overdue",
                "gauge",
                "1 when a job missed its schedule.",
                [(_labels(job=j), int(s.overdue_since is not None)) for j, s in self.jobs.items()],
            )
            family(
                "leadscore_last_run_failed",
                "gauge",
                "1 when a job's last run failed.",
                [
                    (_labels(job=j), int(s.last_status == "failed"))
                    for j, s in sorted(self.jobs.items())
                ],
            )
            family(
                "leadscore_drift_psi",
                "gauge",
                "Population stability index from the last monitor run (score, or largest feature).",
                [(_labels(prediction=p, measure=m), v) for (p, m), v in sorted(self.drift.items())],
            )
            family(
                "leadscore_impact",
                "gauge",
                "Score adoption and realized value from the last monitor run: adoption_index, "
                "out_of_rank_share, top_tier_lift(_low), top_tier_within_24h, "
                "top_tier_conversion, value_ratio.",
                [
                    (_labels(prediction=p, measure=m), v)
                    for (p, m), v in sorted(self.impact.items())
                ],
            )
            lines.extend(
                self.fresh_latency.exposition(
                    "leadscore_fresh_latency_seconds",
                    "Lead creation to confirmed score write, for leads the fresh job wrote first.",
                )
            )
            family(
                "leadscore_fresh_leads_total",
                "counter",
                "Leads the fresh job was told about (changed, created) since start.",
                [("", self.fresh_leads)],
            )
            family(
                "leadscore_score_requests_total",
                "counter",
                "POST /v1/score requests by HTTP status.",
                [(_labels(status=str(k)), v) for k, v in sorted(self.score_requests.items())],
            )
            lines.extend(
                self.score_seconds.exposition(
                    "leadscore_score_request_seconds", "Time to answer a good POST /v1/score."
                )
            )
            family(
                "leadscore_cdc_events_total",
                "counter",
                "Change events the fresh job's cdc trigger received and handled, by outcome.",
                [(_labels(outcome=k), v) for k, v in sorted(self.cdc_events.items())],
            )
            lines.extend(
                self.cdc_lag.exposition(
                    "leadscore_cdc_event_lag_seconds",
                    "Change event commit in Salesforce to its arrival in serve (lagging events).",
                )
            )
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            [("", resident_memory_bytes())],
        )
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 900.0)
REQUEST_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class Histogram:
    """A Prometheus histogram: cumulative bucket counts, sum and count (caller holds the lock)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        """Add one observation.

        Args:
            value: the observed value.
        """
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def exposition(self, name: str, help_text: str) -> list[str]:
        """The histogram's lines in the text format.

        Args:
            name: metric name.
            help_text: its help.

        Returns:
            Lines.
        """
        counts = self.counts or [0] * len(self.bounds)
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, n in zip(self.bounds, counts, strict=True):
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {n}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {_number(self.total)}")
        lines.append(f"{name}_count {self.count}")
        return lines


def _labels(suffix: str = "", **labels: str) -> str:
    """``{job="sync",status="ok"}``; a suffix is prepended for summaries (``_sum{...}``)."""
    escaped = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return f"{suffix}{{{escaped}}}" if escaped else suffix


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def resident_memory_bytes(pid: int | None = None) -> int:
    """Resident set size of a process, from ``/proc`` (0 where there is none).

    Args:
        pid: process id (default: this process).

    Returns:
        Bytes.
    """
    try:
        with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class HealthServer:
    """``/healthz`` and ``/metrics`` over HTTP, served from a daemon thread."""

    def __init__(
        self,
        state: ServiceState,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scorer: Scorer | None = None,
        token: str | None = None,
        max_body_bytes: int = 1_000_000,
    ) -> None:
        """Bind the server (port 0: any free port).

        Args:
            state: what to report.
            host: bind address.
            port: TCP port.
            scorer: the models behind ``POST /v1/score`` (None: the endpoint answers 404).
            token: the bearer token ``/v1/score`` requires (None: it answers 503).
            max_body_bytes: larger ``/v1/score`` bodies get a 413 unread.

        Raises:
            OSError: the address cannot be bound (port in use).
        """
        outer = state

        class Handler(BaseHTTPRequestHandler):
            server_version = "leadscore"
            # keep-alive: a client scoring record after record reuses its connection; with it,
            # Nagle's algorithm would hold each answer's body until the client's delayed ACK
            # (about 40 ms per request)
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                started = time.perf_counter()
                status, answer = self._post()
                from sync.score_api import write_answer

                self._send(status, write_answer(answer), "application/json")
                outer.scored(status, time.perf_counter() - started)

            def _post(self) -> tuple[int, dict[str, Any]]:
                """The status and answer of a POST; never raises."""
                if self.path.split("?", 1)[0] != "/v1/score" or scorer is None:
                    self._drain()
                    return 404, {"error": "not found; POST /v1/score"}
                if token is None:
                    self._drain()
                    return 503, {"error": "no fresh.api_token configured: scoring is disabled"}
                from sync.score_api import authorized

                if not authorized(self.headers.get("Authorization"), token):
                    self._drain()
                    return 401, {"error": "missing or wrong bearer token"}
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self.close_connection = True
                    return 411, {"error": "a Content-Length header is required"}
                if length > max_body_bytes or length < 0:
                    self.close_connection = True  # the body is not read
                    return 413, {"error": f"the body is over {max_body_bytes} bytes"}
                from sync.score_api import read_body

                try:
                    body = read_body(self.rfile.read(length) or b"null")
                except (ValueError, UnicodeDecodeError) as exc:
                    return 400, {"error": f"the body is not JSON: {exc}"}
                try:
                    return scorer.score(body)
                except Exception as exc:  # nothing a client sends may take serve down
                    log.exception("/v1/score failed")
                    return 422, {"error": f"could not score this body ({type(exc).__name__})"}

            def _drain(self) -> None:
                """Read (and drop) a small body so the connection stays usable, else close it."""
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if 0 <= length <= max_body_bytes:
                    self.rfile.read(length)
                else:
                    self.close_connection = True

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    healthy, body = outer.health()
                    self._send(
                        200 if healthy else 503,
                        json.dumps(body, default=_json_default).encode(),
                        "application/json",
                    )
                elif path == "/metrics":
                    self._send(
                        200, outer.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
                    )
                else:
                    self._send(
                        404, b'{"error": "not found; try /healthz or /metrics"}', "application/json"
                    )

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet: probes hit this every few seconds."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="leadscore-health", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Serve in the background.

        Returns:
            The server.
        """
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    return str(value)
