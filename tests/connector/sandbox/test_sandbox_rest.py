"""The REST surface through the real simple-salesforce client over HTTPS."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connector.sandbox import Fault, FaultPlan, RecordFault, RequestInfo, Sandbox
from connector.sandbox.ids import make_id
from tests.connector.sandbox.conftest import connect

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
PAGE_SIZE = 50  # the shared sandbox's page size (conftest)

# --------------------------------------------------------------------------------------------
# Query


def test_query_returns_contract_shape(sf):
    result = sf.query(
        "SELECT Id, Email, NumberOfEmployees, AnnualRevenue, IsConverted, ConvertedDate, "
        "CreatedDate FROM Lead WHERE IsConverted = true ORDER BY CreatedDate LIMIT 3"
    )
    assert result["done"] is True and result["totalSize"] == 3
    assert "nextRecordsUrl" not in result
    record = result["records"][0]
    assert list(record) == [
        "attributes",
        "Id",
        "Email",
        "NumberOfEmployees",
        "AnnualRevenue",
        "IsConverted",
        "ConvertedDate",
        "CreatedDate",
    ]
    assert record["attributes"] == {
        "type": "Lead",
        "url": f"/services/data/v59.0/sobjects/Lead/{record['Id']}",
    }
    assert len(record["Id"]) == 18
    assert record["IsConverted"] is True
    assert isinstance(record["NumberOfEmployees"], int)
    assert isinstance(record["AnnualRevenue"], float)
    assert len(record["ConvertedDate"]) == 10
    assert record["CreatedDate"].endswith(".000+0000") and len(record["CreatedDate"]) == 28


def test_query_all_iter_pages_with_next_records_url(sf, sandbox):
    first = sf.query("SELECT Id FROM Task ORDER BY CreatedDate, Id")
    assert first["done"] is False
    assert len(first["records"]) == PAGE_SIZE
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    expected = sandbox.sql("SELECT COUNT(*) FROM Task WHERE IsDeleted = 0")[0][0]
    assert first["totalSize"] == expected > 10 * PAGE_SIZE
    before = len(sandbox.request_log)
    ids = [record["Id"] for record in sf.query_all_iter("SELECT Id FROM Task")]
    assert len(ids) == expected == len(set(ids))
    pages = sandbox.request_log[before:]
    assert len(pages) == -(-expected // PAGE_SIZE)
    assert {record.category for record in pages} == {"query"}
    assert pages[1].path.startswith("/services/data/v59.0/query/01g")


def test_incremental_pattern_orders_by_modstamp_then_id(sf):
    records = list(
        sf.query_all_iter(
            "SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp > 2024-06-01T00:00:00Z "
            "ORDER BY SystemModstamp, Id"
        )
    )
    keys = [(record["SystemModstamp"], record["Id"]) for record in records]
    assert keys == sorted(keys)
    assert all(stamp > "2024-06-01T00:00:00.000+0000" for stamp, _ in keys)


def test_batch_size_header_is_clamped_to_200_then_to_page_size(sandbox, session, token_for):
    token = token_for(sandbox, session)
    headers = {"Authorization": f"Bearer {token}", "Sforce-Query-Options": "batchSize=10"}
    response = session.get(
        f"{sandbox.url}/services/data/v59.0/query/",
        params={"q": "SELECT Id FROM Task"},
        headers=headers,
    )
    # 10 is raised to Salesforce's minimum of 200, then capped by the sandbox page size (50).
    assert len(response.json()["records"]) == PAGE_SIZE


def test_query_all_includes_deleted_records(wsf, writable):
    victim = open_lead(writable)
    assert wsf.Lead.delete(victim) == 204
    deleted = writable.sql("SELECT COUNT(*) FROM Lead WHERE IsDeleted = 1")[0][0]
    live = wsf.query("SELECT COUNT() FROM Lead")["totalSize"]
    everything = wsf.query("SELECT COUNT() FROM Lead", include_deleted=True)["totalSize"]
    assert (live, everything) == (writable.leads - deleted, writable.leads)
    rows = wsf.query_all(
        "SELECT Id, IsDeleted FROM Lead WHERE IsDeleted = true", include_deleted=True
    )
    assert rows["totalSize"] == deleted and victim in {r["Id"] for r in rows["records"]}
    assert all(record["IsDeleted"] is True for record in rows["records"])


def test_count_query(sf):
    result = sf.query("SELECT COUNT() FROM Lead WHERE IsConverted = true")
    assert result["records"] == [] and result["done"] is True and result["totalSize"] > 0


def test_relationship_fields(sf):
    record = sf.query(
        "SELECT Id, ConvertedOpportunity.IsWon, ConvertedOpportunity.Amount, Owner.Name "
        "FROM Lead WHERE IsConverted = true LIMIT 1"
    )["records"][0]
    assert set(record["ConvertedOpportunity"]) == {"attributes", "IsWon", "Amount"}
    assert isinstance(record["ConvertedOpportunity"]["IsWon"], bool)
    assert record["Owner"]["attributes"]["type"] == "User"


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Foo FROM Lead", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
        ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY"),
    ],
)
def test_query_errors_are_400_arrays(sf, soql, code):
    with pytest.raises(SalesforceMalformedRequest) as error:
        sf.query(soql)
    assert error.value.status == 400
    assert error.value.content[0]["errorCode"] == code


def test_invalid_query_locator(sf):
    with pytest.raises(SalesforceMalformedRequest) as error:
        sf.query_more("01g5e000000000zEAA-2000")
    assert error.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_cursor_pages_do_not_rescan(sf, sandbox):
    """A page is a slice of rowids fixed at query time: later changes don't shift pages."""
    first = sf.query("SELECT Id FROM Lead ORDER BY Id")
    second_page_url = first["nextRecordsUrl"]
    again = sf.query_more(second_page_url, identifier_is_url=True)
    once_more = sf.query_more(second_page_url, identifier_is_url=True)
    assert [r["Id"] for r in again["records"]] == [r["Id"] for r in once_more["records"]]
    assert again["records"][0]["Id"] > first["records"][-1]["Id"]


