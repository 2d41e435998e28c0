"""Reverse-ETL write-back targets (issue 6), printed as a table.

On one generated org of 100,000 leads (about 8 s to generate, reused for every measure):

- **3 % changed**: every live lead has been written once; a new scoring run changes 3 % of them.
  ``leadscore plan`` prices the push, then the push runs: diff + push under 20 s, only the changed
  records sent, and the API calls equal to the plan's estimate (median of ``--runs`` rounds, each
  changing another 3 %).
- **nothing changed**: a second push writes nothing: 0 write calls, under 5 s.
- **faults**: a fresh store writes the org's leads four times (3 % of the scores change before
  each run). During runs 1 and 2 the sandbox fails 10 % of requests transiently (503) and rejects
  3 % of the records permanently (a validation rule); then it heals. After run 4 every record
  holds its latest values, the ledger agrees with the org record by record, and the org's
  ``write_log`` shows no (record, field, value) written twice.

Usage: python benchmarks/writeback.py [--leads 100000] [--runs 3] [--seed 42] [--tmp DIR]
       [--fault-path collections|bulk]

The fault runs write on sObject Collections by default (200 records per request, so that 10 % of
~500 requests per run fail); ``--fault-path bulk`` runs them on Bulk API 2.0 (a handful of
requests per run).

Everything lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connector.sandbox import FaultRule, InjectedFaults, Sandbox
from connector.store import Store
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_plan, run_push

FIELDS = {"score": "Lead_Score__c", "tier": "Lead_Tier__c", "reasons": "Lead_Score_Reasons__c"}
TIERS = ((0.60, "A"), (0.35, "B"), (0.15, "C"))


def configure(workdir: Path, info: dict[str, Any], writeback: str = "") -> Settings:
    """A sandbox config with its own store, Salesforce outputs only (no Segment, no audience)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_sandbox_files(workdir, {**info, "segment_data": False}, command="benchmark")
    config.write_text(config.read_text() + writeback)
    return load_settings(config, environ={})


def tier(p: float) -> str:
    return next((name for cut, name in TIERS if p >= cut), "D")


def scoring_run(settings: Settings, leads: list[str], probability: np.ndarray) -> pd.DataFrame:
    """Append a scoring run (what `leadscore score` writes) with these probabilities."""
    scores = pd.DataFrame(
        {
            "entity_id": leads,
            "model_version": "bench-v1",
            "probability": np.round(probability, 6),
            "score": np.rint(probability * 100).astype(int),
            "tier": [tier(p) for p in probability],
            "reasons": [f"web visits 7d: {int(p * 20)}" for p in probability],
            "scored_at": dt.datetime(2025, 6, 1, 12),
        }
    )
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", scores)
    return scores


def change(probability: np.ndarray, part: int, share: float = 0.03) -> tuple[np.ndarray, int]:
    """Move ``share`` of the probabilities (slice ``part``) by 0.1-0.3: past any hysteresis."""
    n = len(probability)
    size = int(n * share)
    index = np.arange(part * size, (part + 1) * size) % n
    out = probability.copy()
    out[index] = (out[index] + 0.1 + 0.2 * ((index % 7) / 7)) % 1.0
    return out, size


def write_requests(sandbox: Sandbox, since: int) -> int:
    return sum(
        1
        for r in sandbox.request_log[since:]
        if (r.category == "composite" and r.method != "GET")
        or (r.category == "bulk" and "/ingest" in r.path)
    )


