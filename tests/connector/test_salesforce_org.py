"""Org administration through the connector: permission sets, FLS, list views, org rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.errors import ConfigError
from connector.salesforce.org import (
    ListViewSpec,
    assign,
    assignments,
    column_token,
    create_permission_set,
    currencies,
    delete_list_view,
    delete_record,
    duplicate_rules,
    field_permissions,
    find_permission_set,
    find_users,
    grant_field,
    read_list_view,
    record_type_values,
    save_list_view,
    user_field_access,
    validation_rules,
)
from connector.sandbox import Sandbox
from connector.sandbox.org_rules import (
    DuplicateRuleSpec,
    OrgFeatures,
    RecordTypeSpec,
    ValidationRuleSpec,
)
from tests.connector.test_salesforce import AS_OF, client_for

FEATURES = OrgFeatures(
    validation_rules=(ValidationRuleSpec("Score_guard", "ISCHANGED(Lead_Score__c)"),),
    duplicate_rules=(DuplicateRuleSpec("Lead_dupes"),),
    record_types=(RecordTypeSpec("Partner", picklists={"Lead_Tier__c": ("C", "D")}),),
    currencies=("EUR", "USD"),
)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = tmp_path_factory.mktemp("org")
    with Sandbox(workdir, leads=30, seed=21, as_of=AS_OF, field_security="enforced") as box:
        yield box


def test_column_tokens():
    assert column_token("Lead", "Name") == "FULL_NAME"
    assert column_token("Lead", "Company") == "LEAD.COMPANY"
    assert column_token("Lead", "LeadSource") == "LEAD.LEAD_SOURCE"
    assert column_token("Lead", "Lead_Score__c") == "Lead_Score__c"


def test_permission_sets_grants_and_a_reps_access(strict):
    client = client_for(strict)
    rep = strict.info["sales_users"][0]["username"]
    users = find_users(client, [rep, "nobody@example.com"])
    assert set(users) == {rep}
    rep_id = users[rep]["Id"]
    assert user_field_access(client, rep_id, "Lead") == {}
    set_id = create_permission_set(client, "Leadscore_Sales_Test", "leadscore sales (test)")
    assert find_permission_set(client, "Leadscore_Sales_Test")["Id"] == set_id
    grant_field(client, set_id, "Lead", "Lead_Score__c", edit=False)
    assign(client, set_id, rep_id)
    assert list(field_permissions(client, set_id)) == ["lead.lead_score__c"]
    assert set(assignments(client, set_id)) == {rep_id[:15]}
    access = user_field_access(client, rep_id, "Lead")["lead_score__c"]
    assert (access.read, access.edit, access.via) == (True, False, ("Leadscore_Sales_Test",))
    delete_record(client, "PermissionSet", set_id)
    assert find_permission_set(client, "Leadscore_Sales_Test") is None


def test_list_view_round_trip(strict):
    client = client_for(strict)
    spec = ListViewSpec(
        "Lead.Hot_test",
        "Hot (test)",
        ("FULL_NAME", "Lead_Score__c"),
        (("Lead_Tier__c", "equals", "A,B"),),
    )
    assert read_list_view(client, spec.full_name) is None
    save_list_view(client, spec, create=True)
    assert read_list_view(client, spec.full_name) == spec
    delete_list_view(client, spec.full_name)
    assert read_list_view(client, spec.full_name) is None


def test_org_rules(tmp_path):
    with Sandbox(tmp_path, leads=20, seed=22, as_of=AS_OF, org_features=FEATURES) as box:
        check_org_rules(box)


def check_org_rules(box: Sandbox) -> None:
    client = client_for(box)
    [rule] = validation_rules(client, "Lead")
    assert rule.active and "Lead_Score__c" in rule.detail
    assert [r.name for r in duplicate_rules(client, "Lead")] == ["Lead_dupes"]
    assert record_type_values(client, "Lead", "Lead_Tier__c") == [("Partner", ["C", "D"])]
    assert currencies(client) == ["EUR", "USD"]


def test_missing_setup_rights_are_one_line_config_errors(tmp_path):
    with Sandbox(tmp_path, leads=10, seed=2, as_of=AS_OF, setup_rights=False) as box:
        client = client_for(box)
        with pytest.raises(ConfigError, match="INSUFFICIENT_ACCESS") as raised:
            create_permission_set(client, "Leadscore_X", "x")
        assert "Manage Profiles and Permission Sets" in (raised.value.hint or "")
        with pytest.raises(ConfigError, match="INSUFFICIENT_ACCESS"):
            save_list_view(client, ListViewSpec("Lead.X", "X", ("FULL_NAME",), ()), create=True)
