"""First-sync memory per page (issue 17): a raw table filled page by page, capped and uncapped.

A child process fills one raw table through ``Store.upsert_page`` with 50,000-record pages of new
records (the first sync's fast path: a plain insert checked by the primary key) and prints its
resident set after every ``--every`` records. It runs twice: with the store's page cap
(``connector.store.database.PAGE_CACHE_MB``) and with the cap lifted (``--cap-mb 0``: DuckDB keeps
what it wrote up to 80 % of RAM, as before the cap). Ids are the sandbox's (``00T`` + sequence),
in sequence order or shuffled (``--shuffle``, pages in random id order), so the primary-key
index is written in order or all over.

Usage: nice -n 10 python benchmarks/page_cache.py [--rows 10000000] [--every 2000000] [--shuffle]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_table import print_table

PAGE = 50_000
COLUMNS = {
    "Id": ("id", "VARCHAR"),
    "WhoId": ("reference", "VARCHAR"),
    "Subject": ("string", "VARCHAR"),
    "SystemModstamp": ("datetime", "TIMESTAMP"),
}


def rss_mb() -> float:
    """This process's resident set now (``VmRSS``), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(rows: int, every: int, cap_mb: int, shuffle: bool) -> list[dict[str, float]]:
    """Fill one table page by page in this process; RSS and CPU after every ``every`` rows."""
    from connector.store import Store, database

    if cap_mb:
        database.PAGE_CACHE_MB = cap_mb
    else:  # no cap: larger than anything DuckDB will hold here
        database.PAGE_CACHE_MB = 1_000_000
    order = np.random.default_rng(0).permutation(rows) if shuffle else np.arange(rows)
    stamp = pd.Timestamp("2024-01-01")
    marks = []
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.duckdb") as store:
        store.ensure_table("Task", "sf_task", COLUMNS, key="Id")
        started = time.perf_counter()
        for low in range(0, rows, PAGE):
            number = order[low : low + PAGE] + 1
            ids = np.char.add("00T5e0", np.char.zfill(number.astype(str), 12)).astype(object)
            page = pd.DataFrame(
                {"Id": ids, "WhoId": ids, "Subject": "Call", "SystemModstamp": stamp}
            )
            store.upsert_page("Task", "sf_task", page, key="Id", cursor_field="SystemModstamp")
            done = min(rows, low + PAGE)
            if done % every == 0 or done == rows:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                marks.append(
                    {
                        "rows": done,
                        "rss": rss_mb(),
                        "cpu": usage.ru_utime + usage.ru_stime,
                        "wall": time.perf_counter() - started,
                    }
                )
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--every", type=int, default=2_000_000)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--cap-mb", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cap_mb is not None:  # the child
        print(json.dumps(fill(args.rows, args.every, args.cap_mb, args.shuffle)))
        return
    from connector.store.database import PAGE_CACHE_MB

    runs = {}
    for label, cap in ((f"cap {PAGE_CACHE_MB} MB", PAGE_CACHE_MB), ("uncapped", 0)):
        command = [sys.executable, __file__, "--rows", str(args.rows), "--every", str(args.every)]
        command += ["--cap-mb", str(cap)] + (["--shuffle"] if args.shuffle else [])
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs[label] = json.loads(done.stdout)
        print(f"   {label}: {runs[label][-1]['rss']:.0f} MB at the end", file=sys.stderr)
    labels = list(runs)
    rows = []
    for index, mark in enumerate(runs[labels[0]]):
        other = runs[labels[1]][index]
        rows.append(
            [
                f"{mark['rows']:,}",
                f"{mark['rss']:.0f}",
                f"{other['rss']:.0f}",
                f"{mark['cpu']:.1f}",
                f"{other['cpu']:.1f}",
            ]
        )
    print_table(
        [
            "rows",
            f"RSS MB ({labels[0]})",
            "RSS MB (uncapped)",
            f"CPU-s ({labels[0]})",
            "CPU-s (uncapped)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
