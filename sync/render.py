"""How the CLI shows a job's result in a terminal: one small renderer per result type.

:func:`render_result` looks up the renderer of the result's type (:mod:`sync.results`) in
:data:`RENDERERS`; a job without a type gets :func:`render_generic` (its whole-number counts).
Each renderer prints its tables and returns the ``key  value`` lines of its summary; status, API
calls and seconds close every job's summary. The commands that are not jobs (``plan``, ``doctor``,
``status``, ``models``, ``demo``) are printed by :func:`render_summary` from the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

from sync.parts import part_outcomes
from sync.results import (
    DemoSummary,
    DoctorSummary,
    FreshSummary,
    ImportSummary,
    ModelDetailSummary,
    ModelListSummary,
    MonitorSummary,
    PlanSummary,
    PromoteSummary,
    PullSummary,
    PushSummary,
    ReportSummary,
    RollbackSummary,
    ScoreSummary,
    SegmentImportSummary,
    SetupSummary,
    StatusSummary,
    Summary,
    SyncSummary,
    TrainSummary,
    VacuumSummary,
)

if TYPE_CHECKING:  # sync.run brings the config and the connectors; rendering needs neither
    from sync.run import JobResult

Rows = list[tuple[str, Any]]


def kv_table(rows: Rows) -> Table:
    """Two aligned columns, keys in bold: the shape of every CLI summary."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        # Text, not markup: values quote config sections ([schedule]) and record data
        table.add_row(Text(key), Text(str(value)))
    return table


# Columns of output that is not a terminal (cron, systemd, a pipe): wide enough that no table is
# wrapped or cut, since nobody's window decides the width. COLUMNS still wins when set.
LOG_WIDTH = 400


class OutputConsole(Console):
    """A rich console that wraps at the terminal's width, and not at 80 columns in a log."""

    def _size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(LOG_WIDTH, size.height)
        return size

    size = property(_size, Console.size.fset)  # type: ignore[assignment]


def fmt(value: Any) -> str:
    """A number as a terminal shows it: thousands separated, four decimals."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def when(value: Any) -> str:
    """A UTC time with its date and year (a log read months later must not guess the year)."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)


def segment_rows(counts: dict[str, Any]) -> Rows:
    """Summary lines of a Segment pull or import: imports, Profile API, identity resolution."""
    rows: Rows = []
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


def _skipped_lines(out: Console, segment: dict[str, Any] | None) -> None:
    """Skipped lines as ``file:line: reason (detail)``, one per line and never truncated."""
    for example in ((segment or {}).get("imports") or {}).get("examples", []):
        out.print(f"  {example}", soft_wrap=True, markup=False)


def _pull(out: Console, s: PullSummary) -> Rows:
    table = Table(box=None, padding=(0, 2, 0, 0))
    keys = ("fetched", "new", "changed", "unchanged", "deleted")
    for col in ("stream", "path", *keys):
        table.add_column(col, justify="left" if col in ("stream", "path") else "right")
    for stream, c in s.streams.items():
        table.add_row(stream, c.get("path", "rest"), *(fmt(c.get(k, 0)) for k in keys))
    out.print(table)
    return segment_rows(s.segment or {})


def _segment_import(out: Console, s: SegmentImportSummary) -> Rows:
    return segment_rows(s.to_json())


