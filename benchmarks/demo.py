"""Walking-skeleton targets (issue 2), printed as a table.

- `leadscore demo` with 20,000 leads completes in under 90 s on 2 cores (median of --runs runs);
- holdout AUC >= 0.97 x the generator's oracle AUC on the same holdout;
- every lead in the sandbox carries a score after `run`;
- a second `run` with no data change writes 0 records.

Usage: python benchmarks/demo.py [--leads 20000] [--runs 3] [--seed 42]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_table import print_table, verdict

from connector.sandbox import Sandbox
from sync.config import load_settings
from sync.demo import prepare_workdir, run_demo, write_sandbox_files
from sync.jobs import run_sync


def time_demo(leads: int, seed: int, root: Path) -> dict:
    return run_demo(root / f"demo-{seed}", leads=leads, seed=seed)


def rerun(leads: int, seed: int, root: Path) -> dict:
    """Run twice against one sandbox and read back what Salesforce holds."""
    workdir = root / f"rerun-{seed}"
    prepare_workdir(workdir, fresh=True)
    with Sandbox(workdir / "sandbox", leads=leads, seed=seed) as sandbox:
        settings = load_settings(
            write_sandbox_files(workdir, sandbox.info, command="benchmark"), environ={}
        )
        first = run_sync(settings)
        started = time.perf_counter()
        second = run_sync(settings)
        second_seconds = time.perf_counter() - started
        # the org's leads as Salesforce lists them (the generator soft-deletes a few)
        live = "FROM Lead WHERE NOT IsDeleted"
        unscored = sandbox.sql(f"SELECT count(*) {live} AND Lead_Score__c IS NULL")[0][0]
        total = sandbox.sql(f"SELECT count(*) {live}")[0][0]
    return {
        "first_written": first.counts["written"],
        "second_written": second.counts["written"],
        "second_api_calls": second.api_calls,
        "second_seconds": second_seconds,
        "leads_with_score": total - unscored,
        "leads": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="leadscore-bench-") as tmp:
        root = Path(tmp)
        demos = [time_demo(args.leads, args.seed + i, root) for i in range(args.runs)]
        again = rerun(args.leads, args.seed, root)

    columns = [
        "seed",
        "seconds",
        "pulled",
        "written",
        "api calls",
        "model AUC",
        "oracle AUC",
        "ratio",
    ]
    rows: list[list[object]] = [
        [
            args.seed + i,
            f"{d['seconds']:.1f}",
            f"{d['pulled']:,}",
            f"{d['written']:,}",
            f"{d['api_calls']:,}",
            f"{d['model_auc']:.4f}",
            f"{d['oracle_auc']:.4f}",
            f"{d['auc_ratio']:.3f}",
        ]
        for i, d in enumerate(demos)
    ]
    seconds = statistics.median(d["seconds"] for d in demos)
    ratio = statistics.median(d["auc_ratio"] for d in demos)
    rows.append(["median", f"{seconds:.1f}", "", "", "", "", "", f"{ratio:.3f}"])
    print(f"\nleadscore demo, {args.leads:,} leads, {args.runs} runs\n")
    print_table(columns, rows, align=">")
    print()
    print_table(
        ["target", "measured", "result"],
        [
            ["demo < 90 s (median)", f"{seconds:.1f} s", verdict(seconds < 90)],
            ["model AUC >= 0.97 x oracle AUC", f"ratio {ratio:.3f}", verdict(ratio >= 0.97)],
            [
                "every lead carries a score after run",
                f"{again['leads_with_score']:,} of {again['leads']:,}",
                verdict(again["leads_with_score"] == again["leads"]),
            ],
            [
                "second run writes 0 records",
                f"{again['second_written']} written, {again['second_api_calls']} API calls, "
                f"{again['second_seconds']:.1f} s",
                verdict(again["second_written"] == 0),
            ],
        ],
        align=">",
    )


if __name__ == "__main__":
    main()
