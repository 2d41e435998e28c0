"""Diffing desired output values against the ledger of confirmed writes."""

from __future__ import annotations

import json

import pandas as pd

from connector.store import Store
from sync.diff import changed_values, output_values

FIELDS = {"score": "Lead_Score__c", "tier": "Lead_Tier__c"}


def scores(*rows: tuple[str, int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [r[0] for r in rows],
            "model_version": "v1",
            "probability": [r[1] / 100 for r in rows],
            "score": [r[1] for r in rows],
            "tier": [r[2] for r in rows],
            "scored_at": pd.Timestamp("2026-01-01"),
        }
    )


def test_output_values_are_long_form_json():
    desired = output_values(scores(("a", 87, "A")), FIELDS)
    assert desired.to_dict("records") == [
        {"record_id": "a", "field": "Lead_Score__c", "kind": "score", "value": "87"},
        {"record_id": "a", "field": "Lead_Tier__c", "kind": "tier", "value": '"A"'},
    ]


def test_only_values_that_differ_from_the_confirmed_ones_are_sent(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.record_outcomes(
            "salesforce",
            "Lead",
            [
                {"record_id": "a", "field": "Lead_Score__c", "value": 87, "success": True},
                {"record_id": "a", "field": "Lead_Tier__c", "value": "A", "success": True},
                {"record_id": "b", "field": "Lead_Score__c", "value": 10, "success": True},
                {"record_id": "b", "field": "Lead_Tier__c", "value": "D", "success": True},
                # failed attempt: the confirmed value stays unknown, so it is sent again
                {
                    "record_id": "c",
                    "field": "Lead_Score__c",
                    "value": 50,
                    "success": False,
                    "error": "X: y",
                },
            ],
        )
        desired = output_values(
            scores(("a", 87, "A"), ("b", 12, "D"), ("c", 50, "B"), ("d", 1, "D")), FIELDS
        )
        changes = changed_values(desired, store.ledger("salesforce", "Lead"))
    sent = {(r, f): json.loads(v) for r, f, _, v in changes.itertuples(index=False)}
    assert sent == {
        ("b", "Lead_Score__c"): 12,
        ("c", "Lead_Score__c"): 50,
        ("c", "Lead_Tier__c"): "B",
        ("d", "Lead_Score__c"): 1,
        ("d", "Lead_Tier__c"): "D",
    }


def test_a_failed_retry_keeps_the_last_confirmed_value(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        ok = {"record_id": "a", "field": "F", "value": 1, "success": True}
        store.record_outcomes("salesforce", "Lead", [ok])
        store.record_outcomes(
            "salesforce", "Lead", [{**ok, "value": 2, "success": False, "error": "E: x"}]
        )
        store.record_outcomes(
            "salesforce", "Lead", [{**ok, "value": 2, "success": False, "error": "E: x"}]
        )
        row = store.ledger("salesforce", "Lead").iloc[0]
        assert json.loads(row["value"]) == 1
        assert row["status"] == "failed" and row["attempts"] == 2 and row["last_error"] == "E: x"
        store.record_outcomes("salesforce", "Lead", [{**ok, "value": 2}])
        row = store.ledger("salesforce", "Lead").iloc[0]
        assert json.loads(row["value"]) == 2 and row["status"] == "written" and row["attempts"] == 0
