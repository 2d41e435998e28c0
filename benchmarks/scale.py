"""Scale (issue 17): one org size through every step, each step a separate process.

For each ``--leads`` size a sandbox org is generated and served in this process, and every step
runs as its own ``leadscore`` child process (``pull`` = first sync, ``train``, ``score``, the
first ``push`` of every lead, a ``push`` after 3 % of the scores changed, and an incremental
``pull``). Per step: wall time, CPU time (the child's own, from ``wait4``), peak RSS (the child's
``VmHWM`` from ``/proc``, sampled until it exits; not ``ru_maxrss``, which Linux carries over
from this big parent into a vfork+exec child) and the API calls the job counted (its ``--json``
``api_calls``). With two sizes or more, a fit of how each step grows: the exponent ``b`` of
``x ~ n^b`` for wall time, CPU time and RSS between the smallest and the largest size.

``--history-runs N`` then measures retention on the smallest org: N simulated hourly scoring
runs with 3 % of the scores changed each, ``leadscore vacuum`` after each, and the size of
``score_history`` against one scoring run (target: under 2x after 30 runs).

Targets: peak RSS of score, first push and 3 % push <= 1.5 GB each and within 10 % between the
sizes; the first sync's peak RSS <= 1 GB and its CPU exponent <= 1.1 between the two largest sizes
(the issue's 500k -> 1M); score_history < 2x one run after 30 hourly runs.

``--sample-above N`` trains on a stratified sample above N training rows
(``training.sample_above``); the holdout AUC of each size's model is printed under the table.
``--steps N`` runs only the first N steps (``--steps 1``: the first sync alone, for its CPU
time). ``--keep DIR`` works in DIR and leaves the org and the store there.

Usage: nice -n 10 python benchmarks/scale.py --leads 50000 200000 [--history-runs 30]
       [--sample-above N] [--steps N] [--keep DIR | --tmp DIR] [--seed 42]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_table import print_table, verdict

from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import load_settings
from sync.demo import write_sandbox_files

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
STEPS = ("pull", "train", "score", "push", "push_3pct", "pull_incremental")
FLAT_STEPS = ("score", "push", "push_3pct")
RSS_LIMIT_MB = 1536
PULL_RSS_LIMIT_MB = 1024
PULL_CPU_EXPONENT = 1.1


def high_water_kb(pid: int) -> int:
    """A running process's peak resident set (``VmHWM``, kB); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run_step(config: Path, *command: str) -> dict[str, Any]:
    """``leadscore COMMAND --config FILE --json`` in a child: result, wall/CPU time, peak RSS."""
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        process = subprocess.Popen(
            [LEADSCORE, *command, "--config", str(config), "--json"],
            stdout=out,
            stderr=err,
            env={k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")},
        )
        peak_kb, usage = 0, None
        while usage is None:
            peak_kb = max(peak_kb, high_water_kb(process.pid))
            # wait4 reaps the child and returns its own CPU time (poll() would discard it)
            pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                usage = rusage
                process.returncode = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        text, error = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"leadscore {' '.join(command)} failed: {text[-800:]} {error[-800:]}")
    result = json.loads(text)
    result["rss_mb"] = peak_kb / 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["wall_seconds"] = time.perf_counter() - started
    return result


def change_scores(config: Path, share: float, run: int, hours: int = 1) -> int:
    """Append a scoring run equal to the latest one but for ``share`` of the leads, an hour later.

    The changed leads move by 10 to 30 points (past any hysteresis), as after a day's activity.

    Returns:
        The leads changed.
    """
    settings = load_settings(config, environ={})
    name = settings.predictions[0].name
    rng = np.random.default_rng(run)
    with Store(settings.store.path) as store:
        latest = store.latest_scores(name)
        changed = rng.random(len(latest)) < share
        move = rng.uniform(0.10, 0.30, size=len(latest)) * rng.choice([-1, 1], size=len(latest))
        p = latest["probability"].to_numpy(dtype=float)
        p = np.where(changed, np.clip(p + move, 0.001, 0.999), p)
        frame = latest.assign(
            probability=np.round(p, 6),
            score=np.rint(p * 100).astype(int),
            # only the changed leads get a new tier (the prediction's own tiers stay otherwise)
            tier=np.where(
                changed,
                np.where(p >= 0.8, "A", np.where(p >= 0.5, "B", np.where(p >= 0.2, "C", "D"))),
                latest["tier"].to_numpy(dtype=object),
            ),
            scored_at=pd.to_datetime(latest["scored_at"]) + pd.Timedelta(hours=hours),
        )
        store.append_scores(name, frame)
    return int(changed.sum())