# --------------------------------------------------------------------------------------------
# Describe, versions, limits, headers


def test_describe_lead(sf):
    describe = sf.Lead.describe()
    assert describe["name"] == "Lead" and describe["keyPrefix"] == "00Q"
    fields = {field["name"]: field for field in describe["fields"]}
    for name in (
        "Id",
        "Email",
        "Company",
        "Status",
        "Rating",
        "Country",
        "IsDeleted",
        "Seniority__c",
        "Lead_Score__c",
        "Lead_Tier__c",
        "Lead_Score_Reasons__c",
    ):
        assert name in fields
    score = fields["Lead_Score__c"]
    assert (score["type"], score["precision"], score["scale"], score["custom"]) == (
        "double",
        3,
        0,
        True,
    )
    tier = fields["Lead_Tier__c"]
    assert tier["restrictedPicklist"] is True
    assert [value["value"] for value in tier["picklistValues"]] == ["A", "B", "C", "D"]
    assert fields["Lead_Score_Reasons__c"]["length"] == 255
    assert fields["OwnerId"]["referenceTo"] == ["User"]
    assert fields["IsConverted"]["updateable"] is False
    assert fields["NumberOfEmployees"]["type"] == "int"
    assert fields["CreatedDate"]["type"] == "datetime"
    assert [v["value"] for v in fields["Seniority__c"]["picklistValues"]] == [
        "C-Level",
        "VP",
        "Director",
        "Manager",
        "Individual Contributor",
    ]
    for field in fields.values():
        for key in (
            "name",
            "type",
            "custom",
            "updateable",
            "createable",
            "nillable",
            "length",
            "precision",
            "scale",
            "picklistValues",
            "referenceTo",
            "externalId",
        ):
            assert key in field


def test_task_type_picklist(sf):
    fields = {field["name"]: field for field in sf.Task.describe()["fields"]}
    assert [value["value"] for value in fields["Type"]["picklistValues"]] == [
        "Call",
        "Email",
        "Meeting",
        "Web Visit",
        "Email Click",
        "Webinar",
        "Content Download",
    ]


def test_describe_unknown_object_is_404(sf, sandbox, session, token_for):
    with pytest.raises(SalesforceResourceNotFound) as error:
        sf.Nope.describe()
    assert error.value.content == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]
    response = session.get(
        f"{sandbox.url}/services/data/v59.0/sobjects/Lead/describe/",
        headers={"Authorization": f"Bearer {token_for(sandbox, session)}"},
    )
    assert response.status_code == 200  # trailing slash accepted


