"""First sync, page by page: does storing a Bulk result page cost more as the table grows?

Generates an org (`--leads`, seed 42) served by the sandbox in this process, runs leadscore's
first sync (`run_pull`) and times every page the store upserts (`Store.upsert_csv`: read the CSV,
compare with the stored rows, insert, checkpoint), per table. A flat first sync has the same cost
per page at the end of a table's download as at its start; the issue-17 measurement found the
first sync's CPU super-linear (53 s -> 148 s between 500k and 1M leads).

    python benchmarks/first_sync_pages.py --leads 300000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.bench_table import print_table
from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.stages.pull import run_pull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=300_000)
    args = parser.parse_args()
    pages: dict[str, list[float]] = defaultdict(list)
    upsert = Store.upsert_csv

    def timed(self: Store, stream: str, table: str, path: Path, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return upsert(self, stream, table, path, **kwargs)
        finally:
            pages[table].append(time.perf_counter() - started)

    Store.upsert_csv = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sandbox = Sandbox(workdir / "sandbox", leads=args.leads, seed=42).start()
        try:
            settings = load_settings(
                write_sandbox_files(workdir, sandbox.info, command="benchmark"), environ={}
            )
            started, cpu = time.perf_counter(), time.process_time()
            run_pull(settings)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            sandbox.stop()
    print(
        f"\nFirst sync of {args.leads:,} leads: {wall:.1f} s wall, {cpu:.1f} CPU-s "
        "(this process: leadscore and the sandbox serving it)"
    )
    rows = []
    for table, seconds in sorted(pages.items()):
        ten = min(10, len(seconds))
        first = statistics.median(seconds[:ten]) * 1000
        last = statistics.median(seconds[-ten:]) * 1000
        rows.append(
            [
                table,
                len(seconds),
                f"{sum(seconds):.2f}",
                f"{first:.0f}",
                f"{last:.0f}",
                f"{last / first:.2f}",
            ]
        )
    print_table(
        ["table", "pages", "store s", "first 10 pages ms", "last 10 pages ms", "last / first"],
        rows,
    )


if __name__ == "__main__":
    main()
