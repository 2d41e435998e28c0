"""Salesforce connector targets (issue 3), printed as a table.

- first sync of 200,000 Leads + ~2,000,000 Tasks (+ ~340,000 CampaignMembers) from the sandbox
  into DuckDB: peak RSS of the pull under 1 GB (the `leadscore pull` child process's VmHWM,
  sampled from /proc), API calls within 10 % of the minimum for the path (Bulk API 2.0: per stream
  describe + job create + one poll + result pages);
- incremental sync after 1 % of Leads and Tasks changed: rows read ~ rows changed (no full
  re-read), calls within 10 % of the minimum for the paths chosen;
- 10,000 changed scores written: <= ceil(10,000 / 200) + 2 = 52 calls on sObject Collections,
  <= 8 on Bulk API 2.0;
- a deletion sweep (`pull --sweep`) after 1 % of Leads and Tasks were deleted and purged from
  the recycle bin: exactly those rows removed from the store, peak RSS under 1 GB;
- 5 % of requests failing transiently (503, REQUEST_LIMIT_EXCEEDED, expired sessions; plus
  connections dropped mid-body on reads) and 2 % of record writes hitting UNABLE_TO_LOCK_ROW:
  every record written or recorded as failed with its reason, none written twice (the sandbox's
  write_log), and the store equal to the org after a faulted pull.

Usage: python benchmarks/salesforce.py [--leads 200000] [--runs 3] [--seed 42] [--tmp DIR]

Generating 200,000 leads takes ~15 s and ~700 MB of disk (plus the DuckDB stores); everything
lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from bench_table import print_table, verdict

from connector.sandbox import FaultRule, InjectedFaults, Sandbox
from connector.store import Store
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_push

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
BULK_PAGE = 50_000
REST_PAGE = 2_000


def configure(workdir: Path, info: dict[str, Any], **keys: Any) -> Path:
    """A sandbox config in its own directory (its own store), with extra [salesforce] keys."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_sandbox_files(workdir, info, command="benchmark")
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    config.write_text(
        config.read_text().replace("page_size = 2000\n", "page_size = 2000\n" + extra)
    )
    return config


def run_child(config: Path, *options: str) -> dict[str, Any]:
    """`leadscore pull --json` in a child process, with that child's peak RSS.

    The peak is the child's ``VmHWM`` from ``/proc``, sampled until it exits. Not ``ru_maxrss``
    from ``os.wait4``: Linux carries the parent's high-water mark into a child started by
    vfork + exec (as subprocess does), so this process's own peak (the 200,000-lead org it
    generated) would be reported as the child's.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out:
        process = subprocess.Popen(
            [LEADSCORE, "pull", "--config", str(config), "--json", *options],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")},
        )
        peak_kb = 0
        while process.poll() is None:
            peak_kb = max(peak_kb, high_water_kb(process.pid))
            time.sleep(0.05)
        out.seek(0)
        text = out.read()
    raise_if_failed(process.returncode, text, "")
    result = json.loads(text)
    result["rss_mb"] = peak_kb / 1024
    result["wall_seconds"] = time.perf_counter() - started
    return result


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


def stored_rows(config: Path, sobject: str) -> int:
    """Rows of an object's raw table in the store a config points at."""
    table = {"Lead": "sf_lead", "Task": "sf_task", "CampaignMember": "sf_campaign_member"}[sobject]
    with Store(load_settings(config, environ={}).store.path, read_only=True) as store:
        return int(store.query_df(f"SELECT count(*) AS n FROM {table}")["n"][0])


def raise_if_failed(code: int, out: str, err: str) -> None:
    if code != 0:
        raise SystemExit(f"leadscore pull failed ({code}): {out[-500:]} {err[-500:]}")


def minimum_calls(result: dict[str, Any], *, first_sync: bool) -> int:
    """The calls a pull on the chosen paths cannot do without.

    Per stream: the describe that validates the configured fields; on an incremental pull the
    COUNT() that chooses the path; then for Bulk API 2.0 the job create, one poll and one call
    per result page, and for REST one call per page. (Not included: the one /limits read before
    bulk jobs, and the login, which is not an API call.)
    """
    total = 0
    for stream in result["counts"]["streams"].values():
        rows = stream["fetched"]
        total += 1 if first_sync else 2
        if stream["path"] == "bulk":
            total += 2 + max(1, math.ceil(rows / BULK_PAGE))
        else:
            total += math.ceil(rows / REST_PAGE)
    return total


