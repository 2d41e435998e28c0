"""Scheduling: config validation, missed schedules with an injected clock, coalescing after a
sleep, skipped runs, alerts once per state change, and the health endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.errors import Busy, ConfigError
from connector.store import Store
from sync.config import cron_trigger, load_settings
from sync.health_server import HealthServer, ServiceState, overdue_jobs
from sync.jobs import run_job
from sync.scheduler import Service

from .conftest import write_config

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)  # a Monday


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings_with(tmp_path, schedule: str, extra: str = "", secrets: str = ""):
    return load_settings(
        write_config(tmp_path, f"\n[schedule]\n{schedule}\n{extra}", secrets), environ={}
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('sync = { cron = "61 * * * *" }', "schedule.sync.cron: not a valid cron expression"),
        ('sync = { cron = "* * *" }', "needs 5 fields"),
        ('timezone = "Europe/Pariss"', "unknown time zone (did you mean 'Europe/Paris'?)"),
        ('synk = { every = "10s" }', "'synk' is not a job (did you mean 'sync'?)"),
        ('sync = { every = "10 parsecs" }', "schedule.sync.every: not an interval"),
        ('sync = { every = "1m", cron = "* * * * *" }', "exactly one of cron"),
    ],
)
def test_bad_schedules_are_one_clear_line(tmp_path, schedule, message):
    with pytest.raises(ConfigError) as info:
        settings_with(tmp_path, schedule)
    assert message in str(info.value)
    assert str(tmp_path / "config.toml") in str(info.value)
    assert "\n" not in str(info.value)


def test_cron_days_of_week_keep_their_crontab_meaning():
    # crontab: 1-5 is Monday to Friday (APScheduler 3 alone would read Tuesday to Saturday)
    trigger = cron_trigger("0 9 * * 1-5", UTC)
    saturday = datetime(2025, 6, 7, 0, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, saturday) == datetime(2025, 6, 9, 9, 0, tzinfo=UTC)
    sunday = cron_trigger("30 6 * * 0", UTC).get_next_fire_time(None, T0)
    assert sunday.weekday() == 6 and (sunday.hour, sunday.minute) == (6, 30)


def test_schedules_are_read_in_the_configured_time_zone(tmp_path):
    settings = settings_with(
        tmp_path, 'timezone = "America/New_York"\ntrain = { cron = "0 3 * * *" }'
    )
    nxt = settings.schedule.trigger("train").get_next_fire_time(None, T0)
    assert nxt.astimezone(UTC) == datetime(2025, 6, 3, 7, 0, tzinfo=UTC)  # 03:00 EDT


def test_overdue_rule_with_an_injected_clock(tmp_path):
    settings = settings_with(
        tmp_path,
        'misfire_grace_seconds = 60\nsync = { every = "10m" }\ntrain = { cron = "0 3 * * *" }',
    )
    schedule = settings.schedule
    since = T0
    assert overdue_jobs(schedule, {}, since=since, running=set(), now=T0) == {}
    # sync was due at 08:10; with 60 s grace it is overdue from 08:11:01
    late = T0 + timedelta(minutes=11, seconds=1)
    assert overdue_jobs(schedule, {}, since=since, running=set(), now=late) == {
        "sync": T0 + timedelta(minutes=10)
    }
    # ... unless it ran, or is running (a long run is not a missed one)
    ran = {"sync": T0 + timedelta(minutes=10, seconds=2)}
    assert overdue_jobs(schedule, ran, since=since, running=set(), now=late) == {}
    assert overdue_jobs(schedule, {}, since=since, running={"sync"}, now=late) == {}
    # train is due at 03:00 the next day
    next_day = T0.replace(day=3, hour=3, minute=2)
    overdue = overdue_jobs(
        schedule, ran | {"sync": next_day}, since=since, running=set(), now=next_day
    )
    assert overdue == {"train": datetime(2025, 6, 3, 3, 0, tzinfo=UTC)}


def test_a_missed_schedule_alerts_once_and_resolves_once(tmp_path, webhook):
    settings = settings_with(
        tmp_path,
        'misfire_grace_seconds = 60\ntrain = { cron = "0 3 29 2 *" }\nmonitor = { every = "1h" }',
        secrets=f'[alerts]\nwebhook_url = "{webhook.url}"\n',
    )
    clock = Clock(T0)
    service = Service(settings, clock=clock, watch_seconds=3600).start()
    try:
        service.check()
        assert webhook.messages == []
        clock.now = T0 + timedelta(hours=1, minutes=2)  # monitor was due at 09:00
        service.check()
        service.check()  # still missed: no second message
        assert len(webhook.texts) == 1
        assert webhook.texts[0].startswith("[leadscore] FIRING: monitor missed its schedule")
        assert "s3cretTokenXYZ" not in webhook.texts[0]
        health, body = service.state.health()
        assert not health and "monitor: overdue" in body["reasons"][0]
        # the job runs (as the worker would record it)
        service.state.finish(
            "monitor", status="ok", started=clock.now, finished=clock.now + timedelta(seconds=1)
        )
        clock.now += timedelta(seconds=5)
        service.check()
        assert len(webhook.texts) == 2 and webhook.texts[1].startswith("[leadscore] RESOLVED")
        assert service.state.health()[0]
        with Store(settings.store.path) as store:
            state = store.query_df("SELECT * FROM alert_state WHERE key = 'missed:monitor'")
        assert state["active"].tolist() == [False] and state["notified"].tolist() == [True]
    finally:
        service.request_stop("test")
        assert service.wait()


def test_a_machine_that_slept_runs_a_job_once_and_a_too_late_run_is_skipped(tmp_path):
    # score and train fail fast on an empty store ("not pulled yet"): a run is a run-log row
    settings = settings_with(
        tmp_path,
        'misfire_grace_seconds = 600\nscore = { every = "1h" }\ntrain = { cron = "0 3 * * *" }',
    )
    service = Service(settings, watch_seconds=3600).start()
    try:
        now = datetime.now(UTC)
        # as after a night asleep: ten hourly firings are overdue, the last one just now
        service.scheduler.modify_job("score", next_run_time=now - timedelta(hours=10))
        # the daily firing is two hours late: beyond the grace
        service.scheduler.modify_job("train", next_run_time=now - timedelta(hours=2))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and service.state.runs.get(("score", "failed"), 0) < 1:
            time.sleep(0.05)
        time.sleep(0.5)  # room for any extra (wrong) runs
    finally:
        service.request_stop("test")
        assert service.wait()
    assert service.state.runs.get(("score", "failed")) == 1
    with Store(settings.store.path) as store:
        runs = store.recent_runs(20)
    assert [r["job"] for r in runs if r["job"] == "score"] == ["score"]
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert [r["job"] for r in skipped] == ["train"]
    assert "missed" in skipped[0]["error"] and "misfire_grace_seconds = 600" in skipped[0]["error"]
    # the next daily run is scheduled normally
    assert service.state.job("train").last_status == "skipped"


def test_a_second_serve_for_the_same_store_is_refused(tmp_path):
    settings = settings_with(tmp_path, 'train = { cron = "0 3 * * *" }')
    first = Service(settings, watch_seconds=3600).start()
    errors: list[BaseException] = []

    def second() -> None:  # another thread stands in for another process (flock is per open file)
        try:
            Service(settings).start()
        except BaseException as exc:
            errors.append(exc)

    try:
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], Busy)
        assert "another leadscore serve is already running" in str(errors[0])
    finally:
        first.request_stop("test")
        first.wait()


def test_nothing_scheduled_is_a_clear_error(tmp_path):
    settings = load_settings(write_config(tmp_path), environ={})
    with pytest.raises(ConfigError, match=r"\[schedule\] has no jobs"):
        Service(settings).start()


def fetch(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_endpoint_and_metrics():
    state = ServiceState(started_at=T0)
    server = HealthServer(state, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body = fetch(f"{base}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

        state.finish(
            "sync",
            status="ok",
            started=T0,
            finished=T0 + timedelta(seconds=2.5),
            counts={"pulled": 10, "scored": 100, "written": 7, "failed": 1},
            api_calls=12,
        )
        state.finish(
            "monitor",
            status="ok",
            started=T0,
            finished=T0,
            counts={
                "predictions": {
                    "lead_conversion": {"drift": {"score_psi": 0.31, "max_feature_psi": 0.05}}
                }
            },
        )
        status, text = fetch(f"{base}/metrics")
        assert status == 200
        assert 'leadscore_runs_total{job="sync",status="ok"} 1' in text
        assert 'leadscore_rows_total{job="sync",kind="written"} 7' in text
        assert "leadscore_scores_written_total 7" in text
        assert 'leadscore_api_calls_total{job="sync"} 12' in text
        assert 'leadscore_run_duration_seconds_sum{job="sync"} 2.5' in text
        assert 'leadscore_drift_psi{prediction="lead_conversion",measure="score"} 0.31' in text
        assert "# TYPE leadscore_runs_total counter" in text
        assert "process_resident_memory_bytes" in text

        state.finish("push", status="failed", started=T0, finished=T0, error="push: boom")
        status, body = fetch(f"{base}/healthz")
        assert status == 503
        assert json.loads(body)["reasons"] == ["push: last run failed: push: boom"]

        state.finish("push", status="ok", started=T0, finished=T0)
        state.set_schedule({}, {"sync": T0})
        status, body = fetch(f"{base}/healthz")
        assert status == 503 and "sync: overdue" in json.loads(body)["reasons"][0]
        assert fetch(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_a_busy_health_port_is_a_clear_error(tmp_path):
    state = ServiceState(started_at=T0)
    taken = HealthServer(state, "127.0.0.1", 0).start()
    try:
        settings = settings_with(
            tmp_path, 'train = { cron = "0 3 * * *" }', f"[serve]\nhealth_port = {taken.port}\n"
        )
        with pytest.raises(ConfigError, match="cannot serve the health endpoint"):
            Service(settings).start()
        # the failed start released the serve lock
        fixed = settings.model_copy(
            update={"serve": settings.serve.model_copy(update={"health_port": None})}
        )
        service = Service(fixed).start()
        service.request_stop("test")
        assert service.wait()
    finally:
        taken.stop()


def test_an_overlapping_firing_is_recorded_as_skipped_without_a_traceback(tmp_path, caplog):
    # a job that outlasts its 1 s interval: the firings in between overlap and are skipped
    settings = settings_with(tmp_path, 'score = { every = "1s" }')

    def slow(settings, name, **options):
        time.sleep(2.5)
        return run_job(settings, name, **options)

    service = Service(settings, watch_seconds=3600, runner=slow).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and service.state.runs.get(("score", "failed"), 0) < 1:
            time.sleep(0.05)
    finally:
        service.request_stop("test")
        assert service.wait()
    assert "Traceback" not in caplog.text and "Error notifying listener" not in caplog.text
    status = subprocess.run(
        [LEADSCORE, "status", "--config", str(settings.path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    skipped = [r for r in json.loads(status.stdout)["runs"] if r["status"] == "skipped"]
    assert skipped and all(r["job"] == "score" for r in skipped)
    assert "previous run of this job was still going" in skipped[0]["error"]