def score_history_size(config: Path) -> tuple[int, int]:
    """Rows of ``score_history`` and the rows of its latest run."""
    settings = load_settings(config, environ={})
    with Store(settings.store.path, read_only=True) as store:
        total = int(store.query_df("SELECT count(*) AS n FROM score_history")["n"][0])
        latest = int(
            store.query_df(
                "SELECT count(*) AS n FROM score_history WHERE score_run_id = "
                "(SELECT max(score_run_id) FROM score_history)"
            )["n"][0]
        )
    return total, latest


def measure_size(
    leads: int,
    seed: int,
    workdir: Path,
    sample_above: int | None = None,
    steps: tuple[str, ...] = STEPS,
) -> dict[str, dict[str, Any]]:
    """Every step (or the first ``steps``) on one org size."""
    print(f"== {leads:,} leads: generating the org", file=sys.stderr, flush=True)
    started = time.perf_counter()
    sandbox = Sandbox(workdir / "sandbox", leads=leads, seed=seed).start()
    print(f"   generated in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    out: dict[str, dict[str, Any]] = {}
    try:
        (workdir / "run").mkdir(parents=True, exist_ok=True)
        config = write_sandbox_files(workdir / "run", sandbox.info, command="benchmark")
        if sample_above:
            # a table after the prediction's last subtable belongs to that prediction
            with config.open("a") as text:
                text.write(f"\n[predictions.training]\nsample_above = {sample_above}\n")
        for step in steps:
            command = {"push_3pct": ["push"], "pull_incremental": ["pull"]}.get(step, [step])
            if step == "push_3pct":
                change_scores(config, 0.03, run=1)
            result = run_step(config, *command)
            out[step] = {
                "wall": result["wall_seconds"],
                "cpu": result["cpu_seconds"],
                "rss": result["rss_mb"],
                "calls": result.get("api_calls") or 0,
                "counts": result.get("counts", {}),
            }
            print(
                f"   {step:<17} {result['wall_seconds']:7.1f} s  "
                f"{result['cpu_seconds']:7.1f} CPU-s  {result['rss_mb']:7.0f} MB  "
                f"{out[step]['calls']:5d} calls",
                file=sys.stderr,
                flush=True,
            )
    finally:
        sandbox.stop()
    return out


def growth(a: float, b: float, n_a: int, n_b: int) -> str:
    if a <= 0 or b <= 0:
        return "-"
    return f"{math.log(b / a) / math.log(n_b / n_a):.2f}"


def measure_history(leads: int, runs: int, workdir: Path) -> list[list[object]]:
    """Retention: one scoring run of ``leads`` leads, then ``runs`` hourly runs with 3 % changes.

    A synthetic store (no org needed): the runs are appended as the score job appends them and
    ``leadscore vacuum`` runs after each, as ``vacuum_after_score`` would. The size of
    ``score_history`` is compared with one run, in rows and in the store file's bytes.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.toml"
    config.write_text(
        '[store]\npath = "store.duckdb"\nmodels_dir = "models"\n'
        '[[sources]]\npath = "x.csv"\ntable = "x"\nid_column = "id"\n'
        '[[predictions]]\nname = "lead_conversion"\nentity_table = { table = "x", '
        'id_column = "id" }\nlabel = { field = "y" }\n'
    )
    rng = np.random.default_rng(5)
    p = rng.beta(1.2, 4.0, size=leads)
    reasons = [
        f"+ Industry is Tech ({int(a)}); + {int(b)} calls in 30 days; - no email opened in 14 days"
        for a, b in zip(rng.integers(1, 30, leads), rng.integers(0, 12, leads), strict=True)
    ]
    frame = pd.DataFrame(
        {
            "entity_id": [f"00Q{i:015d}" for i in range(leads)],
            "model_version": "20260301T000000",
            "probability": np.round(p, 6),
            "score": np.rint(p * 100).astype(int),
            "tier": np.where(p >= 0.8, "A", np.where(p >= 0.5, "B", np.where(p >= 0.2, "C", "D"))),
            "reasons": reasons,
            "scored_at": pd.Timestamp("2026-03-01 08:00"),
        }
    )
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", frame)
    run_step(config, "vacuum")
    one_bytes = settings.store.path.stat().st_size
    for run in range(runs):
        change_scores(config, 0.03, run=100 + run, hours=1)
        result = run_step(config, "vacuum")
    total, one_run = score_history_size(config)
    ratio = total / one_run
    size = result["counts"]["bytes_after"] / one_bytes
    print(
        f"   history: {total:,} rows after {runs} runs of {one_run:,}; store file "
        f"{one_bytes / 1e6:.1f} MB -> {result['counts']['bytes_after'] / 1e6:.1f} MB",
        file=sys.stderr,
        flush=True,
    )
    return [
        [
            f"score_history rows after {runs} hourly runs, 3 % changes ({leads // 1000}k leads)",
            f"{ratio:.2f}x one run",
            "< 2x",
            verdict(ratio < 2.0),
        ],
        [
            "  store file size, same",
            f"{size:.2f}x",
            "-",
            "-",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, nargs="*", default=[50_000, 200_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--history-runs", type=int, default=0)
    parser.add_argument("--history-leads", type=int, default=50_000)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--save", type=Path, help="write each size's figures to this JSON file")
    parser.add_argument("--load", type=Path, nargs="*", default=[], help="add saved sizes")
    parser.add_argument("--sample-above", type=int, default=None, help="training.sample_above")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument(
        "--steps", type=int, default=len(STEPS), help="run only the first N steps (1: pull)"
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        context: Any = contextlib.nullcontext(str(args.keep))
    else:
        context = tempfile.TemporaryDirectory(dir=args.tmp)
    with context as tmp:
        results: dict[int, dict[str, dict[str, Any]]] = {}
        for saved in args.load:
            results.update({int(k): v for k, v in json.loads(saved.read_text()).items()})
        for n in args.leads:
            results[n] = measure_size(
                n, args.seed, Path(tmp) / f"org{n}", args.sample_above, STEPS[: args.steps]
            )
        if args.save:
            args.save.write_text(json.dumps({n: results[n] for n in args.leads}, default=str))
        sizes = sorted(results)
        rows = []
        measured = [s for s in STEPS if sizes and all(s in results[n] for n in sizes)]
        for step in measured:
            row: list[object] = [step]
            for n in sizes:
                r = results[n][step]
                cpu = f"{r['cpu']:.1f}" if r.get("cpu") is not None else "-"
                row += [f"{r['wall']:.1f}", cpu, f"{r['rss']:.0f}", r["calls"]]
            if len(sizes) > 1:
                lo, hi = results[sizes[0]][step], results[sizes[-1]][step]
                row += [
                    growth(lo["wall"], hi["wall"], sizes[0], sizes[-1]),
                    growth(lo.get("cpu") or 0, hi.get("cpu") or 0, sizes[0], sizes[-1]),
                    growth(lo["rss"], hi["rss"], sizes[0], sizes[-1]),
                ]
            rows.append(row)
        columns = ["step"]
        for n in sizes:
            k = f"{n // 1000}k"
            columns += [f"s@{k}", f"CPU-s@{k}", f"RSS MB@{k}", f"calls@{k}"]
        if len(sizes) > 1:
            columns += ["time b", "CPU b", "RSS b"]
        if rows:
            print_table(columns, rows)
            print()
        targets = []
        for step in (s for s in FLAT_STEPS if s in measured):
            peaks = [results[n][step]["rss"] for n in sizes]
            flat = max(peaks) <= min(peaks) * 1.10
            targets.append(
                [
                    f"{step} peak RSS",
                    f"max {max(peaks):.0f} MB",
                    f"<= {RSS_LIMIT_MB} MB",
                    verdict(max(peaks) <= RSS_LIMIT_MB),
                ]
            )
            if len(sizes) > 1:
                spread = (max(peaks) / min(peaks) - 1) * 100
                targets.append(
                    [f"{step} RSS between sizes", f"+{spread:.1f} %", "<= 10 %", verdict(flat)]
                )
        pulls = [n for n in sizes if (results[n].get("pull") or {}).get("cpu")]
        if len(pulls) > 1:
            # the first sync's CPU, linear in rows: between the two largest sizes
            lo, hi = pulls[-2], pulls[-1]
            b = growth(results[lo]["pull"]["cpu"], results[hi]["pull"]["cpu"], lo, hi)
            targets.append(
                [
                    f"first sync CPU exponent {lo // 1000}k -> {hi // 1000}k",
                    b,
                    f"<= {PULL_CPU_EXPONENT}",
                    verdict(float(b) <= PULL_CPU_EXPONENT) if b != "-" else "-",
                ]
            )
            top = results[hi]["pull"]["rss"]
            targets.append(
                [
                    f"first sync peak RSS @{hi // 1000}k",
                    f"{top:.0f} MB",
                    f"<= {PULL_RSS_LIMIT_MB} MB",
                    verdict(top <= PULL_RSS_LIMIT_MB),
                ]
            )
        for n in sizes:
            trained = results[n].get("train", {}).get("counts", {}).get("predictions", {})
            for name, outcome in trained.items():
                sampling = outcome.get("sampling") or {}
                targets.append(
                    [
                        f"{name} holdout AUC @{n // 1000}k",
                        f"{outcome.get('metrics', {}).get('auc', float('nan')):.4f}"
                        + (
                            f" (sample: {sampling['sampled_rows']:,} of "
                            f"{sampling['train_rows']:,} rows)"
                            if sampling
                            else ""
                        ),
                        "-",
                        "-",
                    ]
                )
        if args.history_runs:
            targets += measure_history(args.history_leads, args.history_runs, Path(tmp) / "history")
        if targets:
            print_table(["target", "measured", "goal", "verdict"], targets)


if __name__ == "__main__":
    main()
