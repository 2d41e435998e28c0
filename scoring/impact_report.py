"""Adoption and impact as an HTML section (plots embedded as PNG) and as terminal lines.

:func:`impact_section` is the block ``leadscore impact --html``, ``report`` and ``monitor --html``
show; :func:`summary_lines` the short aligned text of ``leadscore impact``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scoring.impact import ImpactResult
from scoring.report import MODEL_COLOR, _e, _figure, _png, _table
from scoring.tiers import CapacityTiers

REALIZED_COLOR = "#1a7f37"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _interval(low: float | None, high: float | None, fmt: Any = _pct) -> str:
    return "-" if low is None or high is None else f"{fmt(low)} to {fmt(high)}"


def headline(result: ImpactResult) -> str:
    """The one-sentence answer: is the score used, and does it pay."""
    overall = result.overall
    top = "/".join(result.top)
    parts = []
    if overall.get("adoption_index") is not None:
        parts.append(
            f"Reps picked {top} leads {overall['adoption_index']:.1f} times as often as a random "
            f"pick from their queue would ({overall['first_touches']:,} first touches)."
        )
    else:
        parts.append(f"No adoption figure: {overall.get('note') or 'no first touches'}.")
    lift = result.lift
    if lift.get("lift") is not None:
        parts.append(
            f"{top} leads converted {lift['lift']:.1f} times as often as the average lead "
            f"(95 % interval {lift['low']:.1f} to {lift['high']:.1f})."
        )
    value = result.value
    parts.append(value.get("sentence") or f"Value: {value.get('reason')}.")
    return " ".join(parts)


def _adoption_plot(reps: list[dict[str, Any]]) -> str | None:
    shown = [r for r in reps if r.get("adoption_index") is not None]
    if not shown:
        return None
    shown.sort(key=lambda r: r["adoption_index"])
    fig, ax = _figure(6.2, max(2.0, 0.32 * len(shown) + 1))
    y = np.arange(len(shown))
    index = np.array([r["adoption_index"] for r in shown])
    low = np.array(
        [
            r["adoption_low"] if r["adoption_low"] is not None else v
            for r, v in zip(shown, index, strict=True)
        ]
    )
    high = np.array(
        [
            r["adoption_high"] if r["adoption_high"] is not None else v
            for r, v in zip(shown, index, strict=True)
        ]
    )
    ax.barh(y, index, color=MODEL_COLOR, alpha=0.85)
    ax.errorbar(index, y, xerr=[index - low, high - index], fmt="none", ecolor="#333", capsize=3)
    ax.axvline(1.0, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_yticks(y, [str(r["name"]) for r in shown])
    ax.set_xlabel("adoption index (1 = the score makes no difference to whom they call first)")
    ax.set_title("Do reps call top-tier leads first?")
    return _png(fig)


def _realized_plot(rows: list[dict[str, Any]]) -> str | None:
    shown = [r for r in rows if r.get("rate") is not None]
    if not shown:
        return None
    fig, ax = _figure()
    x = np.arange(len(shown))
    rate = np.array([r["rate"] for r in shown])
    low = np.array([r["rate_low"] for r in shown])
    high = np.array([r["rate_high"] for r in shown])
    predicted = np.array([np.nan if r["predicted"] is None else r["predicted"] for r in shown])
    ax.bar(x - 0.2, predicted, width=0.4, color=MODEL_COLOR, alpha=0.85, label="predicted")
    ax.bar(x + 0.2, rate, width=0.4, color=REALIZED_COLOR, alpha=0.85, label="realized")
    ax.errorbar(x + 0.2, rate, yerr=[rate - low, high - rate], fmt="none", ecolor="#333", capsize=3)
    ax.set_xticks(x, [f"tier {r['tier']}" for r in shown])
    ax.set_ylabel("conversion rate")
    ax.set_title("Predicted and realized conversion by tier (95 % interval)")
    ax.legend(frameon=False)
    return _png(fig)


def _speed_plot(rows: list[dict[str, Any]]) -> str | None:
    shown = [r for r in rows if r.get("median_hours") is not None]
    if not shown:
        return None
    fig, ax = _figure(6.2, 3.0)
    x = np.arange(len(shown))
    ax.bar(x, [r["median_hours"] for r in shown], color=MODEL_COLOR, alpha=0.85)
    ax.set_xticks(x, [f"tier {r['tier']}" for r in shown])
    ax.set_ylabel("hours")
    ax.set_title("Median time from response to first touch")
    return _png(fig)


def impact_section(result: ImpactResult, capacity: CapacityTiers | None = None) -> str:
    """The adoption and impact section as an HTML fragment.

    Args:
        result: from ``scoring.impact.compute_impact``.
        capacity: capacity-based tiers in force or suggested, explained under the tiers.

    Returns:
        HTML (plots embedded).
    """
    parts = [
        f"<p>{_e(headline(result))}</p>",
        f'<p class="note">Period {_e(result.since[:10])} to {_e(result.until[:10])}; '
        "a lead counts once it was scored and workable. Realized conversion counts leads whose "
        "conversion window has closed.</p>",
    ]
    parts += [f'<p class="warn">{_e(note)}</p>' for note in result.notes]
    for plot in (_adoption_plot(result.reps), _realized_plot(result.realized)):
        if plot:
            parts.append(plot)
    parts.append("<h4>By rep</h4>")
    parts.append(
        _table(
            [
                {
                    **r,
                    "interval": _interval(r["adoption_low"], r["adoption_high"], _ratio),
                    "conversion": _pct(r["matured_rate"]),
                }
                for r in result.reps
            ],
            [
                ("name", "rep"),
                ("team", "team"),
                ("first_touches", "first touches"),
                ("adoption_index", "adoption index"),
                ("interval", "95 % interval"),
                ("out_of_rank_share", "out of rank order"),
                ("conversion", "conversion of their leads"),
                ("note", "note"),
            ],
            digits=2,
            formats={
                "out_of_rank_share": _pct,
                "interval": str,
                "conversion": str,
                "note": lambda v: "" if v is None else _e(v),
            },
        )
    )
    if result.teams:
        parts.append("<h4>By team</h4>")
        parts.append(
            _table(
                result.teams,
                [
                    ("team", "team"),
                    ("first_touches", "first touches"),
                    ("adoption_index", "adoption index"),
                    ("out_of_rank_share", "out of rank order"),
                ],
                digits=2,
                formats={"out_of_rank_share": _pct},
            )
        )
    parts.append("<h4>By tier</h4>")
    speed = {r["tier"]: r for r in result.speed}
    parts.append(
        _table(
            [
                {
                    **r,
                    "interval": _interval(r["rate_low"], r["rate_high"]),
                    "median_hours": speed.get(r["tier"], {}).get("median_hours"),
                    "within_24h": speed.get(r["tier"], {}).get("within_24h"),
                }
                for r in result.realized
            ],
            [
                ("tier", "tier"),
                ("leads", "leads"),
                ("predicted", "predicted"),
                ("rate", "realized"),
                ("interval", "95 % interval"),
                ("won", "won deals"),
                ("won_amount", "won amount"),
                ("median_hours", "median hours to first touch"),
                ("within_24h", "touched within 24 h"),
            ],
            formats={
                "predicted": _pct,
                "rate": _pct,
                "interval": str,
                "won_amount": lambda v: "-" if v is None else f"{v:,.0f}",
                "median_hours": lambda v: "-" if v is None else f"{v:.1f}",
                "within_24h": _pct,
            },
        )
    )
    plot = _speed_plot(result.speed)
    if plot:
        parts.append(plot)
    if result.calibration:
        parts.append("<h4>Calibration in the field, by week</h4>")
        parts.append(
            _table(
                result.calibration,
                [
                    ("week", "week"),
                    ("leads", "leads"),
                    ("predicted", "predicted"),
                    ("rate", "realized"),
                ],
                formats={"predicted": _pct, "rate": _pct},
            )
        )
    if capacity is not None:
        parts.append("<h4>Capacity-based tiers</h4>")
        parts.append(f"<p>{_e(capacity.explain())}</p>")
    return "".join(parts)


def summary_lines(result: ImpactResult) -> list[str]:
    """A short, aligned summary for the terminal (and logs).

    Args:
        result: the figures.

    Returns:
        Lines of text.
    """
    lines = [headline(result), ""]
    width = max([len(str(r["name"])) for r in result.reps] + [3])
    lines.append(
        f"{'rep':<{width}}  {'touches':>7}  {'adoption':>8}  {'95 % interval':>13}  "
        f"{'out of rank':>11}"
    )
    for r in result.reps:
        lines.append(
            f"{r['name']!s:<{width}}  {r['first_touches']:>7,}  {_ratio(r['adoption_index']):>8}  "
            f"{_interval(r['adoption_low'], r['adoption_high'], _ratio):>13}  "
            f"{_pct(r['out_of_rank_share']):>11}"
        )
    lines.append("")
    speed = {r["tier"]: r for r in result.speed}
    lines.append(
        f"{'tier':<4}  {'leads':>7}  {'predicted':>9}  {'realized':>8}  "
        f"{'95 % interval':>15}  {'won amount':>12}  {'<24 h':>6}"
    )
    for r in result.realized:
        lines.append(
            f"{r['tier']!s:<4}  {r['leads']:>7,}  {_pct(r['predicted']):>9}  "
            f"{_pct(r['rate']):>8}  {_interval(r['rate_low'], r['rate_high']):>15}  "
            f"{(r['won_amount'] or 0):>12,.0f}  "
            f"{_pct(speed.get(r['tier'], {}).get('within_24h')):>6}"
        )
    lines += [f"note: {note}" for note in result.notes]
    return lines
