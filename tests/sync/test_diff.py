"""The diff rules (hysteresis, nulls, score change and trend, retries, validation) and the ledger.

Pure: scores and a real DuckDB ledger, no target system.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from connector.salesforce import FieldDescription, check_field_value
from connector.store import Store, utc_now
from connector.store.runs import dead_letter_rows, dead_letters
from sync.diff import diff_outputs

FIELDS = {"probability": "P__c", "score": "S__c", "tier": "T__c"}


def scores(*rows: tuple[str, float, str], reasons: str | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [r[0] for r in rows],
            "model_version": "v1",
            "probability": [r[1] for r in rows],
            "score": [round(r[1] * 100) for r in rows],
            "tier": [r[2] for r in rows],
            "reasons": reasons,
            "scored_at": pd.Timestamp("2026-01-01"),
        }
    )


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        yield s


def confirm(store: Store, diff, **policy) -> None:
    """Record every change of a diff as written (what a successful push does)."""
    store.record_outcomes(
        "salesforce",
        "Lead",
        [
            {"record_id": r, "field": f, "value": json.loads(v), "success": True}
            for r, f, v in zip(
                diff.changes["record_id"], diff.changes["field"], diff.changes["value"], strict=True
            )
        ],
        **policy,
    )


def sent(diff) -> dict[tuple[str, str], object]:
    return {
        (r, f): json.loads(v)
        for r, f, v in zip(
            diff.changes["record_id"], diff.changes["field"], diff.changes["value"], strict=True
        )
    }


def test_hysteresis_holds_small_moves_within_a_tier_and_compares_with_the_last_written(store):
    first = diff_outputs(
        scores(("a", 0.50, "B"), ("b", 0.79, "B")),
        store.ledger("salesforce", "Lead"),
        FIELDS,
        epsilon=0.02,
    )
    assert (first.create, first.update) == (2, 0)
    confirm(store, first)
    # a: +0.015, same tier: held. b: +0.015 but crosses into A: sent.
    second = diff_outputs(
        scores(("a", 0.515, "B"), ("b", 0.805, "A")),
        store.ledger("salesforce", "Lead"),
        FIELDS,
        epsilon=0.02,
    )
    assert second.hysteresis == 1 and second.update == 1
    assert {r for r, _ in sent(second)} == {"b"}
    # the next small move adds up against the last *written* 0.50: 0.525 passes epsilon
    third = diff_outputs(
        scores(("a", 0.525, "B"), ("b", 0.805, "A")),
        store.ledger("salesforce", "Lead"),
        FIELDS,
        epsilon=0.02,
    )
    assert {r for r, _ in sent(third)} == {"a", "b"}
    # without hysteresis every change goes
    off = diff_outputs(
        scores(("a", 0.515, "B")), store.ledger("salesforce", "Lead"), FIELDS, epsilon=0.0
    )
    assert sent(off) == {("a", "P__c"): 0.515, ("a", "S__c"): 52}


def test_a_field_never_confirmed_is_sent_whatever_the_hysteresis(store):
    confirm(
        store, diff_outputs(scores(("a", 0.5, "B")), store.ledger("salesforce", "Lead"), FIELDS)
    )
    more = {**FIELDS, "model_version": "V__c"}
    diff = diff_outputs(
        scores(("a", 0.505, "B")), store.ledger("salesforce", "Lead"), more, epsilon=0.02
    )
    assert sent(diff) == {("a", "V__c"): "v1"} and diff.hysteresis == 0


def test_nulls_are_left_alone_unless_the_field_syncs_nulls(store):
    fields = {"score": "S__c", "reasons": "R__c"}
    confirm(
        store,
        diff_outputs(
            scores(("a", 0.5, "B"), reasons="x up"), store.ledger("salesforce", "Lead"), fields
        ),
    )
    no_reasons = scores(("a", 0.5, "B"), reasons=None)
    kept = diff_outputs(no_reasons, store.ledger("salesforce", "Lead"), fields)
    assert kept.to_send == 0 and kept.unchanged == 1
    cleared = diff_outputs(
        no_reasons, store.ledger("salesforce", "Lead"), fields, sync_nulls={"reasons"}
    )
    assert sent(cleared) == {("a", "R__c"): None}


def test_score_change_and_trend_travel_with_a_written_score(store):
    fields = {"score": "S__c", "score_change": "C__c", "trend": "D__c"}
    first = diff_outputs(
        scores(("a", 0.40, "C"), ("b", 0.40, "C"), ("c", 0.40, "C")),
        store.ledger("salesforce", "Lead"),
        fields,
    )
    # a first write has no change and no trend (nulls are not written)
    assert set(sent(first)) == {("a", "S__c"), ("b", "S__c"), ("c", "S__c")}
    confirm(store, first)
    second = diff_outputs(
        scores(("a", 0.52, "B"), ("b", 0.30, "C"), ("c", 0.43, "C")),
        store.ledger("salesforce", "Lead"),
        fields,
        trend_threshold=5,
    )
    values = sent(second)
    assert values[("a", "C__c")] == 12 and values[("a", "D__c")] == "rising"
    assert values[("b", "C__c")] == -10 and values[("b", "D__c")] == "falling"
    assert values[("c", "C__c")] == 3 and values[("c", "D__c")] == "steady"
    confirm(store, second)
    # nothing changed: the trend is not recomputed against the score it was written with
    third = diff_outputs(
        scores(("a", 0.52, "B"), ("b", 0.30, "C"), ("c", 0.43, "C")),
        store.ledger("salesforce", "Lead"),
        fields,
    )
    assert third.to_send == 0 and third.unchanged == 3


def test_ledger_states_backoff_dead_letters_gone_and_revival(store):
    row = {"record_id": "a", "field": "S__c", "value": 50, "success": False, "error": "X: no"}
    policy = {"max_attempts": 3, "backoff_seconds": 600}
    store.record_outcomes(
        "salesforce",
        "Lead",
        [row, {**row, "record_id": "g", "gone": True, "error": "ENTITY_IS_DELETED: gone"}],
        **policy,
    )
    ledger = store.ledger("salesforce", "Lead").set_index("record_id")
    assert ledger.loc["a", "status"] == "failed" and ledger.loc["g", "status"] == "gone"
    waited = ledger.loc["a", "next_attempt_at"] - utc_now()
    assert timedelta(seconds=590) < waited <= timedelta(seconds=600)
    new = scores(("a", 0.5, "B"), ("g", 0.5, "B"))
    fields = {"score": "S__c"}
    deferred = diff_outputs(new, store.ledger("salesforce", "Lead"), fields)
    assert (deferred.deferred, deferred.gone, deferred.to_send) == (1, 1, 0)
    due = diff_outputs(
        new, store.ledger("salesforce", "Lead"), fields, now=utc_now() + timedelta(hours=1)
    )
    assert sent(due) == {("a", "S__c"): 50}  # the gone record is never sent again
    store.record_outcomes("salesforce", "Lead", [row], **policy)
    ledger = store.ledger("salesforce", "Lead").set_index("record_id")
    # the second rejection waits twice as long
    assert ledger.loc["a", "next_attempt_at"] - utc_now() > timedelta(seconds=1190)
    store.record_outcomes("salesforce", "Lead", [row], **policy)
    assert store.ledger("salesforce", "Lead").set_index("record_id").loc["a", "status"] == "dead"
    assert dead_letters(store) == 1
    rows = {r["status"]: r for r in dead_letter_rows(store)}
    assert rows["dead"]["reason"] == "X: no" and rows["gone"]["example"] == "g"
    blocked = diff_outputs(
        new, store.ledger("salesforce", "Lead"), fields, now=utc_now() + timedelta(days=9)
    )
    assert (blocked.dead, blocked.to_send) == (1, 0)
    assert store.revive_dead_letters() == 1
    revived = diff_outputs(new, store.ledger("salesforce", "Lead"), fields)
    assert sent(revived) == {("a", "S__c"): 50}
    store.record_outcomes("salesforce", "Lead", [{**row, "success": True}], **policy)
    ledger = store.ledger("salesforce", "Lead").set_index("record_id")
    assert ledger.loc["a", "status"] == "written" and ledger.loc["a", "attempts"] == 0


def field(name: str, kind: str, **extra) -> FieldDescription:
    values = {
        "updateable": True,
        "createable": True,
        "nillable": True,
        "length": 0,
        "precision": None,
        "scale": None,
        "custom": True,
        "external_id": False,
        "picklist_values": (),
    }
    return FieldDescription(name, kind, **{**values, **extra})


def test_values_salesforce_would_reject_are_invalid_and_not_sent(store):
    described = {
        "S__c": field("S__c", "double", precision=2, scale=0),
        "T__c": field("T__c", "picklist", picklist_values=("A", "B"), restricted_picklist=True),
    }
    diff = diff_outputs(
        scores(("ok", 0.5, "B"), ("tier", 0.2, "D"), ("big", 1.0, "A")),
        store.ledger("salesforce", "Lead"),
        {"score": "S__c", "tier": "T__c"},
        check=lambda name, value: check_field_value(described[name], value),
    )
    assert {r for r, _ in sent(diff)} == {"ok"}
    assert diff.invalid_records == 2
    errors = dict(zip(diff.invalid["record_id"], diff.invalid["error"], strict=True))
    assert errors["tier"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    assert errors["big"].startswith("NUMBER_OUTSIDE_VALID_RANGE")
    text = field("R__c", "string", length=5)
    assert check_field_value(text, "123456").startswith("STRING_TOO_LONG")
    assert check_field_value(field("X", "double", updateable=False), 1).startswith(
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    )


def test_multiclass_and_regression_outputs(store):
    multi = scores(("a", 0.7, "GOLD")).assign(
        class_probabilities=json.dumps({"GOLD": 0.7, "SILVER": 0.3})
    )
    fields = {"predicted_class": "C", "class_probabilities": "P", "probability": "Q"}
    as_text = sent(diff_outputs(multi, store.ledger("x", "y"), fields, task="multiclass"))
    assert as_text[("a", "C")] == "GOLD" and json.loads(as_text[("a", "P")])["SILVER"] == 0.3
    as_object = diff_outputs(
        multi, store.ledger("x", "y"), fields, task="multiclass", structured=True
    )
    assert sent(as_object)[("a", "P")] == {"GOLD": 0.7, "SILVER": 0.3}
    reg = scores(("a", 0.0, None), ("b", 0.0, None)).assign(probability=[120.5, 980.25])
    values = sent(
        diff_outputs(
            reg,
            store.ledger("x", "y"),
            {"predicted_value": "V", "percentile": "R"},
            task="regression",
        )
    )
    assert values[("b", "V")] == 980.25 and values[("b", "R")] == 100 and values[("a", "R")] == 50
