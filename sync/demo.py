"""The files that let any client reach a running sandbox.

They are ``config.toml``, ``secrets.toml`` and ``sandbox.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sklearn.metrics import roc_auc_score

from connector.errors import ConfigError
from sync.config import SANDBOX_STATE_FILE, Settings, load_settings
from sync.jobs import run_sync
from sync.progress import Reporter
from sync.run import SILENT

MARKER = ".leadscore-workdir"

# The demo's prediction: conversion within 30 days of a lead's first campaign response, features
# from
# firmographics and engagement Tasks before it. Status and Rating are filled in by sales after
# contact: leaky.
CONFIG_TEMPLATE = """\
# Written by `leadscore {command}` for the sandbox org at {url}.
# Every key is documented in config.example.toml. Secrets are in secrets.toml (git-ignored).

[store]
path = "leadscore.duckdb"
models_dir = "models"

[salesforce]
login_url = {url_json}
ca_bundle = {ca_json}
page_size = 2000
# The sandbox finishes Bulk API 2.0 jobs at once; real orgs keep the default (2 s).
bulk_poll_seconds = 0.1

[salesforce.streams.Lead]
fields = ["Email", "Company", "Title", "Seniority__c", "Industry", "LeadSource", "Country",
          "NumberOfEmployees", "AnnualRevenue", "Status", "Rating", "IsConverted", "ConvertedDate",
          "ConvertedContactId", "CreatedDate", "IsDeleted"]

[salesforce.streams.Task]
fields = ["WhoId", "Type", "CreatedDate"]

[salesforce.streams.CampaignMember]
fields = ["CampaignId", "LeadId", "Status", "HasResponded", "FirstRespondedDate", "CreatedDate"]

[[predictions]]
name = "lead_conversion"
entity = "lead"
task = "binary"
label = {{ event = "converted", within_days = 30 }}
anchor = {{ event = "campaign_response" }}
exclude_fields = ["Status", "Rating"]

# A rep's rule of thumb, scored beside the model as a baseline: senior people at bigger companies
# who visited the site last week.
[[predictions.rule]]
feature = "task_web_visit_7d"
ge = 2
points = 2
[[predictions.rule]]
feature = "Seniority__c"
in = ["C-Level", "VP"]
points = 1
[[predictions.rule]]
feature = "NumberOfEmployees"
ge = 200
points = 1

[predictions.tiers]
A = 0.60
B = 0.35
C = 0.15

[predictions.salesforce]
object = "Lead"
fields = {{ score = "Lead_Score__c", tier = "Lead_Tier__c", reasons = "Lead_Score_Reasons__c" }}
"""


# Appended when the sandbox was generated with Segment data: the profiles are read through the
# Profile API (newest leads first), the history is imported from the sandbox's warehouse export,
# and computed traits become features. [predictions.segment] extends the last [[predictions]].
SEGMENT_TEMPLATE = """
[predictions.segment]
traits = {{ score = "lead_score", tier = "lead_tier" }}

[segment]
tracking_url = {url_json}
profile_api_url = {url_json}
space_id = {space_json}
ca_bundle = {ca_json}
max_profiles_per_run = 100

[segment.identity]
external_ids = {{ salesforce_id = "Id" }}

[[segment.exports]]
path = "sandbox/segment_export/tracks.jsonl"
kind = "tracks"

[[segment.exports]]
path = "sandbox/segment_export/identifies.jsonl"
kind = "identifies"

[[segment.exports]]
path = "sandbox/segment_export/id_graph.jsonl"
kind = "id_graph"

[[traits]]
name = "product_usage_14d"
event = "Feature Used"
window_days = 14

[[traits]]
name = "order_value_90d"
event = "Order Completed"
window_days = 90
aggregate = "sum"
property = "revenue"

[[traits]]
name = "product_added_90d"
event = "Product Added"
window_days = 90