def test_global_describe_and_resources(sf, sandbox, session):
    names = {entry["name"] for entry in sf.describe()["sobjects"]}
    assert names == {
        "User",
        "Account",
        "Contact",
        "Lead",
        "Campaign",
        "CampaignMember",
        "Task",
        "Event",
        "Opportunity",
        # Field-level security as sObjects (connector/sandbox/security.py).
        "Profile",
        "PermissionSet",
        "FieldPermissions",
        "ObjectPermissions",
        "PermissionSetAssignment",
        # Org rules a first write meets (connector/sandbox/org_rules.py).
        "DuplicateRule",
        "RecordType",
        "CurrencyType",
    }
    assert "query" in sf.restful("")
    versions = session.get(f"{sandbox.url}/services/data/").json()  # public, no session
    assert {"label", "url", "version"} <= set(versions[-1]) and versions[-1]["version"] == "68.0"


def test_limits_and_api_usage(sf, sandbox):
    limits = sf.limits()
    assert {"DailyApiRequests", "DailyBulkV2QueryJobs", "DailyBulkApiBatches"} <= set(limits)
    used, total = sf.api_usage["api-usage"]
    assert total == 100_000 and used == sandbox.api_calls()
    assert limits["DailyApiRequests"]["Remaining"] == total - used


