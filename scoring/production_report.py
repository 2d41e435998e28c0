"""The monitoring section of the HTML report: drift and realized performance, as HTML + PNG.

:func:`monitoring_section` returns a self-contained HTML fragment (figures embedded as base64
PNGs) that ``leadscore report`` can place among its sections; :func:`standalone_page` wraps
sections into a page for ``leadscore monitor --html``.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt
import pandas as pd

from scoring.explain import feature_label

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.25rem; margin-top: 2rem; } h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { padding: 0.2rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.psi-ok { color: #1a7f37; } .psi-warn { color: #9a6700; }
.psi-alert { color: #cf222e; font-weight: 600; }
.note { color: #555; font-size: 0.9rem; }
img { max-width: 100%; }
"""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _level(value: float, warn: float, alert: float) -> str:
    return "alert" if value >= alert else "warn" if value >= warn else "ok"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _drift_figures(drift: dict[str, Any], warn: float, alert: float) -> str:
    features = list(drift["features"].items())[:15]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = [feature_label(n) for n, _ in features][::-1]
    values = [v for _, v in features][::-1]
    colors = [
        {"ok": "#4c9a2a", "warn": "#d4a017", "alert": "#cf222e"}[_level(v, warn, alert)]
        for v in values
    ]
    axes[0].barh(names, values, color=colors)
    axes[0].axvline(warn, color="#d4a017", linestyle="--", linewidth=1)
    axes[0].axvline(alert, color="#cf222e", linestyle="--", linewidth=1)
    axes[0].set_title("PSI by feature (largest 15)")
    axes[0].tick_params(axis="y", labelsize=8)
    bins = drift.get("score_bins") or {}
    if bins.get("reference"):
        x = range(len(bins["reference"]))
        axes[1].bar([i - 0.2 for i in x], bins["reference"], width=0.4, label="training")
        axes[1].bar([i + 0.2 for i in x], bins["current"], width=0.4, label="now")
        axes[1].set_xlabel("score decile of the training population")
        axes[1].set_ylabel("share of leads")
        axes[1].legend(loc="lower right", framealpha=0.9)
    axes[1].set_title(f"Score distribution (PSI {drift['score_psi']:.3f})")
    fig.tight_layout()
    return _png(fig)


def _history_figure(history: pd.DataFrame, realized: list[dict[str, Any]], alert: float) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    if not history.empty:
        axes[0].plot(history["measured_at"], history["score_psi"], marker=".", label="score")
        axes[0].plot(
            history["measured_at"], history["max_feature_psi"], marker=".", label="largest feature"
        )
        axes[0].axhline(alert, color="#cf222e", linestyle="--", linewidth=1)
        axes[0].legend()
        first, last = history["measured_at"].min(), history["measured_at"].max()
        if first == last:  # one measurement: a few days around it, not matplotlib's years
            axes[0].set_xlim(first - pd.Timedelta(days=3), last + pd.Timedelta(days=3))
    axes[0].set_title("Drift over time (PSI)")
    if realized:
        when = [r["scored_at"] for r in realized]
        axes[1].plot(when, [r["auc"] for r in realized], marker="o", label="AUC")
        axes[1].set_ylim(0.4, 1.0)
        axes[1].legend()
    else:
        axes[1].text(0.5, 0.5, "no label window has closed yet", ha="center", va="center")
        axes[1].set_axis_off()
    axes[1].set_title("Realized AUC of written scores, by scoring date")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    return _png(fig)