def change_one_percent(sandbox: Sandbox, part: int, label: str) -> dict[str, int]:
    """Edit one hundredth of the Leads and Tasks (as a user would): slice ``part`` of 100."""
    changed = {}
    for sobject, field in (("Lead", "Title"), ("Task", "Subject")):
        ids = [
            r[0]
            for r in sandbox.sql(
                f"SELECT Id FROM {sobject} WHERE IsDeleted = 0 AND (rowid % 100) = ?", [part]
            )
        ]
        for start in range(0, len(ids), 20_000):
            sandbox.update_records(
                sobject, [{"Id": i, field: label} for i in ids[start : start + 20_000]]
            )
        changed[sobject] = len(ids)
    return changed


def append_scores(config: Path, leads: list[str], round_number: int) -> None:
    settings = load_settings(config, environ={})
    frame = pd.DataFrame(
        {
            "entity_id": leads,
            "model_version": f"bench-{round_number}",
            "probability": [((n + round_number) % 100) / 100 for n in range(len(leads))],
            "score": [(n + round_number) % 100 for n in range(len(leads))],
            "tier": ["ABCD"[(n + round_number) % 4] for n in range(len(leads))],
            "reasons": None,
            "scored_at": dt.datetime(2025, 6, 1),
        }
    )
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", frame)


def push(config: Path) -> tuple[dict[str, Any], int, float]:
    settings = load_settings(config, environ={})
    started = time.perf_counter()
    result = run_push(settings)
    return (
        result.counts["predictions"]["lead_conversion"],
        result.api_calls,
        (time.perf_counter() - started),
    )


def last_write(sandbox: Sandbox) -> int:
    return int(sandbox.sql("SELECT coalesce(max(rowid), 0) FROM write_log")[0][0])


def duplicates_after(sandbox: Sandbox, after: int) -> int:
    """Fields written more than once by the API since write_log row ``after``."""
    return sandbox.sql(
        "SELECT count(*) FROM (SELECT record_id, field FROM write_log WHERE rowid > ? "
        "GROUP BY record_id, field HAVING count(*) > 1)",
        [after],
    )[0][0]


