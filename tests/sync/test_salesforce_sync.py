"""Pulls, pushes, setup and doctor as jobs and commands, against the sandbox over HTTPS.

Asserts on what the sandbox and the store hold afterwards: bulk first syncs, incremental pulls
with deletes, resume after a crash mid-pull (REST and bulk), the API budget, transient faults
during a push, and setup and doctor on a misconfigured org.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from connector.errors import TransientError
from connector.sandbox import FaultRule, InjectedFaults, Sandbox
from connector.store import Store
from sync.cli import app
from sync.config import Settings, load_settings
from sync.demo import ensure_audience_campaign, write_sandbox_files
from sync.jobs import run_pull, run_push
from tests.configs import edit_config, rename_lead_field

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def org(tmp_path: Path) -> Iterator[tuple[Sandbox, Path]]:
    sandbox = Sandbox(tmp_path / "sandbox", leads=150, seed=5, as_of=AS_OF, page_size=100).start()
    config = write_sandbox_files(tmp_path, sandbox.info, command="test")
    edit_config(
        config,
        {"salesforce.page_size": 200},
        add={
            "salesforce.bulk_read_threshold": 400,
            "salesforce.bulk_page_size": 500,
            "salesforce.max_attempts": 2,
        },
    )
    yield sandbox, config
    sandbox.stop()


def settings_for(config: Path) -> Settings:
    return load_settings(config, environ={})


def live(sandbox: Sandbox, sobject: str) -> int:
    return int(sandbox.sql(f"SELECT count(*) FROM {sobject} WHERE IsDeleted = 0")[0][0])


def stored(settings: Settings, table: str) -> int:
    with Store(settings.store.path) as store:
        return int(store.query_df(f"SELECT count(*) AS n FROM {table}")["n"][0])


def requests_to(sandbox: Sandbox, method: str, suffix: str) -> int:
    return sum(1 for r in sandbox.request_log if r.method == method and r.path.endswith(suffix))


def test_first_sync_by_bulk_then_incremental_by_rest_with_deletes(org):
    sandbox, config = org
    settings = settings_for(config)
    first = run_pull(settings)
    streams = first.counts["streams"]
    # a first sync is read in bulk, whatever the size
    assert {c["path"] for c in streams.values()} == {"bulk"}
    for sobject, table in (("Lead", "sf_lead"), ("Task", "sf_task")):
        assert stored(settings, table) == live(sandbox, sobject)
    assert first.api_calls == sandbox.api_calls()

    leads = [r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id")]
    tasks = [r[0] for r in sandbox.sql("SELECT Id FROM Task WHERE IsDeleted = 0 LIMIT 2")]
    runner_client = sandbox_client(sandbox)
    runner_client.restful(
        "composite/sobjects", method="DELETE", params={"ids": ",".join([leads[0], *tasks])}
    )
    sandbox.update_records("Lead", [{"Id": leads[1], "Industry": "Energy"}])
    second = run_pull(settings)
    streams = second.counts["streams"]
    # incremental reads count the changes first: a few, so REST pages (queryAll)
    assert {c["path"] for c in streams.values()} == {"rest"}
    assert streams["Task"]["deleted"] == 2
    assert streams["Lead"]["deleted"] == 1 and streams["Lead"]["changed"] == 1
    assert second.counts["deleted"] == 3 and second.counts["pulled"] == 1
    assert stored(settings, "sf_lead") == live(sandbox, "Lead")
    assert stored(settings, "sf_task") == live(sandbox, "Task")
    with Store(settings.store.path) as store:
        gone = store.query_df("SELECT count(*) AS n FROM sf_lead WHERE Id = ?", [leads[0]])
    assert gone["n"][0] == 0


def sandbox_client(sandbox: Sandbox):  # a plain simple-salesforce client, as another user
    from simple_salesforce import Salesforce

    from tests.connector.sandbox.conftest import CaSession, password_token

    session = CaSession(sandbox.info["ca_bundle"])
    return Salesforce(
        instance_url=sandbox.url, session_id=password_token(sandbox, session), session=session
    )


def test_deletions_purged_from_the_recycle_bin_are_found_by_a_sweep(org):
    sandbox, config = org
    settings = settings_for(config)
    run_pull(settings)
    leads = [
        r[0]
        for r in sandbox.sql(
            "SELECT Id FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0 ORDER BY Id LIMIT 5"
        )
    ]
    sandbox.delete_records("Lead", leads[:2])
    assert sandbox.empty_recycle_bin("Lead") >= 2  # the generated org had deleted leads too
    # queryAll no longer shows the purged records: an incremental pull cannot see them
    recent = run_pull(settings).counts["streams"]["Lead"]
    assert recent["deleted"] == recent["swept"] == 0
    assert stored(settings, "sf_lead") == live(sandbox, "Lead") + 2

    jobs = requests_to(sandbox, "POST", "/jobs/query")
    swept = run_pull(settings, sweep=True).counts["streams"]
    assert swept["Lead"]["swept"] == swept["Lead"]["deleted"] == 2
    assert swept["Task"]["swept"] == 0
    # Task has more live ids than bulk_read_threshold: they are read by a Bulk API query job
    assert requests_to(sandbox, "POST", "/jobs/query") == jobs + 1
    assert stored(settings, "sf_task") == live(sandbox, "Task")
    assert stored(settings, "sf_lead") == live(sandbox, "Lead")

    # a stream last pulled longer ago than the recycle bin keeps deleted records is swept anyway
    sandbox.delete_records("Lead", leads[2:3])
    sandbox.empty_recycle_bin("Lead")
    with Store(settings.store.path) as store:
        store.con.execute(
            "UPDATE sync_cursor SET synced_through = synced_through - INTERVAL 16 DAY "
            "WHERE stream = 'Lead'"
        )
    result = CliRunner().invoke(app, ["pull", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    streams = json.loads(result.stdout)["counts"]["streams"]
    assert streams["Lead"]["swept"] == 1 and streams["Task"]["swept"] == 0
    assert stored(settings, "sf_lead") == live(sandbox, "Lead")


def test_a_crash_mid_bulk_download_resumes_at_the_next_page(org):
    sandbox, config = org
    settings = settings_for(config)
    tasks = live(sandbox, "Task")
    pages = -(-tasks // 500)
    assert pages >= 3
    # the connection dies for good after three result pages: Lead's one, then two of Task's
    # (every retry fails too)
    sandbox.faults = InjectedFaults([FaultRule("drop", after=3, path_contains="/results")])
    with pytest.raises(TransientError):
        run_pull(settings)
    assert stored(settings, "sf_task") == 2 * 500
    jobs_before = requests_to(sandbox, "POST", "/jobs/query")
    pages_before = requests_to(sandbox, "GET", "/results")
    sandbox.faults = InjectedFaults()
    resumed = run_pull(settings)
    # the same job, from the third page: no new job for Task, no page read twice; the only new
    # job is CampaignMember's first sync (one page)
    assert resumed.counts["streams"]["Task"]["fetched"] == tasks - 2 * 500
    assert requests_to(sandbox, "GET", "/results") - pages_before == pages - 2 + 1
    assert requests_to(sandbox, "POST", "/jobs/query") - jobs_before == 1
    assert stored(settings, "sf_task") == tasks
    with Store(settings.store.path) as store:
        assert store.bulk_checkpoint("Task") is None
        assert store.read_cursor("Task") is not None


def test_a_crash_mid_rest_pull_resumes_after_the_last_committed_page(org):
    sandbox, config = org
    edit_config(
        config, remove=["salesforce.bulk_read_threshold"], add={"salesforce.bulk_first_sync": False}
    )
    settings = settings_for(config)
    sandbox.faults = InjectedFaults(
        [FaultRule("unavailable", after=4, categories=("query",), path_contains="/query/01g")]
    )
    with pytest.raises(TransientError):
        run_pull(settings)
    # Lead was read in full (one locator page); Task stopped after three of its locator pages
    assert stored(settings, "sf_lead") == live(sandbox, "Lead")
    kept = stored(settings, "sf_task")
    assert kept == 4 * 100
    sandbox.faults = InjectedFaults()
    resumed = run_pull(settings)
    task = resumed.counts["streams"]["Task"]
    # only the rest (plus the overlap's boundary rows) is read again
    assert task["new"] == live(sandbox, "Task") - kept
    assert task["fetched"] - task["new"] < 100
    assert resumed.counts["streams"]["Lead"]["new"] == 0
    assert stored(settings, "sf_task") == live(sandbox, "Task")


def test_the_budget_stops_a_pull_cleanly_and_the_next_run_resumes(org):
    sandbox, config = org
    edit_config(config, remove=["salesforce.max_attempts"], add={"salesforce.max_calls_per_run": 7})
    result = CliRunner().invoke(app, ["pull", "--config", str(config), "--json"])
    assert result.exit_code == 3
    assert "max_calls_per_run = 7" in result.output
    # stopped before the Task bulk job, which the 7 calls could not have finished
    assert sandbox.api_calls() <= 7
    status = json.loads(
        CliRunner().invoke(app, ["status", "--config", str(config), "--json"]).output
    )
    run = status["runs"][0]
    assert run["status"] == "failed" and run["api_calls"] == sandbox.api_calls()
    assert "API budget" in run["error"] or "max_calls_per_run" in run["error"]
    kept = stored(settings_for(config), "sf_lead")
    assert kept > 0
    edit_config(config, remove=["salesforce.max_calls_per_run"], add={"salesforce.max_attempts": 2})
    again = CliRunner().invoke(app, ["pull", "--config", str(config), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["api_calls"] > 0
    assert stored(settings_for(config), "sf_lead") == live(sandbox, "Lead")


@pytest.mark.parametrize("threshold", [2000, 100], ids=["collections", "bulk"])
def test_a_push_under_faults_loses_nothing_and_writes_nothing_twice(org, threshold):
    sandbox, config = org
    edit_config(
        config, {"salesforce.max_attempts": 8}, add={"salesforce.bulk_write_threshold": threshold}
    )
    settings = settings_for(config)
    leads = [r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE IsDeleted = 0")]
    with Store(settings.store.path) as store:
        store.append_scores(
            "lead_conversion",
            pd.DataFrame(
                {
                    "entity_id": leads,
                    "model_version": "v1",
                    "probability": [(n % 100) / 100 for n in range(len(leads))],
                    "score": [n % 100 for n in range(len(leads))],
                    "tier": ["ABCD"[n % 4] for n in range(len(leads))],
                    "reasons": None,
                    "scored_at": dt.datetime(2025, 6, 1),
                }
            ),
        )
    # Faults only on the write path under test, so that the counts below prove the push took it:
    # Bulk API 2.0 ingest above the threshold, sObject Collections below it.
    writes = ("bulk",) if threshold < len(leads) else ("composite",)
    # the first write requests fail with 503, then 403 REQUEST_LIMIT_EXCEEDED, then an expired
    # session; 5 % of record writes hit UNABLE_TO_LOCK_ROW
    sandbox.faults = InjectedFaults(
        [
            FaultRule("unavailable", at=(1,), categories=writes),
            FaultRule("request_limit", at=(1,), categories=writes),
            FaultRule("expired_session", at=(1,), categories=writes),
        ],
        lock_rate=0.05,
        seed=4,
    )
    result = run_push(settings)
    injected = sandbox.faults.injected
    assert injected["unable_to_lock_row"] > 0
    assert injected["unavailable"] == injected["request_limit"] == injected["expired_session"] == 1
    counts = result.counts["predictions"]["lead_conversion"]
    leads = live(sandbox, "Lead")
    assert counts["written"] + counts["failed"] == leads
    twice = sandbox.sql(
        "SELECT count(*) FROM (SELECT record_id, field FROM write_log "
        "GROUP BY record_id, field HAVING count(*) > 1)"
    )[0][0]
    assert twice == 0
    written = sandbox.sql("SELECT count(DISTINCT record_id) FROM write_log")[0][0]
    assert written == counts["written"]
    with Store(settings.store.path) as store:
        ledger = store.ledger("salesforce", "Lead")
    by_status = ledger.groupby("status")["record_id"].nunique().to_dict()
    assert by_status.get("written", 0) == counts["written"]
    assert by_status.get("failed", 0) == counts["failed"]


def test_setup_and_doctor_on_a_misconfigured_org(org):
    sandbox, config = org
    # configure the demo's Campaign audience, so doctor checks that Campaign too
    campaign_id = ensure_audience_campaign(sandbox)
    write_sandbox_files(config.parent, sandbox.info, command="test", campaign_id=campaign_id)
    sandbox.remove_field("Lead", "Lead_Score__c")
    sandbox.set_field_access("Lead", "Lead_Tier__c", updateable=False)
    rename_lead_field(config, "Industry", "Industy")
    runner = CliRunner()

    doctor = runner.invoke(app, ["doctor", "--config", str(config), "--json"])
    assert doctor.exit_code == 2
    report = json.loads(doctor.output)
    problems = {c["check"]: c for c in report["checks"] if not c["ok"]}
    assert set(problems) == {"Lead.Industy", "Lead.Lead_Score__c", "Lead.Lead_Tier__c"}
    assert "did you mean 'Industry'" in problems["Lead.Industy"]["fix"]
    assert "leadscore setup" in problems["Lead.Lead_Score__c"]["fix"]
    assert "field-level security" in problems["Lead.Lead_Tier__c"]["fix"]
    assert {c["check"] for c in report["checks"] if c["ok"]} >= {"login", "API allowance"}
    # the Campaign an audience mirrors is checked too (it exists in the sandbox org)
    assert any(c["check"] == f"campaign {campaign_id}" and c["ok"] for c in report["checks"])

    dry = runner.invoke(app, ["setup", "--config", str(config), "--dry-run", "--json"])
    fields = {f["field"]: f for f in json.loads(dry.output)["counts"]["fields"]}
    assert fields["Lead_Score__c"]["action"] == "would create"
    assert fields["Lead_Score__c"]["detail"] == "Number(3,0)"
    assert not [r for r in sandbox.request_log if r.category == "tooling"]

    setup = runner.invoke(app, ["setup", "--config", str(config)])
    assert setup.exit_code == 2  # the tier field still needs field-level security
    assert "created" in setup.output and "Lead_Tier__c" in setup.output
    assert len([r for r in sandbox.request_log if r.category == "tooling"]) == 1
    again = json.loads(runner.invoke(app, ["setup", "--config", str(config), "--json"]).output)
    actions = {f["field"]: f["action"] for f in again["counts"]["fields"]}
    assert actions == {
        "Lead_Score__c": "exists",
        "Lead_Tier__c": "problem",
        "Lead_Score_Reasons__c": "exists",  # the sandbox org has it already
    }

    sandbox.set_field_access("Lead", "Lead_Tier__c", updateable=True)
    rename_lead_field(config, "Industy", "Industry")
    healthy = runner.invoke(app, ["doctor", "--config", str(config)])
    assert healthy.exit_code == 0, healthy.output
    assert "no problems found" in healthy.output


def test_doctor_reports_a_failed_login_and_stops(org, tmp_path):
    _, config = org
    (tmp_path / "bad-secrets.toml").write_text(
        '[salesforce]\nclient_id = "nope"\nclient_secret = "wrong"\n'
    )
    result = CliRunner().invoke(
        app,
        ["doctor", "--config", str(config), "--json"],
        env={"LEADSCORE_SECRETS_FILE": str(tmp_path / "bad-secrets.toml")},
    )
    assert result.exit_code == 2
    checks = json.loads(result.output)["checks"]
    assert [c["check"] for c in checks] == ["login"]
    assert "was rejected" in checks[0]["detail"] and "wrong" not in result.output
