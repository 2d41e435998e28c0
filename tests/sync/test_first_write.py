"""The first write to an org with field security enforced, from a rep's seat.

Before setup's permission step a push fails with Salesforce's own error code and doctor explains
it; after setup a run writes every score and a rep's list view shows them, best first.
"""

from __future__ import annotations

import json

from simple_salesforce import Salesforce
from typer.testing import CliRunner

from connector.salesforce import SalesforceClient, write_records
from connector.sandbox import Sandbox
from connector.sandbox.clients import login_as
from sync.cli import app
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_sync
from tests.configs import edit_config

LEADS = 300


def rep_client(box: Sandbox) -> Salesforce:
    rep = box.info["sales_users"][0]
    return login_as(box.info, rep["username"], rep["password"])[0]


def test_setup_then_run_writes_every_score_and_a_rep_sees_them(tmp_path):
    runner = CliRunner()
    with Sandbox(tmp_path / "org", leads=LEADS, seed=3, field_security="enforced") as box:
        config = write_sandbox_files(tmp_path, box.info, command="test")
        # A small org has few A and B leads: the reps' view shows C too, so it is never empty.
        edit_config(config, add={"salesforce.setup.list_view_tiers": ["A", "B", "C"]})

        doctor = json.loads(
            runner.invoke(app, ["doctor", "--config", str(config), "--json"]).output
        )
        problems = {c["check"]: c for c in doctor["checks"] if not c["ok"]}
        score = problems["Lead.Lead_Score__c"]
        assert "INVALID_FIELD" in score["detail"] and "leadscore setup" in score["fix"]
        assert any(check.startswith("rep ") for check in problems)

        run = runner.invoke(app, ["run", "--config", str(config)])
        assert run.exit_code == 2
        assert "field-level security" in run.output and "INVALID_FIELD" in run.output
        # What Salesforce itself answers a write of the scores before setup's grants:
        client = SalesforceClient(load_settings(config, environ={}).salesforce)
        lead = box.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 LIMIT 1")[0][0]
        [outcome] = [
            o for b in write_records(client, "Lead", [{"Id": lead, "Lead_Score__c": 5}]) for o in b
        ]
        assert outcome["error"].startswith("INVALID_FIELD: No such column 'Lead_Score__c'")
        assert box.sql("SELECT count(*) FROM Lead WHERE Lead_Score__c IS NOT NULL") == [(0,)]

        setup = runner.invoke(app, ["setup", "--config", str(config)])
        assert setup.exit_code == 0, setup.output
        again = runner.invoke(app, ["setup", "--config", str(config)])
        assert "none: the org was already set up" in again.output

        result = run_sync(load_settings(config, environ={}))
        assert result.counts["failed"] == 0
        assert result.counts["written"] == result.counts["scored"] > 0
        live = box.sql("SELECT count(*) FROM Lead WHERE IsDeleted = 0")[0][0]
        assert box.sql("SELECT count(*) FROM Lead WHERE Lead_Score__c IS NOT NULL")[0][0] == live

        doctor = json.loads(
            runner.invoke(app, ["doctor", "--config", str(config), "--json"]).output
        )
        assert doctor["ok"], [c for c in doctor["checks"] if not c["ok"]]

        rep = rep_client(box)
        page = rep.restful(
            "ui-api/list-records/Lead/Hot_leads_leadscore",
            params={"sortBy": "-Lead_Score__c", "pageSize": 200},
        )
        hot = box.sql(
            "SELECT count(*) FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0 AND Lead_Tier__c "
            "IN ('A', 'B', 'C') AND Status NOT IN ('Closed - Converted', 'Closed - Not Converted')"
        )[0][0]
        assert page["count"] == min(hot, 200) and hot > 0
        first = page["records"][0]["fields"]
        assert {"Lead_Score__c", "Lead_Tier__c", "Lead_Score_Reasons__c"} <= set(first)
        scores = [r["fields"]["Lead_Score__c"]["value"] for r in page["records"]]
        assert scores == sorted(scores, reverse=True)
        assert {r["fields"]["Lead_Tier__c"]["value"] for r in page["records"]} <= {"A", "B", "C"}
        assert all(r["fields"]["Lead_Score_Reasons__c"]["value"] for r in page["records"])
