"""The Salesforce connector against the sandbox over HTTPS, with the real simple-salesforce client.

Login flows, session refresh (also in the middle of Bulk API 2.0 jobs and downloads), reads
with faults, writes on both paths with failed and transient rows, and campaign member sync.
"""

from __future__ import annotations

import csv
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from connector.errors import BudgetExceeded, ConfigError
from connector.salesforce import (
    SalesforceClient,
    SalesforceSettings,
    check_allowance,
    count_records,
    describe_object,
    estimate_write_calls,
    read_bulk,
    read_records,
    start_bulk_query,
    sync_campaign_members,
    write_records,
)
from connector.sandbox import FaultPlan, FaultRule, InjectedFaults, RequestInfo, Sandbox

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CREDENTIALS = {
    "client_credentials": {"client_id": "client_id", "client_secret": "client_secret"},
    "jwt": {
        "client_id": "client_id",
        "username": "username",
        "private_key_file": "jwt_private_key",
    },
    "password": {
        "client_id": "client_id",
        "client_secret": "client_secret",
        "username": "username",
        "password": "password",
    },
    "soap": {"username": "username", "password": "password", "security_token": "security_token"},
}


def settings_for(box: Sandbox, auth: str = "client_credentials", **overrides: Any):
    info = box.info
    values: dict[str, Any] = {
        "login_url": box.url,
        "ca_bundle": info["ca_bundle"],
        "auth": auth,
        "max_attempts": 3,
        "bulk_poll_seconds": 0,
        "streams": {"Lead": {"fields": ["Email"]}},
    }
    values.update({key: info[source] for key, source in CREDENTIALS[auth].items()})
    values.update(overrides)
    return SalesforceSettings.model_validate(values)


def client_for(box: Sandbox, auth: str = "client_credentials", **overrides: Any):
    return SalesforceClient(settings_for(box, auth, **overrides), sleep=lambda seconds: None)


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A read-only org shared by the module."""
    with Sandbox(tmp_path_factory.mktemp("org"), leads=150, seed=11, as_of=AS_OF) as box:
        yield box


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh tiny org per test, for tests that write or inject faults."""
    with Sandbox(tmp_path, leads=60, seed=3, as_of=AS_OF, page_size=50) as sandbox:
        yield sandbox


