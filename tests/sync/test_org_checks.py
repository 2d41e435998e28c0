"""doctor's preflight rows against sandbox orgs that model each problem."""

from __future__ import annotations

from connector.salesforce.settings import SetupSettings
from connector.sandbox import Sandbox
from connector.sandbox.org_rules import (
    DuplicateRuleSpec,
    OrgFeatures,
    RecordTypeSpec,
    ValidationRuleSpec,
)
from sync.org_checks import (
    check_currencies,
    check_duplicate_rules,
    check_formula_features,
    check_list_view,
    check_record_types,
    check_rep_access,
    check_validation_rules,
)
from sync.org_setup import list_view_spec, setup_access
from tests.connector.test_salesforce import AS_OF, client_for
from tests.sync.test_org_setup import OUTPUTS, TIERS, integration_id

TIER = OUTPUTS[1]


def test_a_clean_org_passes_and_setup_fixes_field_security(tmp_path):
    with Sandbox(tmp_path, leads=20, seed=41, as_of=AS_OF, field_security="enforced") as box:
        client = client_for(box)
        rep = box.info["sales_users"][0]["username"]
        view = list_view_spec(SetupSettings(), "Lead", OUTPUTS, TIERS)
        [before] = check_rep_access(client, rep, OUTPUTS)
        assert not before[1] and "cannot read Lead_Score__c" in before[2]
        assert not check_list_view(client, view)[0][1]
        setup_access(client, SetupSettings(sales_users=[rep]), OUTPUTS, TIERS, integration_id(box))
        assert check_rep_access(client, rep, OUTPUTS)[0][1]
        assert check_list_view(client, view)[0][1]
        assert check_validation_rules(client, "Lead", OUTPUTS)[0][1:3] == (True, "none active")
        assert check_duplicate_rules(client, "Lead", False)[0][1]
        assert check_record_types(client, TIER, TIERS)[0][1]
        assert check_currencies(client)[0][2] == "single currency"
        assert not check_rep_access(client, "ghost@example.com", OUTPUTS)[0][1]


def test_org_rules_are_reported_with_their_fix(tmp_path):
    features = OrgFeatures(
        validation_rules=(ValidationRuleSpec("Score_guard", "ISCHANGED(Lead_Score__c)"),),
        duplicate_rules=(DuplicateRuleSpec("Lead_dupes"),),
        record_types=(RecordTypeSpec("Partner", picklists={"Lead_Tier__c": ("C", "D")}),),
        currencies=("USD", "EUR"),
    )
    with Sandbox(tmp_path, leads=20, seed=42, as_of=AS_OF, org_features=features) as box:
        client = client_for(box)
        [rules] = check_validation_rules(client, "Lead", OUTPUTS)
        assert not rules[1] and "Score_guard" in rules[2]
        [dupes] = check_duplicate_rules(client, "Lead", False)
        assert not dupes[1] and "allowSave=true" in dupes[3]
        assert check_duplicate_rules(client, "Lead", True)[0][1]
        [types] = check_record_types(client, TIER, TIERS)
        assert not types[1] and "Partner does not allow Lead_Tier__c values A, B" in types[2]
        assert "multi-currency (USD, EUR" in check_currencies(client)[0][2]
    assert not check_formula_features("Lead", ["Days_Open__c"], None)[0][1]
    assert check_formula_features("Lead", ["Days_Open__c"], 7)[0][1]
    assert check_formula_features("Lead", [], None) == []