def test_every_data_response_has_limit_info_and_json_errors(sandbox, session):
    response = session.get(
        f"{sandbox.url}/services/data/v59.0/limits/", headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401
    assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert response.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_unknown_version_and_path_are_404(sandbox, session, token_for):
    headers = {"Authorization": f"Bearer {token_for(sandbox, session)}"}
    for path in ("/services/data/v99.0/limits", "/services/data/v59.0/nothing", "/elsewhere"):
        response = session.get(f"{sandbox.url}{path}", headers=headers)
        assert response.status_code == 404
        assert response.json()[0]["errorCode"] == "NOT_FOUND"


def test_keep_alive_reuses_one_connection(sandbox, session_for):
    server = sandbox._server  # white-box: count TLS connections the server accepted
    session = session_for(sandbox)
    assert session.get(f"{sandbox.url}/services/data/").status_code == 200
    before = server.connections_accepted
    for _ in range(5):
        response = session.get(f"{sandbox.url}/services/data/")
        assert response.status_code == 200
        assert response.headers.get("Connection", "keep-alive").lower() != "close"
    assert server.connections_accepted == before


# --------------------------------------------------------------------------------------------
# Sessions and limits


def test_expired_session_raises_in_direct_mode(writable, client_for):
    client = client_for(writable)
    client.query("SELECT COUNT() FROM Lead")
    writable.expire_sessions()
    with pytest.raises(SalesforceExpiredSession) as error:
        client.query("SELECT COUNT() FROM Lead")
    assert error.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    assert client_for(writable).query("SELECT COUNT() FROM Lead")["totalSize"] > 0


def test_token_ttl(tmp_path, client_for):
    with Sandbox(tmp_path, leads=20, seed=1, as_of=AS_OF, token_ttl_seconds=0) as box:
        client = client_for(box)
        with pytest.raises(SalesforceExpiredSession):
            client.query("SELECT COUNT() FROM Lead")


def test_daily_limit_gives_403(tmp_path, client_for):
    with Sandbox(tmp_path, leads=20, seed=1, as_of=AS_OF, daily_api_limit=3) as box:
        client = client_for(box)
        for _ in range(3):
            client.query("SELECT COUNT() FROM Lead")
        with pytest.raises(SalesforceRefusedRequest) as error:
            client.query("SELECT COUNT() FROM Lead")
        assert error.value.content == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
        assert box.api_calls() == 3
        assert client.api_usage["api-usage"] == (3, 3)


# --------------------------------------------------------------------------------------------
# Single records


def open_lead(sandbox: Sandbox) -> str:
    return sandbox.sql(
        "SELECT Id FROM Lead WHERE IsConverted = 0 AND IsDeleted = 0 ORDER BY Id LIMIT 1"
    )[0][0]


def test_record_get_create_update_delete(wsf, writable):
    lead_id = open_lead(writable)
    record = wsf.Lead.get(lead_id)
    assert record["Id"] == lead_id and "Lead_Score__c" in record
    assert wsf.Lead.update(lead_id, {"Lead_Score__c": 42, "Rating": "Hot"}) == 204
    after = wsf.Lead.get(lead_id)
    assert (after["Lead_Score__c"], after["Rating"]) == (42.0, "Hot")
    assert after["SystemModstamp"] > record["SystemModstamp"]
    assert after["LastModifiedDate"] == after["SystemModstamp"]
    created = wsf.Lead.create({"LastName": "Lovelace", "Company": "Analytical", "FirstName": "Ada"})
    assert created["success"] is True and created["id"].startswith("00Q")
    fetched = wsf.Lead.get(created["id"])
    assert fetched["Name"] == "Ada Lovelace" and fetched["Status"] == "Open - Not Contacted"
    assert wsf.Lead.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as error:
        wsf.Lead.get(created["id"])
    assert error.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"
    assert wsf.query(f"SELECT Id FROM Lead WHERE Id = '{created['id']}'")["totalSize"] == 0


def test_record_errors(wsf, writable):
    with pytest.raises(SalesforceResourceNotFound):
        wsf.Lead.get(make_id("00Q", 999_999))
    with pytest.raises(SalesforceResourceNotFound):
        wsf.Lead.update(make_id("00Q", 999_999), {"Rating": "Hot"})
    with pytest.raises(SalesforceMalformedRequest) as error:
        wsf.Lead.create({"Company": "No Name"})
    assert error.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert error.value.content[0]["fields"] == ["LastName"]
    with pytest.raises(SalesforceMalformedRequest) as error:
        wsf.Lead.update(open_lead(writable), {"Lead_Score__c": "high"})
    assert error.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_converted_leads_are_read_only(wsf, writable):
    converted = writable.sql("SELECT Id FROM Lead WHERE IsConverted = 1 LIMIT 1")[0][0]
    with pytest.raises(SalesforceMalformedRequest) as error:
        wsf.Lead.update(converted, {"Lead_Score__c": 10})
    assert error.value.content[0]["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"


def test_converted_leads_are_writable_with_the_edit_converted_leads_permission(tmp_path):
    with Sandbox(tmp_path, leads=80, seed=3, as_of=AS_OF, page_size=PAGE_SIZE) as box:
        client = connect(box)
        converted = box.sql("SELECT Id FROM Lead WHERE IsConverted = 1 LIMIT 1")[0][0]
        client.Lead.update(converted, {"Lead_Score__c": 10})
        assert box.sql("SELECT Lead_Score__c FROM Lead WHERE Id = ?", [converted])[0][0] == 10


# --------------------------------------------------------------------------------------------
# sObject Collections


def collection_update(client, records, all_or_none=False):
    return client.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": all_or_none, "records": records},
    )


def lead(record_id, **fields):
    return {"attributes": {"type": "Lead"}, "id": record_id, **fields}


def test_collections_update_writes_fields_log_and_modstamp(wsf, writable):
    ids = [
        row[0]
        for row in writable.sql(
            "SELECT Id FROM Lead WHERE IsConverted = 0 AND IsDeleted = 0 ORDER BY Id LIMIT 3"
        )
    ]
    before = dict(
        writable.sql(f"SELECT Id, SystemModstamp FROM Lead WHERE Id IN ({','.join('?' * 3)})", ids)
    )
    results = collection_update(
        wsf,
        [
            lead(ids[0], Lead_Score__c=87.4, Lead_Tier__c="A", Lead_Score_Reasons__c="web visits"),
            lead(ids[1], Lead_Score__c=12),
            lead(ids[2], Lead_Tier__c="B"),
        ],
    )
    assert results == [{"id": value, "success": True, "errors": []} for value in ids]
    rows = writable.sql(
        "SELECT Id, Lead_Score__c, Lead_Tier__c, SystemModstamp, LastModifiedDate FROM Lead "
        f"WHERE Id IN ({','.join('?' * 3)}) ORDER BY Id",
        ids,
    )
    assert rows[0][1:3] == (87.0, "A")  # scale 0: rounded
    assert all(row[3] > before[row[0]] and row[3] == row[4] for row in rows)
    log = writable.sql("SELECT object, record_id, field, value FROM write_log ORDER BY rowid")
    assert log == [
        ("Lead", ids[0], "Lead_Score__c", "87.0"),
        ("Lead", ids[0], "Lead_Tier__c", '"A"'),
        ("Lead", ids[0], "Lead_Score_Reasons__c", '"web visits"'),
        ("Lead", ids[1], "Lead_Score__c", "12.0"),
        ("Lead", ids[2], "Lead_Tier__c", '"B"'),
    ]


def test_collections_per_record_errors_in_order(wsf, writable):
    live = open_lead(writable)
    deleted = writable.sql("SELECT Id FROM Lead WHERE IsDeleted = 1 LIMIT 1")
    converted = writable.sql("SELECT Id FROM Lead WHERE IsConverted = 1 LIMIT 1")[0][0]
    records = [
        lead(live, Lead_Score__c=50),
        lead("not-an-id", Lead_Score__c=1),
        lead(make_id("00Q", 999_999), Lead_Score__c=1),
        lead(live, Foo__c=1),
        lead(live, IsConverted=True),
        lead(live, Lead_Score_Reasons__c="x" * 256),
        lead(live, Lead_Tier__c="Z"),
        lead(live, Lead_Score__c=1000),
        lead(converted, Lead_Score__c=1),
        {"attributes": {"type": "Lead"}, "Lead_Score__c": 1},
        lead(make_id("003", 1), Lead_Score__c=1),
    ]
    if deleted:
        records.append(lead(deleted[0][0], Lead_Score__c=1))
    results = collection_update(wsf, records)
    codes = [result["errors"][0]["statusCode"] if result["errors"] else "OK" for result in results]
    expected = [
        "OK",
        "MALFORMED_ID",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "STRING_TOO_LONG",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "CANNOT_UPDATE_CONVERTED_LEAD",
        "MISSING_ARGUMENT",
        "MALFORMED_ID",
    ]
    if deleted:
        expected.append("ENTITY_IS_DELETED")
    assert codes == expected
    assert results[4]["errors"][0]["fields"] == ["IsConverted"]
    assert all("id" not in result for result in results[1:])
    logged = writable.sql("SELECT record_id, field FROM write_log")
    assert logged == [(live, "Lead_Score__c")]


def test_collections_all_or_none_rolls_back(wsf, writable):
    live = open_lead(writable)
    results = collection_update(
        wsf, [lead(live, Lead_Score__c=5), lead(live, Lead_Tier__c="Z")], all_or_none=True
    )
    assert results[0] == {
        "success": False,
        "errors": [
            {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request "
                "was using AllOrNone header",
                "fields": [],
            }
        ],
    }
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert writable.sql("SELECT Lead_Score__c FROM Lead WHERE Id = ?", [live]) == [(None,)]
    assert writable.sql("SELECT COUNT(*) FROM write_log") == [(0,)]


def test_collections_limit_of_200(wsf, writable):
    live = open_lead(writable)
    with pytest.raises(SalesforceMalformedRequest) as error:
        collection_update(wsf, [lead(live, Lead_Score__c=1)] * 201)
    assert error.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_collections_create_upsert_delete(wsf, writable):
    campaign = writable.sql("SELECT Id FROM Campaign ORDER BY Id DESC LIMIT 1")[0][0]
    member_lead = writable.sql(
        "SELECT Id FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0 AND Id NOT IN "
        "(SELECT LeadId FROM CampaignMember WHERE CampaignId = ?) LIMIT 1",
        [campaign],
    )[0][0]
    member = {
        "attributes": {"type": "CampaignMember"},
        "CampaignId": campaign,
        "LeadId": member_lead,
        "Status": "Sent",
    }
    created = wsf.restful(
        "composite/sobjects", method="POST", json={"allOrNone": False, "records": [member, member]}
    )
    assert created[0]["success"] is True and created[0]["id"].startswith("00v")
    assert created[1]["errors"] == [
        {"statusCode": "DUPLICATE_VALUE", "message": "Already a campaign member.", "fields": []}
    ]
    # Upsert by Email (an idLookup field): one update, one insert.
    email = writable.sql("SELECT Email FROM Lead WHERE Id = ?", [member_lead])[0][0]
    upserted = wsf.restful(
        "composite/sobjects/Lead/Email",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Lead"}, "Email": email.upper(), "Lead_Score__c": 77},
                {
                    "attributes": {"type": "Lead"},
                    "Email": "new.person@example.com",
                    "LastName": "Person",
                    "Company": "Example",
                },
            ],
        },
    )
    assert upserted[0] == {"id": member_lead, "success": True, "errors": [], "created": False}
    assert upserted[1]["created"] is True and upserted[1]["success"] is True
    deleted = wsf.restful(
        f"composite/sobjects?ids={upserted[1]['id']},{created[0]['id']}", method="DELETE"
    )
    assert [result["success"] for result in deleted] == [True, True]
    again = wsf.restful(f"composite/sobjects?ids={upserted[1]['id']}", method="DELETE")
    assert again[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"


def test_campaign_member_response_is_derived(wsf, writable):
    member = writable.sql(
        "SELECT Id FROM CampaignMember WHERE Status = 'Sent' AND IsDeleted = 0 LIMIT 1"
    )[0][0]
    wsf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "records": [
                {"attributes": {"type": "CampaignMember"}, "id": member, "Status": "Responded"}
            ]
        },
    )
    row = wsf.CampaignMember.get(member)
    assert row["HasResponded"] is True and row["FirstRespondedDate"] is not None


