"""`leadscore serve` against the sandbox: steady cycles, flat memory, and a kill -9 mid-push.

Part 1 (cycles): a generated org (2,000 leads by default) served in this process; `leadscore serve`
in a subprocess with `sync = { every = "10s" }`; 30 consecutive cycles. Measured from the run log
and /proc: overlapping runs, missed or skipped cycles, the largest gap between cycle starts, the
serve process's RSS growth from cycle 5 to cycle 30, and cycle durations.

Part 2 (kill -9): a fresh org whose collection updates are slowed down (0.5 s each) so that a
push is in flight when `serve` is killed with SIGKILL; then `serve` is restarted and the next cycle
must complete. Checked against the sandbox, record by record: the ledger matches the org, and no
(record, field, value) was written twice (the sandbox's write_log).

    python benchmarks/serve.py                  # both parts, ~6 minutes
    python benchmarks/serve.py --cycles 8       # a shorter look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from connector.sandbox import Sandbox
from connector.sandbox.faults import Fault, FaultPlan, RequestInfo
from connector.store import Store
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.health_server import resident_memory_bytes

LEADSCORE = str(Path(sys.executable).parent / "leadscore")


class SlowWrites(FaultPlan):
    """Collection updates wait before they are applied (applied even if the client is gone)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0
        self._lock = threading.Lock()

    def on_request(self, request: RequestInfo) -> Fault | None:
        if request.category == "composite" and request.method == "PATCH":
            with self._lock:
                self.started += 1
            time.sleep(self.delay)
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure(workdir: Path, sandbox: Sandbox, interval: str, port: int) -> Path:
    config = write_sandbox_files(workdir, sandbox.info, command="benchmark")
    config.write_text(
        config.read_text()
        + f'\n[schedule]\nsync = {{ every = "{interval}" }}\n'
        + f'\n[serve]\nhealth_port = {port}\nlog_format = "json"\n'
    )
    return config


