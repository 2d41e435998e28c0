"""The ``report`` job: the HTML report of every prediction's champion."""

from __future__ import annotations

from pathlib import Path

from connector.errors import ConfigError, LeadscoreError
from connector.store import utc_now
from scoring.registry import (
    load_challenger,
    load_champion,
)
from scoring.report import ReportInput, Section, build_report
from sync.config import Settings
from sync.impact import report_parts
from sync.monitor_checks import (
    monitoring_report_body,
)
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded
from sync.stages.freshness import prediction_as_of


def run_report(
    settings: Settings, *, out: Path | None = None, reporter: Reporter = SILENT
) -> JobResult:
    """Write the self-contained HTML report of every prediction's champion.

    Args:
        settings: configuration.
        out: the HTML file (default: ``report.html`` beside the config file).
        reporter: progress.

    Returns:
        ``path`` and the predictions in the report.
    """
    path = (
        Path(out)
        if out
        else ((settings.path.parent if settings.path else Path.cwd()) / "report.html")
    )
    _check_writable(path)
    with (
        open_store(settings, "report", reporter=reporter) as store,
        recorded(store, "report") as result,
    ):
        inputs = []
        monitoring: dict[str, str] = {}
        impact: dict[str, str | None] = {}
        for spec in settings.predictions:
            champion = load_champion(settings.store.models_dir, spec.name)
            if champion is None:
                reporter.stage(f"{spec.name}: no model yet; left out of the report")
                continue
            reporter.stage(f"{spec.name}: measuring drift and realized performance")
            as_of = prediction_as_of(store, settings, spec) or utc_now()
            monitoring[spec.name] = monitoring_report_body(store, settings, spec, as_of)
            explorer, impact[spec.name] = report_parts(store, settings, spec)
            reporter.stage(f"{spec.name}: drawing the report of model {champion.version}")
            inputs.append(
                ReportInput(
                    name=spec.name,
                    metadata=champion.metadata,
                    holdout=champion.holdout(),
                    scores=store.latest_scores(spec.name),
                    challenger=(
                        c.metadata
                        if (c := load_challenger(settings.store.models_dir, spec.name))
                        else None
                    ),
                    explorer=explorer,
                )
            )
        if not inputs:
            raise LeadscoreError(
                "no prediction has a trained model", hint="run `leadscore train` first"
            )
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            build_report(
                inputs,
                extra_sections=[
                    lambda report: Section(
                        "Monitoring: drift and realized conversion", monitoring[report.name]
                    ),
                    lambda report: (
                        Section("Impact: is the score used, and does it pay?", body)
                        if (body := impact.get(report.name))
                        else None
                    ),
                ],
            ),
            encoding="utf-8",
        )
        tmp.replace(path)
        result.counts = {"path": str(path), "predictions": [i.name for i in inputs]}
    return result


def _check_writable(path: Path) -> None:
    """Make the report's folder (missing folders are created) or say why it cannot be written.

    Checked before the report is drawn, which takes a while.

    Raises:
        ConfigError: the folder cannot be created or written to.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        probe = path.with_suffix(path.suffix + ".tmp")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"report --out {path}: cannot write there ({exc.strerror or type(exc).__name__})",
            hint="pick a file in a folder you can write to",
        ) from None
