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
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from connector.errors import LeadscoreError
from sync.job_names import JOB_NAMES
from sync.logs import redact_root_handlers, secret_values
from sync.progress import ConsoleReporter, Reporter, SilentReporter
from sync.render import OutputConsole, render_monitor, render_result, render_summary
from sync.render import kv_table as _kv_table
from sync.results import (
    DemoSummary,
    DoctorSummary,
    ModelDetailSummary,
    ModelListSummary,
    MonitorSummary,
    PlanSummary,
    PromoteSummary,
    RollbackSummary,
    StatusSummary,
    Summary,
)

if TYPE_CHECKING:
    from sync.config import Settings
    from sync.run import JobResult


def _jobs() -> ModuleType:
    """:mod:`sync.jobs`, imported on first use.

    It brings pandas, CatBoost and every connector; ``--help`` and ``status`` need none of them
    and start in a fraction of the time without them.
    """
    from sync import jobs

    return jobs


def _demos() -> ModuleType:
    """:mod:`sync.demo`, imported on first use (the sandbox generator, scikit-learn)."""
    from sync import demo

    return demo


app = typer.Typer(
    name="leadscore",
    help="Score leads with CatBoost on your own Salesforce data and write the scores back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# outside a terminal (cron, systemd, pipes) tables keep their rows on one line: OutputConsole
out = OutputConsole(highlight=False, soft_wrap=True)
err = OutputConsole(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Config file (TOML).", show_default=True)
]
_state: dict[str, Any] = {"debug": False, "verbose": False, "json": False, "where": "leadscore"}


def _remember_json(ctx: typer.Context, value: bool) -> bool:
    # a failing command still prints one JSON object on stdout when --json was asked for
    _state["json"] = bool(value)
    _state["where"] = ctx.command_path
    return value


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON object instead of a summary.", callback=_remember_json
    ),
]


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
    _state["json"] = False
    # The store, models, reports and logs hold personal data: files this process creates are
    # readable by their owner only, whatever the shell's umask.
    os.umask(0o077)


def _fail(message: str, code: int, *, hint: str | None = None) -> None:
    # escape: messages name config sections such as [schedule], which are not markup
    line = f"{message}; {hint}" if hint else message
    err.print(f"[bold red]error:[/bold red] {escape(line)}", markup=True)
    if _state["json"]:
        _print_json(
            {
                "status": "error",
                "exit_code": code,
                "error": message,
                "where": _state["where"],
                "hint": hint,
            }
        )
    raise typer.Exit(code)


def _guard(action: Callable[[], Any]) -> Any:
    """Run a command body; expected failures become one line on stderr and a non-zero exit."""
    try:
        return action()
    except LeadscoreError as exc:
        _fail(exc.message, exc.exit_code, hint=exc.hint)
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
    from sync.config import load_settings

    settings = load_settings(config)
    # every command, not only serve: -v logs HTTP calls, and a secret must never reach a log
    redact_root_handlers(secret_values(settings))
    return settings


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


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


def _show_result(result: JobResult, as_json: bool, *, partial_exit: int = 4) -> None:
    """Print a job's result (JSON or a summary); a partial result exits with ``partial_exit``."""
    if as_json:
        _print_json(result.to_json())
    else:
        render_result(out, result)
    if result.status == "partial":
        raise typer.Exit(partial_exit)


def _show_summary(summary: Summary, as_json: bool) -> None:
    """Print a command's typed result: its ``to_json()``, or its renderer's summary."""
    if as_json:
        _print_json(summary.to_json())
    else:
        render_summary(out, summary)


