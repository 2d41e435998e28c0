"""The ``leadscore`` command: each subcommand calls one job in :mod:`sync.jobs` and renders it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from connector.errors import LeadscoreError
from sync import demo as demos
from sync import jobs
from sync.config import JOB_NAMES, Settings, load_settings
from sync.logs import redact_root_handlers, secret_values
from sync.progress import ConsoleReporter, Reporter, SilentReporter

app = typer.Typer(
    name="leadscore",
    help="Score leads with CatBoost on your own Salesforce data and write the scores back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Config file (TOML).", show_default=True)
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
]

_state = {"debug": False, "verbose": False}


@app.callback()
def _global(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log HTTP calls and steps.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party loggers stay quiet even with -v: they would print URLs with query strings.
    for noisy in ("urllib3", "simple_salesforce"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _state["debug"] = debug
    _state["verbose"] = verbose


def _fail(message: str, code: int) -> None:
    # escape: messages name config sections such as [schedule], which are not markup
    err.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True)
    raise typer.Exit(code)


def _guard(action: Callable[[], Any]) -> Any:
    """Run a command body; expected failures become one line on stderr and a non-zero exit."""
    try:
        return action()
    except LeadscoreError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; committed work is kept, the next run resumes")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if _state["debug"]:
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)


def _reporter(as_json: bool) -> Reporter:
    return SilentReporter() if as_json else ConsoleReporter(err)


def _settings(config: Path) -> Settings:
    settings = load_settings(config)
    # every command, not only serve: -v logs HTTP calls, and a secret must never reach a log
    redact_root_handlers(secret_values(settings))
    return settings


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _kv_table(rows: list[tuple[str, Any]]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        # Text, not markup: values quote config sections ([schedule]) and record data
        table.add_row(Text(key), Text(str(value)))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _segment_rows(counts: dict[str, Any]) -> list[tuple[str, Any]]:
    """Summary lines of a Segment pull or import: imports, Profile API, identity resolution."""
    rows: list[tuple[str, Any]] = []
    imports = counts.get("imports")
    if imports and imports["files"]:
        line = (
            f"{imports['files']} file(s), {imports['lines']:,} lines: {imports['imported']:,} "
            f"imported, {imports['duplicates']:,} duplicates, {imports['skipped']:,} skipped"
        )
        if imports["already_imported"]:
            line += f" ({imports['already_imported']} file(s) imported before)"
        rows.append(("segment files", line))
        if imports["skipped_by_reason"]:
            reasons = ", ".join(f"{k} {v:,}" for k, v in imports["skipped_by_reason"].items())
            rows.append(("skipped lines", reasons + " (first ones below)"))
    api = counts.get("profile_api")
    if api and api.get("lookups"):
        line = (
            f"{api['lookups']:,} lookups: {api.get('found', 0):,} found, "
            f"{api.get('not_found', 0):,} not found, {api.get('failed', 0):,} failed; "
            f"{api.get('requests', 0):,} requests in {api.get('seconds', 0):.1f} s"
        )
        rows.append(("profile api", line))
        if api.get("unknown_identity_types"):
            unknown = ", ".join(f"{k} {v}" for k, v in api["unknown_identity_types"].items())
            rows.append(("", f"skipped identities of unknown types: {unknown}"))
    identity = counts.get("identity")
    if identity:
        matched = sum(identity["matched"].values())
        line = f"{matched:,} of {identity['profiles']:,} profiles matched to " + ", ".join(
            f"{n:,} {entity}s" for entity, n in identity["records"].items()
        )
        rows.append(("identity", line or "-"))
        unmatched = ", ".join(f"{k} {v:,}" for k, v in identity["unmatched"].items())
        if unmatched:
            rows.append(("unmatched", unmatched))
        ambiguous = sum(identity["ambiguous"].values())
        if ambiguous:
            rows.append(("ambiguous", f"{ambiguous:,} profiles matched several records"))
    return rows


_TRAIN_METRICS = {
    "binary": [("auc", "AUC"), ("pr_auc", "PR-AUC"), ("log_loss", "log loss"), ("brier", "Brier")],
    "multiclass": [("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("log_loss", "log loss")],
    "regression": [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R2")],
}


def _render_train(counts: dict[str, Any]) -> None:
    """Per prediction: model and baselines side by side, the choice made, the gate, warnings."""
    for name, p in counts["predictions"].items():
        columns = _TRAIN_METRICS[p["task"]]
        table = Table(box=None, padding=(0, 2, 0, 0), title_justify="left")
        table.add_column(name, justify="left", style="bold")
        for _, label in columns:
            table.add_column(label, justify="right")
        table.add_row("model", *(_fmt(p["metrics"].get(k)) for k, _ in columns))
        for baseline, m in p["baselines"].items():
            table.add_row(f"  {baseline}", *(_fmt(m.get(k)) for k, _ in columns))
        out.print(table)
        role = "champion" if p["champion"] else "challenger (not promoted)"
        lines = [
            ("version", f"{p['version']}  {role}"),
            ("examples", f"{p['examples']:,} ({p['split']} split), {p['seconds']:.1f} s"),
            ("deployed", f"{p['deployed'].get('model')}: {p['deployed'].get('reason', '')}"),
            ("gate", p["gate"].get("reason", "")),
        ]
        if p.get("split_reason"):
            lines.insert(2, ("split", p["split_reason"]))
        if p.get("deploy"):
            d = p["deploy"]
            lines.insert(
                -1,
                (
                    "fit",
                    f"holdout model on {d.get('evaluated_rows', 0):,} rows; deployed model on "
                    f"{d.get('rows', 0):,} ({d.get('fit')})",
                ),
            )
        lines += [("warning", w) for w in p["warnings"]]
        out.print(_kv_table(lines))


def _render_job(result: jobs.JobResult) -> None:
    counts = result.counts
    rows: list[tuple[str, Any]] = [("status", result.status)]
    if result.job == "pull":
        table = Table(box=None, padding=(0, 2, 0, 0))
        keys = ("fetched", "new", "changed", "unchanged", "deleted")
        for col in ("stream", "path", *keys):
            table.add_column(col, justify="left" if col in ("stream", "path") else "right")
        for stream, c in counts["streams"].items():
            table.add_row(stream, c.get("path", "rest"), *(_fmt(c.get(k, 0)) for k in keys))
        out.print(table)
        rows += _segment_rows(counts.get("segment") or {})
    elif result.job == "segment_import":
        rows += _segment_rows(counts)
    elif result.job == "train":
        _render_train(counts)
        for name, p in counts["predictions"].items():
            for trait, reason in (p.get("skipped_traits") or {}).items():
                rows.append((f"{name}", f"trait {trait} skipped: {reason}"))
    elif result.job == "import":
        for table, c in counts["tables"].items():
            rows.append((table, f"{c['rows']:,} rows, {c['columns']} columns"))
    elif result.job == "report":
        rows.append(("report", counts["path"]))
    elif result.job == "score":
        for name, p in counts["predictions"].items():
            tiers = "  ".join(f"{t}:{n:,}" for t, n in p["tiers"].items())
            rows.append((name, f"{p['scored']:,} scored with {p['version']}   {tiers}"))
    elif result.job == "push":
        if "revived" in counts:
            rows.append(("dead letters", f"{counts['revived']:,} ledger row(s) due again"))
        for name, p in counts["predictions"].items():
            line = f"{p['written']:,} written, {p['failed']:,} failed, {p['unchanged']:,} unchanged"
            held = [
                f"{p[k]:,} {label}"
                for k, label in (
                    ("hysteresis", "held by hysteresis"),
                    ("invalid", "invalid"),
                    ("deferred", "waiting to retry"),
                    ("dead", "dead"),
                    ("gone", "gone"),
                )
                if p.get(k)
            ]
            if held:
                line += ", " + ", ".join(held)
            if p["errors"]:
                line += "  (" + ", ".join(f"{k}: {v}" for k, v in p["errors"].items()) + ")"
            rows.append((name, line))
        for name, c in (counts.get("campaigns") or {}).items():
            line = (
                f"campaign {c['campaign_id']}: {c['members']:,} members, {c['added']:,} added, "
                f"{c['removed']:,} removed, {c['failed']:,} failed"
            )
            rows.append((f"audience {name}", line))
        for name, c in (counts.get("segment_audiences") or {}).items():
            line = (
                f"segment: {c['written']:,} entered/exited ({c['requests']:,} requests), "
                f"{c['failed']:,} failed, {c['no_segment_user']:,} without a Segment user"
            )
            rows.append((f"audience {name}", line))
        for name, p in (counts.get("segment") or {}).items():
            line = (
                f"{p['written']:,} profiles written ({p['requests']:,} requests), "
                f"{p['failed']:,} failed, {p['unchanged']:,} unchanged, "
                f"{p['no_segment_user']:,} without a Segment user"
            )
            if p["errors"]:
                line += "  (" + ", ".join(f"{k}: {v}" for k, v in p["errors"].items()) + ")"
            rows.append((f"{name} → segment", line))
    elif result.job == "setup":
        table = Table(box=None, padding=(0, 2, 0, 0))
        for col in ("field", "output", "action", "detail", "how to fix"):
            table.add_column(col)
        for row in counts["fields"]:
            style = "red" if row["action"] == "problem" else None
            table.add_row(
                f"{row['object']}.{row['field']}",
                row["kind"],
                row["action"],
                Text(row["detail"] or ""),
                Text(row["fix"] or ""),
                style=style,
            )
        out.print(table)
        rows.append(
            (
                "fields",
                f"{counts['created']} created, {counts['would_create']} to create, "
                f"{counts['problems']} with problems",
            )
        )
    elif result.job == "sync":
        rows += [
            ("pulled", _fmt(counts["pulled"])),
            ("trained", ", ".join(counts["trained"]) or "-"),
            ("scored", _fmt(counts["scored"])),
            ("written", _fmt(counts["written"])),
            ("failed", _fmt(counts["failed"])),
        ]
        if "segment_written" in counts:
            rows.append(("segment", f"{_fmt(counts['segment_written'])} profiles written"))
    rows += [("api calls", _fmt(result.api_calls)), ("seconds", f"{result.seconds:.1f}")]
    out.print(_kv_table(rows))
    # Skipped lines as ``file:line: reason (detail)``, one per line and never truncated.
    segment = counts.get("segment") if result.job == "pull" else counts
    for example in ((segment or {}).get("imports") or {}).get("examples", []):
        out.print(f"  {example}", soft_wrap=True, markup=False)


@contextmanager
def _cooperative_stop(reporter: Reporter) -> Iterator[threading.Event]:
    """First SIGTERM/SIGINT: finish the current page or batch, commit, stop. Second: abort."""
    stop = threading.Event()
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        reporter.stage(
            f"{signal.Signals(signum).name}: stopping after the current page or batch "
            "(again to abort)"
        )

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _show_result(result: jobs.JobResult, as_json: bool, *, partial_exit: int = 4) -> None:
    """Print a job's result (JSON or a summary); a partial result exits with ``partial_exit``."""
    if as_json:
        _print_json(result.to_json())
    else:
        _render_job(result)
    if result.status == "partial":
        raise typer.Exit(partial_exit)


