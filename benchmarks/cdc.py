"""Speed to lead with change data capture: `leadscore serve` with `fresh.trigger = "cdc"`.

Part 1 (latency, --runs times): a generated org served in this process with its Pub/Sub API;
`leadscore sync` once (the champion), then `leadscore serve` in a subprocess with
`[fresh] trigger = "cdc"`, `[schedule] sync` every 15 minutes and `train` once in the middle of
the run. A web-form load creates --rate leads/s through the REST API for --seconds. Latency per
lead: from the create request to the moment its Lead_Score__c is visible in the org (polled every
50 ms), and the store's own creation -> confirmed write figure (fresh_latency; the org's
CreatedDate has whole seconds). API calls the trigger made per hour (the org's counter less the
load's own creates) and their share of a 100,000-call daily allowance. Medians over the runs.

Part 2 (kill -9): the same load; `serve` is killed with SIGKILL mid-stream and restarted 3 s later.
Checked against the org: every created lead has its score, written exactly once (write_log), and
the store handled no change event twice (change_events).

    python benchmarks/cdc.py                          # 3 runs of 120 s, then the kill, ~10 min
    python benchmarks/cdc.py --runs 1 --seconds 60    # a shorter look
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from bench_table import print_table, verdict

from connector.salesforce import SalesforceClient
from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_sync
from sync.stages.fresh_cdc import TRIGGER

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
DAILY_ALLOWANCE = 100_000


def configure(workdir: Path, sandbox: Sandbox, seconds: int, window: float) -> Path:
    config = write_sandbox_files(workdir, sandbox.info, command="benchmark")
    config.write_text(
        config.read_text()
        + "\n[schedule]\n"
        + 'sync = { every = "15m" }\n'
        + f'train = {{ every = "{max(1, seconds // 2)}s" }}\n'
        + '\n[serve]\nlog_format = "json"\n'
        + f'\n[fresh]\nevery = "30s"\ntrigger = "cdc"\ncdc_window_seconds = {window}\n'
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


class Load:
    """Creates leads through the REST API at a steady rate, as web forms would."""

    def __init__(self, config: Path, rate: float) -> None:
        settings = load_settings(config, environ={})
        assert settings.salesforce is not None
        self.client = SalesforceClient(settings.salesforce)
        self.rate = rate
        self.created: dict[str, float] = {}
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self.client.connect()
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        started = time.monotonic()
        while not self._stop.is_set():
            sent = time.time()
            answer = self.client.sf.Lead.create(
                {
                    "LastName": f"Web {n}",
                    "Company": f"Co {n % 97}",
                    "LeadSource": "Web",
                    "Industry": ("Technology", "Retail", "Banking")[n % 3],
                    "Title": ("CTO", "Manager", "Analyst", "Intern")[n % 4],
                }
            )
            self.calls += 1
            self.created[str(answer["id"])] = sent
            n += 1
            self._stop.wait(max(0.0, started + n / self.rate - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def watch_scores(
    sandbox: Sandbox, load: Load, seen: dict[str, float], stop: threading.Event
) -> None:
    """Record when each created lead's score first shows in the org (every 50 ms)."""
    while not stop.is_set():
        pending = [i for i in list(load.created) if i not in seen]
        if pending:
            marks = ",".join("?" * len(pending))
            rows = sandbox.sql(
                f'SELECT "Id" FROM "Lead" WHERE "Lead_Score__c" IS NOT NULL AND "Id" IN ({marks})',
                pending,
            )
            now = time.time()
            for (lead_id,) in rows:
                seen.setdefault(str(lead_id), now)
        stop.wait(0.05)


def score_writes(sandbox: Sandbox, ids: list[str]) -> dict[str, int]:
    marks = ",".join("?" * len(ids))
    rows = sandbox.sql(
        "SELECT record_id, count(*) FROM write_log WHERE field = 'Lead_Score__c' "
        f"AND record_id IN ({marks}) GROUP BY record_id",
        ids,
    )
    return {str(a): int(b) for a, b in rows}


WINDOW = 2.0


def prepare(workdir: Path, leads: int, seed: int, seconds: int) -> tuple[Sandbox, Path]:
    sandbox = Sandbox(workdir / "sandbox", leads=leads, seed=seed, pubsub=True).start()
    config = configure(workdir, sandbox, seconds, WINDOW)
    result = run_sync(load_settings(config, environ={}))
    if result.status != "ok":
        raise SystemExit(f"the first sync failed: {result.status}")
    return sandbox, config