def measure_changes(sandbox: Sandbox, base: Path, runs: int, seed: int) -> dict[str, Any]:
    """3 % changed, then nothing changed, ``runs`` rounds on one store."""
    settings = configure(base / "changes", sandbox.info)
    leads = [r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id")]
    rng = np.random.default_rng(seed)
    probability = rng.beta(1.2, 3.0, len(leads))
    scoring_run(settings, leads, probability)
    started = time.perf_counter()
    first = run_push(settings)
    first_seconds = time.perf_counter() - started
    rounds = []
    for part in range(runs):
        probability, changed = change(probability, part)
        scoring_run(settings, leads, probability)
        plan = run_plan(settings)
        log = len(sandbox.request_log)
        started = time.perf_counter()
        pushed = run_push(settings)
        seconds = time.perf_counter() - started
        counts = pushed.counts["predictions"]["lead_conversion"]
        log = len(sandbox.request_log)
        started = time.perf_counter()
        again = run_push(settings)
        again_seconds = time.perf_counter() - started
        rounds.append(
            {
                "changed": changed,
                "sent": counts["sent"],
                "written": counts["written"],
                "seconds": seconds,
                "calls": pushed.api_calls,
                "estimate": plan["estimated_api_calls"],
                "again_writes": write_requests(sandbox, log),
                "again_written": again.counts["written"],
                "again_seconds": again_seconds,
            }
        )
    return {
        "leads": len(leads),
        "first": {
            "seconds": first_seconds,
            "written": first.counts["written"],
            "calls": first.api_calls,
        },
        "rounds": rounds,
    }


def measure_faults(sandbox: Sandbox, base: Path, seed: int, path: str) -> dict[str, Any]:
    """Four runs, the first two under transient and permanent faults."""
    settings = configure(
        base / "faults",
        sandbox.info,
        "\n[writeback]\nretry_backoff_seconds = 0\nmax_attempts = 5\n",
    )
    if path == "collections":  # every write on sObject Collections: 200 records per request
        threshold = {"bulk_write_threshold": 10_000_000}
        settings = settings.model_copy(
            update={"salesforce": settings.salesforce.model_copy(update=threshold)}
        )
    leads = [r[0] for r in sandbox.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id")]
    rng = np.random.default_rng(seed + 1)
    rejected = list(rng.choice(leads, size=int(len(leads) * 0.03), replace=False))
    probability = rng.beta(1.2, 3.0, len(leads))
    log_start = sandbox.sql("SELECT count(*) FROM write_log")[0][0]
    runs = []
    injected: dict[str, int] = {}
    for run in range(4):
        if run:
            probability, _ = change(probability, 10 + run)
        scores = scoring_run(settings, leads, probability)
        if run < 2:
            sandbox.faults = InjectedFaults(
                [FaultRule("unavailable", rate=0.10)], reject_records=rejected, seed=seed + run
            )
        else:
            sandbox.faults = InjectedFaults()
        started = time.perf_counter()
        result = run_push(settings)
        for kind, n in getattr(sandbox.faults, "injected", {}).items():
            injected[kind] = injected.get(kind, 0) + n
        counts = result.counts["predictions"]["lead_conversion"]
        runs.append(
            {
                "written": counts["written"],
                "failed": counts["failed"],
                "seconds": time.perf_counter() - started,
                "calls": result.api_calls,
            }
        )
    sandbox.faults = InjectedFaults()
    # every record holds its latest values
    org = pd.DataFrame(
        sandbox.sql(
            "SELECT Id, Lead_Score__c, Lead_Tier__c, Lead_Score_Reasons__c FROM Lead "
            "WHERE IsDeleted = 0"
        ),
        columns=["entity_id", "score", "tier", "reasons"],
    )
    merged = scores.merge(org, on="entity_id", suffixes=("", "_org"))
    stale = int(
        (
            (merged["score"].astype(float) != merged["score_org"].astype(float))
            | (merged["tier"] != merged["tier_org"])
            | (merged["reasons"] != merged["reasons_org"])
        ).sum()
    )
    # the ledger agrees with the org, record by record and field by field
    with Store(settings.store.path) as store:
        ledger = store.ledger("salesforce", "Lead")
    by_field = {name: kind for kind, name in FIELDS.items()}
    org_long = org.melt(id_vars="entity_id", var_name="kind", value_name="org_value")
    book = ledger.assign(
        kind=ledger["field"].map(by_field),
        ledger_value=ledger["value"].map(lambda v: None if v is None else json.loads(v)),
    ).merge(org_long, left_on=["record_id", "kind"], right_on=["entity_id", "kind"])
    disagree = int(
        sum(
            not (
                a == b
                or (
                    isinstance(a, int | float)
                    and isinstance(b, int | float)
                    and float(a) == float(b)
                )
            )
            for a, b in zip(book["ledger_value"], book["org_value"], strict=True)
        )
    )
    twice = sandbox.sql(
        "SELECT count(*) FROM (SELECT record_id, field, value FROM write_log WHERE rowid > ? "
        "GROUP BY record_id, field, value HAVING count(*) > 1)",
        (log_start,),
    )[0][0]
    statuses = ledger["status"].value_counts().to_dict()
    return {
        "path": path,
        "leads": len(leads),
        "rejected": len(rejected),
        "runs": runs,
        "injected": injected,
        "stale": stale,
        "ledger_rows": len(ledger),
        "ledger_compared": len(book),
        "disagree": disagree,
        "twice": int(twice),
        "statuses": statuses,
    }


def row(measure: str, target: str, measured: str, ok: bool | None) -> tuple[str, str, str, str]:
    return measure, target, measured, "" if ok is None else ("OK" if ok else "MISSED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tmp", type=Path, default=None, help="where the temporary files go")
    parser.add_argument(
        "--fault-path",
        choices=("bulk", "collections"),
        default="collections",
        help="write path of the fault runs (collections: many requests for the 503s to hit)",
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="leadscore-writeback-", dir=args.tmp))
    try:
        started = time.perf_counter()
        sandbox = Sandbox(base / "sandbox", leads=args.leads, seed=args.seed).start()
        generated = time.perf_counter() - started
        try:
            changes = measure_changes(sandbox, base, args.runs, args.seed)
            faults = measure_faults(sandbox, base, args.seed, args.fault_path)
        finally:
            sandbox.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rounds = changes["rounds"]
    seconds = statistics.median(r["seconds"] for r in rounds)
    again = statistics.median(r["again_seconds"] for r in rounds)
    exact = all(r["sent"] == r["changed"] == r["written"] for r in rounds)
    priced = all(r["calls"] == r["estimate"] for r in rounds)
    quiet = all(r["again_writes"] == 0 and r["again_written"] == 0 for r in rounds)
    runs = faults["runs"]
    rows = [
        row("org", "", f"{changes['leads']:,} live leads, generated in {generated:.1f} s", None),
        row(
            "first push (every lead, Bulk API 2.0)",
            "",
            f"{changes['first']['written']:,} written, {changes['first']['calls']} calls, "
            f"{changes['first']['seconds']:.1f} s",
            None,
        ),
        row(
            "3 % changed: diff + push",
            "< 20 s",
            f"{seconds:.2f} s (median of {len(rounds)})",
            seconds < 20,
        ),
        row(
            "3 % changed: records sent",
            "= changed",
            ", ".join(f"{r['sent']:,}/{r['changed']:,}" for r in rounds),
            exact,
        ),
        row(
            "3 % changed: API calls vs plan",
            "= estimate",
            ", ".join(f"{r['calls']}={r['estimate']}" for r in rounds),
            priced,
        ),
        row(
            "nothing changed: write calls",
            "0",
            ", ".join(str(r["again_writes"]) for r in rounds),
            quiet,
        ),
        row("nothing changed: push", "< 5 s", f"{again:.2f} s (median)", again < 5),
        row(
            f"faults ({faults['path']}): runs 1-4 written / failed",
            "",
            ", ".join(f"{r['written']:,}/{r['failed']:,}" for r in runs),
            None,
        ),
        row(
            "faults: injected",
            "",
            ", ".join(f"{k} {v:,}" for k, v in sorted(faults["injected"].items())),
            None,
        ),
        row(
            "faults: records not holding their latest values",
            "0",
            f"{faults['stale']:,}",
            faults["stale"] == 0,
        ),
        row(
            "faults: ledger fields disagreeing with the org",
            "0",
            f"{faults['disagree']:,} of {faults['ledger_compared']:,} "
            f"({', '.join(f'{k} {v:,}' for k, v in faults['statuses'].items())})",
            faults["disagree"] == 0 and faults["ledger_compared"] == faults["ledger_rows"],
        ),
        row(
            "faults: (record, field, value) written twice",
            "0",
            f"{faults['twice']:,}",
            faults["twice"] == 0,
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'measure':<{widths[0]}}  {'target':<{widths[1]}}  {'measured':<{widths[2]}}  result")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")


if __name__ == "__main__":
    main()