def _job_command(job: str, config: Path, as_json: bool, **options: Any) -> None:
    def body() -> None:
        settings = _settings(config)
        reporter = _reporter(as_json)
        with _cooperative_stop(reporter) as stop:
            result = jobs.run_job(
                settings, job, reporter=reporter, should_stop=stop.is_set, **options
            )
        _show_result(result, as_json)

    _guard(body)


@app.command()
def pull(
    config: ConfigOption = Path("config.toml"),
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="Also read every live id and remove records deleted and purged from the "
            "recycle bin (automatic after salesforce.recycle_bin_days without a pull).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Pull Salesforce records changed since the last pull into the store."""
    _job_command("pull", config, as_json, sweep=sweep)


@app.command()
def train(
    config: ConfigOption = Path("config.toml"),
    prediction: Annotated[str | None, typer.Option(help="Train only this prediction.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train each prediction and compare it with baselines; gate it against the champion."""
    _job_command("train", config, as_json, prediction=prediction)


@app.command()
def report(
    config: ConfigOption = Path("config.toml"),
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="HTML file to write (default: report.html beside the config)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a self-contained HTML report of every champion model (plots included)."""

    def body() -> None:
        result = jobs.run_report(_settings(config), out=out_path, reporter=_reporter(as_json))
        _show_result(result, as_json)

    _guard(body)


models_app = typer.Typer(help="List, inspect, promote and roll back model versions.")
app.add_typer(models_app, name="models")
PredictionArgument = Annotated[str, typer.Argument(help="Prediction name.")]


@models_app.command("list")
def models_list(
    config: ConfigOption = Path("config.toml"),
    prediction: Annotated[str | None, typer.Option(help="Only this prediction.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every stored version with its role (champion / challenger) and holdout metric."""

    def body() -> None:
        data = jobs.list_models(_settings(config), prediction=prediction)
        if as_json:
            _print_json(data)
            return
        for name, versions in data.items():
            table = Table(box=None, padding=(0, 2, 0, 0))
            for col in ("version", "role", "model", "metric", "value", "examples"):
                table.add_column(col, justify="right" if col in ("value", "examples") else "left")
            for v in versions:
                table.add_row(
                    v["version"],
                    v["role"],
                    v["deployed"],
                    v["metric"],
                    _fmt(v["value"]),
                    _fmt(v["examples"]),
                )
            out.print(f"[bold]{name}[/bold]" + ("" if versions else ": no models yet"))
            if versions:
                out.print(table)

    _guard(body)


@models_app.command("show")
def models_show(
    prediction: PredictionArgument,
    config: ConfigOption = Path("config.toml"),
    version: Annotated[str | None, typer.Option(help="Version (default: the champion).")] = None,
    as_json: JsonOption = False,
) -> None:
    """A version's metadata: data window, features, metrics, baselines, choices."""

    def body() -> None:
        meta = jobs.show_model(_settings(config), prediction, version)
        if as_json:
            _print_json(meta)
            return
        metric = meta.get("metrics", {})
        rows: list[tuple[str, Any]] = [
            ("version", meta.get("version")),
            ("task", meta.get("task")),
            ("data as of", meta.get("as_of")),
            ("split", (meta.get("split") or {}).get("method")),
            ("examples", _fmt((meta.get("examples") or {}).get("used"))),
            ("deployed", (meta.get("deployed") or {}).get("model")),
            ("config hash", meta.get("config_hash")),
            ("seconds", meta.get("seconds")),
        ]
        rows += [(k, _fmt(v)) for k, v in metric.items() if v is not None]
        for name, m in (meta.get("baselines") or {}).items():
            rows.append(
                (
                    f"baseline {name}",
                    ", ".join(
                        f"{k} {_fmt(v)}"
                        for k, v in m.items()
                        if k in ("auc", "log_loss", "accuracy", "rmse", "r2")
                    ),
                )
            )
        importance = (meta.get("feature_importance") or {}).items()
        top = sorted(importance, key=lambda kv: -kv[1])[:8]
        rows.append(("top features", ", ".join(f"{k} ({v:.1f})" for k, v in top)))
        rows += [("warning", w) for w in meta.get("warnings", [])]
        out.print(_kv_table(rows))

    _guard(body)


@models_app.command("promote")
def models_promote(
    prediction: PredictionArgument,
    config: ConfigOption = Path("config.toml"),
    version: Annotated[str | None, typer.Option(help="Version (default: the challenger).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a version (default: the challenger) the champion."""

    def body() -> None:
        data = jobs.promote_model(_settings(config), prediction, version)
        _print_json(data) if as_json else out.print(
            f"{data['prediction']}: champion is now {data['champion']}"
        )

    _guard(body)


@models_app.command("rollback")
def models_rollback(
    prediction: PredictionArgument,
    config: ConfigOption = Path("config.toml"),
    as_json: JsonOption = False,
) -> None:
    """Make the previous champion the champion again."""

    def body() -> None:
        data = jobs.rollback_model(_settings(config), prediction)
        _print_json(data) if as_json else out.print(
            f"{data['prediction']}: rolled back; champion is now {data['champion']}"
        )

    _guard(body)


@app.command()
def score(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Score every lead with the champion model."""
    _job_command("score", config, as_json)


DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Show what would be written and its API calls; write nothing."),
]


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _plan_counts(c: dict[str, Any]) -> str:
    parts = [
        f"{c.get('create', 0):,} create",
        f"{c.get('update', 0):,} update",
        f"{c.get('unchanged', 0):,} unchanged",
    ]
    for key, label in (
        ("hysteresis", "held by hysteresis"),
        ("invalid", "invalid"),
        ("deferred", "waiting to retry"),
        ("dead", "dead"),
        ("gone", "gone"),
    ):
        if c.get(key):
            parts.append(f"{c[key]:,} {label}")
    return ", ".join(parts)


def _render_plan(data: dict[str, Any], sample: int = 3) -> None:
    """Per target: what would be sent, audience entries and exits, the price; then the totals."""
    rows: list[tuple[str, Any]] = []
    for t in data["targets"]:
        kind = t["target"]
        if kind == "salesforce":
            path = {"bulk": "Bulk API 2.0", "collections": "sObject Collections"}.get(t["path"])
            how = f"{t['mode']} by {t['key']}" + (f", {path}" if path else "")
            rows.append((f"{t['prediction']} → {t['object']}", how))
            rows.append(("  records", _plan_counts(t["counts"])))
            calls = t["estimated_calls"]
            detail = ", ".join(f"{k} {v}" for k, v in calls.items() if k != "total" and v)
            rows.append(("  api calls", f"{calls['total']:,} ({detail})"))
        elif kind == "segment":
            rows.append((f"{t['prediction']} → Segment traits", ""))
            rows.append(("  records", _plan_counts(t["counts"])))
            line = f"{t['estimated_requests']:,} ({t['messages']:,} identify calls)"
            if t["no_segment_user"]:
                line += f"; {t['no_segment_user']:,} records without a Segment user"
            rows.append(("  requests", line))
        elif kind == "salesforce campaign":
            rows.append((f"{t['audience']} → Campaign {t['campaign_id']}", "mirror"))
            rows.append(
                ("  members", f"{t['members']:,} now: {t['enter']:,} enter, {t['exit']:,} leave")
            )
            rows.append(("  api calls", f"{t['estimated_calls']:,}"))
        else:
            rows.append((f"{t['audience']} → Segment audience", ""))
            line = f"{t['members']:,} now: {t['enter']:,} enter, {t['exit']:,} leave"
            if t["no_segment_user"]:
                line += f" ({t['no_segment_user']:,} without a Segment user)"
            rows.append(("  members", line))
            rows.append(("  requests", f"{t['estimated_requests']:,}"))
        for s in (t.get("sample") or [])[:sample]:
            changes = ", ".join(
                f"{name} {_short(before)} → {_short(after)}"
                for name, (before, after) in s["changes"].items()
            )
            rows.append(("  " + s["record_id"], changes))
        for bad in (t.get("invalid") or [])[:sample]:
            rows.append(("  " + bad["record_id"], f"invalid: {bad['field']}: {bad['error']}"))
    rows += [
        ("estimated api calls", _fmt(data["estimated_api_calls"])),
        ("segment requests", _fmt(data["estimated_segment_requests"])),
        ("this plan used", f"{_fmt(data['api_calls'])} API call(s) (describes); wrote nothing"),
    ]
    out.print(_kv_table(rows))


def _plan_command(config: Path, as_json: bool) -> None:
    def body() -> None:
        data = jobs.run_plan(_settings(config), reporter=_reporter(as_json))
        if as_json:
            _print_json(data)
        else:
            _render_plan(data)

    _guard(body)


@app.command()
def push(
    config: ConfigOption = Path("config.toml"),
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write changed scores and audiences back (--dry-run: show the plan, write nothing)."""
    if dry_run:
        _plan_command(config, as_json)
        return
    _job_command("push", config, as_json)


@app.command()
def plan(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Show what the next push would write, per target, and its price in API calls."""
    _plan_command(config, as_json)


@app.command()
def retry(
    config: ConfigOption = Path("config.toml"),
    dead: Annotated[
        bool, typer.Option("--dead", help="Send the dead letters again (after fixing the cause).")
    ] = False,
    gone: Annotated[
        bool,
        typer.Option("--gone", help="Also records that were deleted or merged (restored since)."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Send dead-letter ledger rows again, then push."""

    def body() -> None:
        if not dead and not gone:
            raise LeadscoreError(
                "nothing to retry: pass --dead (and --gone for deleted records restored since)",
                hint="`leadscore status` lists the dead letters and their reasons",
            )
        reporter = _reporter(as_json)
        result = jobs.run_retry(_settings(config), dead=dead, gone=gone, reporter=reporter)
        _show_result(result, as_json)

    _guard(body)


@app.command()
def run(
    job: Annotated[
        str, typer.Argument(help=f"The job: {', '.join(JOB_NAMES)}.", show_default=True)
    ] = "sync",
    config: ConfigOption = Path("config.toml"),
    as_json: JsonOption = False,
) -> None:
    """Run one job now (default sync: pull, train when no model exists, score, push)."""
    _job_command(job, config, as_json)


def _when(value: Any) -> str:
    """A UTC time, short enough for a table cell (the year is in ``--json``)."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return f"{value:%m-%d %H:%M:%S}"
    return str(value)


# The counts a run is summarised by in `status`, most telling first (all are in --json).
_HEADLINE_COUNTS = ("pulled", "scored", "written", "failed", "deleted", "rows")


def _run_summary(run: dict[str, Any]) -> str:
    """One short line per run: its error, or its headline counts."""
    if run["error"]:
        error = str(run["error"])
        return error if len(error) <= 70 else error[:69] + "…"
    # zero failures or deletions are noise; zero pulled/scored/written is news
    counts = {
        k: v
        for k, v in run["counts"].items()
        if isinstance(v, int) and (v or k in ("pulled", "scored", "written"))
    }
    shown = [k for k in _HEADLINE_COUNTS if k in counts][:3] or list(counts)[:3]
    if shown:
        return ", ".join(f"{k} {counts[k]:,}" for k in shown)
    # a report run names its file and lists its predictions (not per-prediction results)
    if isinstance(run["counts"].get("path"), str):
        return f"wrote {Path(run['counts']['path']).name}"
    # a training run has no counts, only per-prediction results: name each one's holdout metric
    trained = []
    predictions = run["counts"].get("predictions")
    for name, p in (predictions if isinstance(predictions, dict) else {}).items():
        metrics = p.get("metrics") if isinstance(p, dict) else None
        if not metrics:
            continue
        metric = next((m for m in ("auc", "rmse", "accuracy") if metrics.get(m) is not None), None)
        role = "champion" if p.get("champion") else "challenger"
        value = f" {metric} {metrics[metric]:.4f}" if metric else ""
        trained.append(f"{name}{value} ({role})")
    return ", ".join(trained)


@app.command()
def setup(
    config: ConfigOption = Path("config.toml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be created.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the Salesforce fields the predictions write to (Tooling API); skip existing ones."""

    def body() -> None:
        result = jobs.run_setup(_settings(config), dry_run=dry_run, reporter=_reporter(as_json))
        # a field that needs fixing in Salesforce is a setup problem: exit 2
        _show_result(result, as_json, partial_exit=2)

    _guard(body)


@app.command()
def doctor(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Check login, API allowance, objects, fields and campaigns; say how to fix problems."""

    def body() -> None:
        data = jobs.run_doctor(_settings(config), reporter=_reporter(as_json))
        if as_json:
            _print_json(data)
        else:
            table = Table(box=None, padding=(0, 2, 0, 0))
            for col in ("check", "", "detail", "how to fix"):
                table.add_column(col)
            for c in data["checks"]:
                table.add_row(
                    Text(c["check"]),
                    "[green]OK[/green]" if c["ok"] else "[red]problem[/red]",
                    Text(c["detail"] or ""),
                    Text(c["fix"] or ""),
                )
            out.print(table)
            summary = "no problems found" if data["ok"] else f"{data['problems']} problem(s) found"
            out.print(_kv_table([("result", summary), ("api calls", _fmt(data["api_calls"]))]))
        if not data["ok"]:
            raise typer.Exit(2)

    _guard(body)


@app.command("import")
def import_files(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Segment exports: JSON-lines (.jsonl[.gz]) or Parquet files. Without files, "
            "every \\[\\[sources]] file of the config is imported."
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option(help="What the Segment files hold: tracks, identifies or id_graph.")
    ] = "tracks",
    config: ConfigOption = Path("config.toml"),
    force: Annotated[bool, typer.Option(help="Import Segment files again.")] = False,
    as_json: JsonOption = False,
) -> None:
    r"""Import files into the store: Segment exports, or the \[\[sources]] tables (CSV/Parquet)."""

    def body() -> None:
        settings = _settings(config)
        reporter = _reporter(as_json)
        if paths:
            result = jobs.run_segment_import(
                settings, paths, kind=kind, force=force, reporter=reporter
            )
        else:
            result = jobs.run_import(settings, reporter=reporter)
        _show_result(result, as_json)

    _guard(body)


@app.command()
def status(
    config: ConfigOption = Path("config.toml"),
    limit: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Show each job's last and next run, failures, dead letters, API allowance and models."""

    def body() -> None:
        data = jobs.read_status(_settings(config), limit=limit)
        if as_json:
            _print_json(data)
            return
        if data["busy"]:
            out.print(f"running now: {data['busy']}")
        if not data["readable"]:
            out.print(f"the store {data['store']} is in use by a run; its history is not shown")
        if data["jobs"]:
            table = Table(box=None, padding=(0, 2, 0, 0))
            for col in (
                "job",
                "schedule",
                "last run (UTC)",
                "status",
                "next run (UTC)",
                "failures (24h)",
                "last error",
            ):
                table.add_column(
                    col,
                    justify="right" if col.startswith("failures") else "left",
                    no_wrap=col != "last error",
                )
            for name, j in data["jobs"].items():
                last = j["last_run"] or {}
                failures = f"{j['failures_24h']}"
                if j["consecutive_failures"]:
                    failures += f" ({j['consecutive_failures']} in a row)"
                table.add_row(
                    name,
                    j["schedule"] or "manual",
                    _when(last.get("started_at")),
                    last.get("status") or "never run",
                    f"overdue since {_when(j['overdue_since'])}"
                    if j["overdue_since"]
                    else _when(j["next_run"]),
                    failures,
                    (last.get("error") or "")[:80] if last.get("status") != "ok" else "",
                )
            out.print(table)
        elif not data["runs"]:
            out.print(f"no runs yet in {data['store']}")
        rows: list[tuple[str, Any]] = []
        if data["dead_letters"] is not None:
            rows.append(("dead letters", _fmt(data["dead_letters"])))
        for d in data.get("dead_letter_rows") or []:
            rows.append(
                (
                    f"  {d['status']}",
                    f"{d['target']} {d['object']}: {d['records']:,} record(s), "
                    f"e.g. {d['example']}: {d['reason'][:100]}",
                )
            )
        if any(d["status"] == "dead" for d in data.get("dead_letter_rows") or []):
            rows.append(("", "fix the cause, then `leadscore retry --dead --config FILE`"))
        usage = data["api_usage"]
        rows.append(
            (
                "API allowance",
                f"{usage['remaining']:,} of {usage['max']:,} calls left "
                f"(as of {_when(usage['as_of'])} UTC)"
                if usage
                else "not seen yet",
            )
        )
        for name, model in data["models"].items():
            rows.append(
                (
                    f"model {name}",
                    f"{model['version']} (holdout {model['metric']} {_fmt(model['value'])}), "
                    f"trained {model['age_days']:.1f} days ago"
                    if model and model.get("value") is not None
                    else (f"{model['version']}" if model else "not trained yet"),
                )
            )
        rows.append(
            (
                "alerts",
                "; ".join(f"{a['key']} since {_when(a['since'])}" for a in data["alerts"])
                or "none active",
            )
        )
        out.print(_kv_table(rows))
        if data["runs"]:
            out.print()
            table = Table(box=None, padding=(0, 2, 0, 0), title="recent runs", title_justify="left")
            for col in ("run", "job", "started (UTC)", "seconds", "status", "api calls", "summary"):
                table.add_column(
                    col,
                    justify="right" if col in ("run", "seconds", "api calls") else "left",
                    no_wrap=col != "summary",
                )
            for r in data["runs"]:
                seconds = (
                    f"{(r['finished_at'] - r['started_at']).total_seconds():.1f}"
                    if r["finished_at"]
                    else "-"
                )
                summary = _run_summary(r)
                table.add_row(
                    str(r["run_id"]),
                    r["job"],
                    _when(r["started_at"]),
                    seconds,
                    r["status"],
                    _fmt(r["api_calls"]) if r["api_calls"] is not None else "-",
                    Text(summary),
                )
            out.print(table)

    _guard(body)


@app.command()
def monitor(
    config: ConfigOption = Path("config.toml"),
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the monitoring report (HTML) here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure drift against the training data and the realized performance of written scores."""

    def body() -> None:
        settings = _settings(config)
        result = jobs.run_job(settings, "monitor", reporter=_reporter(as_json))
        if html is not None:
            html.write_text(jobs.monitoring_html(settings, result), encoding="utf-8")
        if as_json:
            _print_json(result.to_json())
            return
        for name, figures in result.counts["predictions"].items():
            drift = figures["drift"] or {}
            if drift.get("level") == "unavailable":
                out.print(f"{name}: drift not measured: {drift['reason']}")
            else:
                out.print(
                    f"{name}: drift [bold]{drift['level']}[/bold]: score PSI "
                    f"{drift['score_psi']:.3f}, largest feature shift {drift['max_feature']} "
                    f"{drift['max_feature_psi']:.3f} ({drift['rows']:,} leads vs "
                    f"{drift['reference_rows']:,} at training)",
                    markup=True,
                )
                table = Table(box=None, padding=(0, 2, 0, 0))
                table.add_column("feature")
                table.add_column("PSI", justify="right")
                for feature, value in list(drift["features"].items())[:8]:
                    table.add_row(feature, f"{value:.3f}")
                out.print(table)
            realized = figures["realized"] or {}
            latest = realized.get("latest")
            if latest is None:
                closes = realized.get("next_window_closes")
                out.print(
                    f"{name}: realized performance: no label window has closed yet"
                    + (f" (the first closes {_when(closes)} UTC)" if closes else "")
                )
            else:
                auc = f"{latest['auc']:.3f}" if latest["auc"] is not None else "n/a"
                bands = "  ".join(
                    f"{b['band']}: {b['rate']:.1%} of {b['leads']:,}"
                    for b in latest["bands"]
                    if b["rate"] is not None
                )
                out.print(
                    f"{name}: realized on leads scored {_when(latest['scored_at'])}: AUC {auc}; "
                    f"conversion by tier  {bands}"
                )
        if html is not None:
            out.print(f"report: {html}")

    _guard(body)


@app.command()
def serve(
    config: ConfigOption = Path("config.toml"),
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="text or json (default: serve.log_format).")
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Serve /healthz and /metrics on this port (0: any).")
    ] = None,
) -> None:
    r"""Run the jobs on their \[schedule] until stopped (SIGTERM/Ctrl-C: finish the batch, exit)."""
    from sync.logs import configure_logging
    from sync.scheduler import Service

    def body() -> None:
        settings = _settings(config)
        if health_port is not None:
            settings = settings.model_copy(
                update={"serve": settings.serve.model_copy(update={"health_port": health_port})}
            )
        fmt = log_format or settings.serve.log_format
        if fmt not in ("text", "json"):
            _fail(f"--log-format: '{fmt}' is not text or json", 2)
        configure_logging(
            fmt=fmt,
            level=logging.DEBUG if _state["verbose"] else logging.INFO,
            secrets=secret_values(settings),
        )
        service = Service(settings)

        def on_signal(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if service.stopping:
                logging.getLogger("leadscore.serve").error("%s again: exiting now", name)
                logging.shutdown()
                os._exit(130)
            service.request_stop(name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        service.start()
        clean = service.wait()
        logging.getLogger("leadscore.serve").info("stopped")
        logging.shutdown()
        if not clean:
            # The worker thread is still inside a request; leaving now is as safe as a crash.
            os._exit(1)

    _guard(body)


@app.command()
def sandbox(
    workdir: Annotated[
        Path, typer.Option(help="Where the org, TLS material and config files go.")
    ] = Path("leadscore-sandbox"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 0,
    leads: Annotated[int, typer.Option(min=1, help="Leads to generate for a new org.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
    org: Annotated[
        str,
        typer.Option(
            help="Hidden model: classic, interacting (effects a linear model cannot express) "
            "or drifting (interacting, with a regime shift in the newest months)."
        ),
    ] = "classic",
) -> None:
    """Serve a generated Salesforce org and its Segment workspace on https://127.0.0.1 (Ctrl-C)."""

    def ready(info: dict[str, Any]) -> None:
        err.print(
            _kv_table(
                [
                    ("salesforce", info["salesforce_url"]),
                    ("segment", f"{info['segment_url']}/v1/ (space {info['space_id']})"),
                    ("config", workdir / "config.toml"),
                    ("connection", workdir / "sandbox.json"),
                    ("try", f"leadscore run --config {workdir / 'config.toml'}"),
                ]
            )
        )
        err.print("serving; press Ctrl-C to stop")

    _guard(
        lambda: demos.run_sandbox(
            workdir,
            port=port,
            leads=leads,
            seed=seed,
            reporter=_reporter(False),
            ready=ready,
            org=org,
        )
    )


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Working directory for the demo's files.")] = Path(
        "leadscore-demo"
    ),
    leads: Annotated[int, typer.Option(min=200, help="Leads in the generated org.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
    as_json: JsonOption = False,
) -> None:
    """Generate a Salesforce org, serve it locally, and run the whole pipeline against it."""

    def body() -> None:
        data = demos.run_demo(workdir, leads=leads, seed=seed, reporter=_reporter(as_json))
        if as_json:
            _print_json(data)
            return
        out.print()
        out.print(
            _kv_table(
                [
                    ("leads", _fmt(data["leads"])),
                    ("pulled", _fmt(data["pulled"])),
                    ("scored", _fmt(data["scored"])),
                    ("written", _fmt(data["written"])),
                    ("segment", f"{_fmt(data['segment_written'])} profiles got score traits"),
                    ("api calls", _fmt(data["api_calls"])),
                    (
                        "model AUC",
                        f"{data['model_auc']:.4f}  (holdout of {data['holdout']:,} newest leads)",
                    ),
                    (
                        "oracle AUC",
                        f"{data['oracle_auc']:.4f}  (the generator's true probabilities)",
                    ),
                    ("ratio", f"{data['auc_ratio']:.3f}"),
                    ("seconds", f"{data['seconds']:.1f}"),
                    ("next", f"leadscore status --config {data['config']}"),
                ]
            )
        )

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    app()
