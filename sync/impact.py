"""The ``impact`` stage: is the score used, and does it pay (per rep, team and overall).

Reads what sales did from the store (:mod:`connector.store.sales_activity`), computes adoption,
speed to lead and realized value (:mod:`scoring.impact`), and gives the headline figures to
``/metrics``, the realized-lift alert and the report sections.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from connector.errors import LeadscoreError
from connector.store import Store, utc_now
from connector.store.sales_activity import SalesActivity, read_sales_activity, recent_arrivals
from scoring.explorer import ExplorerInput
from scoring.impact import ImpactResult, compute_impact, touches_from_tasks
from scoring.impact_report import impact_section
from scoring.registry import load_champion
from sync.alerts import Condition
from sync.capacity import all_cutoffs, stored_capacity_tiers
from sync.config import PredictionConfig, Settings

DEFAULT_DAYS = 90
"""Period of ``leadscore impact`` without ``--since``."""


def impact_predictions(settings: Settings) -> list[PredictionConfig]:
    """The predictions impact applies to: binary ones with tiers."""
    return [p for p in settings.predictions if p.task == "binary" and p.tiers]


def measure_impact(
    store: Store,
    settings: Settings,
    spec: PredictionConfig,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ImpactResult:
    """Adoption and impact of one prediction's scores over a period.

    Args:
        store: the store.
        settings: configuration.
        spec: a binary prediction with tiers.
        since: start of the period (default: ``DEFAULT_DAYS`` before ``until``).
        until: end of the period (default: the newest pulled lead or task, at most how far
            Lead and Task are pulled).

    Returns:
        The figures (with notes on what could not be measured).

    Raises:
        ConfigError: a stream or field impact needs is not pulled.
    """
    activity = read_sales_activity(store, spec.name)
    end = until or _data_end(store, activity)
    start = since or end - timedelta(days=DEFAULT_DAYS)
    window = spec.label.within_days if spec.label.event else 30
    result = compute_impact(
        activity.leads,
        touches_from_tasks(activity.tasks, activity.leads),
        activity.scores,
        tier_order=[*spec.tiers, spec.lowest_tier],
        since=start,
        until=end,
        opportunities=activity.opportunities,
        users=activity.users,
        window_days=int(window or 30),
    )
    result.notes[:0] = activity.notes
    return result


def _data_end(store: Store, activity: SalesActivity) -> datetime:
    """Where the pulled data ends: its newest lead or task, at most the pull's horizon."""
    pulled = store.synced_through(["Lead", "Task"]) or utc_now()
    newest = max(
        (
            pd.Timestamp(frame["created_at"].max())
            for frame in (activity.leads, activity.tasks)
            if len(frame) and pd.notna(frame["created_at"].max())
        ),
        default=None,
    )
    if newest is None:
        return pulled
    return min(pulled, newest.to_pydatetime() + timedelta(seconds=1))


def headline(result: ImpactResult) -> dict[str, float | None]:
    """The figures ``/metrics`` exposes and the alert reads (None when not measured)."""
    top = result.top[0] if result.top else None
    speed = next((r for r in result.speed if r["tier"] == top), {})
    realized = next((r for r in result.realized if r["tier"] == top), {})
    return {
        "adoption_index": result.overall.get("adoption_index"),
        "out_of_rank_share": result.overall.get("out_of_rank_share"),
        "top_tier_lift": result.lift.get("lift"),
        "top_tier_lift_low": result.lift.get("low"),
        "top_tier_within_24h": speed.get("within_24h"),
        "top_tier_conversion": realized.get("rate"),
        "value_ratio": result.value.get("ratio"),
    }


RECENT_DAYS = 28
"""Arrivals the threshold explorer's daily figures come from."""


def report_parts(
    store: Store, settings: Settings, spec: PredictionConfig
) -> tuple[ExplorerInput | None, str | None]:
    """What the model report adds for one prediction: explorer input and the impact section.

    Both cover the time up to where the pulled data ends (the newest lead or task).

    Args:
        store: the store.
        settings: configuration.
        spec: the prediction.

    Returns:
        ``(explorer input or None, impact HTML or None)``; None where it does not apply.
    """
    if spec not in impact_predictions(settings):
        return None, None
    recent = recent_arrivals(store, spec.name, RECENT_DAYS)
    champion = load_champion(settings.store.models_dir, spec.name)
    capacity = stored_capacity_tiers(champion) if champion and spec.capacity else None
    tiers = dict(spec.tiers) if spec.tier_by == "probability" else {}
    if capacity is not None:
        tiers = all_cutoffs(spec, capacity)
    explorer = ExplorerInput(recent.to_numpy(), float(RECENT_DAYS) if len(recent) else 0.0, tiers)
    try:
        section = impact_section(measure_impact(store, settings, spec), capacity)
    except LeadscoreError as exc:
        section = f'<p class="note">Not measured: {html.escape(str(exc))}</p>'
    return explorer, section


def monitor_figures(store: Store, settings: Settings, spec: PredictionConfig) -> dict[str, Any]:
    """The impact headline of one prediction for the ``monitor`` job (its counts, ``/metrics``).

    Measured over the ``DEFAULT_DAYS`` days before the pulled data ends.

    Args:
        store: the store.
        settings: configuration.
        spec: the prediction.

    Returns:
        :func:`headline` figures, or ``{"note": why not}`` when impact cannot be measured.
    """
    if spec not in impact_predictions(settings):
        return {"note": "impact is measured for binary predictions with tiers"}
    try:
        return headline(measure_impact(store, settings, spec))
    except LeadscoreError as exc:
        return {"note": str(exc)}


def lift_conditions(counts: dict[str, Any], settings: Settings) -> list[Condition]:
    """The realized-lift alert: the top tier converts too little more than the average lead.

    It fires when the top tier's realized lift is below ``monitor.min_top_tier_lift``.

    Args:
        counts: the monitor job's counts (``predictions.<name>.impact``).
        settings: configuration.

    Returns:
        One condition per prediction whose lift was measured (none when the alert is off).
    """
    limit = settings.monitor.min_top_tier_lift
    if limit is None:
        return []
    out = []
    for name, figures in counts.get("predictions", {}).items():
        lift = (figures.get("impact") or {}).get("top_tier_lift")
        if lift is None:
            continue
        active = lift < limit
        out.append(
            Condition(
                f"lift:{name}",
                active,
                f"{name}: the top tier converts only {lift:.2f} times as often as the average lead",
                f"realized lift {lift:.2f} (monitor.min_top_tier_lift = {limit:g}); check the "
                "realized conversion by tier in `leadscore impact` and consider retraining"
                if active
                else f"{name}: realized lift of the top tier {lift:.2f}",
            )
        )
    return out