def test_update_records_simulates_ui_edit(writable):
    live = open_lead(writable)
    before = writable.sql("SELECT SystemModstamp FROM Lead WHERE Id = ?", [live])[0][0]
    writable.update_records("Lead", [{"Id": live, "Rating": "Cold", "Title": "CTO"}])
    row = writable.sql(
        "SELECT Rating, Title, SystemModstamp, LastModifiedDate FROM Lead WHERE Id = ?", [live]
    )[0]
    assert row[:2] == ("Cold", "CTO") and row[2] > before and row[2] == row[3]
    assert writable.sql("SELECT COUNT(*) FROM write_log") == [(0,)]
    with pytest.raises(ValueError, match="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"):
        writable.update_records("Lead", [{"Id": live, "Lead_Tier__c": "Q"}])


def test_sql_is_read_only(sandbox):
    with pytest.raises(Exception, match=r"readonly|read-only|query_only"):
        sandbox.sql("DELETE FROM Lead")


def test_request_log_categories(sandbox, sf):
    sf.query("SELECT COUNT() FROM Lead")
    sf.Lead.describe()
    sf.limits()
    categories = [record.category for record in sandbox.request_log[-3:]]
    assert categories == ["query", "describe", "limits"]
    assert json.dumps([record.__dict__ for record in sandbox.request_log[-3:]])