[[traits]]
name = "emails_clicked_30d"
event = "Email Clicked"
window_days = 30
"""


# Appended when the sandbox has an audience campaign: the hot new leads (tier A, created in the 30
# days before the scores, not converted) are mirrored into it, so the Campaign's members are
# always the current audience.
CAMPAIGN_AUDIENCE_TEMPLATE = """
[[audiences]]
name = "hot_new_leads"
prediction = "lead_conversion"
where = "tier = 'A' AND created_at >= scored_at - INTERVAL 30 DAY AND NOT IsConverted"
[audiences.salesforce]
campaign_id = {campaign_json}
"""

# Appended with Segment data: likely buyers become a boolean trait plus Audience Entered / Exited
# events.
SEGMENT_AUDIENCE_TEMPLATE = """
[[audiences]]
name = "likely_buyers"
prediction = "lead_conversion"
where = "tier IN ('A', 'B') AND NOT IsConverted"
[audiences.segment]
trait = "likely_buyer"
"""

AUDIENCE_CAMPAIGN_NAME = "Hot new leads (leadscore audience)"


def ensure_audience_campaign(sandbox: Any) -> str:
    """The sandbox Campaign the demo's audience mirrors into, created (as a user would) if missing.

    Args:
        sandbox: a started :class:`connector.sandbox.Sandbox`.

    Returns:
        The Campaign's id.
    """
    found = sandbox.sql(
        "SELECT Id FROM Campaign WHERE Name = ? AND IsDeleted = 0", (AUDIENCE_CAMPAIGN_NAME,)
    )
    if found:
        return str(found[0][0])
    return sandbox.create_records(
        "Campaign",
        [
            {
                "Name": AUDIENCE_CAMPAIGN_NAME,
                "Type": "Email",
                "Status": "In Progress",
                "IsActive": True,
            }
        ],
    )[0]


def prepare_workdir(workdir: Path, *, fresh: bool) -> None:
    """Create a working directory, or clear the one a previous demo/sandbox left.

    Args:
        workdir: the directory.
        fresh: remove what an earlier run left (store, models, sandbox data).

    Raises:
        ConfigError: the directory is not empty and was not created by leadscore.
    """
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise ConfigError(
            f"{workdir} is not empty and was not created by leadscore",
            hint="pass an empty or new --workdir",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()
    if fresh:
        for name in (
            "leadscore.duckdb",
            "leadscore.duckdb.wal",
            "config.toml",
            "secrets.toml",
            "sandbox.json",
            SANDBOX_STATE_FILE,
        ):
            (workdir / name).unlink(missing_ok=True)
        for name in ("models", "sandbox"):
            shutil.rmtree(workdir / name, ignore_errors=True)


def write_sandbox_files(
    workdir: Path, info: dict[str, Any], *, command: str, campaign_id: str | None = None
) -> Path:
    """Write ``config.toml``, ``secrets.toml`` and ``sandbox.json`` (mode 600) for a sandbox.

    Args:
        workdir: where to write them.
        info: the sandbox's connection info (URL, credentials, CA bundle).
        command: the command writing them (for the header comment).
        campaign_id: a Campaign for the demo's audience (``ensure_audience_campaign``); without
            it, no Campaign audience is configured.

    Returns:
        The path of ``config.toml``.
    """
    config = workdir / "config.toml"
    text = CONFIG_TEMPLATE.format(
        command=command,
        url=info["salesforce_url"],
        url_json=json.dumps(info["salesforce_url"]),
        ca_json=json.dumps(str(Path(info["ca_bundle"]).resolve())),
    )
    if info.get("pubsub_endpoint"):
        # The sandbox's Pub/Sub API (change events for fresh.trigger = "cdc").
        text = text.replace(
            f"ca_bundle = {json.dumps(str(Path(info['ca_bundle']).resolve()))}\npage_size",
            f"ca_bundle = {json.dumps(str(Path(info['ca_bundle']).resolve()))}\n"
            f"pubsub_endpoint = {json.dumps(info['pubsub_endpoint'])}\npage_size",
            1,
        )
    reps = [user["username"] for user in info.get("sales_users") or []]
    if reps:
        # A rep whose view doctor checks, and the reps setup grants read on the scores.
        text = text.replace(
            "\n[salesforce.streams.Lead]",
            f"sales_user = {json.dumps(reps[0])}\n\n[salesforce.setup]\n"
            f"sales_users = {json.dumps(reps[:3])}\n\n[salesforce.streams.Lead]",
            1,
        )
    segment = bool(info.get("segment_data"))
    if segment:
        text += SEGMENT_TEMPLATE.format(
            url_json=json.dumps(info["segment_url"]),
            space_json=json.dumps(info["space_id"]),
            ca_json=json.dumps(str(Path(info["ca_bundle"]).resolve())),
        )
    if campaign_id:
        text += CAMPAIGN_AUDIENCE_TEMPLATE.format(campaign_json=json.dumps(campaign_id))
    if segment:
        text += SEGMENT_AUDIENCE_TEMPLATE
    config.write_text(text)
    secrets = workdir / "secrets.toml"
    secrets.write_text(
        "# Sandbox credentials; never commit a secrets.toml.\n[salesforce]\n"
        f"client_id = {json.dumps(info['client_id'])}\n"
        f"client_secret = {json.dumps(info['client_secret'])}\n"
        + (
            "[segment]\n"
            f"write_key = {json.dumps(info['segment_write_key'])}\n"
            f"profile_api_token = {json.dumps(info['profile_api_token'])}\n"
            if segment
            else ""
        )
    )
    os.chmod(secrets, 0o600)
    sandbox_json = workdir / "sandbox.json"
    sandbox_json.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    os.chmod(sandbox_json, 0o600)
    return config


def _generation_progress(reporter: Reporter):  # noqa: ANN202 - a closure over the reporter
    """Adapt the generator's (stage, done, total) callback to the reporter: a line per stage."""
    seen: set[str] = set()

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            reporter.stage(f"sandbox: {stage}")

    return on_progress


