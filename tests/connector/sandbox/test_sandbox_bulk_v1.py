"""Bulk API 1.0 (/services/async), driven by simple-salesforce's own ``sf.bulk`` handler and by the
raw CSV/XML requests tap-salesforce's BULK mode sends (api-contracts-realorg section 6)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ElementTree

import pytest
from simple_salesforce.exceptions import SalesforceGeneralError

NS = "{http://www.force.com/2009/06/asyncapi/dataload}"


def test_bulk_query_with_the_simple_salesforce_handler(sandbox, sf):
    live = sandbox.sql("SELECT count(*) FROM Lead WHERE IsDeleted = 0")[0][0]
    records = sf.bulk.Lead.query("SELECT Id, Email, CreatedDate, IsConverted, Owner.Name FROM Lead")
    assert len(records) == live and len({r["Id"] for r in records}) == live
    first = records[0]
    assert first["attributes"]["type"] == "Lead"
    # JSON results carry datetimes as epoch milliseconds, as real orgs do
    stored = sandbox.sql("SELECT CreatedDate FROM Lead WHERE Id = ?", [first["Id"]])[0][0]
    assert first["CreatedDate"] == stored * 1000
    assert isinstance(first["IsConverted"], bool)
    assert set(first["Owner"]) >= {"attributes", "Name"}
    everything = sandbox.sql("SELECT count(*) FROM Lead")[0][0]
    assert len(sf.bulk.Lead.query_all("SELECT Id, IsDeleted FROM Lead")) == everything


def test_bulk_query_failure_reaches_the_client(sf):
    with pytest.raises(SalesforceGeneralError) as caught:
        sf.bulk.Lead.query("SELECT Nope FROM Lead")
    assert "INVALID_FIELD" in str(caught.value.content)


def test_bulk_ingest_with_the_simple_salesforce_handler(writable, wsf):
    created = wsf.bulk.Lead.insert(
        [
            {"LastName": "Bulk One", "Company": "V1 Inc", "Status": "Open - Not Contacted"},
            {"LastName": "Bulk Two", "Company": "V1 Inc", "Status": "Open - Not Contacted"},
            {"Company": "No Name Inc", "Status": "Open - Not Contacted"},
        ]
    )
    assert [r["success"] for r in created] == [True, True, False]
    assert created[0]["created"] and created[0]["id"].startswith("00Q")
    assert created[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert created[2]["id"] is None
    new_ids = [r["id"] for r in created[:2]]
    updated = wsf.bulk.Lead.update([{"Id": new_ids[0], "Lead_Score__c": 77, "Title": None}])
    assert updated[0]["success"] and not updated[0]["created"]
    row = writable.sql("SELECT Lead_Score__c, Title FROM Lead WHERE Id = ?", [new_ids[0]])[0]
    assert row == (77.0, None)
    deleted = wsf.bulk.Lead.delete([{"Id": new_ids[1]}])
    assert deleted[0]["success"]
    assert writable.sql("SELECT IsDeleted FROM Lead WHERE Id = ?", [new_ids[1]])[0][0] == 1


def test_csv_query_job_as_tap_salesforce_sends_it(sandbox, session_for, token_for):
    session = session_for(sandbox)
    token = token_for(sandbox, session)
    base = f"{sandbox.url}/services/async/61.0"
    headers = {"X-SFDC-Session": token, "Content-Type": "application/json"}
    job = session.post(
        f"{base}/job",
        data=json.dumps({"operation": "queryAll", "object": "Lead", "contentType": "CSV"}),
        headers={**headers, "Sforce-Disable-Batch-Retry": "true"},
    )
    assert job.status_code == 201 and job.json()["state"] == "Open"
    job_id = job.json()["id"]
    soql = (
        "SELECT Id, SystemModstamp, IsDeleted FROM Lead "
        "WHERE SystemModstamp >= 2020-01-01T00:00:00.000000Z ORDER BY SystemModstamp ASC"
    )
    batch = session.post(
        f"{base}/job/{job_id}/batch", data=soql, headers={**headers, "Content-Type": "text/csv"}
    )
    info = ElementTree.fromstring(batch.content)
    assert info.tag == f"{NS}batchInfo" and info.findtext(f"{NS}state") == "Queued"
    batch_id = info.findtext(f"{NS}id")
    closed = session.post(f"{base}/job/{job_id}", data='{"state":"Closed"}', headers=headers)
    assert closed.json()["state"] == "Closed"
    status = ElementTree.fromstring(
        session.get(f"{base}/job/{job_id}/batch/{batch_id}", headers=headers).content
    )
    assert status.findtext(f"{NS}state") == "Completed"
    results = ElementTree.fromstring(
        session.get(f"{base}/job/{job_id}/batch/{batch_id}/result", headers=headers).content
    )
    assert results.tag == f"{NS}result-list"
    (result_id,) = [element.text for element in results.findall(f"{NS}result")]
    body = session.get(f"{base}/job/{job_id}/batch/{batch_id}/result/{result_id}", headers=headers)
    assert body.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.text)))
    assert len(rows) == sandbox.sql("SELECT count(*) FROM Lead")[0][0]
    assert rows[0]["SystemModstamp"].endswith(".000Z") and rows[0]["IsDeleted"] in ("true", "false")
    stamps = [row["SystemModstamp"] for row in rows]
    assert stamps == sorted(stamps)
    # a finished job's counters, as GET job answers them
    done = session.get(f"{base}/job/{job_id}", headers=headers).json()
    assert done["numberBatchesCompleted"] == 1 and done["numberRecordsProcessed"] == len(rows)


def test_pk_chunking_splits_the_query_by_id_ranges(sandbox, session_for, token_for):
    session = session_for(sandbox)
    token = token_for(sandbox, session)
    base = f"{sandbox.url}/services/async/61.0"
    xml_headers = {"X-SFDC-Session": token, "Content-Type": "application/xml; charset=UTF-8"}
    job_xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload">'
        "<operation>query</operation><object>Lead</object><contentType>CSV</contentType>"
        "</jobInfo>"
    )
    job = session.post(
        f"{base}/job",
        data=job_xml,
        headers={**xml_headers, "Sforce-Enable-PKChunking": "true; chunkSize=100"},
    )
    assert job.status_code == 201
    job_id = ElementTree.fromstring(job.content).findtext(f"{NS}id")
    session.post(
        f"{base}/job/{job_id}/batch",
        data="SELECT Id, Email FROM Lead WHERE IsConverted = false",
        headers={"X-SFDC-Session": token, "Content-Type": "text/csv"},
    )
    listing = ElementTree.fromstring(
        session.get(f"{base}/job/{job_id}/batch", headers=xml_headers).content
    )
    batches = listing.findall(f"{NS}batchInfo")
    states = [batch.findtext(f"{NS}state") for batch in batches]
    live = sandbox.sql("SELECT count(*) FROM Lead WHERE IsDeleted = 0")[0][0]
    assert states[0] == "NotProcessed" and states[1:] == ["Completed"] * -(-live // 100)
    seen: list[str] = []
    for batch in batches[1:]:
        batch_id = batch.findtext(f"{NS}id")
        result_list = session.get(
            f"{base}/job/{job_id}/batch/{batch_id}/result", headers=xml_headers
        )
        result_id = ElementTree.fromstring(result_list.content).findtext(f"{NS}result")
        text = session.get(
            f"{base}/job/{job_id}/batch/{batch_id}/result/{result_id}", headers=xml_headers
        ).text
        if text != "Records not found for this query":
            seen.extend(row["Id"] for row in csv.DictReader(io.StringIO(text)))
    expected = sandbox.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0")
    assert sorted(seen) == sorted(row[0] for row in expected)


def test_bulk_errors_are_exception_codes(sandbox, session_for, token_for):
    session = session_for(sandbox)
    base = f"{sandbox.url}/services/async/61.0"
    bad = session.get(
        f"{base}/job/750000000000000AAA",
        headers={"X-SFDC-Session": "nope", "Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and bad.headers["Content-Type"] == "application/json"
    assert bad.json()["exceptionCode"] == "InvalidSessionId"
    token = token_for(sandbox, session)
    missing = session.get(
        f"{base}/job/750000000000000AAA",
        headers={"X-SFDC-Session": token, "Content-Type": "application/json"},
    )
    assert missing.status_code == 400 and missing.json()["exceptionCode"] == "InvalidJob"
    unknown = session.post(
        f"{base}/job",
        data="<jobInfo xmlns='http://www.force.com/2009/06/asyncapi/dataload'><operation>query"
        "</operation><object>Nope</object></jobInfo>",
        headers={"X-SFDC-Session": token, "Content-Type": "application/xml"},
    )
    error = ElementTree.fromstring(unknown.content)
    assert error.tag == f"{NS}error" and error.findtext(f"{NS}exceptionCode") == "InvalidJob"
