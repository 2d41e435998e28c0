"""End to end: the real simple-salesforce client against the sandbox over HTTPS, on a small org.

Asserts on what the sandbox holds afterwards, not on what leadscore believes it did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_pull, run_sync
from tests.configs import edit_config, rename_lead_field

LEADS = 400


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    workdir = tmp_path_factory.mktemp("org")
    sandbox = Sandbox(workdir / "sandbox", leads=LEADS, seed=7).start()
    config = write_sandbox_files(workdir, sandbox.info, command="test")
    # small pages so that every stream is read over several pages (nextRecordsUrl)
    edit_config(config, {"salesforce.page_size": 200})
    yield sandbox, config
    sandbox.stop()


def settings_for(config: Path) -> Settings:
    return load_settings(config, environ={})


def count(sandbox: Sandbox, sql: str) -> int:
    return int(sandbox.sql(sql)[0][0])


def test_run_scores_every_lead_and_a_second_run_writes_nothing(org):
    sandbox, config = org
    settings = settings_for(config)
    leads = count(sandbox, "SELECT count(*) FROM Lead")
    tasks = count(sandbox, "SELECT count(*) FROM Task")
    members = count(sandbox, "SELECT count(*) FROM CampaignMember")

    first = run_sync(settings)
    assert first.counts["pulled"] == leads + tasks + members
    assert first.counts["scored"] == leads
    assert first.counts["written"] == leads and first.counts["failed"] == 0
    assert first.counts["trained"] == ["lead_conversion"]
    # what Salesforce holds: every lead carries a score and a tier
    assert count(sandbox, "SELECT count(*) FROM Lead WHERE Lead_Score__c IS NULL") == 0
    tiers = {row[0] for row in sandbox.sql("SELECT DISTINCT Lead_Tier__c FROM Lead")}
    assert tiers <= {"A", "B", "C", "D"} and tiers
    # API calls: describe + query pages per stream, and ceil(leads / 200) collection updates
    updates = [r for r in sandbox.request_log if r.category == "composite"]
    assert len(updates) == -(-leads // 200)
    # what reps read: field labels from describe, amounts with their currency, no API names
    reasons = [r[0] for r in sandbox.sql("SELECT Lead_Score_Reasons__c FROM Lead") if r[0]]
    text = " ".join(reasons)
    assert reasons and "__c" not in text and "Seniority: " in text
    amounts = [p for r in reasons for p in r.split("; ") if "Annual Revenue" in p]
    assert amounts and all(": USD " in p for p in amounts), amounts[:3]

    second = run_sync(settings)
    assert second.counts["written"] == 0
    assert second.counts["trained"] == []
    # the only changes since the first pull are the leads our own push touched
    assert second.counts["pulled"] == leads
    # nothing was written twice: one write per lead and output field (score, tier, reasons)
    fields = settings.predictions[0].salesforce.fields
    assert count(sandbox, "SELECT count(*) FROM write_log") == len(fields) * leads

    third = run_pull(settings)
    assert third.counts["pulled"] == 0


def test_a_change_in_salesforce_is_pulled_incrementally(org):
    sandbox, config = org
    settings = settings_for(config)
    run_pull(settings)
    ids = [row[0] for row in sandbox.sql("SELECT Id FROM Lead ORDER BY Id LIMIT 3")]
    sandbox.update_records("Lead", [{"Id": i, "Industry": "Energy"} for i in ids])
    result = run_pull(settings)
    assert result.counts["streams"]["Lead"]["changed"] == 3
    assert result.counts["pulled"] == 3
    with Store(settings.store.path) as store:
        got = store.query_df("SELECT Industry FROM sf_lead WHERE Id IN (?, ?, ?)", ids)
    assert got["Industry"].tolist() == ["Energy"] * 3


def test_bad_credentials_fail_cleanly_and_the_next_good_run_proceeds(org, tmp_path):
    _, config = org
    bad_secrets = tmp_path / "secrets.toml"
    bad_secrets.write_text('[salesforce]\nclient_id = "nope"\nclient_secret = "wrong"\n')
    bad = load_settings(config, environ={"LEADSCORE_SECRETS_FILE": str(bad_secrets)})
    with pytest.raises(ConfigError, match="was rejected"):
        run_pull(bad)
    assert run_pull(settings_for(config)).status == "ok"


def test_a_field_missing_from_describe_names_the_key_and_suggests(org, tmp_path):
    _, config = org
    broken = tmp_path / "config.toml"
    broken.write_text(config.read_text())
    rename_lead_field(broken, "Industry", "Industy")
    (tmp_path / "secrets.toml").write_text((config.parent / "secrets.toml").read_text())
    with pytest.raises(ConfigError) as info:
        run_pull(load_settings(broken, environ={}))
    message = str(info.value)
    assert "salesforce.streams.Lead.fields" in message and "Industy" in message
    assert "did you mean 'Industry'" in message