def wait_subscribed(sandbox: Sandbox, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "Subscribe" not in sandbox.pubsub_calls:
        if time.monotonic() > deadline:
            raise SystemExit("serve did not subscribe")
        time.sleep(0.2)
    time.sleep(1.0)


def latency_run(workdir: Path, leads: int, seed: int, rate: float, seconds: int) -> dict:
    sandbox, config = prepare(workdir, leads, seed, seconds)
    process = start_serve(config, workdir / "serve.log")
    seen: dict[str, float] = {}
    stop = threading.Event()
    try:
        wait_subscribed(sandbox)
        calls_before = sandbox.api_calls()
        log_before = len(sandbox.request_log)
        load = Load(config, rate).start()
        watcher = threading.Thread(target=watch_scores, args=(sandbox, load, seen, stop))
        watcher.start()
        time.sleep(seconds)
        load.stop()
        deadline = time.monotonic() + 60
        while len(seen) < len(load.created) and time.monotonic() < deadline:
            time.sleep(0.2)
        calls = sandbox.api_calls() - calls_before - load.calls
        # What the trigger's calls were, by kind (the load's own creates taken out).
        kinds = Counter(
            f"{r.category} {r.method}"
            for r in sandbox.request_log[log_before:]
            if r.category not in ("auth", "limits")
        )
        kinds["sobject POST"] -= load.calls
        stop.set()
        watcher.join()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        sandbox.stop()
    latencies = [seen[i] - load.created[i] for i in load.created if i in seen]
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:
        stored = [
            float(r[0])
            for r in store.con.execute(
                "SELECT seconds FROM fresh_latency WHERE trigger = ?", [TRIGGER]
            ).fetchall()
        ]
        trains = store.con.execute(
            "SELECT count(*) FROM run_log WHERE job = 'train' AND status = 'ok'"
        ).fetchall()[0][0]
        outcomes = store.change_event_counts(TRIGGER)
    return {
        "created": len(load.created),
        "scored": len(latencies),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "max": max(latencies),
        "store_p95": float(np.percentile(stored, 95)) if stored else float("nan"),
        "calls_per_hour": calls * 3600 / seconds,
        "calls_by_kind": {k: round(v * 3600 / seconds) for k, v in kinds.items() if v > 0},
        "trains": int(trains),
        "outcomes": outcomes,
    }


def kill_run(workdir: Path, leads: int, seed: int, rate: float, seconds: int) -> dict:
    sandbox, config = prepare(workdir, leads, seed, seconds)
    log = workdir / "serve.log"
    process = start_serve(config, log)
    try:
        wait_subscribed(sandbox)
        load = Load(config, rate).start()
        time.sleep(seconds / 2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = len(load.created)
        time.sleep(3)
        process = start_serve(config, log)
        time.sleep(seconds / 2)
        load.stop()
        ids = list(load.created)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(score_writes(sandbox, ids)) < len(ids):
            time.sleep(0.5)
        time.sleep(3)  # let any duplicate write land before counting
        writes = score_writes(sandbox, ids)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        sandbox.stop()
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:
        rows = store.con.execute(
            "SELECT count(*), count(DISTINCT replay_id) FROM change_events WHERE trigger = ?",
            [TRIGGER],
        ).fetchall()[0]
    return {
        "created": len(ids),
        "killed_after": killed_at,
        "missing": sum(1 for i in ids if writes.get(i, 0) == 0),
        "twice": sum(1 for i in ids if writes.get(i, 0) > 1),
        "events": int(rows[0]),
        "events_twice": int(rows[0]) - int(rows[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--rate", type=float, default=2.0, help="new leads per second")
    parser.add_argument("--leads", type=int, default=2000, help="the generated org's leads")
    parser.add_argument("--no-kill", action="store_true", help="skip part 2")
    parser.add_argument(
        "--window", type=float, default=2.0, help="fresh.cdc_window_seconds (batching window)"
    )
    args = parser.parse_args()
    global WINDOW
    WINDOW = args.window
    runs = []
    with tempfile.TemporaryDirectory(prefix="leadscore-cdc-") as tmp:
        for n in range(args.runs):
            print(f"run {n + 1}/{args.runs}: {args.seconds} s at {args.rate}/s", file=sys.stderr)
            run = latency_run(Path(tmp) / f"run{n}", args.leads, 40 + n, args.rate, args.seconds)
            print(f"  {run}", file=sys.stderr)
            runs.append(run)
        kill = None
        if not args.no_kill:
            print("kill -9 run", file=sys.stderr)
            kill = kill_run(Path(tmp) / "kill", args.leads, 50, args.rate, args.seconds)
            print(f"  {kill}", file=sys.stderr)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    created = sum(r["created"] for r in runs)
    scored = sum(r["scored"] for r in runs)
    rows: list[list[object]] = [
        ["leads created / scored (all runs)", "all", f"{created} / {scored}", ""],
        ["create -> score visible, p50", "-", f"{med('p50'):.2f} s", ""],
        ["create -> score visible, p95", "<= 5 s", f"{med('p95'):.2f} s", verdict(med("p95") <= 5)],
        ["create -> score visible, max", "-", f"{med('max'):.2f} s", ""],
        ["store: CreatedDate -> confirmed write, p95", "-", f"{med('store_p95'):.2f} s", ""],
        [
            "trigger's API calls per hour",
            "-",
            f"{med('calls_per_hour'):,.0f} "
            f"({med('calls_per_hour') * 24 / DAILY_ALLOWANCE:.0%} of a 100,000/day org)",
            "",
        ],
        ["train runs during the load (median)", ">= 1", f"{med('trains'):.0f}", ""],
    ]
    if kill is not None:
        ok = kill["missing"] == 0 and kill["twice"] == 0 and kill["events_twice"] == 0
        rows.append(
            [
                f"kill -9 after {kill['killed_after']} of {kill['created']} leads: "
                "missing / written twice / events handled twice",
                "0 / 0 / 0",
                f"{kill['missing']} / {kill['twice']} / {kill['events_twice']}",
                verdict(ok),
            ]
        )
    print_table(["measure", "target", f"median of {len(runs)} runs", "verdict"], rows)
    print(
        f"fresh.cdc_window_seconds = {args.window}; event outcomes (run 1): {runs[0]['outcomes']}"
    )
    print(f"the trigger's calls per hour by kind (run 1): {runs[0]['calls_by_kind']}")


if __name__ == "__main__":
    main()
