"""Batch scoring throughput (issue 11): features, predictions and reasons per 100k leads.

``benchmarks/scoring_engine.py`` measures scoring after generating, pulling and training an org
each time (minutes per run). This script builds the org's store and trains its model once into
``--workdir`` (kept between runs, so a change to the scoring path is re-measured in seconds), then
times batch scoring the way the ``score`` job runs it: ``score_batches`` in batches of
``--batch-size`` entities (the store's ``batch_size``). It prints one table, times are medians of
``--runs`` runs:

- features: ``build_features`` for every batch (the point-in-time DuckDB query);
- features + predictions: ``score_batches(reasons=False)`` (the issue-11 target, >= 100,000
  leads/s);
- reasons: ``scoring.explain.explain`` over the same features, reported apart (its method is being
  replaced separately);
- optionally (``--train``) the training time of the same org.

Usage: python benchmarks/scoring_throughput.py [--leads 100000] [--org interacting] [--runs 3]
       [--workdir DIR] [--batch-size 50000] [--reasons] [--train]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from connector.sandbox import Sandbox
from connector.store import Store
from scoring.events import create_events_view, entity_sources, resolve_entity
from scoring.features import FeatureColumns, build_features
from scoring.labels import current_entity_ids
from scoring.pipeline import score_batches, train_prediction
from scoring.registry import load_champion, save_version
from sync.config import Settings, load_settings
from sync.demo import prepare_workdir, write_sandbox_files
from sync.jobs import run_pull
from sync.stages.freshness import store_as_of


def timed(runs: int, action: Callable[[], Any]) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``runs`` calls, and the first call's value."""
    walls, cpus, first = [], [], None
    for i in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        value = action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        if i == 0:
            first = value
    return statistics.median(walls), statistics.median(cpus), first


def prepare(workdir: Path, leads: int, seed: int, org: str) -> Settings:
    """The org's settings; generates and pulls the store unless ``workdir`` already has it."""
    config = workdir / "config.toml"
    if not (workdir / "ready").exists():
        prepare_workdir(workdir, fresh=True)
        started = time.perf_counter()
        sandbox = Sandbox(workdir / "sandbox", leads=leads, seed=seed, org=org)
        sandbox.start()
        try:
            written = write_sandbox_files(workdir, sandbox.info, command="benchmark")
            run_pull(load_settings(written, environ={}))
        finally:
            sandbox.stop()
        (workdir / "ready").write_text(f"{time.perf_counter() - started:.1f}\n")
    return load_settings(config, environ={})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--org", default="interacting", choices=["classic", "interacting"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="default: /tmp/scoring-<org>-<n>"
    )
    parser.add_argument("--reasons", action="store_true", help="also time the reasons")
    parser.add_argument("--train", action="store_true", help="also time training (median)")
    args = parser.parse_args()
    workdir = args.workdir or Path(f"/tmp/scoring-{args.org}-{args.leads}")
    settings = prepare(workdir, args.leads, args.seed, args.org)
    spec = settings.predictions[0]
    rows: list[tuple[str, str]] = []
    with Store(settings.store.path) as store:
        con = store.read_connection()
        as_of = store_as_of(store, settings)
        assert as_of is not None
        exclude = {v.lower() for v in spec.salesforce.fields.values()} if spec.salesforce else set()
        models = settings.store.models_dir
        if args.train or load_champion(models, spec.name) is None:
            runs = args.runs if args.train else 1
            wall, cpu, outcome = timed(
                runs,
                lambda: train_prediction(con, spec, as_of=as_of, exclude_fields=exclude),
            )
            save_version(models, spec.name, outcome.predictor, outcome.metadata, champion=True)
            if args.train:
                rows.append(("training, seconds (median)", f"{wall:.1f} wall, {cpu:.1f} CPU"))
        champion = load_champion(models, spec.name)
        assert champion is not None
        predictor, meta = champion.load(), champion.metadata
        score_time = as_of.replace(minute=0, second=0, microsecond=0)
        entity = resolve_entity(con, spec)
        columns = FeatureColumns(**meta["features"])

        def features() -> int:
            create_events_view(con, entity, entity_sources(con, entity, spec))
            ids = current_entity_ids(con, entity)
            done = 0
            for start in range(0, len(ids), args.batch_size):
                part = ids.iloc[start : start + args.batch_size].reset_index(drop=True)
                anchors = pd.DataFrame({"entity_id": part, "anchor_at": pd.Timestamp(score_time)})
                done += len(build_features(con, entity, anchors, columns))
            return done

        def scores(reasons: bool) -> int:
            batches = score_batches(
                con,
                spec,
                predictor,
                meta,
                score_time=score_time,
                reasons=reasons,
                batch_size=args.batch_size,
            )
            return sum(len(b) for b in batches)

        for what, action in (
            ("features", features),
            ("features + predictions", lambda: scores(False)),
            *(
                (("features + predictions + reasons", lambda: scores(True)),)
                if args.reasons
                else ()
            ),
        ):
            wall, cpu, n = timed(args.runs, action)
            rows.append(
                (f"{what}, leads/s", f"{n / wall:,.0f} ({n:,} in {wall:.2f} s, {cpu:.2f} CPU-s)")
            )
    load = os.getloadavg()[0]
    print(
        f"\n{args.org} org, {args.leads:,} leads, batches of {args.batch_size:,}, "
        f"medians of {args.runs} runs, load average {load:.1f}\n"
    )
    print("| measure | measured |\n|---|---|")
    for what, measured in rows:
        print(f"| {what} | {measured} |")


if __name__ == "__main__":
    main()
