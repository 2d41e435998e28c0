"""Bulk API 2.0, Tooling API and fault injection, driven by simple-salesforce's own bulk2 client."""

from __future__ import annotations

import csv
import io
import json

import pytest
import requests
from simple_salesforce.exceptions import SalesforceOperationError

from connector.sandbox import FaultRule, InjectedFaults, Sandbox


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_bulk_query_pages_with_locator_and_record_count(sandbox, sf):
    live = sandbox.sql("SELECT count(*) FROM Lead WHERE IsDeleted = 0")[0][0]
    pages = list(
        sf.bulk2.Lead.query(
            "SELECT Id, Email, CreatedDate, IsConverted, Owner.Name FROM Lead",
            max_records=120,
            wait=0,
        )
    )
    assert len(pages) == -(-live // 120)
    records = [r for page in pages for r in rows(page)]
    assert len(records) == live and len({r["Id"] for r in records}) == live
    first = records[0]
    assert list(first) == ["Id", "Email", "CreatedDate", "IsConverted", "Owner.Name"]
    assert first["CreatedDate"].endswith(".000Z") and first["IsConverted"] in ("true", "false")
    # the headers the client reads: Sforce-NumberOfRecords on every page, locator "null" last
    results = [r for r in sandbox.request_log if r.path.endswith("/results")][-len(pages) :]
    assert all(r.status == 200 and r.category == "bulk" for r in results)


def test_bulk_query_headers_and_query_all(sandbox, session_for, token_for):
    session = session_for(sandbox)
    headers = {"Authorization": f"Bearer {token_for(sandbox, session)}"}
    base = f"{sandbox.url}/services/data/v59.0/jobs/query"
    job = session.post(
        base,
        json={"operation": "queryAll", "query": "SELECT Id, IsDeleted FROM Lead"},
        headers=headers,
    ).json()
    assert job["state"] == "UploadComplete" and job["id"].startswith("750")
    # results before the job completes are refused; the first poll completes it here
    early = session.get(f"{base}/{job['id']}/results", headers=headers)
    assert early.status_code == 400
    assert session.get(f"{base}/{job['id']}", headers=headers).json()["state"] == "JobComplete"
    page = session.get(f"{base}/{job['id']}/results", params={"maxRecords": 10000}, headers=headers)
    assert page.headers["Sforce-Locator"] == "null"
    everything = sandbox.sql("SELECT count(*) FROM Lead")[0][0]
    assert int(page.headers["Sforce-NumberOfRecords"]) == everything
    assert page.headers["Content-Type"].startswith("text/csv")
    # another API version than the job's: 409
    other = session.get(
        f"{sandbox.url}/services/data/v58.0/jobs/query/{job['id']}/results", headers=headers
    )
    assert other.status_code == 409
    bad = session.post(
        base, json={"operation": "query", "query": "SELECT Nope FROM Lead"}, headers=headers
    )
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"


def test_bulk_update_reports_successful_and_failed_rows(writable, wsf):
    ids = [
        r[0] for r in writable.sql("SELECT Id FROM Lead WHERE IsConverted = 0 ORDER BY Id LIMIT 4")
    ]
    records = [{"Id": i, "Lead_Score__c": 40 + n} for n, i in enumerate(ids)]
    records.append({"Id": ids[0][:-3] + "XXX", "Lead_Score__c": 1})  # malformed id
    records.append({"Id": ids[1], "Lead_Score__c": 5000})  # out of range for Number(3,0)
    (result,) = wsf.bulk2.Lead.update(records=records, wait=0)
    assert result["numberRecordsProcessed"] == 6 and result["numberRecordsFailed"] == 2
    job = result["job_id"]
    ok = rows(wsf.bulk2.Lead.get_successful_records(job))
    failed = rows(wsf.bulk2.Lead.get_failed_records(job))
    assert {r["sf__Id"] for r in ok} == set(ids) and all(r["sf__Created"] == "false" for r in ok)
    errors = sorted(r["sf__Error"].split(":")[0] for r in failed)
    assert errors == ["MALFORMED_ID", "NUMBER_OUTSIDE_VALID_RANGE"]
    assert rows(wsf.bulk2.Lead.get_unprocessed_records(job)) == []
    scores = dict(writable.sql("SELECT Id, Lead_Score__c FROM Lead WHERE Id IN (?, ?, ?, ?)", ids))
    assert scores == {i: 40.0 + n for n, i in enumerate(ids)}
    assert writable.sql("SELECT count(*) FROM write_log")[0][0] == 4


def test_bulk_insert_upsert_and_null(writable, wsf):
    (inserted,) = wsf.bulk2.Lead.insert(
        records=[{"LastName": "Bulk", "Company": "Acme", "Email": "bulk@example.com"}], wait=0
    )
    created = rows(wsf.bulk2.Lead.get_successful_records(inserted["job_id"]))
    assert created[0]["sf__Created"] == "true"
    (upserted,) = wsf.bulk2.Lead.upsert(
        records=[{"Email": "BULK@example.com", "Title": "CTO"}], external_id_field="Email", wait=0
    )
    assert upserted["numberRecordsFailed"] == 0
    lead = created[0]["sf__Id"]
    assert writable.sql("SELECT Title FROM Lead WHERE Id = ?", [lead])[0][0] == "CTO"
    wsf.bulk2.Lead.update(records=[{"Id": lead, "Title": "#N/A"}], wait=0)
    assert writable.sql("SELECT Title FROM Lead WHERE Id = ?", [lead])[0][0] is None


def test_a_bad_column_fails_the_job_with_every_row_unprocessed(writable, wsf):
    lead = writable.sql("SELECT Id FROM Lead LIMIT 1")[0][0]
    with pytest.raises(SalesforceOperationError, match="Field name not found : Nope"):
        wsf.bulk2.Lead.update(records=[{"Id": lead, "Nope": "x"}], wait=0)
    listing = wsf.restful("jobs/ingest")["records"]
    failed = [j for j in listing if j["state"] == "Failed"][-1]
    assert rows(wsf.bulk2.Lead.get_unprocessed_records(failed["id"]))[0]["Id"] == lead


def test_jobs_complete_after_the_configured_polls(tmp_path, client_for):
    with Sandbox(tmp_path, leads=40, seed=5, bulk_polls_to_complete=3) as box:
        sf = client_for(box)
        pages = list(sf.bulk2.Lead.query("SELECT Id FROM Lead", wait=0))
        polls = [r for r in box.request_log if r.path.split("/")[-2] == "query"]
        assert len(pages) == 1 and len(polls) == 3


def test_limits_count_bulk_jobs(writable, wsf):
    before = wsf.limits()
    list(wsf.bulk2.Lead.query("SELECT Id FROM Lead", wait=0))
    after = wsf.limits()
    assert (
        after["DailyBulkV2QueryJobs"]["Remaining"]
        == before["DailyBulkV2QueryJobs"]["Remaining"] - 1
    )


def test_tooling_creates_custom_fields(writable, wsf):
    body = {
        "FullName": "Lead.Score_Trend__c",
        "Metadata": {"label": "Score Trend", "type": "Number", "precision": 4, "scale": 0},
    }
    created = wsf.toolingexecute("sobjects/CustomField", method="POST", data=body)
    assert created["success"] and created["id"].startswith("00N")
    described = {f["name"]: f for f in wsf.Lead.describe()["fields"]}
    assert described["Score_Trend__c"]["custom"] and described["Score_Trend__c"]["type"] == "double"
    lead = writable.sql("SELECT Id FROM Lead WHERE IsConverted = 0 LIMIT 1")[0][0]
    wsf.Lead.update(lead, {"Score_Trend__c": -12})
    assert (
        wsf.query(f"SELECT Score_Trend__c FROM Lead WHERE Id = '{lead}'")["records"][0][
            "Score_Trend__c"
        ]
        == -12
    )
    again = wsf.session.post(
        wsf.tooling_url + "sobjects/CustomField", data=json.dumps(body), headers=wsf.headers
    )
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"


def test_new_fields_need_field_level_security(tmp_path, client_for):
    with Sandbox(tmp_path, leads=20, seed=5, new_field_access=False) as box:
        sf = client_for(box)
        sf.toolingexecute(
            "sobjects/CustomField",
            method="POST",
            data={"FullName": "Lead.Model__c", "Metadata": {"label": "Model", "type": "Text"}},
        )
        names = {f["name"] for f in sf.Lead.describe()["fields"]}
        assert "Model__c" not in names
        box.grant_field_access("Lead", "Model__c")
        assert "Model__c" in {f["name"] for f in sf.Lead.describe()["fields"]}


def test_field_access_changes(writable, wsf):
    writable.set_field_access("Lead", "Lead_Tier__c", updateable=False)
    writable.remove_field("Lead", "Lead_Score__c")
    fields = {f["name"]: f for f in wsf.Lead.describe()["fields"]}
    assert "Lead_Score__c" not in fields and fields["Lead_Tier__c"]["updateable"] is False
    lead = writable.sql("SELECT Id FROM Lead WHERE IsConverted = 0 LIMIT 1")[0][0]
    result = wsf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Lead"}, "id": lead, "Lead_Tier__c": "A"}]},
    )
    assert result[0]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


