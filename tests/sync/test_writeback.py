"""Write-back against the sandbox over HTTPS: plans and their price, modes, audiences, the ledger.

Every assertion is on what the sandbox holds (records, campaign members, ``write_log``,
``request_log``) and what the store's ledger says, after real pushes by the real clients.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from connector.sandbox import FaultRule, InjectedFaults, Sandbox
from connector.store import Store
from sync.cli import app
from sync.config import Settings, load_settings
from sync.demo import ensure_audience_campaign, write_sandbox_files
from sync.jobs import run_pull, run_push
from tests.configs import edit_config
from tests.sync.test_salesforce_sync import sandbox_client

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
FIELDS = ("Lead_Score__c", "Lead_Tier__c", "Lead_Score_Reasons__c")


@pytest.fixture
def org(tmp_path: Path) -> Iterator[tuple[Sandbox, Path]]:
    sandbox = Sandbox(
        tmp_path / "sandbox", leads=150, seed=5, as_of=AS_OF, page_size=100, segment=True
    ).start()
    sandbox.export_segment()
    config = write_sandbox_files(
        tmp_path, sandbox.info, command="test", campaign_id=ensure_audience_campaign(sandbox)
    )
    # a small request size limit, so that Segment traits take several /v1/batch requests
    edit_config(
        config,
        {"segment.max_profiles_per_run": 0},
        add={
            "segment.max_request_bytes": 4096,
            "writeback.retry_backoff_seconds": 0,
            "writeback.max_attempts": 2,
        },
    )
    yield sandbox, config
    sandbox.stop()


def settings_for(config: Path, **salesforce: object) -> Settings:
    if salesforce:
        edit_config(config, add={f"salesforce.{k}": v for k, v in salesforce.items()})
    return load_settings(config, environ={})


def live_leads(sandbox: Sandbox) -> list[str]:
    return [r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id")]


def add_scores(settings: Settings, leads: list[str], shift: int = 0) -> pd.DataFrame:
    """A scoring run: every lead gets a score; every fifth one is an A (an audience member)."""
    n = len(leads)
    probability = [((i * 37 + shift) % 100) / 100 for i in range(n)]
    tiers = [
        "A" if p >= 0.6 else "B" if p >= 0.35 else "C" if p >= 0.15 else "D" for p in probability
    ]
    scores = pd.DataFrame(
        {
            "entity_id": leads,
            "model_version": "v1",
            "probability": probability,
            "score": [round(p * 100) for p in probability],
            "tier": tiers,
            "reasons": [f"web visits up ({i % 7})" for i in range(n)],
            "scored_at": dt.datetime(2025, 6, 1, 12),
        }
    )
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", scores)
    return scores


def writes_twice(sandbox: Sandbox) -> int:
    return sandbox.sql(
        "SELECT count(*) FROM (SELECT record_id, field, value FROM write_log "
        "GROUP BY record_id, field, value HAVING count(*) > 1)"
    )[0][0]


def write_requests(sandbox: Sandbox) -> int:
    return sum(
        1 for r in sandbox.request_log if r.category in ("composite", "bulk") and r.method != "GET"
    )


@pytest.mark.parametrize(
    ("threshold", "batch"),
    [(2000, None), (50, None), (50, 700)],
    ids=["collections", "bulk", "bulk-in-batches"],
)
def test_a_plan_writes_nothing_and_prices_the_push_exactly(org, threshold, batch):
    sandbox, config = org
    if batch is not None:  # the plan diffs and prices batch by batch, as the push writes
        edit_config(config, add={"store.batch_size": batch})
    settings = settings_for(config, bulk_write_threshold=threshold)
    run_pull(settings)
    add_scores(settings, live_leads(sandbox))
    writes_before = write_requests(sandbox)
    runner = CliRunner()
    planned = runner.invoke(app, ["plan", "--config", str(config), "--json"])
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.output)
    dry = runner.invoke(app, ["push", "--dry-run", "--config", str(config)])
    assert dry.exit_code == 0 and "estimated api calls" in dry.output
    # nothing was written anywhere: no write request, no ledger row, no tracking call
    assert write_requests(sandbox) == writes_before
    assert not [r for r in sandbox.segment_requests if r.category == "tracking"]
    with Store(settings.store.path) as store:
        assert store.query_df("SELECT count(*) AS n FROM writeback_ledger")["n"][0] == 0
    targets = {(t["target"], t.get("prediction") or t.get("audience")): t for t in plan["targets"]}
    fields = targets[("salesforce", "lead_conversion")]
    assert fields["path"] == ("bulk" if threshold < 150 else "collections")
    assert fields["counts"]["create"] == len(live_leads(sandbox))
    campaign = targets[("salesforce campaign", "hot_new_leads")]
    assert campaign["enter"] > 0 and campaign["exit"] == 0
    segment_audience = targets[("segment audience", "likely_buyers")]
    assert segment_audience["enter"] > 0 and segment_audience["exit"] == 0

    calls_before = sandbox.api_calls()
    tracking_before = sum(1 for r in sandbox.segment_requests if r.category == "tracking")
    pushed = run_push(settings)
    assert pushed.status == "ok", pushed.counts
    # the estimate is the real price, on the path the connector chose
    assert pushed.api_calls == sandbox.api_calls() - calls_before == plan["estimated_api_calls"]
    tracking = sum(1 for r in sandbox.segment_requests if r.category == "tracking")
    tracking -= tracking_before
    assert tracking == plan["estimated_segment_requests"] > 1
    members = sandbox.sql(
        "SELECT count(*) FROM CampaignMember WHERE CampaignId = ? AND IsDeleted = 0",
        (campaign["campaign_id"],),
    )[0][0]
    assert members == campaign["members"] == pushed.counts["campaigns"]["hot_new_leads"]["added"]

    again = json.loads(runner.invoke(app, ["plan", "--config", str(config), "--json"]).output)
    assert again["estimated_api_calls"] == 1  # the describe; nothing to write
    assert again["estimated_segment_requests"] == 0
    second = run_push(settings)
    assert second.counts["written"] == 0 and second.api_calls == 1
    assert writes_twice(sandbox) == 0


def test_a_crash_between_the_write_and_the_ledger_commit_is_read_back_not_resent(org):
    sandbox, config = org
    settings = settings_for(config, max_attempts=1)
    run_pull(settings)
    leads = live_leads(sandbox)
    scores = add_scores(settings, leads)
    # Salesforce applies the first update request, then the answer is lost: the process sees a
    # dropped connection; its read-back fails too and (max_attempts = 1) it gives up, as a killed
    # process would.
    sandbox.faults = InjectedFaults(
        [
            FaultRule("drop", at=(1,), methods=("PATCH",), categories=("composite",)),
            FaultRule("unavailable", at=(1,), methods=("GET",), categories=("composite",)),
        ]
    )
    crashed = run_push(settings)  # Salesforce failed on its own; Segment went on
    assert crashed.status == "partial"
    assert crashed.counts["parts"]["salesforce"].startswith("failed: read of 150 Lead records")
    sandbox.faults = InjectedFaults()
    with Store(settings.store.path) as store:
        ledger = store.ledger("salesforce", "Lead")
    assert set(ledger["status"]) == {"sending"} and ledger["value"].isna().all()
    applied = sandbox.sql("SELECT count(DISTINCT record_id) FROM write_log")[0][0]
    assert applied == len(leads)  # written, but never confirmed

    resumed = run_push(settings)
    counts = resumed.counts["predictions"]["lead_conversion"]
    assert counts["recovered"] == len(leads) * len(FIELDS) and counts["sent"] == 0
    assert writes_twice(sandbox) == 0
    with Store(settings.store.path) as store:
        ledger = store.ledger("salesforce", "Lead")
    assert set(ledger["status"]) == {"written"}
    held = dict(sandbox.sql("SELECT Id, Lead_Score__c FROM Lead WHERE IsDeleted = 0"))
    assert all(held[r] == s for r, s in zip(scores["entity_id"], scores["score"], strict=True))


def test_rejected_rows_retry_then_become_dead_letters_and_deleted_records_are_gone(org):
    sandbox, config = org
    settings = settings_for(config)
    run_pull(settings)
    leads = live_leads(sandbox)
    rejected, deleted = leads[:3], leads[3]
    add_scores(settings, leads)
    sandbox_client(sandbox).restful("composite/sobjects", method="DELETE", params={"ids": deleted})
    sandbox.faults = InjectedFaults(reject_records=rejected)
    first = run_push(settings).counts["predictions"]["lead_conversion"]
    assert first["failed"] == 4 and first["written"] == len(leads) - 4
    assert first["errors"] == {"FIELD_CUSTOM_VALIDATION_EXCEPTION": 3, "ENTITY_IS_DELETED": 1}
    second = run_push(settings).counts["predictions"]["lead_conversion"]
    # the rejected ones are retried (max_attempts = 2), the deleted one is gone for good
    assert second["sent"] == 3 and second["gone"] == 1 and second["failed"] == 3
    third = run_push(settings).counts["predictions"]["lead_conversion"]
    assert third["sent"] == 0 and third["dead"] == 3

    runner = CliRunner()
    status = json.loads(runner.invoke(app, ["status", "--config", str(config), "--json"]).output)
    assert status["dead_letters"] == 3 * len(FIELDS)
    by_status = {r["status"]: r for r in status["dead_letter_rows"]}
    assert by_status["dead"]["records"] == 3
    assert by_status["dead"]["reason"].startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION")
    assert by_status["gone"]["example"] == deleted
    text = runner.invoke(app, ["status", "--config", str(config)]).output
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in text and "retry --dead" in text

    sandbox.faults = InjectedFaults()  # the validation rule was fixed
    retried = runner.invoke(app, ["retry", "--dead", "--config", str(config), "--json"])
    assert retried.exit_code == 0, retried.output
    counts = json.loads(retried.output)["counts"]
    assert counts["revived"] == 3 * len(FIELDS)
    assert counts["predictions"]["lead_conversion"]["written"] == 3
    with Store(settings.store.path) as store:
        ledger = store.ledger("salesforce", "Lead")
    assert set(ledger.loc[ledger["record_id"] != deleted, "status"]) == {"written"}
    assert writes_twice(sandbox) == 0


def test_upsert_by_external_id_and_a_campaign_that_mirrors_its_audience(org):
    sandbox, config = org
    edit_config(
        config,
        add={
            "predictions.salesforce.mode": "upsert",
            "predictions.salesforce.external_id_field": "Email",
        },
    )
    settings = settings_for(config)
    run_pull(settings)
    leads = live_leads(sandbox)
    add_scores(settings, leads)
    no_email = {
        r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE Email IS NULL AND IsDeleted = 0")
    }
    # two leads sharing an email in the store: an upsert by it cannot tell them apart
    twins = sorted(set(leads) - no_email)[:2]
    with Store(settings.store.path) as store:
        store.con.execute(
            "UPDATE sf_lead SET Email = 'shared@example.com' WHERE Id IN (?, ?)", twins
        )
    campaign = ensure_audience_campaign(sandbox)
    # a member someone added by hand: mirror mode removes it
    outsider = sorted(set(leads) - no_email)[-1]
    sandbox.create_records("CampaignMember", [{"CampaignId": campaign, "LeadId": outsider}])
    first = run_push(settings)
    counts = first.counts["predictions"]["lead_conversion"]
    assert counts["written"] == len(leads) - len(no_email) - 2
    assert counts["invalid"] == len(no_email) + 2
    with Store(settings.store.path) as store:
        errors = store.query_df(
            "SELECT DISTINCT record_id, last_error FROM writeback_ledger "
            "WHERE record_id IN (?, ?) AND last_error IS NOT NULL",
            twins,
        )
    assert set(errors["record_id"]) == set(twins)
    assert errors["last_error"].str.startswith("DUPLICATE_EXTERNAL_ID").all()
    # upserts matched the existing leads by Email: no lead was created
    assert sandbox.sql("SELECT count(*) FROM Lead WHERE IsDeleted = 0")[0][0] == len(leads)
    members = {
        r[0]
        for r in sandbox.sql(
            "SELECT LeadId FROM CampaignMember WHERE CampaignId = ? AND IsDeleted = 0", (campaign,)
        )
    }
    with Store(settings.store.path) as store:
        expected = set(
            store.query_df(
                "SELECT s.entity_id FROM score_history s JOIN sf_lead l ON l.Id = s.entity_id "
                "WHERE s.tier = 'A' AND NOT l.IsConverted "
                "AND CAST(l.CreatedDate AS TIMESTAMP) >= s.scored_at - INTERVAL 30 DAY"
            )["entity_id"]
        )
    assert members == expected and outsider not in expected
    assert first.counts["campaigns"]["hot_new_leads"]["removed"] == 1

    add_scores(settings, leads, shift=50)  # new scores: some leave the audience, others enter
    second = run_push(settings).counts["campaigns"]["hot_new_leads"]
    assert second["added"] > 0 and second["removed"] > 0 and second["failed"] == 0
    with Store(settings.store.path) as store:
        latest = store.latest_scores("lead_conversion")
    now_in = {
        r[0]
        for r in sandbox.sql(
            "SELECT LeadId FROM CampaignMember WHERE CampaignId = ? AND IsDeleted = 0", (campaign,)
        )
    }
    assert now_in <= set(latest.loc[latest["tier"] == "A", "entity_id"])
    assert len(now_in) == second["members"]


def test_setup_creates_the_fields_of_every_new_output_kind(org):
    sandbox, config = org
    edit_config(
        config,
        {
            "predictions.salesforce.fields": {
                "score": "Lead_Score__c",
                "percentile": "Lead_Percentile__c",
                "probability": "Lead_Probability__c",
                "score_change": "Lead_Score_Change__c",
                "trend": "Lead_Trend__c",
            }
        },
    )
    result = CliRunner().invoke(app, ["setup", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    fields = {f["field"]: f for f in json.loads(result.output)["counts"]["fields"]}
    assert {k: v["action"] for k, v in fields.items()} == {
        "Lead_Score__c": "exists",
        "Lead_Percentile__c": "created",
        "Lead_Probability__c": "created",
        "Lead_Score_Change__c": "created",
        "Lead_Trend__c": "created",
    }
    assert fields["Lead_Percentile__c"]["detail"] == "Number(3,0)"
    assert fields["Lead_Trend__c"]["detail"] == "Text(16)"
    settings = load_settings(config, environ={})
    run_pull(settings)
    add_scores(settings, live_leads(sandbox))
    pushed = run_push(settings).counts["predictions"]["lead_conversion"]
    assert pushed["failed"] == 0 and pushed["written"] == len(live_leads(sandbox))


def test_a_lost_write_answer_is_read_back_not_sent_again(org):
    """Connections dropped after Salesforce applied a Collections write: nothing written twice."""
    sandbox, config = org
    settings = settings_for(config, write_batch_size=10)
    run_pull(settings)
    leads = live_leads(sandbox)
    add_scores(settings, leads)
    # every third Collections update is applied, then its connection closes before any answer
    sandbox.faults = InjectedFaults(
        [
            FaultRule(
                "lost_answer", at=(1, 4, 7, 10, 13), methods=("PATCH",), categories=("composite",)
            )
        ]
    )
    result = CliRunner().invoke(app, ["push", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert sandbox.faults.injected["lost_answer"] == 5
    twice = sandbox.sql(
        "SELECT count(*) FROM (SELECT record_id, field FROM write_log "
        "GROUP BY record_id, field HAVING count(*) > 1)"
    )[0][0]
    assert twice == 0
    with Store(settings.store.path) as store:
        ledger = store.ledger("salesforce", "Lead")
    assert set(ledger["status"]) == {"written"}
    assert ledger["record_id"].nunique() == len(leads)
    rows = dict(sandbox.sql("SELECT Id, Lead_Score__c FROM Lead WHERE IsDeleted = 0"))
    assert all(rows[lead] is not None for lead in leads)


def test_an_idle_cycle_after_a_push_reads_nothing_again(org):
    """The overlap is anchored at the server time the last read started, not the newest row."""
    sandbox, config = org
    settings = settings_for(config, overlap_seconds=1)
    run_pull(settings)
    leads = live_leads(sandbox)
    add_scores(settings, leads)
    assert run_push(settings).status == "ok"
    time.sleep(2.1)  # the push is older than the overlap when the next pull starts
    after_push = run_pull(settings).counts["streams"]["Lead"]
    assert after_push["fetched"] == len(leads)  # the push touched every lead's SystemModstamp
    for _ in range(2):
        idle = run_pull(settings).counts["streams"]["Lead"]
        assert idle["fetched"] == 0, idle


def test_a_segment_audience_plan_counts_people_without_a_segment_user_apart(org):
    """Nobody is ever sent to them: they must not show as entering on every run."""
    sandbox, config = org
    settings = settings_for(config)
    run_pull(settings)
    add_scores(settings, live_leads(sandbox))
    runner = CliRunner()

    def audience() -> dict:
        planned = runner.invoke(app, ["plan", "--config", str(config), "--json"])
        assert planned.exit_code == 0, planned.output
        targets = json.loads(planned.output)["targets"]
        return next(t for t in targets if t["target"] == "segment audience")

    first = audience()
    assert first["no_segment_user"] > 0 and first["enter"] > 0
    assert first["enter"] + first["no_segment_user"] == first["members"]
    assert run_push(settings).status == "ok"
    second = audience()
    assert second["enter"] == second["exit"] == 0
    assert second["no_segment_user"] == first["no_segment_user"]
