"""Org rules a first write meets: validation/duplicate rules, record types, currencies, formulas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connector.sandbox import Sandbox
from connector.sandbox.org_rules import (
    DuplicateRuleSpec,
    FormulaSpec,
    OrgFeatures,
    RecordTypeSpec,
    ValidationRuleSpec,
)
from tests.connector.sandbox.conftest import AS_OF, connect

FIRST_LEADS = 6


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = tmp_path_factory.mktemp("rules")
    with Sandbox(workdir, leads=30, seed=12, as_of=AS_OF) as plain:
        flagged = tuple(r[0] for r in plain.sql("SELECT Id FROM Lead ORDER BY Id LIMIT 1"))
    features = OrgFeatures(
        validation_rules=(
            ValidationRuleSpec("Score_locked", "AND(ISCHANGED(Lead_Score__c), Rating = 'Hot')"),
            ValidationRuleSpec("Inactive_rule", "ISCHANGED(Lead_Tier__c)", active=False),
        ),
        duplicate_rules=(DuplicateRuleSpec("Standard_Lead_Duplicate_Rule", flagged=flagged),),
        record_types=(RecordTypeSpec("Partner", picklists={"Lead_Tier__c": ("C", "D")}),),
        currencies=("USD", "EUR"),
        formula_fields=(FormulaSpec("Days_Open__c", "TODAY() - DATEVALUE(CreatedDate)"),),
    )
    with Sandbox(workdir, leads=30, seed=12, as_of=AS_OF, org_features=features) as sandbox:
        yield sandbox


def test_validation_rules_through_the_tooling_api(box):
    sf = connect(box)
    rules = sf.toolingexecute(
        "query/?q=SELECT+Id,ValidationName,Active,EntityDefinition.DeveloperName+FROM+"
        "ValidationRule+WHERE+EntityDefinition.DeveloperName='Lead'"
    )["records"]
    assert {(r["ValidationName"], r["Active"]) for r in rules} == {
        ("Score_locked", True),
        ("Inactive_rule", False),
    }
    rule = next(r for r in rules if r["Active"])
    detail = sf.toolingexecute(f"sobjects/ValidationRule/{rule['Id']}")
    assert "Lead_Score__c" in detail["Metadata"]["errorConditionFormula"]
    assert detail["FullName"] == "Lead.Score_locked"
    lead = sf.query("SELECT Id FROM Lead ORDER BY Id DESC LIMIT 1")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(lead, {"Lead_Score__c": 50})
    assert raised.value.content[0]["errorCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"


def test_duplicate_rule_blocks_unless_allow_save(box):
    sf = connect(box)
    assert sf.query("SELECT DeveloperName, IsActive FROM DuplicateRule WHERE SobjectType = 'Lead'")[
        "records"
    ][0]["IsActive"]
    flagged = box.sql("SELECT Id FROM Lead ORDER BY Id LIMIT 1")[0][0]
    body = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, "id": flagged, "Rating": "Warm"}],
    }
    result = sf.restful("composite/sobjects", method="PATCH", json=body)
    assert result[0]["errors"][0]["statusCode"] == "DUPLICATES_DETECTED"
    result = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json=body,
        headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"},
    )
    assert result[0]["success"]


def test_record_type_restricts_the_tier_picklist(box):
    sf = connect(box)
    partner = sf.query("SELECT Id FROM RecordType WHERE DeveloperName = 'Partner'")["records"][0][
        "Id"
    ]
    values = sf.restful(f"ui-api/object-info/Lead/picklist-values/{partner}/Lead_Tier__c")["values"]
    assert [v["value"] for v in values] == ["C", "D"]
    lead = sf.query(
        f"SELECT Id FROM Lead WHERE RecordTypeId = '{partner}' ORDER BY Id DESC LIMIT 1"
    )["records"][0]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(lead["Id"], {"Lead_Tier__c": "A"})
    assert raised.value.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    sf.Lead.update(lead["Id"], {"Lead_Tier__c": "C"})


def test_multi_currency_and_formula_fields(box):
    sf = connect(box)
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert fields["CurrencyIsoCode"]["picklistValues"][0]["value"] == "USD"
    assert fields["Days_Open__c"]["calculated"] is True
    assert "CreatedDate" in fields["Days_Open__c"]["calculatedFormula"]
    codes = sf.query("SELECT IsoCode, IsCorporate FROM CurrencyType ORDER BY IsoCode")["records"]
    assert [(c["IsoCode"], c["IsCorporate"]) for c in codes] == [("EUR", False), ("USD", True)]
    lead = sf.query("SELECT Id, SystemModstamp FROM Lead LIMIT 1")["records"][0]
    box.set_formula_values("Lead", {lead["Id"]: {"Days_Open__c": 12}})
    again = sf.query(f"SELECT Days_Open__c, SystemModstamp FROM Lead WHERE Id = '{lead['Id']}'")
    row = again["records"][0]
    assert row["Days_Open__c"] == 12 and row["SystemModstamp"] == lead["SystemModstamp"]