def start_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    return subprocess.Popen(
        [LEADSCORE, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=env,
    )


def metric(port: int, name: str) -> float:
    """Sum of a metric family's samples from /metrics (0 when unreachable)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def cycles(workdir: Path, n: int, interval: int, leads: int) -> list[tuple[str, str, str, bool]]:
    print(f"part 1: generating an org of {leads:,} leads", file=sys.stderr)
    sandbox = Sandbox(workdir / "sandbox", leads=leads, seed=42).start()
    port = free_port()
    config = configure(workdir, sandbox, f"{interval}s", port)
    process = start_serve(config, workdir / "serve.log")
    rss: dict[int, float] = {}
    started = time.monotonic()
    try:
        done = 0
        while done < n:
            if process.poll() is not None:
                raise SystemExit(f"serve exited with {process.returncode}; see {workdir}")
            count = int(metric(port, 'leadscore_runs_total{job="sync"'))
            if count > done:
                done = count
                rss[done] = resident_memory_bytes(process.pid) / 2**20
                print(f"  cycle {done:>2}: RSS {rss[done]:.1f} MB", file=sys.stderr)
            if time.monotonic() - started > n * interval + 120:
                raise SystemExit("cycles did not complete in time")
            time.sleep(0.2)
    finally:
        code = stop(process)
        sandbox.stop()
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:
        runs = store.query_df(
            "SELECT job, status, started_at, finished_at FROM run_log ORDER BY started_at"
        )
    top = runs[runs["job"] == "sync"].reset_index(drop=True)
    overlaps = int(
        (top["started_at"].iloc[1:].to_numpy() < top["finished_at"].iloc[:-1].to_numpy()).sum()
    )
    gaps = top["started_at"].diff().dt.total_seconds().iloc[1:]
    skipped = int((runs["status"] == "skipped").sum())
    not_ok = int((top["status"] != "ok").sum())
    durations = (top["finished_at"] - top["started_at"]).dt.total_seconds()
    growth = rss[n] - rss[min(5, n)]
    return [
        (
            "cycles completed",
            f"{n}",
            f"{len(top)} ({not_ok} not ok)",
            len(top) >= n and not_ok == 0,
        ),
        ("overlapping runs", "0", f"{overlaps}", overlaps == 0),
        ("skipped or missed cycles", "0", f"{skipped}", skipped == 0),
        (
            "largest gap between cycle starts",
            f"<= {1.5 * interval:.0f} s",
            f"{gaps.max():.1f} s (median {gaps.median():.1f} s)",
            gaps.max() <= 1.5 * interval,
        ),
        (
            f"serve RSS growth, cycle {min(5, n)} -> {n}",
            "< 50 MB",
            f"{growth:+.1f} MB ({rss[min(5, n)]:.0f} -> {rss[n]:.0f} MB)",
            growth < 50,
        ),
        (
            "cycle duration (first / median of the rest)",
            "-",
            f"{durations.iloc[0]:.1f} s / {statistics.median(durations.iloc[1:]):.2f} s",
            True,
        ),
        ("serve exit code after SIGTERM", "0", f"{code}", code == 0),
    ]


def kill_mid_push(workdir: Path, leads: int) -> list[tuple[str, str, str, bool]]:
    print(f"part 2: generating an org of {leads:,} leads with slow writes", file=sys.stderr)
    plan = SlowWrites(delay=0.5)
    sandbox = Sandbox(workdir / "sandbox", leads=leads, seed=43, faults=plan).start()
    port = free_port()
    config = configure(workdir, sandbox, "10s", port)
    settings = load_settings(config, environ={})
    try:
        process = start_serve(config, workdir / "serve.log")
        wait_for(lambda: plan.started >= 4, 180, "the fourth batch of the first push")
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(plan.delay + 0.5)  # the orphaned batch lands in the org after the client died
        with Store(settings.store.path) as store:
            in_flight = store.con.execute(
                "SELECT count(DISTINCT record_id) FROM writeback_ledger WHERE status = 'sending'"
            ).fetchall()[0][0]
        restarted = start_serve(config, workdir / "serve.log")
        wait_for(
            lambda: metric(port, 'leadscore_runs_total{job="sync",status="ok"}') >= 1,
            180,
            "the first cycle after the restart",
        )
        code = stop(restarted)
        rows = sandbox.sql("SELECT Id, Lead_Score__c, Lead_Tier__c FROM Lead WHERE NOT IsDeleted")
        writes = sandbox.sql("SELECT record_id, field, value FROM write_log")
    finally:
        sandbox.stop()
    with Store(settings.store.path) as store:
        book = {
            (r[0], r[1]): (r[2], r[3])
            for r in store.con.execute(
                "SELECT record_id, field, value, status FROM writeback_ledger"
            ).fetchall()
        }
        pushes = store.recent_runs(20)
    mismatches = 0
    for lead_id, score, tier in rows:
        s, t = book.get((lead_id, "Lead_Score__c")), book.get((lead_id, "Lead_Tier__c"))
        if (
            s is None
            or t is None
            or s[1] != "written"
            or t[1] != "written"
            or float(s[0]) != score
            or json.loads(t[0]) != tier
        ):
            mismatches += 1
    twice = len(writes) - len({tuple(w) for w in writes})
    recovered = sum(
        p["recovered"]
        for r in pushes
        if r["job"] == "push" and r["status"] == "ok"
        for p in r["counts"].get("predictions", {}).values()
    )
    abandoned = sum(1 for r in pushes if "abandoned" in (r["error"] or ""))
    return [
        ("batch in flight at kill -9", ">= 1 record", f"{in_flight} records", in_flight > 0),
        ("next cycle after restart", "ok", "ok", True),
        (
            "leads whose fields match the ledger",
            f"{len(rows):,}",
            f"{len(rows) - mismatches:,}",
            mismatches == 0,
        ),
        ("(record, field, value) written twice", "0", f"{twice}", twice == 0),
        ("fields found written on read-back", "-", f"{recovered}", True),
        ("killed runs marked abandoned", ">= 1", f"{abandoned}", abandoned >= 1),
        ("serve exit code after SIGTERM", "0", f"{code}", code == 0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--interval", type=int, default=10, help="seconds between sync cycles")
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--skip-cycles", action="store_true")
    parser.add_argument("--skip-kill", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="leadscore-serve-") as tmp:
        if not args.skip_cycles:
            rows += cycles(Path(tmp) / "cycles", args.cycles, args.interval, args.leads)
        if not args.skip_kill:
            rows += kill_mid_push(Path(tmp) / "kill", args.leads)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'target':<12}  {'measured':<34}  result")
    for name, target, measured, ok in rows:
        print(f"{name:<{width}}  {target:<12}  {measured:<34}  {'OK' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
