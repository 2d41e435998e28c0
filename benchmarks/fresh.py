"""Speed to lead: creation -> confirmed score write with the polling fresh job, and /v1/score.

Part 1 (stream): a generated org (2,000 leads) served in this process; `leadscore serve` in a
subprocess with `sync` on a schedule, `train` once in the middle and a fresh cycle every 30 s
(polling). A web-form stand-in creates 2 leads/s through the REST API for `--minutes`. Measured
against the sandbox (its CreatedDate and write_log, 1 s resolution): latency from creation to the
first write of the lead's score, p50 / p95 / max; leads never scored (missing) and leads whose
score field was written twice with the same value (duplicate writes); the fresh job's API calls
per hour (its run-log rows) and the share of a 100,000-call daily allowance they would use.
With `--kill-at S`, `serve` is killed with SIGKILL S seconds in and restarted at once; the same
exactly-once counts then also cover the kill.

Part 2 (endpoint): `POST /v1/score` on a HealthServer in this process (keep-alive connection),
against the champion trained in part 1: p50 / p99 over 1,000 sequential one-record requests, and
records/s for requests of 1,000 records. Medians of `--repeats` runs.

    python benchmarks/fresh.py                      # 10 minutes of leads, kill at 240 s
    python benchmarks/fresh.py --minutes 3 --kill-at 100 --sync-every 2m
    python benchmarks/fresh.py --skip-stream         # the endpoint only
    python benchmarks/fresh.py --trigger cdc         # change events instead of polling
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.bench_table import print_table, verdict
from connector.salesforce import SalesforceClient
from connector.sandbox import Sandbox
from connector.store import Store
from scoring.events import ENTITIES, create_events_view, entity_sources
from scoring.features import FeatureColumns
from scoring.registry import load_champion
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.health_server import HealthServer, ServiceState
from sync.jobs import run_sync
from sync.score_api import Scorer

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
TOKEN = "benchmark-token"
DAILY_ALLOWANCE = 100_000
OWN_EVENTS = {"lead_created", "converted"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure(workdir: Path, sandbox: Sandbox, args: argparse.Namespace, port: int) -> Path:
    config = write_sandbox_files(workdir, sandbox.info, command="benchmark")
    config.write_text(
        config.read_text()
        + f'\n[serve]\nhealth_port = {port}\nlog_format = "json"\n'
        + f'\n[fresh]\nevery = "{args.fresh_every}"\ntrigger = "{args.trigger}"\n'
        + (f"cdc_window_seconds = {args.cdc_window}\n" if args.cdc_window is not None else "")
    )
    return config


def schedule(config: Path, args: argparse.Namespace) -> None:
    """Sync on its interval from now; train once, at the first whole minute past the middle."""
    middle = datetime.now(UTC) + timedelta(seconds=args.minutes * 60 / 2 + 60)
    config.write_text(
        config.read_text()
        + "\n[schedule]\n"
        + f'sync = {{ every = "{args.sync_every}" }}\n'
        + f'train = {{ cron = "{middle.minute} {middle.hour} * * *" }}\n'
        + "lock_wait_seconds = 600\n"
    )


def start_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env["LEADSCORE_FRESH__API_TOKEN"] = TOKEN
    return subprocess.Popen(
        ["nice", "-n", "5", LEADSCORE, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=env,
    )


def create_leads(
    settings: Settings, per_second: float, seconds: float, made: list[str], stop: threading.Event
) -> None:
    """Create leads through the REST API at a steady rate, as web forms would."""
    assert settings.salesforce is not None
    industries = ["Technology", "Retail", "Energy", "Finance", "Healthcare"]
    sources = ["Web", "Partner Referral", "Advertisement", "Trade Show"]
    with SalesforceClient(settings.salesforce) as client:
        start = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - start < seconds:
            due = start + n / per_second
            time.sleep(max(0.0, due - time.monotonic()))
            answer = client.sf.Lead.create(
                {
                    "LastName": f"Form{n}",
                    "Company": f"Company {n}",
                    "Industry": industries[n % len(industries)],
                    "LeadSource": sources[n % len(sources)],
                    "NumberOfEmployees": 10 * (1 + n % 50),
                }
            )
            made.append(str(answer["id"]))
            n += 1


def score_writes(sandbox: Sandbox, ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Per lead, its Lead_Score__c writes (time, value), oldest first."""
    rows = sandbox.sql(
        "SELECT record_id, at, value FROM write_log WHERE field = 'Lead_Score__c' ORDER BY at"
    )
    wanted = set(ids)
    out: dict[str, list[tuple[int, str]]] = {i: [] for i in ids}
    for record_id, at, value in rows:
        if record_id in wanted:
            out[record_id].append((int(at), value))
    return out


