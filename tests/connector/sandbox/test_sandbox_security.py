"""Field-level security through the REST API: users, profiles, permission sets, FLS errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connector.sandbox import Sandbox, clients
from tests.connector.sandbox.conftest import AS_OF, CaSession, connect


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox org with field security enforced: no profile reads any custom field."""
    workdir: Path = tmp_path_factory.mktemp("strict")
    with Sandbox(workdir, leads=40, seed=9, as_of=AS_OF, field_security="enforced") as box:
        yield box


def login_as(box: Sandbox, username: str, password: str) -> tuple[Salesforce, str]:
    """A client acting as a user (OAuth password flow) and its user id."""
    return clients.login_as(box.info, username, password)


def lead_id(sf: Salesforce) -> str:
    return sf.query("SELECT Id FROM Lead WHERE IsConverted = false LIMIT 1")["records"][0]["Id"]


def test_unreadable_field_is_absent_from_describe_soql_and_writes(strict):
    sf = connect(strict)
    names = {field["name"] for field in sf.Lead.describe()["fields"]}
    assert "Lead_Score__c" not in names and "Company" in names
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id, Lead_Score__c FROM Lead")
    error = raised.value.content[0]
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Lead_Score__c' on entity 'Lead'" in error["message"]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(lead_id(sf), {"Lead_Score__c": 80})
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"
    result = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [{"attributes": {"type": "Lead"}, "id": lead_id(sf), "Lead_Score__c": 1}],
        },
    )
    assert result[0]["errors"][0]["statusCode"] == "INVALID_FIELD"


def test_permission_set_grants_read_then_edit(strict):
    sf = connect(strict)
    me = sf.query(f"SELECT Id FROM User WHERE Username = '{strict.info['username']}'")
    user_id = me["records"][0]["Id"]
    created = sf.PermissionSet.create({"Name": "Score_Writer", "Label": "Score writer"})
    set_id = created["id"]
    assert set_id.startswith("0PS")
    grant = sf.FieldPermissions.create(
        {
            "ParentId": set_id,
            "SobjectType": "Lead",
            "Field": "Lead.Lead_Score__c",
            "PermissionsRead": True,
            "PermissionsEdit": False,
        }
    )
    sf.PermissionSetAssignment.create({"AssigneeId": user_id, "PermissionSetId": set_id})
    found = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert found["Lead_Score__c"]["updateable"] is False
    assert sf.query("SELECT Id, Lead_Score__c FROM Lead LIMIT 1")["totalSize"] == 1
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(lead_id(sf), {"Lead_Score__c": 80})
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert "check the security settings" in raised.value.content[0]["message"]

    sf.FieldPermissions.update(grant["id"], {"PermissionsEdit": True})
    sf.Lead.update(lead_id(sf), {"Lead_Score__c": 80})
    rows = sf.query(
        "SELECT Field, PermissionsRead, PermissionsEdit FROM FieldPermissions "
        f"WHERE ParentId = '{set_id}' AND Parent.Name = 'Score_Writer'"
    )["records"]
    assert [(r["Field"], r["PermissionsRead"], r["PermissionsEdit"]) for r in rows] == [
        ("Lead.Lead_Score__c", True, True)
    ]
    # Taking read away deletes the row (the docs), and the grant with it.
    sf.FieldPermissions.update(grant["id"], {"PermissionsRead": False, "PermissionsEdit": False})
    assert (
        sf.query(f"SELECT COUNT() FROM FieldPermissions WHERE Id = '{grant['id']}'")["totalSize"]
        == 0
    )
    assert "Lead_Score__c" not in {f["name"] for f in sf.Lead.describe()["fields"]}
    sf.PermissionSet.delete(set_id)
    assert (
        sf.query(f"SELECT COUNT() FROM PermissionSetAssignment WHERE PermissionSetId = '{set_id}'")[
            "totalSize"
        ]
        == 0
    )