def run_sandbox(
    workdir: Path,
    *,
    port: int = 0,
    leads: int = 20_000,
    seed: int = 42,
    field_security: str = "granted",
    reporter: Reporter = SILENT,
    ready: Any = None,
    org: str = "classic",
    daily_api_limit: int = 100_000,
    faults: Path | None = None,
    pubsub_port: int | None = None,
) -> None:
    """Serve a generated org until interrupted, with config files for any client in ``workdir``.

    An existing sandbox in ``workdir`` (same data file) is served again rather than regenerated.

    Args:
        workdir: where the org's data, TLS material and the config files live.
        port: TCP port on 127.0.0.1 (0: any free port).
        leads: leads to generate when the org is new.
        seed: generator seed.
        field_security: ``granted``, or ``enforced`` for an org whose profiles read no custom
            field until ``leadscore setup`` grants them (as a new real org).
        reporter: progress.
        ready: called with the sandbox info once it is serving (used by tests).
        org: the generator's hidden model (``classic``, ``interacting``, ``drifting``).
        daily_api_limit: the org's ``DailyApiRequests`` allowance (403 past it).
        faults: a TOML or JSON file of fault rules (``connector.sandbox.faults.load_fault_plan``).
        pubsub_port: also serve the Pub/Sub API (change events) on this port (0: any); None:
            not.
    """
    from connector.sandbox import Sandbox
    from connector.sandbox.faults import load_fault_plan
    from connector.sandbox.security import FIELD_SECURITY_MODES

    if field_security not in FIELD_SECURITY_MODES:
        raise ConfigError(
            f"--field-security {field_security}: unknown mode",
            hint=f"use one of {', '.join(FIELD_SECURITY_MODES)}",
        )
    prepare_workdir(workdir, fresh=False)
    try:
        plan = load_fault_plan(faults) if faults is not None else None
    except ValueError as exc:
        raise ConfigError(str(exc), hint="see `leadscore sandbox --help`") from None
    # The config is written when the org serves: a config left by an earlier sandbox names a
    # port nobody listens on, and a client started meanwhile is told to wait (sync/config.py).
    (workdir / "config.toml").unlink(missing_ok=True)
    write_sandbox_state(workdir, "generating")
    sandbox = Sandbox(
        workdir / "sandbox",
        leads=leads,
        seed=seed,
        org=org,
        port=port,
        regenerate=False,
        on_progress=_generation_progress(reporter),
        segment=True,
        field_security=field_security,
        daily_api_limit=daily_api_limit,
        faults=plan,
        pubsub=pubsub_port is not None,
        pubsub_port=pubsub_port or 0,
    )
    try:
        sandbox.start()
        sandbox.export_segment()
        write_sandbox_files(
            workdir,
            sandbox.info,
            command="sandbox",
            campaign_id=ensure_audience_campaign(sandbox),
        )
        write_sandbox_state(workdir, "serving")
        if ready is not None:
            ready(sandbox.info)
        sandbox.serve_forever()
    finally:
        sandbox.stop()
        write_sandbox_state(workdir, "stopped")


