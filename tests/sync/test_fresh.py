"""The fresh job end to end against the sandbox: a lead created through the REST API is scored
and written by the next cycle, once.

Asserts on what the sandbox holds (its records and write_log), not on what leadscore believes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.salesforce import SalesforceClient
from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_sync
from sync.stages.fresh import run_fresh

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
    assert first.counts["leads"] >= 1 and first.counts["read"]["Lead"]["new"] >= 1
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
    assert writes_of(sandbox, lead) == written  # nothing written twice
    # the batch job agrees: a full sync finds the lead's outputs unchanged
    again = run_sync(settings)
    assert writes_of(sandbox, lead) == written, again.counts