def test_field_permission_rules(strict):
    sf = connect(strict)
    set_id = sf.PermissionSet.create({"Name": "Rules_Check", "Label": "Rules"})["id"]
    try:
        cases = [
            ({"Field": "Lead_Score__c"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
            ({"Field": "Lead.Nope__c"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
            (
                {"Field": "Lead.Lead_Score__c", "PermissionsRead": False, "PermissionsEdit": True},
                "FIELD_INTEGRITY_EXCEPTION",
            ),
        ]
        for values, code in cases:
            body = {"ParentId": set_id, "SobjectType": "Lead", "PermissionsRead": True, **values}
            with pytest.raises(SalesforceMalformedRequest) as raised:
                sf.FieldPermissions.create(body)
            assert raised.value.content[0]["errorCode"] == code, values
        with pytest.raises(SalesforceMalformedRequest) as raised:
            sf.PermissionSet.create({"Name": "Rules_Check", "Label": "Again"})
        assert raised.value.content[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    finally:
        sf.PermissionSet.delete(set_id)


def test_tooling_field_has_no_field_permissions(strict):
    sf = connect(strict)
    sf.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={"FullName": "Lead.Fresh__c", "Metadata": {"label": "Fresh", "type": "Text"}},
    )
    assert (
        sf.query("SELECT COUNT() FROM FieldPermissions WHERE Field = 'Lead.Fresh__c'")["totalSize"]
        == 0
    )
    assert "Fresh__c" not in {f["name"] for f in sf.Lead.describe()["fields"]}


def test_tokens_act_as_their_user(strict):
    reps = strict.info["sales_users"]
    assert len(reps) >= 3
    rep_sf, rep_id = login_as(strict, reps[0]["username"], reps[0]["password"])
    profile = rep_sf.query(f"SELECT Profile.Name FROM User WHERE Id = '{rep_id}'")["records"][0]
    assert profile["Profile"]["Name"] == "Standard User"
    # The rep's token does not see what the integration user is granted, and vice versa.
    sf = connect(strict)
    set_id = sf.PermissionSet.create({"Name": "Sales_Read", "Label": "Sales read"})["id"]
    sf.FieldPermissions.create(
        {
            "ParentId": set_id,
            "SobjectType": "Lead",
            "Field": "Lead.Lead_Tier__c",
            "PermissionsRead": True,
        }
    )
    sf.PermissionSetAssignment.create({"AssigneeId": rep_id, "PermissionSetId": set_id})
    assert "Lead_Tier__c" in {f["name"] for f in rep_sf.Lead.describe()["fields"]}
    assert "Lead_Tier__c" not in {f["name"] for f in sf.Lead.describe()["fields"]}
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.PermissionSetAssignment.create({"AssigneeId": rep_id, "PermissionSetId": set_id})
    assert raised.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    # A rep cannot manage permission sets.
    with pytest.raises(SalesforceMalformedRequest) as raised:
        rep_sf.PermissionSet.create({"Name": "Mine", "Label": "Mine"})
    assert raised.value.content[0]["errorCode"] == "INSUFFICIENT_ACCESS_OR_READONLY"
    sf.PermissionSet.delete(set_id)
    bad = CaSession(strict.info["ca_bundle"]).post(
        f"{strict.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": strict.info["client_id"],
            "client_secret": strict.info["client_secret"],
            "username": reps[0]["username"],
            "password": "wrong",
        },
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"


def test_integration_user_without_setup_rights(tmp_path):
    with Sandbox(tmp_path, leads=20, seed=3, as_of=AS_OF, setup_rights=False) as box:
        sf = connect(box)
        with pytest.raises(SalesforceMalformedRequest) as raised:
            sf.PermissionSet.create({"Name": "Leadscore", "Label": "Leadscore"})
        assert raised.value.content[0]["errorCode"] == "INSUFFICIENT_ACCESS_OR_READONLY"
        # The default org grants the custom fields it was generated with.
        sf.Lead.update(lead_id(sf), {"Lead_Score__c": 42})