def write_sandbox_state(workdir: Path, state: str) -> None:
    """Record what the sandbox in ``workdir`` is doing, for clients started meanwhile.

    Args:
        workdir: the sandbox's directory.
        state: ``generating``, ``serving`` or ``stopped``.
    """
    (workdir / SANDBOX_STATE_FILE).write_text(json.dumps({"state": state, "pid": os.getpid()}))


def run_demo(
    workdir: Path, *, leads: int = 20_000, seed: int = 42, reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Generate an org, serve it in-process and run pull, train, score and push against it.

    Args:
        workdir: working directory (cleared of a previous demo's files).
        leads: leads in the generated org.
        seed: generator seed.
        reporter: progress.

    Returns:
        Headline figures: ``leads, pulled, scored, written, api_calls, model_auc, oracle_auc,
            auc_ratio,
        seconds``, plus where the files are.
    """
    from connector.sandbox import Sandbox

    started = time.perf_counter()
    prepare_workdir(workdir, fresh=True)
    reporter.stage(f"generating a synthetic org with {leads:,} leads (seed {seed})")
    sandbox = Sandbox(
        workdir / "sandbox",
        leads=leads,
        seed=seed,
        on_progress=_generation_progress(reporter),
        segment=True,
    )
    sandbox.start()
    try:
        # The CDP history as a warehouse export, imported by the pull (docs/sandbox.md).
        sandbox.export_segment()
        config = write_sandbox_files(
            workdir, sandbox.info, command="demo", campaign_id=ensure_audience_campaign(sandbox)
        )
        reporter.stage(f"sandbox serving at {sandbox.url}")
        settings = load_settings(config)
        result = run_sync(settings, reporter=reporter)
        holdout = result.artifacts["holdout"]["lead_conversion"]
        truth = sandbox.ground_truth()
        # the org's leads as Salesforce lists them: the generator soft-deletes a few
        org_leads = int(sandbox.sql("SELECT count(*) FROM Lead WHERE NOT IsDeleted")[0][0])
    finally:
        sandbox.stop()
    merged = holdout.merge(
        truth[["lead_id", "p_true"]], left_on="entity_id", right_on="lead_id", how="inner"
    )
    model = result.counts["models"]["lead_conversion"]
    model_auc = model["metrics"]["auc"]
    oracle_auc = float(roc_auc_score(merged["label"], merged["p_true"]))
    ops = _sales_ops_view(settings)
    return {
        "leads": org_leads,
        "pulled": result.counts["pulled"],
        "scored": result.counts["scored"],
        "written": result.counts["written"],
        "segment_written": result.counts.get("segment_written", 0),
        "failed": result.counts["failed"],
        "api_calls": result.api_calls,
        "model_auc": round(model_auc, 4),
        "oracle_auc": round(oracle_auc, 4),
        "auc_ratio": round(model_auc / oracle_auc, 4),
        "holdout": len(holdout),
        "model_version": model["version"],
        "seconds": round(time.perf_counter() - started, 2),
        "workdir": str(workdir),
        "config": str(config),
        **ops,
    }


def _sales_ops_view(settings: Settings) -> dict[str, Any]:
    """What sales ops asks after a demo: leads per tier, the fields written, the lift.

    Args:
        settings: the demo's configuration.

    Returns:
        ``tiers`` (tier -> leads, highest first), ``fields_written`` (``Object.Field``) and
        ``lift`` (the report's sentence on the top 10 % by score).
    """
    from connector.store import Store
    from scoring.registry import load_champion
    from scoring.report import lift_sentence

    spec = settings.predictions[0]
    with Store(settings.store.path, read_only=True) as store:
        scores = store.latest_scores(spec.name)
    counts = scores["tier"].value_counts() if len(scores) else {}
    tiers = {str(tier): int(counts[tier]) for tier in sorted(counts.keys())} if len(counts) else {}
    fields = [
        f"{p.salesforce.object}.{name}"
        for p in settings.predictions
        if p.salesforce is not None
        for name in p.salesforce.fields.values()
    ]
    champion = load_champion(settings.store.models_dir, spec.name)
    metrics = champion.metadata.get("metrics", {}) if champion else {}
    return {
        "tiers": tiers,
        "fields_written": fields,
        "lift": lift_sentence(metrics, "leads") or "",
    }
