"""Adoption measured on a generated org whose reps' habits are known (connector/sandbox/reps.py)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import pandas as pd
from scipy.stats import spearmanr

from connector.sandbox.database import create_schema
from connector.sandbox.generator import generate_org
from connector.sandbox.reps import read_first_touches, rep_truth
from scoring.impact import compute_impact, touches_from_tasks
from scoring.tiers import assign_tiers

AS_OF = datetime(2026, 6, 1)


def _frame(conn: sqlite3.Connection, sql: str) -> pd.DataFrame:
    cursor = conn.execute(sql)
    return pd.DataFrame(cursor.fetchall(), columns=[c[0] for c in cursor.description])


def test_adoption_index_ranks_reps_as_the_generator_intended():
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    generate_org(conn, seed=3, leads=20_000, as_of=int(AS_OF.timestamp()))
    truth = read_first_touches(conn)
    leads = _frame(
        conn,
        "SELECT Id AS lead_id, OwnerId AS owner_id, CreatedDate AS created_at, "
        "ConvertedContactId AS converted_contact_id FROM Lead WHERE NOT IsDeleted",
    )
    leads["created_at"] = pd.to_datetime(leads["created_at"], unit="s")
    leads = leads.merge(truth[["lead_id", "responded_at"]], on="lead_id", how="left")
    tasks = _frame(
        conn, "SELECT WhoId AS who_id, Type AS type, CreatedDate AS created_at FROM Task"
    )
    tasks["created_at"] = pd.to_datetime(tasks["created_at"], unit="s")
    # The recorded schedule is what the Task rows show (converters may be called earlier).
    touches = touches_from_tasks(tasks, leads)
    first = touches.merge(truth, on="lead_id")
    first = first[first["touched_at"] >= first["responded_at"]].groupby("lead_id")
    agree = (first["touched_at"].min() == first["scheduled_at"].first()).mean()
    assert agree > 0.9
    scores = pd.DataFrame(
        {
            "entity_id": truth["lead_id"],
            "probability": truth["visible_score"],
            "tier": assign_tiers(truth["visible_score"].to_numpy(), {"A": 0.5, "B": 0.2}, "C"),
            "scored_at": truth["responded_at"].dt.ceil("15min"),
        }
    )
    result = compute_impact(
        leads,
        touches,
        scores,
        tier_order=["A", "B", "C"],
        since=AS_OF - timedelta(days=365),
        until=AS_OF,
    )
    reps = pd.DataFrame(result.reps).merge(rep_truth(), left_on="owner_id", right_on="user_id")
    assert len(reps) == 12
    rho = spearmanr(reps["adoption_index"], reps["adherence"]).statistic
    assert rho >= 0.8, reps[["name", "style", "adoption_index"]]
    followers = reps[reps["style"] == "score"]
    assert (followers["adoption_low"] > 1).all()
    ignoring = reps[reps["adherence"] == 0]
    assert ignoring["adoption_index"].max() < followers["adoption_index"].min()