def faults(kinds_on_writes: bool) -> InjectedFaults:
    """5 % of requests fail transiently; 2 % of record writes hit UNABLE_TO_LOCK_ROW.

    Connections dropped mid-body are injected on reads only: a write whose answer is lost is
    applied but unconfirmed, and resending it (PATCH is idempotent) would show twice in
    write_log.
    """
    rules = [
        FaultRule("unavailable", rate=0.03),
        FaultRule("request_limit", rate=0.01),
        FaultRule("expired_session", rate=0.01),
    ]
    if not kinds_on_writes:
        rules.insert(0, FaultRule("drop", rate=0.01, methods=("GET",), after_bytes=200))
    return InjectedFaults(rules, lock_rate=0.02, seed=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="leadscore-sf-bench-", dir=args.tmp) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        sandbox = Sandbox(root / "sandbox", leads=args.leads, seed=args.seed).start()
        took = time.perf_counter() - started
        print(f"generated and started a {args.leads:,}-lead org in {took:.1f} s")
        try:
            info = sandbox.info
            org = {
                name: sandbox.sql(f"SELECT count(*) FROM {name} WHERE IsDeleted = 0")[0][0]
                for name in ("Lead", "Task", "CampaignMember")
            }
            print("org: " + ", ".join(f"{n:,} {name}" for name, n in org.items()))

            # 1. first sync, in a child process per run (fresh store each time)
            first = []
            for run in range(args.runs):
                config = configure(root / f"first-{run}", info)
                before = sandbox.api_calls()
                result = run_child(config)
                result["sandbox_calls"] = sandbox.api_calls() - before
                result["minimum"] = minimum_calls(result, first_sync=True)
                first.append(result)
                print(
                    f"first sync {run + 1}: {result['wall_seconds']:.1f} s, "
                    f"{result['api_calls']} calls (minimum {result['minimum']}), "
                    f"peak RSS {result['rss_mb']:.0f} MB"
                )
            complete = all(
                r["counts"]["streams"][name]["fetched"] == org[name] for r in first for name in org
            )

            # 2. incremental after 1 % changes. Each run starts from a store of its own, synced
            # before any change, and the same 1 % of the records change again each time. (A
            # pull re-reads rows modified up to overlap_seconds before its cursor: chaining the
            # runs on one store would read each earlier run's one-second burst again.)
            incremental = []
            for run in range(args.runs):
                changed = change_one_percent(sandbox, 1, f"Changed {run}")
                result = run_child(root / f"first-{run}" / "config.toml")
                result["minimum"] = minimum_calls(result, first_sync=False)
                result["changed"] = changed
                incremental.append(result)
                streams = result["counts"]["streams"]
                print(
                    f"incremental {run + 1}: {result['api_calls']} calls (minimum "
                    f"{result['minimum']}), read "
                    + ", ".join(f"{streams[k]['fetched']:,} {k}" for k in changed)
                    + " for "
                    + ", ".join(f"{v:,} changed" for v in changed.values())
                )

            # 2b. deletion sweep: 1 % of Leads and Tasks deleted and purged from the recycle bin
            # (invisible to queryAll), then `pull --sweep` on each run's store
            purged = {}
            for name, n in (("Lead", org["Lead"] // 100), ("Task", org["Task"] // 100)):
                where = "IsDeleted = 0" + (" AND IsConverted = 0" if name == "Lead" else "")
                ids = [
                    r[0]
                    for r in sandbox.sql(f"SELECT Id FROM {name} WHERE {where} ORDER BY Id DESC")
                ][:n]
                sandbox.delete_records(name, ids)
                sandbox.empty_recycle_bin(name)
                purged[name] = len(ids)
            org = {
                name: sandbox.sql(f"SELECT count(*) FROM {name} WHERE IsDeleted = 0")[0][0]
                for name in org
            }
            sweeps = []
            for run in range(args.runs):
                result = run_child(root / f"first-{run}" / "config.toml", "--sweep")
                streams = result["counts"]["streams"]
                result["exact"] = all(
                    streams[name]["swept"] == purged.get(name, 0) for name in streams
                ) and all(
                    stored_rows(root / f"first-{run}" / "config.toml", name) == n
                    for name, n in org.items()
                )
                sweeps.append(result)
                print(
                    f"sweep {run + 1}: {result['wall_seconds']:.1f} s, {result['api_calls']} "
                    f"calls, peak RSS {result['rss_mb']:.0f} MB, swept "
                    + ", ".join(f"{streams[k]['swept']:,} {k}" for k in streams)
                )

            # 3. 10,000 changed scores, on each write path
            leads = [
                r[0]
                for r in sandbox.sql(
                    "SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id LIMIT 10000"
                )
            ]
            writes: dict[str, list[tuple[int, float]]] = {"collections": [], "bulk": []}
            for path, threshold in (("collections", 20_000), ("bulk", 2_000)):
                config = configure(root / f"write-{path}", info, bulk_write_threshold=threshold)
                for run in range(args.runs):
                    append_scores(config, leads, run + 1)
                    counts, calls, seconds = push(config)
                    assert counts["written"] == len(leads), counts
                    writes[path].append((calls, seconds))
                print(
                    f"{path}: 10,000 writes in " + ", ".join(f"{c} calls" for c, _ in writes[path])
                )

            # 4. faults: a faulted first sync (small bulk pages: many requests), then an
            # incremental one after changes; then faulted pushes on both paths
            config = configure(root / "faulted", info, bulk_page_size=10_000)
            plan = faults(kinds_on_writes=False)
            sandbox.faults = plan
            run_child(config)
            sandbox.faults = InjectedFaults()  # the edits below are a user's, not the API's
            changed = change_one_percent(sandbox, 50, "Changed 50")
            sandbox.faults = plan
            run_child(config)
            pull_faults = dict(plan.injected)
            sandbox.faults = InjectedFaults()
            settings = load_settings(config, environ={})
            with Store(settings.store.path) as store:
                stored = {
                    name: int(store.query_df(f"SELECT count(*) AS n FROM {table}")["n"][0])
                    for name, table in (
                        ("Lead", "sf_lead"),
                        ("Task", "sf_task"),
                        ("CampaignMember", "sf_campaign_member"),
                    )
                }
                titles = store.query_df(
                    "SELECT count(*) AS n FROM sf_lead WHERE Title = 'Changed 50'"
                )["n"][0]
            pull_ok = stored == org and int(titles) == changed["Lead"]

            fault_pushes = {}
            for path in ("collections", "bulk"):
                config = root / f"write-{path}" / "config.toml"
                append_scores(config, leads, 99)
                since = last_write(sandbox)
                sandbox.faults = faults(kinds_on_writes=True)
                counts, calls, _ = push(config)
                injected = dict(sandbox.faults.injected)
                sandbox.faults = InjectedFaults()
                with Store(load_settings(config, environ={}).store.path) as store:
                    ledger = store.ledger("salesforce", "Lead")
                wanted = ledger[ledger["record_id"].isin(leads)]
                # every field of a record carries the record's one outcome
                accounted = wanted.groupby("record_id")["status"].nunique().eq(1).all()
                failed_with_reason = (
                    wanted[wanted["status"] == "failed"]["last_error"].notna().all()
                )
                fault_pushes[path] = {
                    "written": counts["written"],
                    "failed": counts["failed"],
                    "calls": calls,
                    "injected": injected,
                    "twice": duplicates_after(sandbox, since),
                    "accounted": bool(accounted)
                    and bool(failed_with_reason)
                    and counts["written"] + counts["failed"] == len(leads)
                    and wanted["record_id"].nunique() == len(leads),
                }
                print(f"{path} under faults: {fault_pushes[path]}")
        finally:
            sandbox.stop()

    rss = statistics.median(r["rss_mb"] for r in first)
    calls = statistics.median(r["api_calls"] for r in first)
    minimum = statistics.median(r["minimum"] for r in first)
    seconds = statistics.median(r["wall_seconds"] for r in first)
    inc_calls = statistics.median(r["api_calls"] for r in incremental)
    inc_min = statistics.median(r["minimum"] for r in incremental)
    read_ratio = statistics.median(
        sum(r["counts"]["streams"][k]["fetched"] for k in r["changed"]) / sum(r["changed"].values())
        for r in incremental
    )
    sweep_seconds = statistics.median(r["wall_seconds"] for r in sweeps)
    sweep_rss = statistics.median(r["rss_mb"] for r in sweeps)
    sweep_calls = statistics.median(r["api_calls"] for r in sweeps)
    collections = statistics.median(c for c, _ in writes["collections"])
    bulk = statistics.median(c for c, _ in writes["bulk"])
    print()
    print(f"leadscore Salesforce connector, {args.leads:,}-lead org, medians of {args.runs} runs")
    print()
    print_table(
        ["target", "measured", "result"],
        [
            [
                "first sync: peak RSS < 1 GB",
                f"{rss:.0f} MB ({seconds:.0f} s, all rows: {complete})",
                verdict(rss < 1024 and complete),
            ],
            [
                "first sync: calls <= 1.1 x minimum",
                f"{calls:.0f} calls, minimum {minimum:.0f} ({calls / minimum:.3f}x)",
                verdict(calls <= 1.1 * minimum),
            ],
            [
                "incremental (1 % changed): no full re-read",
                f"read {read_ratio:.3f} x the changed rows; {inc_calls:.0f} calls vs "
                f"{calls:.0f} for the first sync",
                verdict(read_ratio <= 1.05),
            ],
            [
                "incremental: calls <= 1.1 x minimum",
                f"{inc_calls:.0f} calls, minimum {inc_min:.0f}",
                verdict(inc_calls <= 1.1 * inc_min),
            ],
            [
                "deletion sweep after a purge: exact, RSS < 1 GB",
                f"{sweep_seconds:.0f} s ({sweep_seconds / seconds:.2f} x the first sync), "
                f"{sweep_calls:.0f} calls, {sweep_rss:.0f} MB; removed "
                + ", ".join(f"{n:,} {k}" for k, n in purged.items()),
                verdict(all(r["exact"] for r in sweeps) and sweep_rss < 1024),
            ],
            [
                "10,000 writes, Collections <= 52 calls",
                f"{collections:.0f} calls",
                verdict(collections <= 52),
            ],
            ["10,000 writes, Bulk API 2.0 <= 8 calls", f"{bulk:.0f} calls", verdict(bulk <= 8)],
            [
                "faulted pull: store equals the org",
                f"{sum(pull_faults.values())} faults injected {pull_faults}",
                verdict(pull_ok),
            ],
            *[
                [
                    f"faulted push ({path}): none lost, none twice",
                    f"{p['written']:,} written, {p['failed']} failed, {p['twice']} twice, "
                    f"{p['calls']} calls, {sum(p['injected'].values())} faults",
                    verdict(p["accounted"] and p["twice"] == 0),
                ]
                for path, p in fault_pushes.items()
            ],
        ],
    )


if __name__ == "__main__":
    main()
