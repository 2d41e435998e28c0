"""Start-up time of the ``leadscore`` command: ``--help`` and ``status`` on a small store.

Each command runs ``--runs`` times as a fresh process (wall clock, median reported); the
import time of the CLI module comes from ``python -X importtime``. Several executables can be
compared (e.g. the one of a checkout of main and the one of a branch)::

    python benchmarks/startup.py
    python benchmarks/startup.py --leadscore main/bin/leadscore --leadscore branch/bin/leadscore

Target: both commands under 0.8 s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_table import print_table, verdict

TARGET_SECONDS = 0.8
HEAVY = ("pandas", "catboost", "sklearn", "scipy", "matplotlib", "pyarrow", "duckdb", "numpy")

CONFIG = """
[store]
path = "store.duckdb"
[salesforce]
login_url = "https://login.salesforce.com"
[salesforce.streams.Lead]
fields = ["Industry"]
[[predictions]]
name = "lead_conversion"
label = { event = "converted", within_days = 30 }
[schedule]
sync = { every = "15m" }
"""


def wall_seconds(command: list[str], cwd: Path, runs: int) -> float:
    """Median wall-clock seconds of ``command`` over ``runs`` fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_profile(python: Path, cwd: Path) -> tuple[float, list[str]]:
    """Import time of ``sync.cli`` plus ``sync.status`` (s) and the heavy libraries it loads."""
    code = "import sync.cli, sync.status"
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    total, loaded = 0.0, set()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        if match.group(2) == " ":  # a top-level import of the statement
            total += int(match.group(1)) / 1e6
        loaded.add(match.group(3).split(".")[0])
    return total, [name for name in HEAVY if name in loaded]


def main() -> None:
    """Print one row per executable and command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--leadscore",
        action="append",
        type=Path,
        help="leadscore executable (repeatable; default: the one beside this Python)",
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    executables = args.leadscore or [Path(sys.executable).parent / "leadscore"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "config.toml").write_text(CONFIG)
        for exe in executables:
            python = exe.parent / "python"
            # a first run creates the store and warms the file cache
            subprocess.run([str(exe), "status"], cwd=cwd, capture_output=True, check=True)
            imports, heavy = import_profile(python, cwd)
            for name, command in (("--help", ["--help"]), ("status", ["status"])):
                seconds = wall_seconds([str(exe), *command], cwd, args.runs)
                rows.append(
                    [
                        str(exe),
                        f"leadscore {name}",
                        f"{seconds:.2f}",
                        f"{imports:.2f}",
                        ",".join(heavy) or "-",
                        verdict(seconds < TARGET_SECONDS),
                    ]
                )
    print_table(
        [
            "executable",
            "command",
            f"median of {args.runs} (s)",
            "import sync.cli+status (s)",
            "heavy libraries loaded",
            f"< {TARGET_SECONDS} s",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
