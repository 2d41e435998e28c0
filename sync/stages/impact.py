"""The ``impact`` job: is the score used, and does it pay (``leadscore impact``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from connector.errors import LeadscoreError
from scoring.impact_report import impact_section
from scoring.production_report import standalone_page
from sync.config import Settings
from sync.impact import headline, impact_predictions, measure_impact
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded


def run_impact(
    settings: Settings,
    *,
    since: datetime | None = None,
    html_path: Path | None = None,
    prediction: str | None = None,
    reporter: Reporter = SILENT,
) -> JobResult:
    """Adoption, speed to lead and realized value of the scores (``leadscore impact``).

    Args:
        settings: configuration.
        since: start of the period (default: 90 days before the data's end).
        html_path: also write the figures as an HTML page here.
        prediction: only this prediction.
        reporter: progress.

    Returns:
        Per prediction, the figures of :class:`scoring.impact.ImpactResult` plus ``headline``
        (``artifacts`` holds the results themselves, for the terminal summary).
    """
    specs = [p for p in impact_predictions(settings) if prediction is None or p.name == prediction]
    if not specs:
        raise LeadscoreError(
            "no binary prediction with tiers to measure"
            + (f" named '{prediction}'" if prediction else ""),
            hint="impact compares tiers of a binary prediction with what sales did",
        )
    with (
        open_store(settings, "impact", reporter=reporter) as store,
        recorded(store, "impact") as result,
    ):
        out: dict[str, Any] = {}
        sections = []
        for spec in specs:
            reporter.stage(f"{spec.name}: first touches, adoption and realized conversion")
            figures = measure_impact(store, settings, spec, since=since)
            out[spec.name] = {"headline": headline(figures), **figures.to_dict()}
            result.artifacts[spec.name] = figures
            sections.append(f"<h2>{spec.name}</h2>{impact_section(figures)}")
        result.counts = {"predictions": out}
        if html_path is not None:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(
                standalone_page("leadscore impact: is the score used, and does it pay?", sections),
                encoding="utf-8",
            )
            result.counts["path"] = str(html_path)
    return result
