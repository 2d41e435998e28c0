"""The ``leadscore`` command: each subcommand calls one job in :mod:`sync.jobs` and renders it."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from connector.errors import LeadscoreError
from sync import jobs
from sync.config import Settings, load_settings
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

_state = {"debug": False}


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


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/bold red] {message}", markup=True)
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
    return load_settings(config)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _kv_table(rows: list[tuple[str, Any]]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
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


def _render_job(result: jobs.JobResult) -> None:
    counts = result.counts
    rows: list[tuple[str, Any]] = [("status", result.status)]
    if result.job == "pull":
        table = Table(box=None, padding=(0, 2, 0, 0))
        for col in ("stream", "fetched", "new", "changed", "unchanged"):
            table.add_column(col, justify="left" if col == "stream" else "right")
        for stream, c in counts["streams"].items():
            table.add_row(stream, *(_fmt(c[k]) for k in ("fetched", "new", "changed", "unchanged")))
        out.print(table)
        rows += _segment_rows(counts.get("segment") or {})
    elif result.job == "import":
        rows += _segment_rows(counts)
    elif result.job == "train":
        table = Table(box=None, padding=(0, 2, 0, 0))
        for col in ("prediction", "version", "examples", "AUC", "PR-AUC", "log loss", "seconds"):
            table.add_column(col, justify="left" if col in ("prediction", "version") else "right")
        for name, p in counts["predictions"].items():
            m = p["metrics"]
            table.add_row(
                name,
                p["version"],
                _fmt(p["examples"]),
                _fmt(m["auc"]),
                _fmt(m["pr_auc"]),
                _fmt(m["log_loss"]),
                f"{p['seconds']:.1f}",
            )
        out.print(table)
        for name, p in counts["predictions"].items():
            for trait, reason in (p.get("skipped_traits") or {}).items():
                rows.append((f"{name}", f"trait {trait} skipped: {reason}"))
    elif result.job == "score":
        for name, p in counts["predictions"].items():
            tiers = "  ".join(f"{t}:{n:,}" for t, n in p["tiers"].items())
            rows.append((name, f"{p['scored']:,} scored with {p['version']}   {tiers}"))
    elif result.job == "push":
        for name, p in counts["predictions"].items():
            line = f"{p['written']:,} written, {p['failed']:,} failed, {p['unchanged']:,} unchanged"
            if p["errors"]:
                line += "  (" + ", ".join(f"{k}: {v}" for k, v in p["errors"].items()) + ")"
            rows.append((name, line))
        for name, p in (counts.get("segment") or {}).items():
            line = (
                f"{p['written']:,} profiles written ({p['requests']:,} requests), "
                f"{p['failed']:,} failed, {p['unchanged']:,} unchanged, "
                f"{p['no_segment_user']:,} without a Segment user"
            )
            if p["errors"]:
                line += "  (" + ", ".join(f"{k}: {v}" for k, v in p["errors"].items()) + ")"
            rows.append((f"{name} → segment", line))
    elif result.job == "run":
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


def _job_command(
    run: Callable[[Settings, Reporter], jobs.JobResult], config: Path, as_json: bool
) -> None:
    def body() -> None:
        result = run(_settings(config), _reporter(as_json))
        if as_json:
            _print_json(result.to_json())
        else:
            _render_job(result)
        if result.status == "partial":
            raise typer.Exit(4)

    _guard(body)


@app.command()
def pull(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Pull Salesforce records changed since the last pull into the store."""
    _job_command(lambda s, r: jobs.run_pull(s, reporter=r), config, as_json)


@app.command()
def train(
    config: ConfigOption = Path("config.toml"),
    prediction: Annotated[str | None, typer.Option(help="Train only this prediction.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a model for each prediction on the store and make it the champion."""
    _job_command(lambda s, r: jobs.run_train(s, prediction=prediction, reporter=r), config, as_json)


@app.command()
def score(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Score every lead with the champion model."""
    _job_command(lambda s, r: jobs.run_score(s, reporter=r), config, as_json)


@app.command()
def push(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Write changed scores back to Salesforce."""
    _job_command(lambda s, r: jobs.run_push(s, reporter=r), config, as_json)


@app.command()
def run(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Pull, train when no model exists, score and push."""
    _job_command(lambda s, r: jobs.run_all(s, reporter=r), config, as_json)


@app.command("import")
def import_files(
    paths: Annotated[list[Path], typer.Argument(help="JSON-lines (.jsonl[.gz]) or Parquet files.")],
    kind: Annotated[
        str, typer.Option(help="What the files hold: tracks, identifies or id_graph.")
    ] = "tracks",
    config: ConfigOption = Path("config.toml"),
    force: Annotated[bool, typer.Option(help="Import files again that were imported.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Import Segment warehouse / Profiles Sync exports; bad lines are skipped and counted."""
    _job_command(
        lambda s, r: jobs.run_import(s, paths, kind=kind, force=force, reporter=r), config, as_json
    )


@app.command()
def status(
    config: ConfigOption = Path("config.toml"),
    limit: Annotated[int, typer.Option(help="How many runs to show.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Show the last runs from the run log and the champion models."""

    def body() -> None:
        data = jobs.read_status(_settings(config), limit=limit)
        if as_json:
            _print_json(data)
            return
        if not data["runs"]:
            out.print(f"no runs yet in {data['store']}")
        else:
            table = Table(box=None, padding=(0, 2, 0, 0))
            for col in ("run", "job", "started (UTC)", "seconds", "status", "api calls", "summary"):
                table.add_column(
                    col, justify="right" if col in ("run", "seconds", "api calls") else "left"
                )
            for r in data["runs"]:
                seconds = (
                    f"{(r['finished_at'] - r['started_at']).total_seconds():.1f}"
                    if r["finished_at"]
                    else "-"
                )
                summary = r["error"] or ", ".join(
                    f"{k} {v:,}" for k, v in r["counts"].items() if isinstance(v, int)
                )
                table.add_row(
                    str(r["run_id"]),
                    r["job"],
                    f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                    seconds,
                    r["status"],
                    _fmt(r["api_calls"]) if r["api_calls"] is not None else "-",
                    summary,
                )
            out.print(table)
        for name, model in data["models"].items():
            out.print(
                f"model {name}: "
                + (
                    f"{model['version']} (holdout AUC {model['auc']:.4f})"
                    if model
                    else "not trained yet"
                )
            )

    _guard(body)


@app.command()
def sandbox(
    workdir: Annotated[
        Path, typer.Option(help="Where the org, TLS material and config files go.")
    ] = Path("leadscore-sandbox"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 0,
    leads: Annotated[int, typer.Option(min=1, help="Leads to generate for a new org.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
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
        lambda: jobs.run_sandbox(
            workdir, port=port, leads=leads, seed=seed, reporter=_reporter(False), ready=ready
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
        data = jobs.run_demo(workdir, leads=leads, seed=seed, reporter=_reporter(as_json))
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
