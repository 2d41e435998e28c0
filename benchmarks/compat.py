"""Outside clients as judges: widely used Salesforce extractors, unchanged, against a sandbox org.

Each client is installed from PyPI into a virtual environment of its own (none of them is a
dependency of leadscore) and runs discovery, a full sync and, after records were changed and
deleted through the sandbox, an incremental sync. The records each one emitted are then compared
with the org: the live and the deleted (recycle bin) Leads after full + incremental, merged by Id.

| client | package | path |
|---|---|---|
| tap-salesforce REST | ``tap-salesforce`` | refresh token login, describe, ``queryAll`` |
| tap-salesforce BULK | ``tap-salesforce`` | Bulk API 1.0 CSV jobs, XML batch infos |
| Airbyte | ``airbyte-source-salesforce`` | refresh token login, Bulk API 2.0 ``queryAll`` |
| simple-salesforce bulk | ``simple-salesforce==1.12.10`` | ``sf.bulk.Lead.query``, ``query_all`` |

The one change allowed is where the clients' hard-coded login host goes: tap-salesforce and
Airbyte post to ``https://login.salesforce.com/services/oauth2/token``. A ``.pth`` file in each
benchmark venv (never in leadscore's) redirects name resolution of ``login.salesforce.com:443``
to the sandbox's port, like a hosts-file entry, and ``REQUESTS_CA_BUNDLE`` trusts the sandbox CA,
whose leaf certificate names the login hosts. TLS verification stays on; no client code is
patched. The token answer's ``instance_url`` then points the clients at the sandbox.

    python benchmarks/compat.py                    # 50,000 leads, all clients
    python benchmarks/compat.py --leads 20000 --clients tap-rest,ss-bulk

Prints a table per client (wall time and peak RSS of the client process per phase, records
emitted, and whether live and deleted records match the org); the figures go in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_table import print_table, verdict
from salesforce import configure, high_water_kb, run_child

from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import load_settings

LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
START_DATE = "2000-01-01T00:00:00Z"
PACKAGES = {
    "tap": ["tap-salesforce"],
    "airbyte": ["airbyte-source-salesforce"],
    "simple-salesforce": ["simple-salesforce==1.12.10"],
}
REDIRECT_MODULE = '''\
"""Benchmark-only name redirection: HOST:PORT=IP:PORT pairs in LEADSCORE_COMPAT_REDIRECT.

Installed by leadscore's benchmarks/compat.py into a throwaway venv, like a hosts-file entry
with a port: the client's code is unchanged, TLS still verifies the host name."""

import os
import socket

_TARGETS = {}
for _item in os.environ.get("LEADSCORE_COMPAT_REDIRECT", "").split(","):
    if "=" in _item:
        _source, _target = _item.split("=", 1)
        _host, _port = _source.rsplit(":", 1)
        _ip, _to = _target.rsplit(":", 1)
        _TARGETS[(_host.lower(), int(_port))] = (_ip, int(_to))

if _TARGETS:
    _resolve = socket.getaddrinfo

    def _redirected(host, port, *args, **kwargs):
        try:
            key = (str(host).lower(), int(port))
        except (TypeError, ValueError):
            key = None
        if key in _TARGETS:
            host, port = _TARGETS[key]
        return _resolve(host, port, *args, **kwargs)

    socket.getaddrinfo = _redirected
'''
SS_DRIVER = '''\
"""simple-salesforce's Bulk API 1.0 handler, as its README shows it (run in its own venv)."""

import datetime as dt
import json
import sys

from simple_salesforce import Salesforce

config = json.load(open(sys.argv[1]))
mode, out_path = sys.argv[2], sys.argv[3]
sf = Salesforce(
    username=config["username"],
    password=config["password"],
    consumer_key=config["client_id"],
    consumer_secret=config["client_secret"],
)
if mode == "discover":
    fields = [f["name"] for f in sf.Lead.describe()["fields"]]
    json.dump({"fields": fields}, open(out_path, "w"))
    sys.exit(0)
fields = ", ".join(config["fields"])
if mode == "full":
    records = sf.bulk.Lead.query(f"SELECT {fields} FROM Lead", wait=1)
else:
    since = config["bookmark"]
    records = sf.bulk.Lead.query_all(
        f"SELECT {fields} FROM Lead WHERE SystemModstamp >= {since}", wait=1
    )