def created_times(sandbox: Sandbox, ids: list[str]) -> dict[str, int]:
    rows = sandbox.sql("SELECT Id, CreatedDate FROM Lead")
    wanted = set(ids)
    return {r[0]: int(r[1]) for r in rows if r[0] in wanted}


def stream(args: argparse.Namespace, workdir: Path) -> tuple[Settings, dict[str, Any]]:
    """Part 1: leads created for a while against a served org; what the sandbox saw."""
    # --trigger cdc: the org also serves its Pub/Sub API (change events).
    cdc = args.trigger == "cdc"
    sandbox = Sandbox(workdir / "sandbox", leads=args.leads, seed=14, pubsub=cdc).start()
    try:
        port = free_port()
        config = configure(workdir, sandbox, args, port)
        settings = load_settings(config, environ={})
        first = run_sync(settings)  # a champion and every existing lead scored before the clock
        assert first.status == "ok", first.counts
        schedule(config, args)
        log = workdir / "serve.log"
        serve = start_serve(config, log)
        made: list[str] = []
        stop = threading.Event()
        creator = threading.Thread(
            target=create_leads,
            args=(settings, args.per_second, args.minutes * 60, made, stop),
            daemon=True,
        )
        started = time.monotonic()
        creator.start()
        killed = False
        try:
            while creator.is_alive():
                if args.kill_at and not killed and time.monotonic() - started >= args.kill_at:
                    serve.send_signal(signal.SIGKILL)
                    serve.wait(10)
                    serve = start_serve(config, log)
                    killed = True
                time.sleep(0.5)
            # drain: the leads created last get their cycle
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                writes = score_writes(sandbox, made)
                if all(writes.values()):
                    break
                time.sleep(2)
        finally:
            stop.set()
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()
        elapsed = time.monotonic() - started
        writes = score_writes(sandbox, made)
        created = created_times(sandbox, made)
        latencies = [w[0][0] - created[i] for i, w in writes.items() if w and i in created]
        missing = [i for i, w in writes.items() if not w]
        duplicated = [i for i, w in writes.items() if len(w) != len({v for _, v in w})]
        rewritten = [i for i, w in writes.items() if len({v for _, v in w}) > 1]
        with Store(settings.store.path) as store:
            runs = store.query_df(
                "SELECT job, status, api_calls, started_at, finished_at, counts FROM run_log "
                "WHERE started_at >= (SELECT min(started_at) FROM run_log WHERE job = 'fresh')"
            )
        fresh = runs[runs["job"] == "fresh"]
        cycles = fresh[fresh["status"].isin(["ok", "partial"])]
        hours = elapsed / 3600
        calls_per_hour = float(fresh["api_calls"].fillna(0).sum()) / hours
        durations = (
            (pd.to_datetime(cycles["finished_at"]) - pd.to_datetime(cycles["started_at"]))
            .dt.total_seconds()
            .tolist()
        )
        skipped_log = log.read_text(errors="replace").count("fresh skipped")
        figures = {
            "leads": len(made),
            "minutes": round(elapsed / 60, 1),
            "p50": statistics.median(latencies) if latencies else None,
            "p95": float(pd.Series(latencies).quantile(0.95)) if latencies else None,
            "max": max(latencies) if latencies else None,
            "missing": len(missing),
            "duplicate": len(duplicated),
            "rewritten": len(rewritten),
            "cycles": len(cycles),
            "cycle_p50": statistics.median(durations) if durations else None,
            "cycle_max": max(durations) if durations else None,
            "busy_skips": skipped_log,
            "calls_per_hour": calls_per_hour,
            "daily_share": calls_per_hour * 24 / DAILY_ALLOWANCE,
            "jobs": runs["job"].value_counts().to_dict(),
            "killed": killed,
        }
        return settings, figures
    finally:
        sandbox.stop()


