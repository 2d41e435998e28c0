"""The ``monitor`` job: drift and realized performance of each prediction."""

from __future__ import annotations

from sync.config import Settings
from sync.impact import monitor_figures
from sync.monitor_checks import (
    monitor_prediction,
    monitoring_page,
)
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded
from sync.stages.freshness import store_as_of


def run_monitor(
    settings: Settings, *, reporter: Reporter = SILENT, max_runs: int = 60
) -> JobResult:
    """Measure drift of each prediction and record the realized performance of past scores.

    Args:
        settings: configuration (``[monitor]`` thresholds).
        reporter: progress.
        max_runs: most scoring runs whose realized performance is computed in one go (the backlog
            is worked off over later runs).

    Returns:
        Per prediction: ``drift`` (level ``ok|warn|alert|unavailable``, score and feature PSIs),
        ``realized`` (latest conversion by band and AUC) and ``impact`` (adoption and realized
        lift headline, ``sync.impact.headline``).
    """
    with (
        open_store(settings, "monitor", reporter=reporter) as store,
        recorded(store, "monitor") as result,
    ):
        as_of = store_as_of(store, settings)
        out = {}
        for spec in settings.predictions:
            reporter.stage(f"{spec.name}: drift and realized performance")
            out[spec.name] = monitor_prediction(store, settings, spec, as_of, max_runs)
            out[spec.name]["impact"] = monitor_figures(store, settings, spec)
        result.counts = {"predictions": out}
    return result


def monitoring_html(settings: Settings, result: JobResult) -> str:
    """A standalone HTML page of a monitor run (``leadscore monitor --html``).

    Args:
        settings: configuration.
        result: the monitor job's result.

    Returns:
        The page.
    """
    with open_store(settings, "monitor report") as store:
        return monitoring_page(store, settings, result.counts)
