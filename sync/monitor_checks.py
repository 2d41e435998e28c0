"""Per prediction, the figures the ``monitor`` job records: drift and realized performance.

:func:`sync.jobs.run_monitor` calls :func:`monitor_prediction` under the store's run lock; the
computations themselves are in :mod:`scoring.production_metrics`.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from connector.store import Store, utc_now
from connector.store.runs import (
    append_drift,
    append_realized,
    drift_history,
    evaluated_score_runs,
    realized_history,
)
from scoring.production_metrics import (
    measure_drift,
    outcomes_after,
    population,
    realized_performance,
)
from scoring.registry import load_champion
from sync.alerts import Condition
from sync.config import PredictionConfig, Settings


def _drift_level(report: Any, settings: Settings) -> str:
    worst = max(report.score_psi, report.max_feature_psi)
    if worst >= settings.monitor.psi_alert:
        return "alert"
    return "warn" if worst >= settings.monitor.psi_warn else "ok"


def _written_ids(store: Store, spec: PredictionConfig) -> set[str] | None:
    """Records whose score field Salesforce confirmed (None: the prediction writes nowhere)."""
    if spec.salesforce is None:
        return None
    field_name = spec.salesforce.fields.get("score") or next(iter(spec.salesforce.fields.values()))
    return store.confirmed_record_ids(spec.salesforce.object, field_name)


def monitor_prediction(
    store: Store, settings: Settings, spec: PredictionConfig, as_of: datetime, max_runs: int
) -> dict[str, Any]:
    """Drift and realized performance of one prediction (the body of the ``monitor`` job).

    Args:
        store: the store (under the run lock).
        settings: configuration.
        spec: the prediction.
        as_of: how far the store is complete.
        max_runs: most scoring runs evaluated in one go.

    Returns:
        ``drift`` (level ``ok|warn|alert|unavailable`` and PSIs) and ``realized``.
    """
    out: dict[str, Any] = {"drift": None, "realized": None}
    champion = load_champion(settings.store.models_dir, spec.name)
    latest = store.latest_scores(spec.name)
    if champion is None or latest.empty:
        out["drift"] = {"level": "unavailable", "reason": "no model or no scores yet"}
    elif "monitoring_profile" not in champion.metadata:
        out["drift"] = {
            "level": "unavailable",
            "reason": f"model {champion.version} has no reference profile; retrain it to "
            "monitor drift",
        }
    else:
        scored_at = pd.Timestamp(latest["scored_at"].max()).to_pydatetime()
        data, _, _ = population(
            store.read_connection(), spec, champion.load(), champion.metadata, at=scored_at
        )
        report = measure_drift(
            champion.metadata["monitoring_profile"], data, latest["probability"].to_numpy()
        )
        level = _drift_level(report, settings)
        append_drift(
            store,
            {
                "prediction": spec.name,
                "measured_at": utc_now(),
                "model_version": champion.version,
                "scored_at": scored_at,
                "rows": report.rows,
                "score_psi": report.score_psi,
                "max_feature_psi": report.max_feature_psi,
                "max_feature": report.max_feature,
                "features": report.features,
            },
        )
        out["drift"] = {
            "level": level,
            "model_version": champion.version,
            "scored_at": scored_at,
            "rows": report.rows,
            "reference_rows": report.reference_rows,
            "score_psi": round(report.score_psi, 4),
            "max_feature": report.max_feature,
            "max_feature_psi": round(report.max_feature_psi, 4),
            "features": {k: round(v, 4) for k, v in report.features.items()},
            "score_bins": report.score_bins,
        }
    # Realized performance: the last scoring run of each day whose label window has closed. It is
    # defined for binary predictions of an event ("converted within 30 days of scoring").
    if spec.task != "binary" or not spec.label.event:
        out["realized"] = {"unavailable": "realized performance needs a binary event label"}
        return out
    days = int(spec.label.within_days)
    # score_run lists every finished run, also those whose rows retention thinned away
    runs = store.query_df(
        """SELECT score_run_id, scored_at, model_version FROM (
             SELECT score_run_id, scored_at, model_version,
                    row_number() OVER (PARTITION BY CAST(scored_at AS DATE)
                                       ORDER BY score_run_id DESC) AS nth
             FROM score_run WHERE prediction = ? AND NOT coalesce(partial, false))
           WHERE nth = 1 AND scored_at + to_days(CAST(? AS INTEGER)) <= ?
           ORDER BY scored_at""",
        [spec.name, days, as_of],
    )
    done = evaluated_score_runs(store, spec.name)
    pending = [r for r in runs.itertuples(index=False) if int(r.score_run_id) not in done]
    written = _written_ids(store, spec)
    bands = [*spec.tiers, spec.lowest_tier]
    rows = []
    for run in pending[-max_runs:]:
        scores = store.scores_at(spec.name, pd.Timestamp(run.scored_at).to_pydatetime())
        if written is not None:
            scores = scores[scores["entity_id"].isin(written)]
        at = pd.Timestamp(run.scored_at).to_pydatetime()
        outcomes = outcomes_after(store.read_connection(), spec, at=at)
        figures = realized_performance(scores, outcomes, bands)
        rows.append(
            {
                "score_run_id": int(run.score_run_id),
                "scored_at": at,
                "model_version": run.model_version,
                "window_days": days,
                **figures,
            }
        )
    append_realized(store, spec.name, rows)
    history = realized_history(store, spec.name)
    out["realized"] = {
        "evaluated": len(rows),
        "runs": len(history),
        "latest": history[-1] if history else None,
        "next_window_closes": (
            None
            if history or latest.empty
            else pd.Timestamp(latest["scored_at"].min()).to_pydatetime() + timedelta(days=days)
        ),
    }
    return out


def monitor_conditions(counts: dict[str, Any], settings: Settings) -> list[Condition]:
    """Drift alert conditions from a monitor run.

    Args:
        counts: the monitor job's counts.
        settings: configuration (thresholds).

    Returns:
        One condition per prediction whose drift could be measured.
    """
    out = []
    for name, figures in counts.get("predictions", {}).items():
        drift = figures.get("drift") or {}
        if drift.get("level") in (None, "unavailable"):
            continue
        active = drift["level"] == "alert"
        out.append(
            Condition(
                f"drift:{name}",
                active,
                f"{name}: the scored population drifted from the training data",
                (
                    f"score PSI {drift['score_psi']:.3f}, largest feature shift "
                    f"{_readable(drift['max_feature'])} PSI {drift['max_feature_psi']:.3f} "
                    f"(monitor.psi_alert = {settings.monitor.psi_alert}); consider retraining"
                )
                if active
                else f"score PSI {drift['score_psi']:.3f}",
            )
        )
    return out


def monitoring_page(store: Store, settings: Settings, counts: dict[str, Any]) -> str:
    """A standalone HTML page of a monitor run: drift and realized performance per prediction.

    Args:
        store: the store (drift and realized history).
        settings: configuration.
        counts: the monitor job's counts.

    Returns:
        The page (figures embedded).
    """
    from scoring.production_report import monitoring_section, standalone_page

    sections = []
    for spec in settings.predictions:
        figures = counts.get("predictions", {}).get(spec.name, {})
        sections.append(
            monitoring_section(
                spec.name,
                figures.get("drift"),
                drift_history(store, spec.name),
                realized_history(store, spec.name),
                psi_warn=settings.monitor.psi_warn,
                psi_alert=settings.monitor.psi_alert,
            )
        )
    return standalone_page("leadscore monitoring", sections)


def monitoring_report_body(
    store: Store, settings: Settings, spec: PredictionConfig, as_of: datetime
) -> str:
    """Drift and realized performance of one prediction, measured now, for the model report.

    Measuring records a drift row and any newly closed realized-performance windows, exactly as
    the ``monitor`` job does.

    Args:
        store: the store (under the run lock).
        settings: configuration (``[monitor]`` thresholds).
        spec: the prediction.
        as_of: how far the store is complete.

    Returns:
        An HTML fragment; a note when nothing could be measured.
    """
    from scoring.production_report import monitoring_body

    try:
        figures = monitor_prediction(store, settings, spec, as_of, max_runs=60)
    except ValueError as exc:
        return f'<p class="note">Not measured: {html.escape(str(exc))}</p>'
    return monitoring_body(
        figures.get("drift"),
        drift_history(store, spec.name),
        realized_history(store, spec.name),
        psi_warn=settings.monitor.psi_warn,
        psi_alert=settings.monitor.psi_alert,
    )


def _readable(feature: str | None) -> str:
    """A feature as reps read it (``Seniority__c`` -> ``Seniority``)."""
    from scoring.explain import feature_label  # scoring (catboost) only when drift is reported

    return feature_label(feature) if feature else "none"
