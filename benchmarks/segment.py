"""Segment targets (issue 4), printed as a table.

- importing 5,000,000 events from JSON lines into the store: at least 200,000 events/s on 2 cores,
  peak memory under 1.5 GB (each import runs in a child process, which reports its own peak RSS);
- writing 100,000 identify messages: HTTP requests within 5 % of the minimum the 500 KB request
  limit allows (against the sandbox, over HTTPS);
- scoring with CDP data (Segment events and computed traits) beats scoring without it on the same
  holdout of the same org (AUC, with a paired bootstrap 95 % interval of the difference).

Usage: python benchmarks/segment.py [--events 5000000] [--messages 100000] [--leads 20000]
                                    [--runs 3] [--seed 42] [--skip import,write,auc]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from connector.sandbox import Sandbox
from connector.sandbox.segment_api import SegmentOptions
from connector.segment import (
    MAX_REQUEST_BYTES,
    SegmentSettings,
    TrackingClient,
    encode_message,
    identify_message,
    message_id,
)
from sync.config import load_settings
from sync.demo import prepare_workdir, write_sandbox_files
from sync.jobs import run_pull, run_train

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ("Page Viewed", "Feature Used", "Product Added", "Order Completed", "Email Clicked")


def write_events(path: Path, count: int, bad: int = 0) -> int:
    """Write a Segment archive of ``count`` track events, plus ``bad`` broken lines."""
    rng = random.Random(7)
    every = count // bad if bad else 0
    written = 0
    with open(path, "w", buffering=1 << 22) as out:
        chunk = []
        for i in range(count):
            day, second = 1 + i % 28, i % 86_400
            chunk.append(
                f'{{"type":"track","event":"{EVENTS[i % 5]}","userId":"usr_{i % 250_000:07d}",'
                f'"anonymousId":"{i * 2_654_435_761 % 2**64:016x}-anon",'
                f'"timestamp":"2025-05-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:'
                f'{second % 60:02d}.000Z","messageId":"msg-{i:010d}",'
                f'"properties":{{"revenue":{rng.randint(1, 500)}.5,"sku":"sku-{i % 997}"}},'
                f'"context":{{"library":{{"name":"analytics.js","version":"2.11.1"}}}}}}\n'
            )
            if every and i % every == every - 1:
                chunk.append("{this line is broken\n")
            if len(chunk) >= 100_000:
                out.write("".join(chunk))
                written += len(chunk)
                chunk = []
        out.write("".join(chunk))
        written += len(chunk)
    return written


CHILD = """
import json, resource, sys, time
from connector.files import import_segment_export
from connector.store import Store
store = Store(sys.argv[1])
started = time.perf_counter()
result = import_segment_export(store, sys.argv[2], "tracks")
seconds = time.perf_counter() - started
store.close()
print(json.dumps({"seconds": seconds, "imported": result.imported, "skipped": result.skipped_total,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def import_once(root: Path, source: Path, run: int) -> dict:
    store = root / f"import-{run}.duckdb"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(store), str(source)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    for leftover in (store, store.with_suffix(".duckdb.wal")):
        leftover.unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_import(root: Path, events: int, runs: int) -> list[list[object]]:
    clean = root / "tracks.jsonl"
    write_events(clean, events)
    results = [import_once(root, clean, run) for run in range(runs)]
    rate = statistics.median(r["imported"] / r["seconds"] for r in results)
    rss = max(r["rss_mb"] for r in results)
    assert all(r["imported"] == events for r in results)
    dirty = root / "tracks-with-bad-lines.jsonl"
    lines = write_events(dirty, events, bad=1000)
    clean.unlink()
    with_bad = [import_once(root, dirty, 100 + run) for run in range(runs)]
    dirty.unlink()
    bad_rate = statistics.median(r["imported"] / r["seconds"] for r in with_bad)
    assert all(r["skipped"] == lines - events for r in with_bad)
    return [
        [
            f"import {events:,} events (events/s, median of {runs})",
            ">= 200,000",
            f"{rate:,.0f}",
            rate >= 200_000,
        ],
        [
            "import: peak RSS of the importing process (max)",
            "< 1,536 MB",
            f"{rss:,.0f} MB",
            rss < 1536,
        ],
        [
            f"import with {lines - events:,} bad lines (events/s, median)",
            "(reported)",
            f"{bad_rate:,.0f}",
            None,
        ],
    ]


def minimum_requests(sizes: list[int], limit: int, max_messages: int) -> int:
    """Fewest requests that can carry the messages.

    The smallest k with sum(sizes) + (n - k) commas + k * envelope <= k * limit.
    """
    envelope = len(b'{"batch":[],"sentAt":"0000-00-00T00:00:00.000Z"}')
    n, total = len(sizes), sum(sizes)
    by_size = math.ceil((total + n) / (limit + 1 - envelope))
    return max(by_size, math.ceil(n / max_messages))


def bench_write(root: Path, messages: int, runs: int) -> list[list[object]]:
    rows: list[tuple[float, int, int]] = []
    for run in range(runs):
        with Sandbox(
            root / f"write-{run}", leads=50, seed=run, segment_options=SegmentOptions()
        ) as box:
            info = box.info
            settings = SegmentSettings(
                tracking_url=info["segment_url"],
                ca_bundle=Path(info["ca_bundle"]),
                write_key=info["segment_write_key"],
            )
            stamp = datetime(2025, 6, 1, 12)
            batch = [
                identify_message(
                    f"usr_{i:07d}",
                    {"lead_score": i % 100, "lead_tier": "ABCD"[i % 4]},
                    timestamp=stamp,
                    message_id=message_id(f"00Q{i:015d}", "lead_conversion", "v1", i % 100),
                )
                for i in range(messages)
            ]
            client = TrackingClient(settings)
            started = time.perf_counter()
            ok = sum(o.success for _, outs in client.send(batch) for o in outs)
            seconds = time.perf_counter() - started
            client.close()
            sent = len([r for r in box.segment_requests if r.path == "/v1/batch"])
            assert ok == messages and all(r.status == 200 for r in box.segment_requests)
        least = minimum_requests([len(encode_message(m)) for m in batch], MAX_REQUEST_BYTES, 2500)
        rows.append((seconds, sent, least))
    seconds = statistics.median(r[0] for r in rows)
    sent, least = rows[0][1], rows[0][2]
    return [
        [
            f"write {messages:,} identifies: requests vs minimum",
            f"<= {least * 1.05:.1f} (min {least})",
            f"{sent} ({sent / least:.3f}x)",
            sent <= least * 1.05,
        ],
        [
            f"write {messages:,} identifies: messages/s (median of {runs})",
            "(reported)",
            f"{messages / seconds:,.0f}",
            None,
        ],
    ]


def bootstrap_difference(
    label: np.ndarray, with_cdp: np.ndarray, without: np.ndarray, rounds: int = 1000, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, diffs = len(label), []
    for _ in range(rounds):
        pick = rng.integers(0, n, n)
        if label[pick].min() == label[pick].max():
            continue
        diffs.append(
            roc_auc_score(label[pick], with_cdp[pick]) - roc_auc_score(label[pick], without[pick])
        )
    return np.percentile(diffs, [2.5, 97.5])


def auc_once(root: Path, leads: int, seed: int) -> dict:
    workdir = root / f"auc-{seed}"
    prepare_workdir(workdir, fresh=True)
    with Sandbox(workdir / "sandbox", leads=leads, seed=seed, segment=True) as box:
        box.export_segment()
        config = write_sandbox_files(workdir, box.info, command="benchmark")
        with_cdp = load_settings(config, environ={})
        # the same org and the same store, without the [segment] section: Salesforce only
        without = with_cdp.model_copy(update={"segment": None, "traits": []})
        run_pull(without)
        base = run_train(without).artifacts["holdout"]["lead_conversion"]
        run_pull(with_cdp)
        cdp = run_train(with_cdp).artifacts["holdout"]["lead_conversion"]
        truth = box.ground_truth().set_index("lead_id")
    assert base["entity_id"].tolist() == cdp["entity_id"].tolist(), "holdouts differ"
    label = base["label"].to_numpy()
    low, high = bootstrap_difference(
        label, cdp["probability"].to_numpy(), base["probability"].to_numpy()
    )
    return {
        "without": roc_auc_score(label, base["probability"]),
        "with": roc_auc_score(label, cdp["probability"]),
        "oracle": roc_auc_score(label, truth.loc[base["entity_id"], "p_true"]),
        "n": len(label),
        "low": low,
        "high": high,
    }


def bench_auc(root: Path, leads: int, seed: int, runs: int) -> list[list[object]]:
    results = [auc_once(root, leads, seed + run) for run in range(runs)]
    for r in results:
        print(
            f"  seed run: holdout {r['n']:,}  AUC without CDP {r['without']:.4f}  with CDP "
            f"{r['with']:.4f}  oracle {r['oracle']:.4f}  difference 95% CI "
            f"[{r['low']:+.4f}, {r['high']:+.4f}]",
            flush=True,
        )
    without = statistics.median(r["without"] for r in results)
    with_cdp = statistics.median(r["with"] for r in results)
    oracle = statistics.median(r["oracle"] for r in results)
    gain = statistics.median(r["with"] - r["without"] for r in results)
    return [
        [
            f"holdout AUC without CDP data ({leads:,} leads, median of {runs})",
            "(baseline)",
            f"{without:.4f}",
            None,
        ],
        [
            "holdout AUC with Segment events + traits (same holdout)",
            "> without",
            f"{with_cdp:.4f} ({gain:+.4f})",
            gain > 0 and all(r["low"] > 0 for r in results),
        ],
        ["oracle AUC (generator's p_true, same holdout)", "(ceiling)", f"{oracle:.4f}", None],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", default="", help="comma-separated: import, write, auc")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="leadscore-segment-bench-") as tmp:
        root = Path(tmp)
        if "import" not in skip:
            rows += bench_import(root, args.events, args.runs)
        if "write" not in skip:
            rows += bench_write(root, args.messages, args.runs)
        if "auc" not in skip:
            rows += bench_auc(root, args.leads, args.seed, args.runs)
    width = max(len(str(r[0])) for r in rows)
    print(f"{'measure':<{width}}  {'target':>22}  {'measured':>24}  result")
    for name, target, measured, ok in rows:
        verdict = "-" if ok is None else ("OK" if ok else "MISSED")
        print(f"{name:<{width}}  {target:>22}  {measured:>24}  {verdict}")


if __name__ == "__main__":
    main()