def posted(settings: Settings, n: int) -> list[dict[str, Any]]:
    """``n`` stored leads as a client would post them: fields and events."""
    spec = settings.predictions[0]
    champion = load_champion(settings.store.models_dir, spec.name)
    assert champion is not None
    columns = FeatureColumns(**champion.metadata["features"])
    entity = ENTITIES["lead"]
    wanted = list(dict.fromkeys([*columns.categorical, *columns.numeric, "CreatedDate"]))
    with Store(settings.store.path) as store:
        con = store.read_connection()
        create_events_view(con, entity, entity_sources(con, entity, spec))
        leads = store.query_df(
            f"SELECT Id, {', '.join(wanted)} FROM {entity.table} ORDER BY Id LIMIT {int(n)}"
        )
        events = store.query_df(
            f"SELECT entity_id, event, ts, value FROM {entity.events_view} "
            "WHERE entity_id IN (SELECT Id FROM leads_sample)".replace(
                "leads_sample", f"(SELECT Id FROM {entity.table} ORDER BY Id LIMIT {int(n)})"
            )
        )
    grouped = {k: g for k, g in events.groupby("entity_id")}
    out = []
    for lead in leads.to_dict("records"):
        fields = {}
        for key, value in lead.items():
            if isinstance(value, pd.Timestamp):
                value = value.isoformat() + "Z"
            elif value is not None and pd.isna(value):
                value = None
            elif hasattr(value, "item"):
                value = value.item()
            fields[key] = value
        mine = grouped.get(lead["Id"], events.iloc[:0])
        mine = mine[~mine["event"].isin(OWN_EVENTS)]
        out.append(
            {
                "fields": fields,
                "events": [
                    {"event": e.event, "at": pd.Timestamp(e.ts).isoformat() + "Z"}
                    for e in mine.itertuples(index=False)
                ],
            }
        )
    return out


def _serve(settings: Settings, ready: Any, stop: Any) -> None:
    """The endpoint's process: a HealthServer with the champion, until told to stop."""
    state = ServiceState(started_at=pd.Timestamp.now(tz="UTC").to_pydatetime())
    server = HealthServer(
        state, scorer=Scorer(settings), token=TOKEN, max_body_bytes=50_000_000
    ).start()
    ready.put(server.port)
    stop.wait()
    server.stop()