def live_leads(box: Sandbox) -> list[str]:
    return [r[0] for r in box.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id")]


def writable_leads(box: Sandbox) -> list[str]:
    return [
        r[0]
        for r in box.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0 ORDER BY Id")
    ]


def composite_calls(box: Sandbox) -> list[Any]:
    return [r for r in box.request_log if r.category == "composite"]


# -- login ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", sorted(CREDENTIALS))
def test_every_login_flow_works_and_refreshes_an_expired_session(org, auth):
    with client_for(org, auth) as client:
        assert count_records(client, "Lead") == len(live_leads(org))
        org.expire_sessions()
        # the next call gets 401 INVALID_SESSION_ID; the session logs in again and resends it
        assert count_records(client, "Lead") == len(live_leads(org))
        assert client.logins == 2


@pytest.mark.parametrize(
    ("auth", "override", "message"),
    [
        ("client_credentials", {"client_secret": "wrong"}, "was rejected: invalid_client"),
        ("password", {"password": "wrong"}, "was rejected: invalid_grant"),
        ("soap", {"security_token": "wrong"}, "was rejected: INVALID_LOGIN"),
        ("jwt", {"username": "someone@else.example"}, "was rejected: invalid_grant"),
        ("jwt", {"private_key_file": "/nonexistent/key.pem"}, "cannot read /nonexistent/key.pem"),
        ("soap", {"username": None}, 'missing for auth = "soap": salesforce.username'),
    ],
)
def test_rejected_logins_are_one_line_config_errors(org, auth, override, message):
    with client_for(org, auth, **override) as client, pytest.raises(ConfigError) as info:
        client.connect()
    assert message in str(info.value)
    assert "wrong" not in str(info.value)  # secrets never appear in errors


def test_a_key_that_is_not_rsa_pem_is_named(org, tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    client = client_for(org, "jwt", private_key_file=str(key))
    with client, pytest.raises(ConfigError, match="is not an RSA private key"):
        client.connect()


# -- reads ------------------------------------------------------------------------------------


class ExpireSessions(FaultPlan):
    """Expires every session when a matching request arrives (before it is served)."""

    def __init__(self, box: Sandbox, when: list[tuple[str, int]]) -> None:
        self.box = box
        self.when = dict(when)  # path suffix -> the n-th such request
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()

    def on_request(self, request: RequestInfo) -> None:
        for suffix, n in self.when.items():
            if request.category == "bulk" and request.path.endswith(suffix):
                with self.lock:
                    self.seen[suffix] = self.seen.get(suffix, 0) + 1
                    hit = self.seen[suffix] == n
                if hit:
                    self.box.expire_sessions()
        return None


def test_session_expiry_in_the_middle_of_a_bulk_job_and_of_its_download(tmp_path):
    with Sandbox(tmp_path, leads=60, seed=3, as_of=AS_OF, bulk_polls_to_complete=2) as box:
        with client_for(box, "jwt", bulk_page_size=20) as client:
            client.connect()
            job = start_bulk_query(client, "Lead", ["Id", "Email", "SystemModstamp"])
            # expired while the job runs (first poll) and between two result pages
            box.faults = ExpireSessions(box, [(job.id, 1), ("/results", 2)])
            ids, pages = [], 0
            for page in read_bulk(client, job, workdir=tmp_path):
                with page.path.open() as handle:
                    ids += [row["Id"] for row in csv.DictReader(handle)]
                pages += 1
        assert sorted(ids) == live_leads(box)
        assert pages == -(-len(ids) // 20)
        assert client.logins == 3
        assert len([r for r in box.request_log if r.status == 401]) == 2
        assert not list(tmp_path.glob("leadscore-bulk-*"))  # page files are removed


def test_session_expiry_in_the_middle_of_a_bulk_ingest_job(box):
    ids = writable_leads(box)[:30]
    with client_for(box, "soap", bulk_write_threshold=10) as client:
        client.connect()
        # expired between the job's creation and its upload, and again before its results
        box.faults = ExpireSessions(box, [("/batches", 1), ("/successfulResults", 1)])
        records = [{"Id": i, "Lead_Score__c": 3} for i in ids]
        outcomes = [o for b in write_records(client, "Lead", records) for o in b]
    assert len(outcomes) == 30 and all(o["success"] for o in outcomes)
    assert client.logins == 3
    assert set(scores(box, ids).values()) == {3.0} and written_twice(box) == 0


@pytest.mark.parametrize(
    ("rule", "timeout"),
    [
        (FaultRule("unavailable", at=(1, 2), categories=("query",)), 60),
        (FaultRule("request_limit", at=(1,), categories=("query",)), 60),
        (FaultRule("expired_session", at=(2,), categories=("query",)), 60),
        (FaultRule("drop", at=(2,), after_bytes=100, categories=("query",)), 60),
        (FaultRule("slow", at=(1,), seconds=1.0, categories=("query",)), 0.5),
    ],
    ids=lambda value: getattr(value, "kind", ""),
)
def test_rest_reads_outlast_transient_faults(box, rule, timeout):
    box.faults = InjectedFaults([rule])
    with client_for(box, timeout_seconds=timeout) as client:
        pages = list(read_records(client, "Lead", ["Id", "Email", "SystemModstamp"]))
    assert sorted(r["Id"] for p in pages for r in p) == live_leads(box)
    assert len(pages) == 2  # the sandbox serves pages of 50: 60 leads
    assert box.faults.injected[rule.kind] == len(rule.at)


def test_a_lasting_outage_is_a_transient_error_not_a_hang(box):
    box.faults = InjectedFaults([FaultRule("unavailable", after=0, categories=("query",))])
    with client_for(box, max_attempts=2) as client, pytest.raises(Exception) as info:
        list(read_records(client, "Lead", ["Id", "SystemModstamp"]))
    assert type(info.value).__name__ == "TransientError"
    assert "SERVER_UNAVAILABLE" in str(info.value)


# -- writes -----------------------------------------------------------------------------------


def scores(box: Sandbox, ids: list[str]) -> dict[str, float]:
    marks = ",".join("?" * len(ids))
    return dict(box.sql(f"SELECT Id, Lead_Score__c FROM Lead WHERE Id IN ({marks})", ids))


def written_twice(box: Sandbox) -> int:
    return box.sql(
        "SELECT count(*) FROM (SELECT record_id, field FROM write_log "
        "GROUP BY record_id, field HAVING count(*) > 1)"
    )[0][0]


@pytest.mark.parametrize("threshold", [1000, 10], ids=["collections", "bulk"])
def test_writes_report_failed_rows_and_cost_what_the_estimate_says(box, threshold):
    ids = writable_leads(box)[:45]
    records = [{"Id": i, "Lead_Score__c": n} for n, i in enumerate(ids)]
    records[3]["Lead_Score__c"] = 5000  # NUMBER_OUTSIDE_VALID_RANGE: permanent
    with client_for(box, bulk_write_threshold=threshold) as client:
        describe_object(client, "Lead")  # once, outside the measurement
        before = box.api_calls()
        outcomes = [o for batch in write_records(client, "Lead", records) for o in batch]
        calls = box.api_calls() - before
    assert sorted(o["id"] for o in outcomes) == sorted(ids)
    failed = {o["id"]: o["error"] for o in outcomes if not o["success"]}
    assert list(failed) == [ids[3]] and failed[ids[3]].startswith("NUMBER_OUTSIDE_VALID_RANGE: ")
    # one failed row costs the failed-results download on the bulk path
    expected = estimate_write_calls(len(records), bulk_write_threshold=threshold)
    assert calls == expected + (1 if threshold < len(records) else 0)
    assert scores(box, ids[:3]) == {ids[0]: 0.0, ids[1]: 1.0, ids[2]: 2.0}
    assert written_twice(box) == 0


def test_estimates_equal_the_real_cost_without_failures(box):
    ids = writable_leads(box)[:40]
    with client_for(box, bulk_write_threshold=25) as client:
        list(write_records(client, "Lead", [{"Id": ids[0], "Lead_Score__c": 1}]))
        for n in (1, 25, 26, 40):
            before = box.api_calls()
            records = [{"Id": i, "Lead_Score__c": n} for i in ids[:n]]
            assert all(o["success"] for b in write_records(client, "Lead", records) for o in b)
            assert box.api_calls() - before == estimate_write_calls(n, bulk_write_threshold=25)
    assert estimate_write_calls(10_000, bulk_write_threshold=20_000) == 50
    assert estimate_write_calls(10_000, bulk_write_threshold=2_000) == 5


def test_bulk_writes_larger_than_the_upload_limit_are_split_into_several_jobs(box, monkeypatch):
    ids = writable_leads(box)[:40]
    records = [{"Id": i, "Lead_Score__c": n} for n, i in enumerate(ids)]
    # "Id,Lead_Score__c\n" is 17 bytes and each row 21 or 22: eight rows fit in 200 bytes
    monkeypatch.setattr("connector.salesforce.writes.BULK_MAX_UPLOAD_BYTES", 200)
    with client_for(box, bulk_write_threshold=10) as client:
        outcomes = [o for batch in write_records(client, "Lead", records) for o in batch]
    assert [o["id"] for o in outcomes] == ids and all(o["success"] for o in outcomes)
    jobs = [
        r
        for r in box.request_log
        if r.category == "bulk" and r.method == "POST" and r.path.endswith("/jobs/ingest")
    ]
    assert len(jobs) == 5
    assert scores(box, ids) == {i: float(n) for n, i in enumerate(ids)}
    assert written_twice(box) == 0


def test_unable_to_lock_row_is_retried_in_smaller_batches_then_one_by_one(box):
    ids = writable_leads(box)[:40]
    # record writes 3 and 7 fail in the first pass; the retry of record 3 fails again (write 41)
    box.faults = InjectedFaults(lock_at=(3, 7, 41))
    records = [{"Id": i, "Lead_Score__c": 7} for i in ids]
    with client_for(box) as client:
        batches = list(write_records(client, "Lead", records))
    outcomes = [o for batch in batches for o in batch]
    assert sorted(o["id"] for o in outcomes) == sorted(ids) and all(o["success"] for o in outcomes)
    # first pass: 38 final outcomes; then the two retried records in one batch of 25 (one fails
    # again); then that one alone
    assert [len(b) for b in batches] == [38, 1, 1]
    assert len(composite_calls(box)) == 3
    assert set(scores(box, ids).values()) == {7.0} and written_twice(box) == 0


def test_bulk_rows_that_stay_locked_are_reported_with_their_error(box):
    ids = writable_leads(box)[:30]
    box.faults = InjectedFaults(lock_rate=1.0, lock_objects=("Lead",))
    with client_for(box, bulk_write_threshold=10) as client:
        outcomes = [
            o
            for b in write_records(client, "Lead", [{"Id": i, "Lead_Score__c": 1} for i in ids])
            for o in b
        ]
    assert len(outcomes) == 30 and not any(o["success"] for o in outcomes)
    assert {o["error"].split(":")[0] for o in outcomes} == {"UNABLE_TO_LOCK_ROW"}


def test_upsert_by_external_id(box):
    email = box.sql("SELECT Email FROM Lead WHERE IsConverted = 0 AND Email IS NOT NULL LIMIT 1")
    with client_for(box) as client:
        outcomes = [
            o
            for b in write_records(
                client,
                "Lead",
                [{"Email": email[0][0], "Title": "Chief Scorer"}],
                operation="upsert",
                external_id_field="Email",
            )
            for o in b
        ]
    assert outcomes == [{"id": email[0][0], "success": True, "error": None}]
    assert box.sql("SELECT Title FROM Lead WHERE Email = ?", [email[0][0]])[0][0] == "Chief Scorer"


# -- campaign members ---------------------------------------------------------------------------


class ConcurrentAdd(FaultPlan):
    """Another user adds a lead to the campaign just before our create arrives."""

    def __init__(self, box: Sandbox, campaign: str, lead: str) -> None:
        self.box, self.campaign, self.lead, self.done = box, campaign, lead, False

    def on_request(self, request: RequestInfo) -> None:
        if request.method == "POST" and request.category == "composite" and not self.done:
            self.done = True
            session = requests.Session()
            info = self.box.info
            token = session.post(
                f"{self.box.url}/services/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": info["client_id"],
                    "client_secret": info["client_secret"],
                },
                verify=info["ca_bundle"],
            ).json()["access_token"]
            session.post(
                f"{self.box.url}/services/data/v59.0/sobjects/CampaignMember/",
                json={"CampaignId": self.campaign, "LeadId": self.lead},
                headers={"Authorization": f"Bearer {token}"},
                verify=info["ca_bundle"],
            )
        return None


def test_campaign_members_are_made_equal_to_an_audience(box):
    campaign = box.sql(
        "SELECT CampaignId FROM CampaignMember WHERE IsDeleted = 0 AND LeadId IS NOT NULL "
        "GROUP BY CampaignId ORDER BY count(*) DESC LIMIT 1"
    )[0][0]

    def members() -> set[str]:
        rows = box.sql(
            "SELECT coalesce(LeadId, ContactId) FROM CampaignMember "
            "WHERE CampaignId = ? AND IsDeleted = 0",
            [campaign],
        )
        return {r[0] for r in rows}

    current = sorted(members())
    keep = current[:1]
    others = [i for i in live_leads(box) if i not in current]
    new = others[:3]
    audience = [*keep, new[0][:15], *new[1:]]  # a 15-character id is accepted too
    box.faults = ConcurrentAdd(box, campaign, new[1])
    with client_for(box) as client:
        outcomes = sync_campaign_members(client, campaign, audience)
    assert members() == {*keep, *new}
    added = {o["id"] for o in outcomes if o["action"] == "add"}
    removed = {o["id"] for o in outcomes if o["action"] == "remove"}
    assert added == set(new) and removed == set(current) - set(keep)
    assert all(o["success"] for o in outcomes)  # including the DUPLICATE_VALUE one
    with client_for(box) as client:
        assert sync_campaign_members(client, campaign, audience) == []
        with pytest.raises(ConfigError, match="not a lead"):
            sync_campaign_members(client, campaign, ["001000000000000AAA"])


# -- budget -----------------------------------------------------------------------------------


def test_the_budget_stops_before_the_cap(box):
    with client_for(box, max_calls_per_run=3, page_size=200) as client:
        with pytest.raises(BudgetExceeded, match="max_calls_per_run = 3"):
            for _ in range(5):
                count_records(client, "Lead")
        assert client.counter.api_calls == 3
    with client_for(box, max_share_of_daily_limit=0.5) as client:
        client.connect()
        with pytest.raises(BudgetExceeded, match="needs about 80000 API calls"):
            check_allowance(client, planned_calls=80_000)
        check_allowance(client, planned_calls=100)