def monitoring_section(
    prediction: str,
    drift: dict[str, Any] | None,
    drift_history: pd.DataFrame,
    realized: list[dict[str, Any]],
    *,
    psi_warn: float,
    psi_alert: float,
) -> str:
    """The monitoring section for one prediction, as an HTML fragment.

    Args:
        prediction: prediction name.
        drift: the latest drift figures (the monitor job's ``drift`` entry) or None.
        drift_history: ``measured_at, score_psi, max_feature_psi`` over time.
        realized: realized performance rows (``scored_at, leads, conversions, auc, bands``),
            oldest first.
        psi_warn: PSI flagged as a moderate shift.
        psi_alert: PSI that raises an alert.

    Returns:
        HTML (``<section>``) with tables and embedded PNG figures.
    """
    body = monitoring_body(drift, drift_history, realized, psi_warn=psi_warn, psi_alert=psi_alert)
    return f"<section><h2>Monitoring: {html.escape(prediction)}</h2>\n{body}\n</section>"


def monitoring_body(
    drift: dict[str, Any] | None,
    drift_history: pd.DataFrame,
    realized: list[dict[str, Any]],
    *,
    psi_warn: float,
    psi_alert: float,
) -> str:
    """The monitoring section's content, without its heading (the model report adds its own).

    Args:
        drift: the latest drift figures (the monitor job's ``drift`` entry) or None.
        drift_history: ``measured_at, score_psi, max_feature_psi`` over time.
        realized: realized performance rows, oldest first.
        psi_warn: PSI flagged as a moderate shift.
        psi_alert: PSI that raises an alert.

    Returns:
        HTML with tables and embedded PNG figures.
    """
    parts = ["<h3>Drift against the training population</h3>"]
    if not drift or drift.get("level") == "unavailable":
        reason = (drift or {}).get("reason", "no drift measured yet")
        parts.append(f'<p class="note">{html.escape(reason)}</p>')
    else:
        level = drift["level"]
        parts.append(
            f"<p>Model {html.escape(str(drift['model_version']))}, {drift['rows']:,} leads scored "
            f"at {drift['scored_at']} vs {drift['reference_rows']:,} at training. "
            f'Verdict: <span class="psi-{level}">{level}</span> '
            f"(PSI &ge; {psi_warn} moderate, &ge; {psi_alert} significant).</p>"
        )
        rows = [
            (
                "score",
                f'<span class="psi-{_level(drift["score_psi"], psi_warn, psi_alert)}">'
                f"{drift['score_psi']:.3f}</span>",
            )
        ]
        rows += [
            (
                html.escape(feature_label(name)),
                f'<span class="psi-{_level(v, psi_warn, psi_alert)}">{v:.3f}</span>',
            )
            for name, v in list(drift["features"].items())[:10]
        ]
        parts.append(_table(["measure", "PSI"], rows))
        parts.append(_drift_figures(drift, psi_warn, psi_alert))
    parts.append("<h3>Realized performance of written scores</h3>")
    if not realized:
        parts.append(
            '<p class="note">No scoring run has a closed label window yet: realized conversion '
            "appears once the first scores are older than the label window.</p>"
        )
    else:
        latest = realized[-1]
        auc = f"{latest['auc']:.3f}" if latest["auc"] is not None else "n/a (one class)"
        parts.append(
            f"<p>Leads scored on {latest['scored_at']:%Y-%m-%d} ({latest['leads']:,} leads, "
            f"{latest['conversions']:,} converted within {latest['window_days']} days): "
            f"AUC <b>{auc}</b>.</p>"
        )
        parts.append(
            _table(
                ["band", "leads", "converted", "conversion rate"],
                [
                    (
                        html.escape(b["band"]),
                        f"{b['leads']:,}",
                        f"{b['conversions']:,}",
                        f"{b['rate']:.1%}" if b["rate"] is not None else "-",
                    )
                    for b in latest["bands"]
                ],
            )
        )
    if not drift_history.empty or realized:
        parts.append(_history_figure(drift_history, realized, psi_alert))
    return "\n".join(parts)


def standalone_page(title: str, sections: Sequence[str]) -> str:
    """Wrap report sections in a self-contained HTML page.

    Args:
        title: page title.
        sections: HTML fragments.

    Returns:
        The page.
    """
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
