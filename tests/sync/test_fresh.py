"""The fresh job end to end against the sandbox: a lead created through the REST API is scored
and written by the next cycle, once.

Asserts on what the sandbox holds (its records and write_log), not on what leadscore believes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.salesforce import SalesforceClient
from connector.sandbox import Sandbox
from connector.store import Store
from sync.cli import app
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_sync
from sync.stages.fresh import FreshBatch, run_fresh
from sync.status import read_status
from tests.configs import edit_config
from tests.conftest import SEGMENT_AS_OF

LEADS = 300


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    workdir = tmp_path_factory.mktemp("fresh")
    sandbox = Sandbox(workdir / "sandbox", leads=LEADS, seed=5).start()
    config = write_sandbox_files(workdir, sandbox.info, command="test")
    config.write_text(config.read_text() + '\n[fresh]\nevery = "30s"\n')
    assert run_sync(settings_for(config)).status == "ok"
    yield sandbox, config
    sandbox.stop()


def settings_for(config: Path) -> Settings:
    return load_settings(config, environ={})


def create_lead(settings: Settings, **fields: object) -> str:
    """A lead created through the REST API, as a web form would."""
    assert settings.salesforce is not None
    with SalesforceClient(settings.salesforce) as client:
        answer = client.sf.Lead.create(
            {"LastName": "Fresh", "Company": "Acme", "LeadSource": "Web", **fields}
        )
    return str(answer["id"])


def writes_of(sandbox: Sandbox, record_id: str) -> list[tuple[str, str]]:
    """leadscore's writes to a record (the creation's fields are API writes too)."""
    rows = sandbox.sql("SELECT field, value FROM write_log WHERE record_id = ?", [record_id])
    return [(r[0], r[1]) for r in rows if r[0].endswith("__c")]


def test_a_lead_created_through_rest_is_scored_by_the_next_cycle_once(org):
    sandbox, config = org
    settings = settings_for(config)
    lead = create_lead(settings, Industry="Technology", Title="CTO")

    first = run_fresh(settings)
    assert first.status == "ok", first.counts
    # the poll read the new lead (one query per object, records stored as they come)
    assert first.counts["leads"] >= 1 and first.counts["polled"]["Lead"]["new"] >= 1
    figures = first.counts["predictions"]["lead_conversion"]
    assert figures["written"] >= 1 and figures["failed"] == 0
    score, tier = sandbox.sql("SELECT Lead_Score__c, Lead_Tier__c FROM Lead WHERE Id = ?", [lead])[
        0
    ]
    assert score is not None and tier in {"A", "B", "C", "D"}
    written = writes_of(sandbox, lead)
    output = settings.predictions[0].salesforce
    assert output is not None
    assert len(written) == len(output.fields)
    # its latency from creation to the confirmed write is recorded once
    with Store(settings.store.path) as store:
        rows = store.con.execute(
            "SELECT seconds FROM fresh_latency WHERE entity_id = ?", [lead]
        ).fetchall()
    assert len(rows) == 1 and 0 <= rows[0][0] < 120

    second = run_fresh(settings)
    assert second.status == "ok"
    # the lead's only change since is leadscore's own write: nothing to score again
    assert second.counts["leads"] == 0
    assert writes_of(sandbox, lead) == written  # nothing written twice
    # the batch job agrees: a full sync finds the lead's outputs unchanged
    again = run_sync(settings)
    assert writes_of(sandbox, lead) == written, again.counts


def test_the_cli_runs_a_cycle_and_status_shows_it_with_its_p95(org):
    sandbox, config = org
    settings = settings_for(config)
    lead = create_lead(settings, Industry="Retail")
    runner = CliRunner()
    answer = runner.invoke(app, ["fresh", "--config", str(config), "--json"], env={})
    assert answer.exit_code == 0, answer.output
    counts = json.loads(answer.output)["counts"]
    assert counts["leads"] >= 1 and counts["predictions"]["lead_conversion"]["written"] >= 1
    assert writes_of(sandbox, lead)
    status = read_status(settings)
    fresh = status["fresh"]
    assert fresh["last_cycle"]["status"] == "ok"
    assert fresh["latency_24h"]["leads"] >= 1 and fresh["latency_24h"]["p95"] >= 0
    shown = runner.invoke(app, ["status", "--config", str(config)], env={})
    assert shown.exit_code == 0 and "creation -> score p95" in shown.output


def test_without_a_champion_the_cycle_says_so_and_writes_nothing(org, tmp_path):
    sandbox, config = org
    settings = settings_for(config)
    lonely = settings.model_copy(
        update={"store": settings.store.model_copy(update={"models_dir": tmp_path / "none"})}
    )
    lead = create_lead(settings, Industry="Energy")
    result = run_fresh(lonely)
    assert result.counts["predictions"]["lead_conversion"] == {"skipped": "no champion model yet"}
    assert writes_of(sandbox, lead) == []


def test_a_trigger_that_knows_only_ids_gets_the_leads_read_and_its_position_committed(org):
    """The seam other triggers (change events) use: lead ids in, position committed after."""
    sandbox, config = org
    settings = settings_for(config)
    lead = create_lead(settings, Industry="Finance", Title="VP Sales")
    batch = FreshBatch(frozenset({lead}), "cdc:test", {"replay_id": "AAA1"})
    result = run_fresh(settings, batch=batch)
    assert result.status == "ok", result.counts
    assert result.counts["leads"] == 1 and result.counts["read"]["Lead"]["new"] == 1
    assert result.counts["predictions"]["lead_conversion"]["written"] == 1
    assert writes_of(sandbox, lead)
    with Store(settings.store.path) as store:
        assert store.fresh_position("cdc:test") == {"replay_id": "AAA1"}
    # the same batch again (a replay after a crash before the commit): nothing written twice
    before = writes_of(sandbox, lead)
    again = run_fresh(settings, batch=batch)
    assert again.counts["predictions"]["lead_conversion"]["written"] == 0
    assert writes_of(sandbox, lead) == before


def test_metrics_show_the_creation_to_write_histogram_and_score_requests():
    from datetime import UTC, datetime

    from sync.health_server import ServiceState

    state = ServiceState(started_at=datetime(2026, 1, 1, tzinfo=UTC))
    at = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    state.finish(
        "fresh", status="ok", started=at, finished=at, counts={"leads": 3, "latencies": [4.0, 31.0]}
    )
    state.scored(200, 0.004)
    state.scored(400, 0.001)
    text = state.metrics()
    assert 'leadscore_fresh_latency_seconds_bucket{le="5"} 1' in text
    assert 'leadscore_fresh_latency_seconds_bucket{le="45"} 2' in text
    assert "leadscore_fresh_latency_seconds_count 2" in text
    assert "leadscore_fresh_leads_total 3" in text
    assert 'leadscore_score_requests_total{status="400"} 1' in text
    assert 'leadscore_score_request_seconds_bucket{le="0.005"} 1' in text


def test_a_fresh_lead_gets_its_segment_traits_in_the_same_cycle(tmp_path):
    sandbox = Sandbox(
        tmp_path / "sandbox", leads=150, seed=7, as_of=SEGMENT_AS_OF, segment=True
    ).start()
    try:
        sandbox.export_segment()
        config = write_sandbox_files(tmp_path, sandbox.info, command="test")
        # a brand-new lead has no Segment profile yet: address it by its record id
        edit_config(
            config,
            {"segment.max_profiles_per_run": 40},
            add={"predictions.segment.unmatched": "record_id"},
        )
        config.write_text(config.read_text() + '\n[fresh]\nevery = "30s"\n')
        settings = settings_for(config)
        assert run_sync(settings).status == "ok"
        lead = create_lead(settings, Industry="Technology", Email="fresh.lead@example.com")

        cycle = run_fresh(settings)
        assert cycle.status == "ok", cycle.counts
        segment = cycle.counts["predictions"]["lead_conversion"]["segment"]
        assert segment["records"] == 1 and segment["written"] == 1 and segment["failed"] == 0
        traits = sandbox.sql(
            "SELECT traits FROM seg_identify WHERE user_id = ? ORDER BY seq DESC", [lead]
        )
        assert len(traits) == 1
        sent = json.loads(traits[0][0])
        score = sandbox.sql("SELECT Lead_Score__c FROM Lead WHERE Id = ?", [lead])[0][0]
        assert sent["lead_score"] == score and sent["lead_tier"] in {"A", "B", "C", "D"}
        # the next cycle has nothing new to send
        again = run_fresh(settings)
        assert again.counts["leads"] == 0
        assert len(sandbox.sql("SELECT 1 FROM seg_identify WHERE user_id = ?", [lead])) == 1
    finally:
        sandbox.stop()