def endpoint(settings: Settings, repeats: int, requests: int, batch: int) -> dict[str, Any]:
    """Part 2: /v1/score over HTTP with keep-alive connections.

    The server runs in its own process, as under ``serve``: the client's work (building and
    reading JSON) does not share the server's interpreter. Bodies are encoded once, as a client
    sends bytes it has already built.
    """
    context = multiprocessing.get_context("fork")
    ready, stop = context.Queue(), context.Event()
    child = context.Process(target=_serve, args=(settings, ready, stop), daemon=True)
    child.start()
    port = ready.get(timeout=60)
    records = posted(settings, max(batch, 200))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def connect() -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def call(body: bytes) -> int:
            connection.request("POST", "/v1/score", body, headers)
            answer = connection.getresponse()
            data = json.loads(answer.read())
            assert answer.status == 200, data
            return len(data["results"]) if "results" in data else 1

        return call

    singles = [json.dumps({"record": r}).encode() for r in records]
    batches = [
        json.dumps({"records": [records[i % len(records)] for i in range(batch)]}).encode(),
        json.dumps(
            {"records": [records[i % len(records)] for i in range(batch)], "reasons": False}
        ).encode(),
    ]
    p50s, p99s, rates, bare, paired = [], [], [], [], []
    try:
        call = connect()
        call(singles[0])  # load the model
        for _ in range(repeats):
            seconds = []
            for i in range(requests):
                started = time.perf_counter()
                call(singles[i % len(singles)])
                seconds.append(time.perf_counter() - started)
            series = pd.Series(seconds) * 1000
            p50s.append(float(series.quantile(0.5)))
            p99s.append(float(series.quantile(0.99)))
            for body, out in ((batches[0], rates), (batches[1], bare)):
                call(body)
                started = time.perf_counter()
                scored = sum(call(body) for _ in range(5))
                out.append(scored / (time.perf_counter() - started))
            # two clients at once: the server's threads share its two cores
            callers = [connect(), connect()]
            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                scored = sum(pool.map(lambda c: sum(c(batches[0]) for _ in range(5)), callers))
            paired.append(scored / (time.perf_counter() - started))
    finally:
        stop.set()
        child.join(timeout=30)
    return {
        "p50_ms": statistics.median(p50s),
        "p99_ms": statistics.median(p99s),
        "records_per_s": statistics.median(rates),
        "records_per_s_bare": statistics.median(bare),
        "records_per_s_two_clients": statistics.median(paired),
        "runs": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long leads arrive")
    parser.add_argument("--per-second", type=float, default=2.0, help="leads created per second")
    parser.add_argument("--leads", type=int, default=2000, help="leads in the generated org")
    parser.add_argument("--sync-every", default="15m", help="serve's sync schedule")
    parser.add_argument("--fresh-every", default="30s", help="fresh cycle interval")
    parser.add_argument(
        "--trigger", choices=("poll", "cdc"), default="poll", help="fresh.trigger (cdc: p95 <= 5 s)"
    )
    parser.add_argument(
        "--cdc-window",
        type=float,
        default=None,
        help="fresh.cdc_window_seconds (--trigger cdc; default: the config's default)",
    )
    parser.add_argument("--kill-at", type=float, default=240.0, help="SIGKILL serve at (0: never)")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait at the end")
    parser.add_argument("--repeats", type=int, default=3, help="endpoint runs (median)")
    parser.add_argument("--requests", type=int, default=1000, help="one-record requests per run")
    parser.add_argument("--batch", type=int, default=1000, help="records per batch request")
    parser.add_argument("--skip-stream", action="store_true", help="the endpoint only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.skip_stream:
            sandbox = Sandbox(workdir / "sandbox", leads=args.leads, seed=14).start()
            try:
                config = write_sandbox_files(workdir, sandbox.info, command="benchmark")
                settings = load_settings(config, environ={})
                assert run_sync(settings).status == "ok"
            finally:
                sandbox.stop()
        else:
            settings, s = stream(args, workdir)
            target = 5 if args.trigger == "cdc" else 45
            print(
                "\nSpeed to lead, "
                + (
                    "change data capture"
                    if args.trigger == "cdc"
                    else f"polling every {args.fresh_every}"
                )
                + f": {s['leads']} leads created "
                f"at {args.per_second:g}/s over {s['minutes']} min; serve ran sync every "
                f"{args.sync_every} and train once (runs: {s['jobs']})"
                + (
                    f"; serve killed with SIGKILL at {args.kill_at:g} s and restarted"
                    if s["killed"]
                    else ""
                )
            )
            print_table(
                ["measure", "value", "target", "verdict"],
                [
                    ["creation -> score write p50 (s)", s["p50"], "", ""],
                    [
                        "creation -> score write p95 (s)",
                        s["p95"],
                        f"<= {target}",
                        verdict((s["p95"] or 1e9) <= target),
                    ],
                    ["creation -> score write max (s)", s["max"], "", ""],
                    ["leads never scored", s["missing"], "0", verdict(s["missing"] == 0)],
                    [
                        "leads written twice (same value)",
                        s["duplicate"],
                        "0",
                        verdict(s["duplicate"] == 0),
                    ],
                    ["leads re-scored with a new value", s["rewritten"], "", ""],
                    [
                        "fresh cycles (p50 / max s)",
                        f"{s['cycles']} ({s['cycle_p50']:.1f} / {s['cycle_max']:.1f})",
                        "",
                        "",
                    ],
                    ["cycles skipped (store busy > 10 s)", s["busy_skips"], "", ""],
                    ["fresh API calls per hour", round(s["calls_per_hour"]), "", ""],
                    ["share of a 100,000-call day", f"{s['daily_share']:.1%}", "", ""],
                ],
            )
        e = endpoint(settings, args.repeats, args.requests, args.batch)
        print(
            f"\n/v1/score, HTTP keep-alive on loopback, median of {e['runs']} runs "
            f"({args.requests} sequential one-record requests; 5 requests of {args.batch} records)"
        )
        print_table(
            ["measure", "value", "target", "verdict"],
            [
                ["one record p50 (ms)", round(e["p50_ms"], 2), "", ""],
                ["one record p99 (ms)", round(e["p99_ms"], 2), "<= 20", verdict(e["p99_ms"] <= 20)],
                [
                    "records/s in batches, without reasons",
                    round(e["records_per_s_bare"]),
                    ">= 20,000",
                    verdict(e["records_per_s_bare"] >= 20000),
                ],
                [
                    "records/s in batches",
                    round(e["records_per_s"]),
                    ">= 20,000",
                    verdict(e["records_per_s"] >= 20000),
                ],
                [
                    "records/s in batches, two clients at once",
                    round(e["records_per_s_two_clients"]),
                    "",
                    "",
                ],
            ],
        )


if __name__ == "__main__":
    main()
