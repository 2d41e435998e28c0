"""The first write to a new org with field security enforced, and writes to a busy org.

Per run, on a fresh sandbox org whose profiles read no custom field (``field_security =
"enforced"``), as a real org is before its admin grants anything:

1. ``doctor`` before setup: its problems, and whether it names ``INVALID_FIELD``;
2. a write of every lead's score before setup's permission step (through the connector, without
   leadscore's describe pre-check): how many Salesforce rejects, with which code
   (``INVALID_FIELD`` per record through sObject Collections; above ``bulk_write_threshold`` the
   Bulk API 2.0 job fails whole with ``InvalidBatch : Field name not found``);
3. ``setup`` (fields, permission sets, list view), then ``setup`` again (changes nothing);
4. ``run`` (pull, train, score, push): written and rejected scores;
5. a rep (OAuth password flow) reads the list view through the UI API, sorted by score: rows,
   columns, order;
6. a busy org (triggers at their CPU limit above 50 records per call): every score written
   again (a Bulk API job, then sObject Collections for the records it could not save, halving
   from 200), against a client configured for 50 from the start.

Usage::

    python benchmarks/first_write.py [--leads 3000] [--runs 3]

Prints one table of medians over the runs; the targets are 0 rejected after setup, every
pre-setup write rejected with ``INVALID_FIELD``, a rep seeing every hot lead sorted by score,
and 0 rejected in the busy org.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_table import print_table, verdict
from typer.testing import CliRunner

from connector.errors import LeadscoreError
from connector.salesforce import SalesforceClient, write_records
from connector.sandbox import InjectedFaults, Sandbox
from connector.sandbox.clients import login_as
from sync.admin import run_doctor, run_setup
from sync.cli import app
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_sync

BUSY_ABOVE = 50


def _rep_view(box: Sandbox) -> dict[str, Any]:
    """Every page of the list view as the first sales user sees it, sorted by score."""
    rep = box.info["sales_users"][0]
    sf, _ = login_as(box.info, rep["username"], rep["password"])
    records: list[dict[str, Any]] = []
    token_: str | None = "0"
    while token_ is not None:
        page = sf.restful(
            "ui-api/list-records/Lead/Hot_leads_leadscore",
            params={"sortBy": "-Lead_Score__c", "pageSize": 2000, "pageToken": token_},
        )
        records += page["records"]
        token_ = page["nextPageToken"]
    scores = [r["fields"]["Lead_Score__c"]["value"] for r in records]
    columns = set(records[0]["fields"]) if records else set()
    return {
        "rows": len(records),
        "sorted": scores == sorted(scores, reverse=True),
        "columns": {"Lead_Score__c", "Lead_Tier__c", "Lead_Score_Reasons__c"} <= columns,
    }


def _write_all(client: SalesforceClient, ids: list[str], score: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    records = [{"Id": i, "Lead_Score__c": score} for i in ids]
    try:
        for batch in write_records(client, "Lead", records):
            for outcome in batch:
                outcomes["written" if outcome["success"] else outcome["error"].split(":")[0]] += 1
    except LeadscoreError as exc:
        # A Bulk API 2.0 job fails whole: "InvalidBatch : Field name not found : Lead_Score__c"
        code = "InvalidBatch" if "InvalidBatch" in exc.message else exc.message[:40]
        outcomes[code] += len(ids) - sum(outcomes.values())
    return outcomes


def one_run(leads: int, seed: int) -> dict[str, Any]:
    """One fresh org, steps 1-6; the figures of that run."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with Sandbox(workdir / "org", leads=leads, seed=seed, field_security="enforced") as box:
            config = write_sandbox_files(workdir, box.info, command="benchmark")
            settings = load_settings(config, environ={})
            figures: dict[str, Any] = {}
            doctor = run_doctor(settings)
            score_check = next(c for c in doctor["checks"] if c["check"] == "Lead.Lead_Score__c")
            figures["doctor_problems_before"] = doctor["problems"]
            figures["doctor_names_code"] = "INVALID_FIELD" in score_check["detail"]

            ids = [row[0] for row in box.sql("SELECT Id FROM Lead WHERE IsDeleted = 0")]
            client = SalesforceClient(settings.salesforce)
            before = _write_all(client, ids, 1)
            client.close()
            figures["leads"] = len(ids)
            figures["rejected_before"] = len(ids) - before["written"]
            figures["code_before"] = ",".join(sorted(k for k in before if k != "written"))

            started = time.perf_counter()
            setup = run_setup(settings)
            figures["setup_s"] = time.perf_counter() - started
            figures["setup_calls"] = setup.api_calls
            figures["setup_changes"] = setup.counts["changed"]
            again = CliRunner().invoke(app, ["setup", "--config", str(config)])
            figures["second_setup_unchanged"] = "none: the org was already set up" in again.output

            started = time.perf_counter()
            result = run_sync(settings)
            figures["run_s"] = time.perf_counter() - started
            figures["written"] = result.counts["written"]
            figures["rejected_after"] = result.counts["failed"]
            hot = box.sql(
                "SELECT count(*) FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0 AND "
                "Lead_Tier__c IN ('A', 'B') AND Status NOT IN "
                "('Closed - Converted', 'Closed - Not Converted')"
            )[0][0]
            view = _rep_view(box)
            figures["hot_leads"] = hot
            figures["rep_rows"] = view["rows"]
            figures["rep_sorted"] = view["sorted"] and view["columns"]

            for label, size in (("halving", 200), ("fixed_50", BUSY_ABOVE)):
                box.faults = InjectedFaults(busy_batch_size=BUSY_ABOVE, busy_objects=["Lead"])
                busy_settings = settings.salesforce.model_copy(update={"write_batch_size": size})
                busy = SalesforceClient(busy_settings)
                calls_before = box.api_calls()
                started = time.perf_counter()
                outcome = _write_all(busy, ids, 7 if label == "halving" else 8)
                figures[f"busy_{label}_s"] = time.perf_counter() - started
                figures[f"busy_{label}_calls"] = box.api_calls() - calls_before
                figures[f"busy_{label}_rejected"] = len(ids) - outcome["written"]
                busy.close()
            box.faults = InjectedFaults()
            return figures


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.leads, seed=100 + n) for n in range(args.runs)]

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    def every(key: str) -> bool:
        return all(bool(r[key]) for r in runs)

    leads = int(median("leads"))
    rows: list[list[object]] = [
        [
            "push before setup's grants",
            f"{median('rejected_before'):.0f} of {leads} rejected ({runs[0]['code_before']})",
            verdict(
                median("rejected_before") == leads
                and runs[0]["code_before"] in ("INVALID_FIELD", "InvalidBatch")
            ),
        ],
        [
            "doctor before setup",
            f"{median('doctor_problems_before'):.0f} problems; names INVALID_FIELD: "
            f"{every('doctor_names_code')}",
            verdict(every("doctor_names_code")),
        ],
        [
            "setup (fields, grants, list view)",
            f"{median('setup_s'):.2f} s, {median('setup_calls'):.0f} calls, "
            f"{median('setup_changes'):.0f} changes; second run unchanged: "
            f"{every('second_setup_unchanged')}",
            verdict(every("second_setup_unchanged")),
        ],
        [
            "run after setup (pull, train, score, push)",
            f"{median('run_s'):.1f} s, {median('written'):.0f} written, "
            f"{median('rejected_after'):.0f} rejected",
            verdict(median("rejected_after") == 0 and median("written") == leads),
        ],
        [
            "rep's list view (UI API, sorted by score)",
            f"{median('rep_rows'):.0f} rows of {median('hot_leads'):.0f} hot leads; "
            f"sorted with score/tier/reasons: {every('rep_sorted')}",
            verdict(every("rep_sorted") and all(r["rep_rows"] == r["hot_leads"] for r in runs)),
        ],
        [
            f"busy org (> {BUSY_ABOVE}/call fail), halving from 200",
            f"{median('busy_halving_s'):.2f} s, {median('busy_halving_calls'):.0f} calls, "
            f"{median('busy_halving_rejected'):.0f} rejected",
            verdict(median("busy_halving_rejected") == 0),
        ],
        [
            f"busy org, write_batch_size = {BUSY_ABOVE} (baseline)",
            f"{median('busy_fixed_50_s'):.2f} s, {median('busy_fixed_50_calls'):.0f} calls, "
            f"{median('busy_fixed_50_rejected'):.0f} rejected",
            f"x{median('busy_halving_calls') / max(1.0, median('busy_fixed_50_calls')):.2f} calls",
        ],
    ]
    print(f"first write, {leads} leads, field security enforced, median of {len(runs)} runs\n")
    print_table(["step", "result", "target"], rows)


if __name__ == "__main__":
    main()
