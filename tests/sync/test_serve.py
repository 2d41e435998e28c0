"""`leadscore serve` as ops run it: a subprocess against the sandbox, stopped by SIGTERM in the
middle of a push and killed with SIGKILL in the middle of another; then drift raises an alert.

Asserts on what the sandbox holds (its write_log and records), not on what leadscore believes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.sandbox import Sandbox
from connector.sandbox.faults import Fault, FaultPlan, RequestInfo
from connector.store import Store
from sync.cli import app
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_job, run_pull, run_score, run_train

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
LEADS = 1000  # five collection updates of 200


class SlowWrites(FaultPlan):
    """Collection updates take a while, so that a signal can land while one is in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0
        self._lock = threading.Lock()

    def on_request(self, request: RequestInfo) -> Fault | None:
        if request.category == "composite" and request.method == "PATCH":
            with self._lock:
                self.started += 1
            time.sleep(self.delay)  # the write is applied afterwards, even if the client is gone
        return None


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, SlowWrites, Path]]:
    workdir = tmp_path_factory.mktemp("serve")
    plan = SlowWrites(delay=0.6)
    sandbox = Sandbox(workdir / "sandbox", leads=LEADS, seed=11, faults=plan).start()
    config = write_sandbox_files(workdir, sandbox.info, command="test")
    config.write_text(
        config.read_text()
        + '\n[schedule]\npush = { every = "1s" }\nlock_wait_seconds = 5\n'
        + "\n[serve]\nstop_timeout_seconds = 20\n"
    )
    settings = settings_for(config)
    run_pull(settings)
    run_train(settings)
    run_score(settings)
    yield sandbox, plan, config
    sandbox.stop()


def settings_for(config: Path) -> Settings:
    return load_settings(config, environ={})


def fields_per_record(config: Path) -> int:
    """How many Salesforce fields a push writes per lead (score, tier, reasons...)."""
    output = settings_for(config).predictions[0].salesforce
    assert output is not None
    return len(output.fields)


def serve(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    return subprocess.Popen(
        [LEADSCORE, "serve", "--config", str(config), "--log-format", "json"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def written_fields(sandbox: Sandbox) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in sandbox.sql("SELECT record_id, field, value FROM write_log")]


def ledger(config: Path) -> dict[tuple[str, str], tuple[str, str]]:
    with Store(settings_for(config).store.path) as store:
        rows = store.con.execute(
            "SELECT record_id, field, value, status FROM writeback_ledger"
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_sigterm_finishes_the_batch_in_flight_commits_and_exits(org):
    sandbox, plan, config = org
    before = plan.started
    process = serve(config)
    try:
        wait_for(lambda: plan.started >= before + 2)  # the second batch is in flight
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=25)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert '"run_id"' in stderr and "SIGTERM: stopping" in stderr
    sent = plan.started - before
    assert sent in (2, 3)  # the batch in flight was finished; no batch after the signal
    writes = written_fields(sandbox)
    assert len(writes) == len(set(writes)) == fields_per_record(config) * 200 * sent
    book = ledger(config)
    assert {s for _, s in book.values()} == {"written"}
    assert {(r, f) for r, f, _ in writes} == set(book)
    with Store(settings_for(config).store.path) as store:
        # firings that came while the push ran are recorded as skipped runs: the push is the other
        push = next(
            r for r in store.recent_runs(20) if r["job"] == "push" and r["status"] != "skipped"
        )
    # `partial` is for rejected records; a run stopped on request is `stopped`
    assert push["status"] == "stopped" and "stopped on request" in push["error"]


def test_kill_9_mid_push_then_the_next_push_completes_without_writing_twice(org):
    sandbox, plan, config = org
    before = plan.started
    process = serve(config)
    try:
        wait_for(lambda: plan.started >= before + 1)  # a batch is in flight
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    time.sleep(plan.delay + 0.3)  # the sandbox applies the orphaned batch after its delay
    book = ledger(config)
    assert "sending" in {s for _, s in book.values()}

    result = run_job(settings_for(config), "push")
    assert result.status == "ok"
    pushed = result.counts["predictions"]["lead_conversion"]
    assert pushed["failed"] == 0
    # the orphaned batch was found already written on read-back, and not sent again
    assert pushed["recovered"] == fields_per_record(config) * 200

    # every lead holds what the ledger says it holds, and nothing was written twice
    book = ledger(config)
    assert {s for _, s in book.values()} == {"written"}
    rows = sandbox.sql("SELECT Id, Lead_Score__c, Lead_Tier__c FROM Lead WHERE NOT IsDeleted")
    for lead_id, score, tier in rows:
        assert float(book[(lead_id, "Lead_Score__c")][0]) == score
        assert book[(lead_id, "Lead_Tier__c")][0] == f'"{tier}"'
    writes = written_fields(sandbox)
    assert len(writes) == len(set(writes)) == fields_per_record(config) * len(rows)
    with Store(settings_for(config).store.path) as store:
        killed = store.recent_runs(10)
    abandoned = [r for r in killed if r["job"] == "push" and "abandoned" in (r["error"] or "")]
    assert len(abandoned) == 1 and abandoned[0]["status"] == "failed"


def test_drift_in_the_org_raises_one_alert(org, webhook):
    sandbox, _, config = org
    settings = settings_for(config)
    baseline = run_job(settings, "monitor").counts["predictions"]["lead_conversion"]["drift"]
    assert baseline["level"] == "ok", baseline
    ids = [r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE NOT IsDeleted ORDER BY Id")]
    sandbox.update_records(
        "Lead", [{"Id": i, "Industry": "Energy"} for i in ids[: len(ids) * 2 // 3]]
    )
    (config.parent / "secrets.toml").write_text(
        (config.parent / "secrets.toml").read_text()
        + f'\n[alerts]\nwebhook_url = "{webhook.url}"\n'
    )
    settings = settings_for(config)
    run_job(settings, "pull")
    run_job(settings, "score")
    drift = run_job(settings, "monitor").counts["predictions"]["lead_conversion"]["drift"]
    assert drift["level"] == "alert" and drift["max_feature"] == "Industry"
    run_job(settings, "monitor")  # still drifted: no second alert
    assert len(webhook.texts) == 1
    assert "FIRING: lead_conversion: the scored population drifted" in webhook.texts[0]
    assert "Industry" in webhook.texts[0]

    # the report section and the CLI
    page = config.parent / "monitoring.html"
    result = CliRunner().invoke(app, ["monitor", "--config", str(config), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "drift alert" in " ".join(result.stdout.split())
    html = page.read_text()
    assert "Monitoring: lead_conversion" in html and html.count("data:image/png;base64") == 2
    assert len(webhook.texts) == 1