def _job_command(job: str, config: Path, as_json: bool, **options: Any) -> None:
    def body() -> None:
        settings = _settings(config)
        reporter = _reporter(as_json)
        with _cooperative_stop(reporter) as stop:
            result = _jobs().run_job(
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
        result = _jobs().run_report(_settings(config), out=out_path, reporter=_reporter(as_json))
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
        data = _jobs().list_models(_settings(config), prediction=prediction)
        _show_summary(ModelListSummary.from_counts(data), as_json)

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
        meta = _jobs().show_model(_settings(config), prediction, version)
        _show_summary(ModelDetailSummary.from_counts(meta), as_json)

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
        data = _jobs().promote_model(_settings(config), prediction, version)
        _show_summary(PromoteSummary.from_counts(data), as_json)

    _guard(body)


@models_app.command("rollback")
def models_rollback(
    prediction: PredictionArgument,
    config: ConfigOption = Path("config.toml"),
    as_json: JsonOption = False,
) -> None:
    """Make the previous champion the champion again."""

    def body() -> None:
        data = _jobs().rollback_model(_settings(config), prediction)
        _show_summary(RollbackSummary.from_counts(data), as_json)

    _guard(body)


@app.command()
def score(
    config: ConfigOption = Path("config.toml"),
    retier: Annotated[
        bool,
        typer.Option(
            "--retier",
            help="Set capacity-based tier cut-offs (tiers.capacity) again from recent arrivals.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Score every lead with the champion model."""
    _job_command("score", config, as_json, retier=retier)


@app.command()
def fresh(
    config: ConfigOption = Path("config.toml"),
    as_json: JsonOption = False,
) -> None:
    """Score and write the leads changed since the last fresh cycle (serve runs it every 30 s)."""
    _job_command("fresh", config, as_json)


@app.command()
def vacuum(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    r"""Apply \[store.retention] (score history, run log, import rejects) and reclaim the space."""
    _job_command("vacuum", config, as_json)


DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Show what would be written and its API calls; write nothing."),
]


def _plan_command(config: Path, as_json: bool) -> None:
    def body() -> None:
        data = _jobs().run_plan(_settings(config), reporter=_reporter(as_json))
        _show_summary(PlanSummary.from_counts(data), as_json)

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
        result = _jobs().run_retry(_settings(config), dead=dead, gone=gone, reporter=reporter)
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


@app.command()
def setup(
    config: ConfigOption = Path("config.toml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the changes; change nothing.")
    ] = False,
    remove: Annotated[
        bool,
        typer.Option("--remove", help="Take away the permission sets and the list view."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make the org ready: output fields, field security (permission sets), reps' list view."""

    def body() -> None:
        result = _jobs().run_setup(
            _settings(config), dry_run=dry_run, remove=remove, reporter=_reporter(as_json)
        )
        # a field that needs fixing in Salesforce is a setup problem: exit 2
        _show_result(result, as_json, partial_exit=2)

    _guard(body)


@app.command()
def doctor(config: ConfigOption = Path("config.toml"), as_json: JsonOption = False) -> None:
    """Check login, API allowance, objects, fields and campaigns; say how to fix problems."""

    def body() -> None:
        summary = DoctorSummary.from_counts(
            _jobs().run_doctor(_settings(config), reporter=_reporter(as_json))
        )
        _show_summary(summary, as_json)
        if not summary.ok:
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
            result = _jobs().run_segment_import(
                settings, paths, kind=kind, force=force, reporter=reporter
            )
        else:
            result = _jobs().run_import(settings, reporter=reporter)
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
        from sync.status import read_status

        data = read_status(_settings(config), limit=limit)
        _show_summary(StatusSummary.from_counts(data), as_json)

    _guard(body)


@app.command()
def impact(
    config: ConfigOption = Path("config.toml"),
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
            help="Start of the period (UTC; default: 90 days before the data's end).",
        ),
    ] = None,
    prediction: Annotated[str | None, typer.Option(help="Only this prediction.")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the figures as an HTML page here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Is the score used, and does it pay: adoption per rep, speed to lead, realized value."""

    def body() -> None:
        from scoring.impact_report import summary_lines

        result = _jobs().run_impact(
            _settings(config),
            since=since,
            html_path=html,
            prediction=prediction,
            reporter=_reporter(as_json),
        )
        if as_json:
            _print_json(result.to_json())
            return
        for name, figures in result.artifacts.items():
            out.print(f"[bold]{escape(name)}[/bold]", markup=True)
            for line in summary_lines(figures):
                out.print(line, markup=False, highlight=False)
        if html is not None:
            out.print(f"report: {html}", markup=False)

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
        result = _jobs().run_job(settings, "monitor", reporter=_reporter(as_json))
        if html is not None:
            html.write_text(_jobs().monitoring_html(settings, result), encoding="utf-8")
        if as_json:
            _print_json(result.to_json())
            return
        summary = result.summary
        assert isinstance(summary, MonitorSummary)
        render_monitor(out, summary)
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
    health_host: Annotated[
        str | None,
        typer.Option(
            help="Address the endpoint binds to (default: serve.health_host, loopback); "
            "0.0.0.0 in a container whose port is published."
        ),
    ] = None,
) -> None:
    r"""Run the jobs on their \[schedule] until stopped (SIGTERM/Ctrl-C: finish the batch, exit)."""
    from sync.logs import configure_logging
    from sync.scheduler import Service

    def body() -> None:
        settings = _settings(config)
        overrides = {
            key: value
            for key, value in (("health_port", health_port), ("health_host", health_host))
            if value is not None
        }
        if overrides:
            settings = settings.model_copy(
                update={"serve": settings.serve.model_copy(update=overrides)}
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
    field_security: Annotated[
        str,
        typer.Option(
            help="granted, or enforced: profiles read no custom field until `leadscore setup` "
            "grants them, as in a new real org."
        ),
    ] = "granted",
    org: Annotated[
        str,
        typer.Option(
            help="Hidden model: classic, interacting (effects a linear model cannot express) "
            "or drifting (interacting, with a regime shift in the newest months)."
        ),
    ] = "classic",
    daily_api_limit: Annotated[
        int, typer.Option(min=1, help="The org's daily API allowance (403 past it).")
    ] = 100_000,
    faults: Annotated[
        Path | None,
        typer.Option(
            help="TOML or JSON file of fault rules (rate, kind: unavailable, request_limit, "
            "expired_session, slow, drop, lost_answer; lock_rate) to rehearse a bad day."
        ),
    ] = None,
    pubsub: Annotated[
        bool,
        typer.Option(
            help="Also serve the Pub/Sub API (change events, gRPC over TLS) for "
            'fresh.trigger = "cdc"; its port goes into config.toml.'
        ),
    ] = False,
    pubsub_port: Annotated[
        int, typer.Option(help="Pub/Sub API port on 127.0.0.1 (0: any free port).")
    ] = 0,
) -> None:
    """Serve a generated Salesforce org and its Segment workspace on https://127.0.0.1 (Ctrl-C)."""

    def ready(info: dict[str, Any]) -> None:
        err.print(
            _kv_table(
                [
                    ("salesforce", info["salesforce_url"]),
                    ("segment", f"{info['segment_url']}/v1/ (space {info['space_id']})"),
                    *(
                        [("pub/sub api", info["pubsub_endpoint"])]
                        if info.get("pubsub_endpoint")
                        else []
                    ),
                    ("config", workdir / "config.toml"),
                    ("connection", workdir / "sandbox.json"),
                    ("try", f"leadscore run --config {workdir / 'config.toml'}"),
                ]
            )
        )
        err.print("serving; press Ctrl-C to stop")

    _guard(
        lambda: _demos().run_sandbox(
            workdir,
            port=port,
            leads=leads,
            seed=seed,
            field_security=field_security,
            reporter=_reporter(False),
            ready=ready,
            org=org,
            daily_api_limit=daily_api_limit,
            faults=faults,
            pubsub_port=pubsub_port if pubsub else None,
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
        data = _demos().run_demo(workdir, leads=leads, seed=seed, reporter=_reporter(as_json))
        _show_summary(DemoSummary.from_counts(data), as_json)

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    app()
