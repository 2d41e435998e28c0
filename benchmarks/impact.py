"""Adoption and impact targets (issue 16), printed as one table.

A synthetic org is generated (``--leads``, default 200,000: about 2 million tasks) with reps of
known habits (``connector/sandbox/reps.py``). The score history is what those reps saw: the
hidden model's probability at each lead's first response, in capacity-based tiers
(``scoring.tiers.capacity_cutoffs``). Then:

- the adoption index must rank the reps as the generator intended (Spearman >= 0.9);
- realized conversion by tier must lie within the 95 % interval around the predicted rate;
- ``touches_from_tasks`` + ``compute_impact`` over every lead and task must take < 10 s (median of
  ``--runs``), reported with the ratio to a plain pandas group-by of the same tasks (first task
  per person), timed in the same process as a baseline; and again with the inputs read from a
  DuckDB store first, as ``leadscore impact`` does.

Usage: python benchmarks/impact.py [--leads 200000] [--runs 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from bench_table import print_table, verdict
from scipy.stats import spearmanr

from connector.sandbox.database import create_schema
from connector.sandbox.generator import generate_org
from connector.sandbox.reps import read_first_touches, rep_truth
from connector.store import Store
from connector.store.sales_activity import read_sales_activity
from scoring.impact import compute_impact, touches_from_tasks
from scoring.tiers import assign_tiers, capacity_cutoffs

AS_OF = datetime(2026, 6, 1)
TIERS = ["A", "B", "C"]


def _frame(conn: sqlite3.Connection, sql: str) -> pd.DataFrame:
    cursor = conn.execute(sql)
    return pd.DataFrame(cursor.fetchall(), columns=[c[0] for c in cursor.description])


def _epoch(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, unit="s")


def load_org(leads: int, seed: int) -> dict[str, pd.DataFrame]:
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    started = time.perf_counter()
    generate_org(conn, seed=seed, leads=leads, as_of=int(AS_OF.timestamp()))
    print(f"generated {leads:,} leads in {time.perf_counter() - started:.1f} s")
    lead = _frame(
        conn,
        "SELECT Id AS lead_id, OwnerId AS owner_id, CreatedDate AS created_at, ConvertedDate, "
        "ConvertedContactId AS converted_contact_id, ConvertedOpportunityId AS opportunity_id "
        "FROM Lead WHERE NOT IsDeleted",
    )
    lead["created_at"] = _epoch(lead["created_at"])
    lead["converted_at"] = pd.to_datetime(lead.pop("ConvertedDate"))
    # The reps' recorded schedule: each workable lead's response time and the score they saw.
    truth = read_first_touches(conn)
    tasks = _frame(
        conn, "SELECT WhoId AS who_id, Type AS type, CreatedDate AS created_at FROM Task"
    )
    tasks["created_at"] = _epoch(tasks["created_at"])
    opportunities = _frame(
        conn, "SELECT Id AS opportunity_id, Amount AS amount, IsWon AS is_won FROM Opportunity"
    )
    users = _frame(conn, "SELECT Id AS user_id, Name AS name, Department AS team FROM User")
    conn.close()
    lead = lead.merge(truth[["lead_id", "responded_at"]], on="lead_id", how="left")
    return {
        "leads": lead,
        "truth": truth,
        "tasks": tasks,
        "opportunities": opportunities,
        "users": users,
    }


def score_history(truth: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """What the reps saw: the visible score, written by the first scoring run (every 15 min)
    after the response, in capacity tiers sized for 15 % / 30 % of arrivals."""
    scored_at = truth["responded_at"].dt.ceil("15min")
    recent = truth[scored_at >= pd.Timestamp(AS_OF - timedelta(days=28))]
    per_day = len(recent) / 28
    tiers = capacity_cutoffs(
        recent["visible_score"].to_numpy(),
        {"A": 0.15 * per_day, "B": 0.30 * per_day},
        basis_days=28,
    )
    scores = pd.DataFrame(
        {
            "entity_id": truth["lead_id"],
            "probability": truth["visible_score"],
            "tier": assign_tiers(truth["visible_score"].to_numpy(), tiers.cutoffs, "C"),
            "scored_at": scored_at,
        }
    )
    return scores, tiers


def run_impact(org: dict[str, pd.DataFrame], scores: pd.DataFrame) -> Any:
    touches = touches_from_tasks(org["tasks"], org["leads"])
    return compute_impact(
        org["leads"],
        touches,
        scores,
        tier_order=TIERS,
        since=AS_OF - timedelta(days=365),
        until=AS_OF,
        opportunities=org["opportunities"],
        users=org["users"],
        window_days=30,
    )


def store_read_seconds(org: dict[str, pd.DataFrame], scores: pd.DataFrame, runs: int) -> float:
    """Median time to read the impact inputs back from a DuckDB store holding the org."""
    leads = org["leads"].drop(columns=["responded_at"])
    leads.columns = [
        "Id",
        "OwnerId",
        "CreatedDate",
        "ConvertedContactId",
        "ConvertedOpportunityId",
        "ConvertedDate",
    ]
    tasks = org["tasks"].rename(
        columns={"who_id": "WhoId", "type": "Type", "created_at": "CreatedDate"}
    )
    with tempfile.TemporaryDirectory() as directory, Store(f"{directory}/s.duckdb") as store:
        with store.transaction() as con:
            for table, frame in (("sf_lead", leads), ("sf_task", tasks)):
                con.register("_frame", frame)
                con.execute(f"CREATE TABLE {table} AS SELECT * FROM _frame")
                con.unregister("_frame")
        store.append_scores(
            "lead_conversion", scores.assign(model_version="v", score=0, reasons=None)
        )
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            read_sales_activity(store, "lead_conversion")
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    org = load_org(args.leads, args.seed)
    scores, tiers = score_history(org["truth"])
    print(tiers.explain())

    times, baseline = [], []
    result = None
    for _ in range(args.runs):
        started = time.perf_counter()
        org["tasks"].groupby("who_id")["created_at"].min()
        baseline.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = run_impact(org, scores)
        times.append(time.perf_counter() - started)
    assert result is not None
    took, base = statistics.median(times), statistics.median(baseline)
    read = store_read_seconds(org, scores, args.runs)

    truth = rep_truth().set_index("user_id")
    reps = pd.DataFrame(result.reps).set_index("owner_id").join(truth, how="inner")
    rho = float(spearmanr(reps["adoption_index"], reps["adherence"]).statistic)
    print()
    print_table(
        [
            "rep",
            "style",
            "sessions",
            "days",
            "first touches",
            "adoption",
            "95 % interval",
            "out of rank",
        ],
        [
            [
                r["name"],
                r["style"],
                r["sessions"],
                "every" if r["every_days"] == 1 else f"1 in {r['every_days']}",
                f"{r['first_touches']:,}",
                f"{r['adoption_index']:.2f}",
                f"{r['adoption_low']:.2f}-{r['adoption_high']:.2f}",
                f"{r['out_of_rank_share']:.0%}",
            ]
            for _, r in reps.sort_values("adoption_index", ascending=False).iterrows()
        ],
    )
    print()
    print_table(
        ["tier", "leads", "realized", "95 % interval", "predicted", "within", "won", "won amount"],
        [
            [
                r["tier"],
                f"{r['leads']:,}",
                f"{r['rate']:.3f}",
                f"{r['rate_low']:.3f}-{r['rate_high']:.3f}",
                f"{r['predicted']:.3f}",
                r["within_interval"],
                f"{r['won']:,}",
                f"{r['won_amount']:,.0f}",
            ]
            for r in result.realized
        ],
    )
    print()
    print_table(
        ["tier", "leads", "median hours to first touch", "touched within 24 h"],
        [
            [r["tier"], f"{r['leads']:,}", r["median_hours"], f"{r['within_24h']:.0%}"]
            for r in result.speed
        ],
    )
    print()
    print("value:", result.value["sentence"] or result.value["reason"])
    print("lift of tier A:", result.lift)
    within = sum(bool(r["within_interval"]) for r in result.realized)
    print()
    print_table(
        ["target", "measured", "verdict"],
        [
            ["Spearman(adoption index, intended) >= 0.9", f"{rho:.3f}", verdict(rho >= 0.9)],
            [
                "realized conversion within the predicted interval, every tier",
                f"{within}/{len(result.realized)}",
                verdict(within == len(result.realized)),
            ],
            [
                f"impact over {len(org['leads']):,} leads, {len(org['tasks']):,} tasks < 10 s",
                f"{took:.2f} s (median of {args.runs}; {took / base:.1f}x a group-by of the "
                f"tasks, {base:.2f} s)",
                verdict(took < 10),
            ],
            [
                "the same, read from a DuckDB store first (leadscore impact)",
                f"{read + took:.2f} s (read {read:.2f} s, median of {args.runs})",
                verdict(read + took < 10),
            ],
        ],
    )


if __name__ == "__main__":
    main()
