"""`leadscore status`: per job last and next run, failures, overdue, dead letters, API allowance,
active alerts and the champion's age."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
from catboost import CatBoostClassifier
from typer.testing import CliRunner

from connector.store import Store
from connector.store.runs import record_run, write_alert_state
from scoring.model import Predictor
from scoring.registry import save_version
from sync.cli import app
from sync.config import load_settings
from sync.jobs import read_status
from sync.lock import RunLock, lock_path

from .conftest import write_config

NOW = datetime(2025, 6, 2, 12, 0)


def test_status_per_job(tmp_path):
    config = write_config(
        tmp_path,
        '\n[schedule]\nmisfire_grace_seconds = 60\nsync = { every = "10m" }\n'
        'train = { cron = "0 3 * * *" }\n',
    )
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:

        def run(job, minutes_ago, status, error=None, counts=None):
            start = NOW - timedelta(minutes=minutes_ago)
            record_run(
                store,
                job,
                started_at=start,
                finished_at=start + timedelta(seconds=30),
                status=status,
                counts=counts,
                error=error,
            )

        run("sync", 50, "ok", counts={"api_usage": {"used": 1200, "max": 15000}})
        run("sync", 40, "failed", "sync: Salesforce login was rejected")
        run("sync", 30, "failed", "sync: Salesforce login was rejected")
        trained = {"champion": True, "metrics": {"auc": 0.8123, "accuracy": None}}
        run("train", 60 * 9, "ok", counts={"predictions": {"lead_conversion": trained}})
        store.con.execute(
            "INSERT INTO writeback_ledger (target, object, record_id, field, value, "
            "attempted_value, status, attempts) VALUES "
            "('salesforce', 'Lead', '00Q1', 'Lead_Score__c', NULL, '5', 'dead', 6), "
            "('salesforce', 'Lead', '00Q2', 'Lead_Score__c', '7', '7', 'written', 0)"
        )
        write_alert_state(store, "failed:sync", active=True, since=NOW, message="x", notified=True)
    model = CatBoostClassifier(iterations=2, verbose=False).fit(
        np.arange(20).reshape(-1, 1), [0, 1] * 10
    )
    version = save_version(
        settings.store.models_dir,
        "lead_conversion",
        Predictor(task="binary", model=model, features=["x"], cat_features=[]),
        {"task": "binary", "metrics": {"auc": 0.8123}},
        champion=True,
    )

    # a next run exists only while `serve` runs (it holds the store's serve lock)
    assert read_status(settings, now=NOW)["jobs"]["train"]["next_run"] is None
    with RunLock(lock_path(settings.store.path, "serve"), "serve"):
        data = read_status(settings, now=NOW)
    assert data["serving"].startswith("serve (pid ")
    sync = data["jobs"]["sync"]
    assert sync["schedule"] == "every 10m"
    assert sync["last_run"]["status"] == "failed"
    assert (sync["consecutive_failures"], sync["failures_24h"]) == (2, 2)
    # last active 12:00 - 30 min + 30 s; due 10 minutes later; overdue past the 60 s grace
    assert sync["overdue_since"] == NOW - timedelta(minutes=30) + timedelta(seconds=30 + 600)
    train = data["jobs"]["train"]
    assert train["overdue_since"] is None  # ran at 03:00, next at 03:00 tomorrow
    assert train["next_run"] == datetime(2025, 6, 3, 3, 0)
    assert data["dead_letters"] == 1
    assert data["api_usage"]["remaining"] == 13800
    assert [a["key"] for a in data["alerts"]] == ["failed:sync"]
    model_info = data["models"]["lead_conversion"]
    assert model_info["version"] == version.version and model_info["auc"] == 0.8123

    result = CliRunner().invoke(app, ["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["jobs"]["sync"]["consecutive_failures"] == 2
    text = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert text.exit_code == 0, text.output
    words = " ".join(text.stdout.split())  # the table wraps at the runner's 80 columns
    fragments = ("overdue", "13,800 of 15,000", "dead letters", "(2 in a", "failed:sync")
    for fragment in (*fragments, "lead_conversion auc 0.8123 (champion)"):
        assert fragment in words, words
    # the dates carry their year
    assert "2025-06-02 11:30:00" in words


def test_status_after_a_report_run(tmp_path):
    config = write_config(tmp_path, "")
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:
        record_run(
            store,
            "report",
            started_at=NOW,
            finished_at=NOW + timedelta(seconds=3),
            status="ok",
            counts={"path": str(tmp_path / "report.html"), "predictions": ["lead_conversion"]},
        )
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
