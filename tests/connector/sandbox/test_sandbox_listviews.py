"""Metadata API list views through simple-salesforce's ``sf.mdapi``, and the UI API as a rep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from connector.sandbox import Sandbox
from tests.connector.sandbox.conftest import AS_OF, connect
from tests.connector.sandbox.test_sandbox_security import login_as

NAME = "Lead.Hot_leads_leadscore"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("views"), leads=60, seed=4, as_of=AS_OF) as sandbox:
        yield sandbox


def metadata_client(box: Sandbox) -> Salesforce:
    sf = connect(box)
    # zeep has its own requests session; give it the one that trusts the sandbox CA.
    sf.mdapi._client.transport.session = sf.session
    return sf


def hot_leads(sf: Salesforce, tiers: str = "A,B") -> object:
    md = sf.mdapi
    return md.ListView(
        fullName=NAME,
        label="Hot leads (leadscore)",
        filterScope=md.FilterScope("Everything"),
        columns=["FULL_NAME", "LEAD.COMPANY", "Lead_Score__c", "Lead_Tier__c"],
        filters=[
            md.ListViewFilter(
                field="Lead_Tier__c", operation=md.FilterOperation("equals"), value=tiers
            ),
            md.ListViewFilter(
                field="LEAD.CONVERTED", operation=md.FilterOperation("equals"), value="0"
            ),
        ],
        booleanFilter="1 AND 2",
    )


def test_metadata_calls_and_their_idempotence(box):
    sf = metadata_client(box)
    md = sf.mdapi
    assert md.ListView.read([NAME]).fullName is None  # missing: an empty record
    md.ListView.create([hot_leads(sf)])
    read = md.ListView.read([NAME])
    assert read.fullName == NAME and read.filterScope == "Everything"
    assert [f.value for f in read.filters] == ["A,B", "0"]
    with pytest.raises(Exception, match="DUPLICATE_DEVELOPER_NAME"):
        md.ListView.create([hot_leads(sf)])
    md.ListView.update([hot_leads(sf, "A")])
    assert md.ListView.read([NAME]).filters[0].value == "A"
    md.ListView.upsert([hot_leads(sf, "A,B")])
    with pytest.raises(Exception, match="INVALID_FIELD"):
        bad = hot_leads(sf)
        bad.columns = ["No_Such__c"]
        bad.fullName = "Lead.Other"
        md.ListView.create([bad])
    md.ListView.delete([NAME])
    with pytest.raises(Exception, match="INVALID_CROSS_REFERENCE_KEY"):
        md.ListView.delete([NAME])
    assert md.ListView.read([NAME]).fullName is None


def test_list_records_as_a_rep_sorted_by_score(box):
    sf = metadata_client(box)
    leads = sf.query("SELECT Id FROM Lead WHERE IsConverted = false ORDER BY Id LIMIT 12")[
        "records"
    ]
    rows = [
        {
            "Id": lead["Id"],
            "Lead_Score__c": 40 + 5 * n,
            "Lead_Tier__c": "AB"[n % 2] if n < 10 else "C",
        }
        for n, lead in enumerate(leads)
    ]
    box.update_records("Lead", rows)
    sf.mdapi.ListView.upsert([hot_leads(sf)])
    rep = box.info["sales_users"][0]
    rep_sf, _ = login_as(box, rep["username"], rep["password"])
    page = rep_sf.restful(
        "ui-api/list-records/Lead/Hot_leads_leadscore",
        params={"sortBy": "-Lead_Score__c", "pageSize": 4},
    )
    assert page["count"] == 4 and page["nextPageToken"] == "4"
    assert set(page["records"][0]["fields"]) == {"Name", "Company", "Lead_Score__c", "Lead_Tier__c"}
    scores = [r["fields"]["Lead_Score__c"]["value"] for r in page["records"]]
    assert scores == sorted(scores, reverse=True) == [85, 80, 75, 70]
    rest = rep_sf.restful(
        "ui-api/list-records/Lead/Hot_leads_leadscore",
        params={"sortBy": "-Lead_Score__c", "pageSize": 50, "pageToken": 4},
    )
    assert rest["nextPageToken"] is None and rest["count"] == 6
    info = rep_sf.restful("ui-api/list-info/Lead/Hot_leads_leadscore")
    assert [c["fieldApiName"] for c in info["displayColumns"]][:2] == ["Name", "Company"]
    with pytest.raises(SalesforceResourceNotFound):
        rep_sf.restful("ui-api/list-records/Lead/Nope")
    with pytest.raises(SalesforceMalformedRequest):
        rep_sf.restful("ui-api/list-records/Lead/Hot_leads_leadscore", params={"sortBy": "Email"})


def test_columns_the_rep_cannot_read_are_dropped(tmp_path):
    with Sandbox(tmp_path, leads=20, seed=6, as_of=AS_OF, field_security="enforced") as strict:
        sf = metadata_client(strict)
        sf.mdapi.ListView.create([hot_leads(sf)])
        rep = strict.info["sales_users"][1]
        rep_sf, _ = login_as(strict, rep["username"], rep["password"])
        info = rep_sf.restful("ui-api/list-info/Lead/Hot_leads_leadscore")
        assert [c["fieldApiName"] for c in info["displayColumns"]] == ["Name", "Company"]
        with pytest.raises(SalesforceMalformedRequest):
            rep_sf.restful(
                "ui-api/list-records/Lead/Hot_leads_leadscore", params={"sortBy": "-Lead_Score__c"}
            )


def test_metadata_needs_customize_application_and_a_session(tmp_path):
    with Sandbox(tmp_path, leads=20, seed=7, as_of=AS_OF, setup_rights=False) as box:
        sf = metadata_client(box)
        with pytest.raises(Exception, match="INSUFFICIENT_ACCESS"):
            sf.mdapi.ListView.create([hot_leads(sf)])
        box.expire_sessions()
        with pytest.raises(Exception, match="INVALID_SESSION_ID"):
            sf.mdapi.ListView.read([NAME])
