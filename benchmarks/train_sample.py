"""Training with and without the stratified sample (issue 17): peak RSS, wall time, holdout AUC.

``leadscore train`` runs as a child process (``scale.run_step``: its ``VmHWM`` sampled from
``/proc`` until it exits) on a COPY of a store that has had its first sync: once with the
prediction's ``[predictions.training] sample_above`` unset (every example gets features and is
trained on), once with it set (features only for the sample, validation, holdout and the
sampling-loss probe). Two config files are written next to ``--config`` (``train_full.toml``,
``train_sampled.toml``); every run adds a model version to the copy's registry.

Per variant (medians over ``--runs``): peak RSS, wall time, the holdout AUC, the rows of the
training part, the rows trained on and the rows that got features (training rows or sample +
validation + holdout), and the AUC the sample cost on its probe. Last line: RSS per example with
features, from the two variants' difference.

Usage: nice -n 10 python benchmarks/train_sample.py --config COPY/config.toml
       [--sample-above 40000] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from bench_table import print_table
from scale import run_step


def variant(config: Path, name: str, sample_above: int | None) -> Path:
    """A copy of ``config`` whose first prediction has ``sample_above`` set (or unset)."""
    text = re.sub(r"(?m)^sample_above\s*=.*\n", "", config.read_text())
    if sample_above is not None:
        line = f"sample_above = {sample_above}\n"
        if "[predictions.training]\n" in text:
            text = text.replace("[predictions.training]\n", f"[predictions.training]\n{line}", 1)
        else:
            # a sub-table of the first [[predictions]]: before its next table or at its end
            start = text.index("[[predictions]]")
            tail = re.search(r"(?m)^\[", text[start + len("[[predictions]]") :])
            at = start + len("[[predictions]]") + tail.start() if tail else len(text)
            text = f"{text[:at]}[predictions.training]\n{line}\n{text[at:]}"
    path = config.with_name(f"train_{name}.toml")
    path.write_text(text)
    return path


def metadata_of(config: Path, name: str, version: str) -> dict[str, Any]:
    """The stored metadata of a trained version (the copy's ``models`` directory)."""
    found = list(config.parent.glob(f"**/{name}/{version}/metadata.json"))
    return json.loads(found[0].read_text())


def one_run(config: Path) -> dict[str, Any]:
    """One ``leadscore train``: wall, RSS and the figures of its first prediction."""
    result = run_step(config, "train")
    name, trained = next(iter(result["counts"]["predictions"].items()))
    meta = metadata_of(config, name, trained["version"])
    split, sampling = meta["split"], meta.get("sampling") or {}
    train_rows = sampling.get("train_rows", split["train"]["n"])
    fitted = split["train"]["n"]
    return {
        "rss_mb": result["rss_mb"],
        "wall_s": result["wall_seconds"],
        "auc": meta["metrics"]["auc"],
        "train_rows": train_rows,
        "trained_on": fitted,
        "featured": fitted + split["valid"]["n"] + split["test"]["n"],
        "probe_rows": sampling.get("probe_rows"),
        "auc_loss": sampling.get("auc_loss"),
    }


def main(argv: list[str] | None = None) -> None:
    """Run both variants and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a COPY's config.toml")
    parser.add_argument("--sample-above", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    rows, medians = [], {}
    for name, limit in (("full", None), ("sampled", args.sample_above)):
        config = variant(args.config, name, limit)
        runs = [one_run(config) for _ in range(args.runs)]
        med = {
            k: statistics.median(r[k] for r in runs) if runs[0][k] is not None else None
            for k in runs[0]
        }
        medians[name] = med
        rows.append(
            [
                name if limit is None else f"sample_above = {limit:,}",
                f"{med['rss_mb']:,.0f}",
                f"{med['wall_s']:.1f}",
                f"{med['auc']:.4f}",
                f"{med['train_rows']:,}",
                f"{med['trained_on']:,}",
                f"{med['featured']:,}",
                "-" if med["probe_rows"] is None else f"{med['probe_rows']:,}",
                "-" if med["auc_loss"] is None else f"{med['auc_loss']:+.4f}",
            ]
        )
    print_table(
        [
            "training",
            "peak RSS MB",
            "wall s",
            "holdout AUC",
            "train rows",
            "trained on",
            "with features",
            "probe",
            "probe AUC loss",
        ],
        rows,
    )
    full, sampled = medians["full"], medians["sampled"]
    extra = full["featured"] - sampled["featured"]
    if extra > 0:
        per = (full["rss_mb"] - sampled["rss_mb"]) * 1024 / extra
        print(f"RSS per example with features (full - sampled): {per:.1f} KB over {extra:,} rows")


if __name__ == "__main__":
    sys.exit(main())