# -- fault injection ------------------------------------------------------------------------


def raw_get(box: Sandbox, session: requests.Session, token: str) -> requests.Response:
    return session.get(
        f"{box.url}/services/data/v59.0/query/",
        params={"q": "SELECT Id FROM Lead LIMIT 1"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("unavailable", 503, "SERVER_UNAVAILABLE"),
        ("request_limit", 403, "REQUEST_LIMIT_EXCEEDED"),
        ("expired_session", 401, "INVALID_SESSION_ID"),
    ],
)
def test_scheduled_request_faults(writable, session_for, token_for, kind, status, code):
    session = session_for(writable)
    token = token_for(writable, session)  # logins are never faulted unless asked
    writable.faults = InjectedFaults([FaultRule(kind, at=(2,))])
    assert raw_get(writable, session, token).status_code == 200
    faulted = raw_get(writable, session, token)
    assert faulted.status_code == status and faulted.json()[0]["errorCode"] == code
    assert raw_get(writable, session, token).status_code == 200
    assert writable.faults.injected[kind] == 1


def test_slow_and_dropped_responses(writable, session_for, token_for):
    session = session_for(writable)
    token = token_for(writable, session)
    writable.faults = InjectedFaults(
        [FaultRule("slow", at=(1,), seconds=0.6), FaultRule("drop", at=(2,), after_bytes=10)]
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(
            f"{writable.url}/services/data/v59.0/limits/",
            headers={"Authorization": f"Bearer {token}"},
            timeout=0.2,
        )
    # the slow rule saw request 1; the drop rule's first match is this one: cut mid-body
    writable.faults = InjectedFaults([FaultRule("drop", at=(1,), after_bytes=10)])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        raw_get(writable, session, token)
    assert raw_get(writable, session, token).status_code == 200


def test_outage_after_n_requests_and_rates_are_reproducible(writable, session_for, token_for):
    session = session_for(writable)
    token = token_for(writable, session)
    writable.faults = InjectedFaults([FaultRule("unavailable", after=2)])
    statuses = [raw_get(writable, session, token).status_code for _ in range(4)]
    assert statuses == [200, 200, 503, 503]

    def run(seed: int) -> list[int]:
        writable.faults = InjectedFaults([FaultRule("unavailable", rate=0.5)], seed=seed)
        return [raw_get(writable, session, token).status_code for _ in range(12)]

    first = run(3)
    assert first == run(3) and 0 < first.count(503) < 12


def test_unable_to_lock_row_per_record(writable, wsf):
    ids = [r[0] for r in writable.sql("SELECT Id FROM Lead WHERE IsConverted = 0 LIMIT 5")]
    writable.faults = InjectedFaults(lock_at=(2, 4))
    body = {
        "records": [{"attributes": {"type": "Lead"}, "id": i, "Lead_Score__c": 10} for i in ids]
    }
    results = wsf.restful("composite/sobjects", method="PATCH", json=body)
    codes = [r["errors"][0]["statusCode"] if r["errors"] else None for r in results]
    assert codes == [None, "UNABLE_TO_LOCK_ROW", None, "UNABLE_TO_LOCK_ROW", None]
    # the same hook fails bulk rows
    writable.faults = InjectedFaults(lock_at=(1,))
    (result,) = wsf.bulk2.Lead.update(records=[{"Id": i, "Lead_Score__c": 11} for i in ids], wait=0)
    failed = rows(wsf.bulk2.Lead.get_failed_records(result["job_id"]))
    assert [r["sf__Error"].split(":")[0] for r in failed] == ["UNABLE_TO_LOCK_ROW"]


def test_fault_rules_are_validated():
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRule("meteor")