_TRAIN_METRICS = {
    "binary": [("auc", "AUC"), ("pr_auc", "PR-AUC"), ("log_loss", "log loss"), ("brier", "Brier")],
    "multiclass": [("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("log_loss", "log loss")],
    "regression": [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R2")],
}


def _train(out: Console, s: TrainSummary) -> Rows:
    """Per prediction: model and baselines side by side, the choice made, the gate, warnings."""
    rows: Rows = []
    for name, p in s.predictions.items():
        columns = _TRAIN_METRICS[p["task"]]
        table = Table(box=None, padding=(0, 2, 0, 0), title_justify="left")
        table.add_column(name, justify="left", style="bold")
        for _, label in columns:
            table.add_column(label, justify="right")
        table.add_row("model", *(fmt(p["metrics"].get(k)) for k, _ in columns))
        for baseline, m in p["baselines"].items():
            table.add_row(f"  {baseline}", *(fmt(m.get(k)) for k, _ in columns))
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
        out.print(kv_table(lines))
    for name, p in s.predictions.items():
        for trait, reason in (p.get("skipped_traits") or {}).items():
            rows.append((f"{name}", f"trait {trait} skipped: {reason}"))
    return rows


def _import(out: Console, s: ImportSummary) -> Rows:
    return [(t, f"{c['rows']:,} rows, {c['columns']} columns") for t, c in s.tables.items()]


def _report(out: Console, s: ReportSummary) -> Rows:
    return [("report", s.path)]


def _vacuum(out: Console, s: VacuumSummary) -> Rows:
    mb = 1024 * 1024
    return [
        ("score history", f"{s.score_rows_deleted:,} rows deleted, {s.score_rows_kept:,} kept"),
        ("run log", f"{s.run_log_rows_deleted:,} rows deleted"),
        ("import rejects", f"{s.import_rejects_deleted:,} rows deleted"),
        (
            "store file",
            f"{s.bytes_before / mb:,.1f} MB -> {s.bytes_after / mb:,.1f} MB"
            + (" (rewritten)" if s.rewritten else ""),
        ),
    ]


def _score(out: Console, s: ScoreSummary) -> Rows:
    rows: Rows = []
    for name, p in s.predictions.items():
        tiers = "  ".join(f"{t}:{n:,}" for t, n in p["tiers"].items())
        rows.append((name, f"{p['scored']:,} scored with {p['version']}   {tiers}"))
    return rows


def _fresh(out: Console, s: FreshSummary) -> Rows:
    rows: Rows = [("leads", f"{s.leads:,} changed ({s.trigger})")]
    for name, r in (s.polled or {}).items():
        figures = f"{r['fetched']:,} ({r['new']:,} new, {r['changed']:,} changed)"
        rows.append((f"  polled {name}", figures))
    for name, r in s.read.items():
        rows.append(
            (f"  read {name}", f"{r['fetched']:,} ({r['new']:,} new, {r['changed']:,} changed)")
        )
    for name, p in s.predictions.items():
        if "skipped" in p:
            rows.append((name, f"waiting: {p['skipped']}"))
            continue
        rows.append(
            (
                name,
                f"{p['scored']:,} scored with {p.get('version', '-')}, "
                f"{p.get('written', 0):,} written, {p.get('unchanged', 0):,} unchanged, "
                f"{p.get('failed', 0):,} failed",
            )
        )
    if s.latencies:
        worst = max(s.latencies)
        rows.append(("creation -> score", f"{len(s.latencies)} new lead(s), at most {worst:.1f} s"))
    return rows


# What held a record back from a push, as a push and a plan name it.
HELD_BACK = (
    ("hysteresis", "held by hysteresis"),
    ("invalid", "invalid"),
    ("deferred", "waiting to retry"),
    ("dead", "dead"),
    ("gone", "gone"),
)


def _errors(errors: dict[str, Any]) -> str:
    return "  (" + ", ".join(f"{k}: {v}" for k, v in errors.items()) + ")" if errors else ""


def _push(out: Console, s: PushSummary) -> Rows:
    rows: Rows = []
    if s.revived is not None:
        rows.append(("dead letters", f"{s.revived:,} ledger row(s) due again"))
    for name, p in s.predictions.items():
        line = f"{p['written']:,} written, {p['failed']:,} failed, {p['unchanged']:,} unchanged"
        held = [f"{p[k]:,} {label}" for k, label in HELD_BACK if p.get(k)]
        if held:
            line += ", " + ", ".join(held)
        rows.append((name, line + _errors(p["errors"])))
    for name, c in (s.campaigns or {}).items():
        line = (
            f"campaign {c['campaign_id']}: {c['members']:,} members, {c['added']:,} added, "
            f"{c['removed']:,} removed, {c['failed']:,} failed"
        )
        rows.append((f"audience {name}", line))
    for name, c in (s.segment_audiences or {}).items():
        line = (
            f"segment: {c['written']:,} entered/exited ({c['requests']:,} requests), "
            f"{c['failed']:,} failed, {c['no_segment_user']:,} without a Segment user"
        )
        rows.append((f"audience {name}", line))
    for name, p in (s.segment or {}).items():
        line = (
            f"{p['written']:,} profiles written ({p['requests']:,} requests), "
            f"{p['failed']:,} failed, {p['unchanged']:,} unchanged, "
            f"{p['no_segment_user']:,} without a Segment user"
        )
        rows.append((f"{name} → segment", line + _errors(p["errors"])))
    return rows


def _setup(out: Console, s: SetupSummary) -> Rows:
    table = Table(box=None, padding=(0, 2, 0, 0))
    for col in ("field", "output", "action", "detail", "how to fix"):
        table.add_column(col)
    for row in s.fields:
        table.add_row(
            f"{row['object']}.{row['field']}",
            row["kind"],
            row["action"],
            Text(row["detail"] or ""),
            Text(row["fix"] or ""),
            style="red" if row["action"] == "problem" else None,
        )
    out.print(table)
    if s.org:
        org = Table(box=None, padding=(0, 2, 0, 0))
        for col in ("object", "name", "action", "detail"):
            org.add_column(col)
        for step in s.org:
            org.add_row(step["object"], Text(step["name"]), step["action"], Text(step["detail"]))
        out.print(org)
    created = f"{s.created} created, {s.would_create} to create, {s.problems} with problems"
    rows: Rows = [("fields", created)]
    if s.changed == 0 and not s.dry_run:
        rows.append(("changes", "none: the org was already set up"))
    elif s.dry_run:
        rows.append(("changes", f"{s.changed or 0} planned, nothing was changed"))
    else:
        rows.append(("changes", str(s.changed or 0)))
    return rows


def _sync(out: Console, s: SyncSummary) -> Rows:
    rows: Rows = [
        ("pulled", fmt(s.pulled)),
        ("trained", ", ".join(s.trained) or "-"),
        ("scored", fmt(s.scored)),
        ("written", fmt(s.written)),
        ("failed", fmt(s.failed)),
    ]
    if s.segment_written is not None:
        rows.append(("segment", f"{fmt(s.segment_written)} profiles written"))
    return rows


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _plan_counts(c: dict[str, Any]) -> str:
    parts = [
        f"{c.get('create', 0):,} create",
        f"{c.get('update', 0):,} update",
        f"{c.get('unchanged', 0):,} unchanged",
    ]
    for key, label in HELD_BACK:
        if c.get(key):
            parts.append(f"{c[key]:,} {label}")
    return ", ".join(parts)


# How many sample changes and invalid records a plan shows per target (all are in --json).
PLAN_SAMPLE = 3


def _plan(out: Console, s: PlanSummary) -> Rows:
    """Per target: what would be sent, audience entries and exits, the price; then the totals."""
    rows: Rows = []
    for t in s.targets:
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
        for sample in (t.get("sample") or [])[:PLAN_SAMPLE]:
            changes = ", ".join(
                f"{name} {_short(before)} → {_short(after)}"
                for name, (before, after) in sample["changes"].items()
            )
            rows.append(("  " + sample["record_id"], changes))
        for bad in (t.get("invalid") or [])[:PLAN_SAMPLE]:
            rows.append(("  " + bad["record_id"], f"invalid: {bad['field']}: {bad['error']}"))
    return [
        *rows,
        ("estimated api calls", fmt(s.estimated_api_calls)),
        ("segment requests", fmt(s.estimated_segment_requests)),
        ("this plan used", f"{fmt(s.api_calls)} API call(s) (describes); wrote nothing"),
    ]


def _doctor(out: Console, s: DoctorSummary) -> Rows:
    """Each check with its detail and how to fix it; then the verdict."""
    table = Table(box=None, padding=(0, 2, 0, 0))
    for col in ("check", "", "detail", "how to fix"):
        table.add_column(col)
    for c in s.checks:
        table.add_row(
            Text(c["check"]),
            "[green]OK[/green]" if c["ok"] else "[red]problem[/red]",
            Text(c["detail"] or ""),
            Text(c["fix"] or ""),
        )
    out.print(table)
    verdict = "no problems found" if s.ok else f"{s.problems} problem(s) found"
    return [("result", verdict), ("api calls", fmt(s.api_calls))]


# The counts a run is summarised by in `status`, most telling first (all are in --json).
_HEADLINE_COUNTS = ("pulled", "scored", "written", "failed", "deleted", "rows")


def run_summary(run: dict[str, Any]) -> str:
    """One short line per run in ``status``: its error, or its headline counts."""
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


def _status_jobs(out: Console, s: StatusSummary) -> None:
    """Per job: schedule, last run, next run (or overdue since), failures, last error."""
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
    for name, j in s.jobs.items():
        last = j["last_run"] or {}
        failures = f"{j['failures_24h']}"
        if j["consecutive_failures"]:
            failures += f" ({j['consecutive_failures']} in a row)"
        table.add_row(
            name,
            j["schedule"] or "manual",
            when(last.get("started_at")),
            last.get("status") or "never run",
            f"overdue since {when(j['overdue_since'])}"
            if j["overdue_since"]
            else (
                when(j["next_run"]) if s.serving or not j["schedule"] else "- (serve not running)"
            ),
            failures,
            (last.get("error") or "")[:80] if last.get("status") != "ok" else "",
        )
    out.print(table)


def _status_health(s: StatusSummary) -> Rows:
    """Dead letters, the API allowance, the champion models and the active alerts."""
    rows: Rows = []
    if s.dead_letters is not None:
        rows.append(("dead letters", fmt(s.dead_letters)))
    for d in s.dead_letter_rows or []:
        rows.append(
            (
                f"  {d['status']}",
                f"{d['target']} {d['object']}: {d['records']:,} record(s), "
                f"e.g. {d['example']}: {d['reason'][:100]}",
            )
        )
    if any(d["status"] == "dead" for d in s.dead_letter_rows or []):
        rows.append(("", "fix the cause, then `leadscore retry --dead --config FILE`"))
    usage = s.api_usage
    rows.append(
        (
            "API allowance",
            f"{usage['remaining']:,} of {usage['max']:,} calls left "
            f"(as of {when(usage['as_of'])} UTC)"
            if usage
            else "not seen yet",
        )
    )
    for name, model in s.models.items():
        rows.append(
            (
                f"model {name}",
                f"{model['version']} (holdout {model['metric']} {fmt(model['value'])}), "
                f"trained {model['age_days']:.1f} days ago"
                if model and model.get("value") is not None
                else (f"{model['version']}" if model else "not trained yet"),
            )
        )
    rows.append(
        (
            "alerts",
            "; ".join(f"{a['key']} since {when(a['since'])}" for a in s.alerts) or "none active",
        )
    )
    if s.fresh is not None:
        last = s.fresh.get("last_cycle") or {}
        day = s.fresh.get("latency_24h") or {}
        rows.append(
            (
                "fresh",
                f"last cycle {when(last.get('started_at'))} {last.get('status', 'never run')}; "
                + (
                    f"creation -> score p95 {day['p95']:.1f} s over {day['leads']:,} new leads "
                    "(24h)"
                    if day.get("leads")
                    else "no new lead scored in 24h"
                ),
            )
        )
    return rows


def _status_runs(out: Console, s: StatusSummary) -> None:
    """The recent runs, newest first, each summarised in one line."""
    table = Table(box=None, padding=(0, 2, 0, 0), title="recent runs", title_justify="left")
    for col in ("run", "job", "started (UTC)", "seconds", "status", "api calls", "summary"):
        table.add_column(
            col,
            justify="right" if col in ("run", "seconds", "api calls") else "left",
            no_wrap=col != "summary",
        )
    for r in s.runs:
        seconds = (
            f"{(r['finished_at'] - r['started_at']).total_seconds():.1f}"
            if r["finished_at"]
            else "-"
        )
        table.add_row(
            str(r["run_id"]),
            r["job"],
            when(r["started_at"]),
            seconds,
            r["status"],
            fmt(r["api_calls"]) if r["api_calls"] is not None else "-",
            Text(run_summary(r)),
        )
    out.print(table)


def _status(out: Console, s: StatusSummary) -> Rows:
    """The jobs, the store's health, then the recent runs (printed here: they come last)."""
    if s.busy:
        out.print(f"running now: {s.busy}")
    if s.serving:
        out.print(f"serve: {s.serving}")
    if not s.readable:
        out.print(f"the store {s.store} is in use by a run; its history is not shown")
    if s.jobs:
        _status_jobs(out, s)
    elif not s.runs:
        out.print(f"no runs yet in {s.store}")
    out.print(kv_table(_status_health(s)))
    if s.runs:
        out.print()
        _status_runs(out, s)
    return []


def _model_list(out: Console, s: ModelListSummary) -> Rows:
    """Per prediction, its versions with role, model, headline metric and examples."""
    for name, versions in s.predictions.items():
        table = Table(box=None, padding=(0, 2, 0, 0))
        for col in ("version", "role", "model", "metric", "value", "examples"):
            table.add_column(col, justify="right" if col in ("value", "examples") else "left")
        for v in versions:
            table.add_row(
                v["version"],
                v["role"],
                v["deployed"],
                v["metric"],
                fmt(v["value"]),
                fmt(v["examples"]),
            )
        out.print(f"[bold]{name}[/bold]" + ("" if versions else ": no models yet"))
        if versions:
            out.print(table)
    return []


def _model_detail(out: Console, s: ModelDetailSummary) -> Rows:
    """A version's data window, split, metrics, baselines, top features and warnings."""
    meta = s.metadata
    rows: Rows = [
        ("version", meta.get("version")),
        ("task", meta.get("task")),
        ("data as of", meta.get("as_of")),
        ("split", (meta.get("split") or {}).get("method")),
        ("examples", fmt((meta.get("examples") or {}).get("used"))),
        ("deployed", (meta.get("deployed") or {}).get("model")),
        ("config hash", meta.get("config_hash")),
        ("seconds", meta.get("seconds")),
    ]
    rows += [(k, fmt(v)) for k, v in meta.get("metrics", {}).items() if v is not None]
    for name, m in (meta.get("baselines") or {}).items():
        shown = ("auc", "log_loss", "accuracy", "rmse", "r2")
        rows.append(
            (f"baseline {name}", ", ".join(f"{k} {fmt(v)}" for k, v in m.items() if k in shown))
        )
    importance = (meta.get("feature_importance") or {}).items()
    top = sorted(importance, key=lambda kv: -kv[1])[:8]
    rows.append(("top features", ", ".join(f"{k} ({v:.1f})" for k, v in top)))
    rows += [("warning", w) for w in meta.get("warnings", [])]
    return rows


def _promote(out: Console, s: PromoteSummary) -> Rows:
    out.print(f"{s.prediction}: champion is now {s.champion}")
    return []


def _rollback(out: Console, s: RollbackSummary) -> Rows:
    out.print(f"{s.prediction}: rolled back; champion is now {s.champion}")
    return []


def _demo(out: Console, s: DemoSummary) -> Rows:
    out.print()
    # sales ops first: what reps now see on their leads, and whether the order is worth following
    tiers = ", ".join(f"{tier} {n:,}" for tier, n in s.tiers.items())
    return [
        ("leads", fmt(s.leads)),
        ("leads per tier", tiers or "-"),
        ("fields written", ", ".join(s.fields_written) or "-"),
        ("lift", s.lift or "-"),
        ("pulled", fmt(s.pulled)),
        ("scored", fmt(s.scored)),
        ("written", f"{fmt(s.written)} leads"),
        ("segment", f"{fmt(s.segment_written)} profiles got score traits"),
        ("api calls", fmt(s.api_calls)),
        ("model AUC", f"{s.model_auc:.4f}  (holdout of {s.holdout:,} newest leads)"),
        ("oracle AUC", f"{s.oracle_auc:.4f}  (the generator's true probabilities)"),
        ("ratio", f"{s.auc_ratio:.3f}"),
        ("seconds", f"{s.seconds:.1f}"),
        ("next", f"leadscore status --config {s.config}"),
    ]


def render_generic(out: Console, counts: dict[str, Any]) -> Rows:
    """A job without a type (:mod:`sync.results`): its whole-number counts, one line each."""
    return [
        (key, fmt(value))
        for key, value in counts.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


RENDERERS: dict[type[Summary], Callable[[Console, Any], Rows]] = {
    PullSummary: _pull,
    SegmentImportSummary: _segment_import,
    TrainSummary: _train,
    ImportSummary: _import,
    ReportSummary: _report,
    ScoreSummary: _score,
    VacuumSummary: _vacuum,
    PushSummary: _push,
    SetupSummary: _setup,
    SyncSummary: _sync,
    PlanSummary: _plan,
    DoctorSummary: _doctor,
    StatusSummary: _status,
    FreshSummary: _fresh,
    ModelListSummary: _model_list,
    ModelDetailSummary: _model_detail,
    PromoteSummary: _promote,
    RollbackSummary: _rollback,
    DemoSummary: _demo,
}


def render_result(out: Console, result: JobResult) -> None:
    """Print a job's result: its type's tables and lines, then status, API calls and seconds.

    Args:
        out: the console to print to.
        result: the job's result.
    """
    summary = result.summary
    renderer = RENDERERS.get(type(summary)) if summary is not None else None
    rows: Rows = [("status", result.status)]
    # a source or target that failed on its own (the others went on): say which and why
    rows += [
        (part, outcome) for part, outcome in part_outcomes(result.counts).items() if outcome != "ok"
    ]
    if renderer is not None:
        rows += renderer(out, summary)
    else:
        rows += render_generic(out, result.counts)
    rows += [("api calls", fmt(result.api_calls)), ("seconds", f"{result.seconds:.1f}")]
    out.print(kv_table(rows))
    if isinstance(summary, PullSummary):
        _skipped_lines(out, summary.segment)
    elif isinstance(summary, SegmentImportSummary):
        _skipped_lines(out, summary.to_json())


def render_summary(out: Console, summary: Summary) -> None:
    """Print the result of a command that is not a job (``plan``, ``status``, ...).

    Its renderer prints the tables; the ``key  value`` lines it returns close the output.

    Args:
        out: the console to print to.
        summary: the command's typed result.
    """
    rows = RENDERERS[type(summary)](out, summary)
    if rows:
        out.print(kv_table(rows))


def render_monitor(out: Console, summary: MonitorSummary) -> None:
    """Per prediction: drift (score and largest feature PSI, the top features), realized AUC."""
    for name, figures in summary.predictions.items():
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
                + (f" (the first closes {when(closes)} UTC)" if closes else "")
            )
        else:
            auc = f"{latest['auc']:.3f}" if latest["auc"] is not None else "n/a"
            bands = "  ".join(
                f"{b['band']}: {b['rate']:.1%} of {b['leads']:,}"
                for b in latest["bands"]
                if b["rate"] is not None
            )
            out.print(
                f"{name}: realized on leads scored {when(latest['scored_at'])}: AUC {auc}; "
                f"conversion by tier  {bands}"
            )
        impact_figures = figures.get("impact") or {}
        if impact_figures.get("note"):
            out.print(f"{name}: impact not measured: {impact_figures['note']}", markup=False)
        elif impact_figures:
            index, lift = impact_figures.get("adoption_index"), impact_figures.get("top_tier_lift")
            out.print(
                f"{name}: adoption index {'-' if index is None else f'{index:.2f}'}, top-tier "
                f"lift {'-' if lift is None else f'{lift:.2f}'} (`leadscore impact` for reps "
                "and tiers)",
                markup=False,
            )