# --------------------------------------------------------------------------------------------
# Fault plan hook


class LockOneRecordAndRefuseLimits(FaultPlan):
    def __init__(self, locked_id):
        self.locked_id = locked_id

    def on_request(self, request: RequestInfo) -> Fault | None:
        if request.category == "limits":
            body = [{"errorCode": "SERVER_UNAVAILABLE", "message": "try later"}]
            return Fault(503, json.dumps(body).encode(), {"Retry-After": "1"})
        return None

    def on_record_write(self, sobject: str, record_id: str | None) -> RecordFault | None:
        if record_id == self.locked_id:
            return RecordFault(
                "UNABLE_TO_LOCK_ROW",
                f"unable to obtain exclusive access to this record or 1 records: {record_id}",
            )
        return None


def test_fault_plan_hooks(wsf, writable):
    first, second = [
        row[0]
        for row in writable.sql(
            "SELECT Id FROM Lead WHERE IsConverted = 0 AND IsDeleted = 0 ORDER BY Id LIMIT 2"
        )
    ]
    writable.faults = LockOneRecordAndRefuseLimits(second)
    with pytest.raises(SalesforceGeneralError) as error:
        wsf.limits()
    assert error.value.status == 503
    results = collection_update(wsf, [lead(first, Rating="Hot"), lead(second, Rating="Hot")])
    assert results[0]["success"] is True
    assert results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    writable.faults = FaultPlan()
    assert "DailyApiRequests" in wsf.limits()
