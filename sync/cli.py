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
        lines += [("warning", w) for w in p["warnings"]]
        out.print(_kv_table(lines))


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
    elif result.job == "train":
        _render_train(counts)
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
        for name, p in counts["predictions"].items():
            line = f"{p['written']:,} written, {p['failed']:,} failed, {p['unchanged']:,} unchanged"
            if p["errors"]:
                line += "  (" + ", ".join(f"{k}: {v}" for k, v in p["errors"].items()) + ")"
            rows.append((name, line))
    elif result.job == "run":
        rows += [
            ("pulled", _fmt(counts["pulled"])),
            ("trained", ", ".join(counts["trained"]) or "-"),
            ("scored", _fmt(counts["scored"])),
            ("written", _fmt(counts["written"])),
            ("failed", _fmt(counts["failed"])),
        ]
    rows += [("api calls", _fmt(result.api_calls)), ("seconds", f"{result.seconds:.1f}")]
    out.print(_kv_table(rows))


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
    """Train each prediction and compare it with baselines; gate it against the champion."""
    _job_command(lambda s, r: jobs.run_train(s, prediction=prediction, reporter=r), config, as_json)


@app.command("import")
def import_(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Import the [[sources]] files (CSV/Parquet) into the store."""
    _job_command(lambda s, r: jobs.run_import(s, reporter=r), config, as_json)


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
    _job_command(lambda s, r: jobs.run_report(s, out=out_path, reporter=r), config, as_json)


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
    _job_command(lambda s, r: jobs.run_score(s, reporter=r), config, as_json)


@app.command()
def push(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Write changed scores back to Salesforce."""
    _job_command(lambda s, r: jobs.run_push(s, reporter=r), config, as_json)


@app.command()
def run(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Pull, train when no model exists, score and push."""
    _job_command(lambda s, r: jobs.run_all(s, reporter=r), config, as_json)


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
                    f"{model['version']} (holdout {model['metric']} {_fmt(model['value'])})"
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
    """Serve a generated Salesforce org on https://127.0.0.1 until stopped (Ctrl-C)."""

    def ready(info: dict[str, Any]) -> None:
        err.print(
            _kv_table(
                [
                    ("salesforce", info["salesforce_url"]),
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
