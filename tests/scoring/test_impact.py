"""Adoption and impact on a small hand-made history with known answers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd

from scoring.impact import compute_impact, lead_facts, queue_touches, score_at, wilson_interval

T0 = datetime(2026, 3, 2, 9, 0)
H = timedelta(hours=1)
TIERS = ["A", "B", "C"]


def _history() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two reps, two leads each, both A and C open at the same time.

    Rep R1 touches the A lead first, then the C lead (follows the score).
    Rep R2 touches the C lead first while the A lead waits (out of rank), then the A lead.
    """
    leads = pd.DataFrame(
        {
            "lead_id": ["L1", "L2", "L3", "L4"],
            "owner_id": ["R1", "R1", "R2", "R2"],
            "created_at": [T0] * 4,
            "converted_at": [T0 + 5 * H, None, None, T0 + 40 * H],
        }
    )
    leads["converted_at"] = pd.to_datetime(leads["converted_at"])
    scores = pd.DataFrame(
        {
            "entity_id": ["L1", "L2", "L3", "L4"],
            "probability": [0.7, 0.1, 0.8, 0.2],
            "tier": ["A", "C", "A", "C"],
            "scored_at": [T0] * 4,
        }
    )
    touches = pd.DataFrame(
        {
            "lead_id": ["L1", "L2", "L4", "L3", "L1"],
            "touched_at": [T0 + H, T0 + 2 * H, T0 + H, T0 + 30 * H, T0 + 3 * H],
        }
    )
    return leads, touches, scores


def test_adoption_index_and_out_of_rank_known_answers():
    leads, touches, scores = _history()
    facts = lead_facts(leads, touches, scores, window_days=30, open_days=14)
    queue = queue_touches(facts, TIERS, ["A"]).set_index("lead_id")
    # L1: queue {A, C}, picked the A -> expected 0.5 top; L2: queue {C} -> expected 0.
    assert queue.loc["L1", "queue_size"] == 2 and queue.loc["L1", "queue_top"] == 1
    assert queue.loc["L2", "queue_top"] == 0
    assert not queue["out_of_rank"].loc[["L1", "L2", "L3"]].any()
    assert queue.loc["L4", "out_of_rank"]  # the A lead L3 was waiting
    result = compute_impact(
        leads, touches, scores, tier_order=TIERS, since=T0, until=T0 + timedelta(days=60)
    )
    reps = {r["owner_id"]: r for r in result.reps}
    assert reps["R1"]["adoption_index"] == 2.0  # 1 top touch, 0.5 expected
    assert reps["R2"]["adoption_index"] == round(1 / 1.5, 3)  # 1 top touch, 0.5 + 1 expected
    assert reps["R2"]["out_of_rank"] == 1 and reps["R2"]["out_of_rank_share"] == 0.5
    assert "too few first touches" in reps["R1"]["note"]
    assert "too few matured leads" in reps["R1"]["matured_note"]
    assert result.overall["first_touches"] == 4
    speed = {row["tier"]: row for row in result.speed}
    assert speed["A"]["median_hours"] == 15.5  # 1 h and 30 h
    assert speed["A"]["within_24h"] == 0.5
    assert speed["B"]["leads"] == 0 and speed["B"]["median_hours"] is None
    realized = {row["tier"]: row for row in result.realized}
    assert realized["A"]["conversions"] == 1 and realized["C"]["conversions"] == 1
    low, high = wilson_interval(1, 2)
    assert realized["A"]["rate_low"] == round(low, 4) and realized["A"]["rate_high"] == round(
        high, 4
    )
    assert realized["A"]["predicted"] == 0.75
    # JSON-safe: no NaN anywhere, the value statement says why it is silent.
    text = json.dumps(result.to_dict(), allow_nan=False, default=str)
    assert "NaN" not in text
    assert result.value["sentence"] is None and result.value["reason"]


def test_score_written_after_the_touch_never_counts():
    moments = pd.DataFrame(
        {"lead_id": ["L1", "L2", "L3"], "touched_at": [T0 + 2 * H, T0 + 2 * H, pd.NaT]}
    )
    scores = pd.DataFrame(
        {
            "entity_id": ["L1", "L1", "L2", "L3"],
            "probability": [0.4, 0.9, 0.9, 0.5],
            "tier": ["B", "A", "A", "B"],
            # L1: B before the touch, A one hour after; L2: only scored after the touch.
            "scored_at": [T0, T0 + 3 * H, T0 + 2 * H + timedelta(seconds=1), T0],
        }
    )
    at = score_at(moments, scores, time_column="touched_at").set_index("lead_id")
    assert at.loc["L1", "tier"] == "B" and at.loc["L1", "probability"] == 0.4
    assert pd.isna(at.loc["L2", "tier"])
    assert pd.isna(at.loc["L3", "tier"])  # never touched


def test_empty_period_says_so_without_dividing_by_zero():
    leads, touches, scores = _history()
    later = T0 + timedelta(days=400)
    result = compute_impact(
        leads, touches, scores, tier_order=TIERS, since=later, until=later + timedelta(days=7)
    )
    assert result.overall["first_touches"] == 0
    assert result.overall["adoption_index"] is None
    assert "no scored first touches in the period" in result.notes
    assert result.lift["lift"] is None and result.lift["note"]
    json.dumps(result.to_dict(), allow_nan=False, default=str)


def test_no_score_history_is_reported():
    leads, touches, scores = _history()
    result = compute_impact(
        leads,
        touches,
        scores.iloc[:0],
        tier_order=TIERS,
        since=T0,
        until=T0 + timedelta(days=60),
    )
    assert "no score history: nothing was scored yet" in result.notes
    assert any("before the lead had any score" in note for note in result.notes)
    json.dumps(result.to_dict(), allow_nan=False, default=str)


def test_value_statement_compares_against_what_the_score_predicted():
    from scoring.impact import value_statement

    reps = [
        {"owner_id": "R1", "adoption_low": 1.4},
        {"owner_id": "R2", "adoption_low": 0.8},
    ]
    # Both reps' leads were predicted at 20 %; R1's converted at 40 %, R2's at 20 %.
    matured = pd.DataFrame(
        {
            "owner_id": ["R1"] * 200 + ["R2"] * 200,
            "entry_probability": [0.2] * 400,
            "converted_in_window": [True] * 80 + [False] * 120 + [True] * 40 + [False] * 160,
        }
    )
    value = value_statement(reps, matured, "A")
    assert value["ratio"] == 2.0 and value["low"] > 1
    assert value["sentence"].startswith("Reps who worked A leads first converted 100% more")
    # Better leads alone are not credit: R1's leads were predicted at 40 % too.
    matured.loc[:199, "entry_probability"] = 0.4
    value = value_statement(reps, matured, "A")
    assert value["sentence"] is None and value["ratio"] == 1.0
    assert "no measurable difference" in value["reason"] and value["raw_ratio"] == 2.0
    # A rep with too few leads: said so, no figure.
    value = value_statement(reps, matured.iloc[190:], "A")
    assert value["ratio"] is None and "too few matured leads" in value["reason"]
