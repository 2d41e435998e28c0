"""How the CLI shows a job's result in a terminal: one small renderer per result type.

:func:`render_result` looks up the renderer of the result's type (:mod:`sync.results`) in
:data:`RENDERERS`; a job without a type gets :func:`render_generic` (its whole-number counts).
Each renderer prints its tables and returns the ``key  value`` lines of its summary; status, API
calls and seconds close every summary.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sync.results import (
    ImportSummary,
    MonitorSummary,
    PullSummary,
    PushSummary,
    ReportSummary,
    ScoreSummary,
    SegmentImportSummary,
    SetupSummary,
    Summary,
    SyncSummary,
    TrainSummary,
)
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


def fmt(value: Any) -> str:
    """A number as a terminal shows it: thousands separated, four decimals."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def when(value: Any) -> str:
    """A UTC time, short enough for a table cell (the year is in ``--json``)."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return f"{value:%m-%d %H:%M:%S}"
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


def _score(out: Console, s: ScoreSummary) -> Rows:
    rows: Rows = []
    for name, p in s.predictions.items():
        tiers = "  ".join(f"{t}:{n:,}" for t, n in p["tiers"].items())
        rows.append((name, f"{p['scored']:,} scored with {p['version']}   {tiers}"))
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
    PushSummary: _push,
    SetupSummary: _setup,
    SyncSummary: _sync,
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