with open(out_path, "w") as out:
    for record in records:
        stamp = dt.datetime.fromtimestamp(record["SystemModstamp"] / 1000, dt.timezone.utc)
        row = {"Id": record["Id"], "IsDeleted": record["IsDeleted"],
               "SystemModstamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        out.write(json.dumps(row) + "\\n")
'''


@dataclass
class Phase:
    """One client run: what it took and what it emitted."""

    seconds: float = 0.0
    rss_mb: float = 0.0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    emitted: int = 0
    error: str | None = None


@dataclass
class Outcome:
    """A client's three phases and its verdict."""

    name: str
    discover: Phase = field(default_factory=Phase)
    full: Phase = field(default_factory=Phase)
    incremental: Phase = field(default_factory=Phase)
    note: str = ""


# Virtual environments ---------------------------------------------------------------------------


def ensure_venv(root: Path, name: str) -> Path:
    """Create ``root/name`` with the client's packages and the redirect ``.pth`` (idempotent).

    Returns:
        The venv's python.
    """
    venv = root / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join(PACKAGES[name])
    if not (marker.exists() and marker.read_text() == wanted):
        print(f"installing {wanted} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PACKAGES[name]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        marker.write_text(wanted)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "leadscore_compat_redirect.py").write_text(REDIRECT_MODULE)
    (Path(site) / "leadscore_compat_redirect.pth").write_text("import leadscore_compat_redirect\n")
    return python


def client_env(sandbox: Sandbox) -> dict[str, str]:
    """The environment of a client process: login hosts redirected, the sandbox CA trusted."""
    port = sandbox.url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADSCORE_", "PYTHON"))}
    env["LEADSCORE_COMPAT_REDIRECT"] = ",".join(f"{h}:443=127.0.0.1:{port}" for h in LOGIN_HOSTS)
    env["REQUESTS_CA_BUNDLE"] = env["SSL_CERT_FILE"] = sandbox.info["ca_bundle"]
    env.pop("CURL_CA_BUNDLE", None)
    return env


# Running a client -------------------------------------------------------------------------------


def run(
    command: list[str], env: dict[str, str], stdout_path: Path, timeout: float
) -> tuple[float, float, int, str]:
    """Run a client; return (seconds, peak RSS MB, exit code, stderr tail)."""
    started = time.perf_counter()
    with stdout_path.open("w") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        peak = 0
        while process.poll() is None:
            peak = max(peak, high_water_kb(process.pid))
            if time.perf_counter() - started > timeout:
                process.kill()
                process.wait()
                break
            time.sleep(0.05)
        err.seek(0)
        tail = err.read()[-1500:]
    return time.perf_counter() - started, peak / 1024, process.returncode, tail


def phase_from(
    seconds: float,
    rss: float,
    code: int,
    tail: str,
    records: dict[str, dict[str, Any]],
    emitted: int,
) -> Phase:
    error = None
    if code != 0:
        lines = [line for line in tail.strip().splitlines() if line.strip()]
        error = f"exit {code}: {lines[-1][:200] if lines else 'no output'}"
    return Phase(seconds, rss, records, emitted, error)


def singer_records(path: Path) -> tuple[dict[str, dict[str, Any]], int, dict[str, Any] | None]:
    """Records (by Id, last wins), RECORD count and the last STATE of a tap's output."""
    records: dict[str, dict[str, Any]] = {}
    emitted = 0
    state = None
    with path.open() as lines:
        for line in lines:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if message.get("type") == "RECORD" and message.get("stream") == "Lead":
                emitted += 1
                record = message["record"]
                records[record["Id"]] = _keep(record)
            elif message.get("type") == "STATE":
                state = message["value"]
    return records, emitted, state


def airbyte_records(path: Path) -> tuple[dict[str, dict[str, Any]], int, list[Any], str | None]:
    """Records, RECORD count, per-stream states and the first error trace of a source's output."""
    records: dict[str, dict[str, Any]] = {}
    emitted = 0
    states: dict[str, Any] = {}
    error = None
    with path.open() as lines:
        for line in lines:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            kind = message.get("type")
            if kind == "RECORD" and message["record"]["stream"] == "Lead":
                emitted += 1
                data = message["record"]["data"]
                records[data["Id"]] = _keep(data)
            elif kind == "STATE":
                state = message["state"]
                stream = state.get("stream", {}).get("stream_descriptor", {}).get("name", "")
                states[stream] = state
            elif kind == "TRACE" and message["trace"].get("type") == "ERROR" and error is None:
                error = message["trace"]["error"].get("message", "error")[:200]
    return records, emitted, list(states.values()), error


def _keep(record: dict[str, Any]) -> dict[str, Any]:
    deleted = record.get("IsDeleted")
    return {
        "IsDeleted": deleted in (True, "true", "True", 1),
        "SystemModstamp": record.get("SystemModstamp"),
    }


# Clients ----------------------------------------------------------------------------------------


def run_tap(
    python: Path,
    sandbox: Sandbox,
    work: Path,
    api_type: str,
    timeout: float,
    between: Callable[[], None],
) -> Outcome:
    """tap-salesforce: --discover, a full sync, ``between()``, then a sync from its state."""
    outcome = Outcome(f"tap-salesforce {api_type}")
    work.mkdir(parents=True, exist_ok=True)
    info = sandbox.info
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "refresh_token": info["refresh_token"],
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "start_date": START_DATE,
                "api_type": api_type,
                "select_fields_by_default": True,
                "is_sandbox": False,
            }
        )
    )
    tap = str(python.parent / "tap-salesforce")
    env = client_env(sandbox)
    catalog_path = work / "catalog.json"
    seconds, rss, code, tail = run(
        [tap, "--config", str(config), "--discover"], env, catalog_path, timeout
    )
    outcome.discover = phase_from(seconds, rss, code, tail, {}, 0)
    if code != 0:
        return outcome
    catalog = json.loads(catalog_path.read_text())
    streams = []
    for stream in catalog["streams"]:
        if stream["stream"] != "Lead":
            continue
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"].update(
                    {
                        "selected": True,
                        "replication-method": "INCREMENTAL",
                        "replication-key": "SystemModstamp",
                    }
                )
        streams.append(stream)
    outcome.discover.emitted = len(catalog["streams"])
    selected = work / "selected.json"
    selected.write_text(json.dumps({"streams": streams}))
    out = work / "full.jsonl"
    seconds, rss, code, tail = run(
        [tap, "--config", str(config), "--properties", str(selected)], env, out, timeout
    )
    records, emitted, state = singer_records(out)
    outcome.full = phase_from(seconds, rss, code, tail, records, emitted)
    if code != 0 or state is None:
        return outcome
    between()
    state_path = work / "state.json"
    state_path.write_text(json.dumps(state))
    out = work / "incremental.jsonl"
    command = [
        tap,
        "--config",
        str(config),
        "--properties",
        str(selected),
        "--state",
        str(state_path),
    ]
    seconds, rss, code, tail = run(command, env, out, timeout)
    records, emitted, _ = singer_records(out)
    outcome.incremental = phase_from(seconds, rss, code, tail, records, emitted)
    bookmark = state.get("bookmarks", {}).get("Lead", {}).get("SystemModstamp")
    outcome.note = f"bookmark {bookmark}"
    return outcome


def run_airbyte(
    python: Path, sandbox: Sandbox, work: Path, timeout: float, between: Callable[[], None]
) -> Outcome:
    """Airbyte source-salesforce: discover, then two incremental reads, the second from state."""
    outcome = Outcome("airbyte source-salesforce")
    work.mkdir(parents=True, exist_ok=True)
    info = sandbox.info
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "refresh_token": info["refresh_token"],
                "start_date": START_DATE,
                "is_sandbox": False,
                "streams_criteria": [{"criteria": "exacts", "value": "Lead"}],
            }
        )
    )
    source = str(python.parent / "source-salesforce")
    env = client_env(sandbox)
    discovered = work / "discover.jsonl"
    seconds, rss, code, tail = run(
        [source, "discover", "--config", str(config)], env, discovered, timeout
    )
    catalog = None
    with discovered.open() as lines:
        for line in lines:
            if line.startswith("{") and '"CATALOG"' in line:
                catalog = json.loads(line)["catalog"]
    outcome.discover = phase_from(seconds, rss, code if catalog else code or 1, tail, {}, 0)
    if catalog is None:
        _, _, _, trace = airbyte_records(discovered)
        outcome.discover.error = outcome.discover.error or trace or "no catalog"
        return outcome
    outcome.discover.emitted = len(catalog["streams"])
    lead = next(s for s in catalog["streams"] if s["name"] == "Lead")
    configured = work / "configured.json"
    configured.write_text(
        json.dumps(
            {
                "streams": [
                    {
                        "stream": lead,
                        "sync_mode": "incremental",
                        "cursor_field": ["SystemModstamp"],
                        "destination_sync_mode": "append_dedup",
                        "primary_key": [["Id"]],
                    }
                ]
            }
        )
    )
    out = work / "full.jsonl"
    command = [source, "read", "--config", str(config), "--catalog", str(configured)]
    seconds, rss, code, tail = run(command, env, out, timeout)
    records, emitted, states, trace = airbyte_records(out)
    outcome.full = phase_from(seconds, rss, code, tail, records, emitted)
    outcome.full.error = outcome.full.error or trace
    if outcome.full.error or not states:
        return outcome
    between()
    state_path = work / "state.json"
    state_path.write_text(json.dumps(states))
    out = work / "incremental.jsonl"
    seconds, rss, code, tail = run([*command, "--state", str(state_path)], env, out, timeout)
    records, emitted, _, trace = airbyte_records(out)
    outcome.incremental = phase_from(seconds, rss, code, tail, records, emitted)
    outcome.incremental.error = outcome.incremental.error or trace
    return outcome


def run_simple_salesforce(
    python: Path, sandbox: Sandbox, work: Path, timeout: float, between: Callable[[], None]
) -> Outcome:
    """simple-salesforce ``sf.bulk.Lead.query`` (full) and ``query_all`` from a bookmark."""
    outcome = Outcome("simple-salesforce sf.bulk (1.0)")
    work.mkdir(parents=True, exist_ok=True)
    driver = work / "driver.py"
    driver.write_text(SS_DRIVER)
    info = sandbox.info
    config = work / "config.json"
    settings = {k: info[k] for k in ("username", "password", "client_id", "client_secret")}
    config.write_text(json.dumps(settings))
    env = client_env(sandbox)
    fields_path = work / "fields.json"
    seconds, rss, code, tail = run(
        [str(python), str(driver), str(config), "discover", str(fields_path)],
        env,
        work / "d.out",
        timeout,
    )
    outcome.discover = phase_from(seconds, rss, code, tail, {}, 0)
    if code != 0:
        return outcome
    fields = json.loads(fields_path.read_text())["fields"]
    outcome.discover.emitted = 1
    config.write_text(json.dumps({**settings, "fields": fields}))
    out = work / "full.jsonl"
    seconds, rss, code, tail = run(
        [str(python), str(driver), str(config), "full", str(out)], env, work / "f.out", timeout
    )
    records = read_jsonl(out) if code == 0 else {}
    outcome.full = phase_from(seconds, rss, code, tail, records, len(records))
    if code != 0:
        return outcome
    # The bookmark as a tap writes it: the newest SystemModstamp seen, with 6 fraction digits.
    bookmark = max(record["SystemModstamp"] for record in records.values())
    between()
    config.write_text(json.dumps({**settings, "fields": fields, "bookmark": bookmark}))
    out = work / "incremental.jsonl"
    seconds, rss, code, tail = run(
        [str(python), str(driver), str(config), "incremental", str(out)],
        env,
        work / "i.out",
        timeout,
    )
    records = read_jsonl(out) if code == 0 else {}
    outcome.incremental = phase_from(seconds, rss, code, tail, records, len(records))
    outcome.note = f"bookmark {bookmark}"
    return outcome


def run_leadscore(sandbox: Sandbox, work: Path, between: Callable[[], None]) -> Outcome:
    """leadscore's own ``pull`` (the demo's streams: Lead, Task, CampaignMember), for comparison.

    Its store keeps live records only (deletions are removed), so "records" is the Lead rows
    stored after each pull, and deleted records count as seen when they are gone from the store.
    """
    outcome = Outcome("leadscore pull")
    config = configure(work, sandbox.info)
    for name in ("full", "incremental"):
        if name == "incremental":
            between()
        result = run_child(config)
        fetched = result["counts"]["streams"]["Lead"]["fetched"]
        with Store(load_settings(config, environ={}).store.path, read_only=True) as store:
            frame = store.query_df("SELECT Id, Title FROM sf_lead")
        records = {
            i: {"IsDeleted": False, "Title": t} for i, t in zip(frame.Id, frame.Title, strict=True)
        }
        phase = Phase(result["wall_seconds"], result["rss_mb"], records, fetched)
        setattr(outcome, name, phase)
    outcome.note = "all three streams; records = Lead rows fetched"
    return outcome


def judge_store(
    outcome: Outcome, org: tuple[set[str], set[str]], changed: set[str], title: str
) -> list[list[object]]:
    """Table rows for leadscore: its store against the org (live rows, deletions removed)."""
    rows = [
        [outcome.name, label, f"{p.seconds:.1f}", f"{p.rss_mb:.0f}", p.emitted, p.error or ""]
        for label, p in (("full", outcome.full), ("incremental", outcome.incremental))
    ]
    live, deleted = org
    stored = outcome.incremental.records
    edited = {i for i in changed if i in live}
    missed = sum(1 for i in edited if stored.get(i, {}).get("Title") != title)
    missed += len(changed & deleted & set(stored))
    ok = set(stored) == live and missed == 0
    summary = (
        f"live {len(set(stored) & live):,}/{len(live):,}, "
        f"deleted removed {len(deleted - set(stored)):,}/{len(deleted):,}, changes missed {missed}"
    )
    rows.append([outcome.name, "vs org", "", "", summary, f"incremental {verdict(ok)}"])
    return rows


def read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    with path.open() as lines:
        for line in lines:
            row = json.loads(line)
            records[row["Id"]] = _keep(row)
    return records


# The org ----------------------------------------------------------------------------------------


def org_leads(sandbox: Sandbox) -> tuple[set[str], set[str]]:
    """The org's live and deleted (still in the recycle bin) Lead ids."""
    rows = sandbox.sql("SELECT Id, IsDeleted FROM Lead")
    return {i for i, d in rows if not d}, {i for i, d in rows if d}


def change_org(sandbox: Sandbox, round_number: int, updates: int, deletes: int) -> set[str]:
    """Edit ``updates`` live leads and delete ``deletes`` others, as users would in the UI."""
    live = [
        row[0]
        for row in sandbox.sql(
            "SELECT Id FROM Lead WHERE IsDeleted = 0 AND IsConverted = 0 ORDER BY Id"
        )
    ]
    step = max(1, len(live) // (updates + deletes + 1))
    picked = live[round_number % step :: step][: updates + deletes]
    edited, removed = picked[:updates], picked[updates:]
    sandbox.update_records(
        "Lead", [{"Id": i, "Title": f"Compat round {round_number}"} for i in edited]
    )
    sandbox.delete_records("Lead", removed)
    return set(picked)


def judge(
    outcome: Outcome,
    full_org: tuple[set[str], set[str]],
    org: tuple[set[str], set[str]],
    changed: set[str],
    deletes_live_only: bool,
) -> list[list[object]]:
    """Table rows for one client: each phase, then the merged replica against the org."""
    rows: list[list[object]] = []
    for label, phase in (
        ("discover", outcome.discover),
        ("full", outcome.full),
        ("incremental", outcome.incremental),
    ):
        rows.append(
            [
                outcome.name,
                label,
                f"{phase.seconds:.1f}",
                f"{phase.rss_mb:.0f}",
                phase.emitted,
                phase.error or "",
            ]
        )
    live, deleted = org
    full_live, full_deleted = full_org
    got_full = outcome.full.records
    full_ok = (
        not outcome.full.error
        and {i for i, r in got_full.items() if not r["IsDeleted"]} == full_live
        and {i for i, r in got_full.items() if r["IsDeleted"]}
        == (set() if deletes_live_only else full_deleted)
    )
    merged = dict(got_full)
    merged.update(outcome.incremental.records)
    got_live = {i for i, r in merged.items() if not r["IsDeleted"]}
    got_deleted = {i for i, r in merged.items() if r["IsDeleted"]}
    missed = len(changed - set(outcome.incremental.records))
    if deletes_live_only:
        # A live-only full read never sees records deleted before it; every deletion since it
        # must be seen (and deletions the incremental re-reads from its bookmark second may be).
        deletions_ok = deleted - full_deleted <= got_deleted <= deleted
        expected_deleted = deleted - full_deleted
    else:
        deletions_ok = got_deleted == deleted
        expected_deleted = deleted
    incremental_ok = (
        not outcome.incremental.error and missed == 0 and got_live == live and deletions_ok
    )
    rows.append(
        [
            outcome.name,
            "vs org",
            "",
            "",
            f"live {len(got_live):,}/{len(live):,}, "
            f"deleted {len(got_deleted & expected_deleted):,}/{len(expected_deleted):,}, "
            f"changes missed {missed}",
            f"full {verdict(full_ok)}, incremental {verdict(incremental_ok)}",
        ]
    )
    return rows


def used_apis(sandbox: Sandbox, start: int) -> str:
    """What the client called, by request category (``bulk`` counts both Bulk APIs)."""
    counts: dict[str, int] = {}
    for record in sandbox.request_log[start:]:
        name = "bulk1" if record.path.startswith("/services/async/") else record.category
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--clients", default="tap-rest,tap-bulk,airbyte,ss-bulk,leadscore")
    parser.add_argument(
        "--venvs",
        type=Path,
        default=Path.home() / ".cache" / "leadscore-compat",
        help="client venvs",
    )
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--deletes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per client phase")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (outputs)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.clients.split(",") if name.strip()]

    pythons: dict[str, Path] = {}
    needs = {
        "tap-rest": "tap",
        "tap-bulk": "tap",
        "airbyte": "airbyte",
        "ss-bulk": "simple-salesforce",
    }
    install_errors: dict[str, str] = {}
    for client in chosen:
        if client == "leadscore":
            continue
        venv = needs[client]
        if venv in pythons or venv in install_errors:
            continue
        try:
            pythons[venv] = ensure_venv(args.venvs, venv)
        except subprocess.CalledProcessError as error:
            install_errors[venv] = f"pip install failed: {error}"

    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="leadscore-compat-", dir=args.tmp)
        else:
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="leadscore-compat-", dir=args.tmp)
            )
        print(f"work directory: {tmp}")
        root = Path(tmp)
        started = time.perf_counter()
        sandbox = Sandbox(root / "sandbox", leads=args.leads, seed=args.seed).start()
        print(
            f"generated and started a {args.leads:,}-lead org "
            f"in {time.perf_counter() - started:.1f} s"
        )
        table: list[list[object]] = []
        try:
            for number, client in enumerate(chosen):
                venv = needs.get(client, client)
                if venv in install_errors:
                    table.append([client, "install", "", "", "", install_errors[venv]])
                    continue
                full_org = org_leads(sandbox)
                changed: set[str] = set()

                def between(number: int = number, changed: set[str] = changed) -> None:
                    # SystemModstamp has one-second resolution: edit after the full sync's second.
                    time.sleep(1.1)
                    changed.update(change_org(sandbox, number, args.updates, args.deletes))

                work = root / client
                print(f"{client}: running ...", flush=True)
                log_start = len(sandbox.request_log)
                if client in ("tap-rest", "tap-bulk"):
                    api_type = "REST" if client == "tap-rest" else "BULK"
                    outcome = run_tap(pythons[venv], sandbox, work, api_type, args.timeout, between)
                elif client == "leadscore":
                    outcome = run_leadscore(sandbox, work, between)
                elif client == "airbyte":
                    outcome = run_airbyte(pythons[venv], sandbox, work, args.timeout, between)
                else:
                    outcome = run_simple_salesforce(
                        pythons[venv], sandbox, work, args.timeout, between
                    )
                if client == "leadscore":
                    rows = judge_store(
                        outcome, org_leads(sandbox), changed, f"Compat round {number}"
                    )
                else:
                    rows = judge(
                        outcome,
                        full_org,
                        org_leads(sandbox),
                        changed,
                        deletes_live_only=client == "ss-bulk",
                    )
                rows.append(
                    [outcome.name, "requests", "", "", used_apis(sandbox, log_start), outcome.note]
                )
                table.extend(rows)
                for row in rows:
                    print("  " + " | ".join(str(cell) for cell in row), flush=True)
        finally:
            sandbox.stop()
        print()
        print(
            f"{args.leads:,} leads, {args.updates} edits + {args.deletes} deletions "
            "before each incremental run"
        )
        print_table(["client", "phase", "seconds", "peak MB", "records", "result"], table)


if __name__ == "__main__":
    main()
