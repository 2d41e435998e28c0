"""The model report: a self-contained HTML page (plots embedded as PNG) for a sales leader.

The page is a list of sections per prediction, each built by a function ``(ReportInput) ->
Section | None`` in :data:`SECTIONS`; callers may add their own (e.g. monitoring) through
``build_report(..., extra_sections=...)``. Plots are drawn with matplotlib's ``Agg`` backend from
the holdout predictions stored with the model and the latest scores.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never open a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from scoring.explain import feature_label
from scoring.explorer import ExplorerInput, explorer_data, explorer_html
from scoring.tiers import to_score

MODEL_COLOR = "#1f5fa8"
BASELINE_COLORS = {
    "rule": "#c0392b",
    "logistic": "#7f8c8d",
    "ridge": "#7f8c8d",
    "tree": "#e08e0b",
    "prior": "#95a5a6",
    "mean": "#95a5a6",
    "bg_nbd": "#8e44ad",
}
BASELINE_NAMES = {
    "rule": "hand-written rule",
    "logistic": "logistic regression",
    "ridge": "ridge regression",
    "tree": "decision tree",
    "prior": "class shares",
    "mean": "average",
    "bg_nbd": "BG/NBD + Gamma-Gamma",
}


@dataclass(frozen=True)
class ReportInput:
    """What the report of one prediction is drawn from.

    Attributes:
        name: prediction name.
        metadata: the champion's metadata.
        holdout: the champion's holdout predictions (None for models stored without them).
        scores: the latest scores (``score_history``), possibly empty.
        challenger: the challenger's metadata, if there is one.
        explorer: recent arrivals and tier cut-offs for the threshold explorer.
    """

    name: str
    metadata: dict[str, Any]
    holdout: pd.DataFrame | None
    scores: pd.DataFrame | None = None
    challenger: dict[str, Any] | None = None
    explorer: ExplorerInput | None = None

    @property
    def task(self) -> str:
        """The task."""
        return str(self.metadata.get("task", "binary"))


@dataclass(frozen=True)
class Section:
    """One block of the page.

    Attributes:
        title: heading.
        body: HTML.
    """

    title: str
    body: str


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _figure(width: float = 6.2, height: float = 3.6) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25)
    return fig, ax


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def _times(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _table(
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str]],
    digits: int = 3,
    formats: dict[str, Callable[[Any], str]] | None = None,
) -> str:
    formats = formats or {}
    head = "".join(f"<th>{_e(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{formats[key](r.get(key)) if key in formats else _fmt(r.get(key), digits)}</td>"
            for key, _ in columns
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _baseline_columns(holdout: pd.DataFrame) -> list[str]:
    return [c.removeprefix("baseline_") for c in holdout.columns if c.startswith("baseline_")]


def _entity_word(report: ReportInput) -> str:
    return f"{report.metadata.get('entity', 'record')}s"


# -- sections ---------------------------------------------------------------------------------


def lift_sentence(
    metrics: dict[str, Any], words: str, *, bold: Callable[[str], str] = str
) -> str | None:
    """The report's lift sentence: the top 10 % by score against the average, and the top 30 %.

    Args:
        metrics: a binary model's holdout metrics with their tables (``metadata["metrics"]``).
        words: what the records are (``leads``).
        bold: how a figure is emphasised (HTML in the report, nothing on a terminal).

    Returns:
        The sentence, or None without the decile table.
    """
    deciles = metrics.get("tables", {}).get("deciles", [])
    if not deciles:
        return None
    top = deciles[0]
    rate, average = f"{top['actual']:.0%}", f"{metrics.get('positive_rate', 0):.0%}"
    lift = f"{top['lift']:.1f}x"
    gain = f"{deciles[min(2, len(deciles) - 1)]['cumulative_gain']:.0%}"
    return (
        f"On {metrics.get('n', 0):,} held-out {words}, the top 10% by score had an outcome rate "
        f"of {bold(rate)}, against {bold(average)} overall: {bold(lift)} the average. "
        f"The top 30% hold {bold(gain)} of all positive outcomes."
    )


def section_summary(report: ReportInput) -> Section:
    """What the model does, in plain words, and how it compares with the baselines."""
    meta = report.metadata
    m = meta.get("metrics", {})
    split = meta.get("split", {})
    test = split.get("test", {})
    words = _entity_word(report)
    lines = []
    if report.task == "binary":
        lift = lift_sentence(m, words, bold=lambda text: f"<b>{text}</b>")
        if lift:
            lines.append(lift)
        lines.append(
            f"Ranking quality (AUC, 0.5 is a coin flip, 1.0 is perfect): <b>{_fmt(m.get('auc'))}"
            "</b>."
        )
    elif report.task == "multiclass":
        lines.append(
            f"On {m.get('n', 0):,} held-out {words}, the model names the right class "
            f"<b>{_fmt(m.get('accuracy'))}</b> of the time (macro F1 {_fmt(m.get('macro_f1'))})."
        )
    else:
        lines.append(
            f"On {m.get('n', 0):,} held-out {words}, predictions are off by "
            f"<b>{_fmt(m.get('mae'), 2)}</b> on average (RMSE {_fmt(m.get('rmse'), 2)}, "
            f"R&sup2; {_fmt(m.get('r2'))})."
        )
    if split.get("method") == "time" and test.get("from"):
        lines.append(
            f"The holdout is the newest data ({_e(str(test['from'])[:10])} to "
            f"{_e(str(test['to'])[:10])}); the model never saw it while training."
        )
    else:
        lines.append("The holdout is a random, stratified sample the model never saw.")
    deployed = meta.get("deployed", {})
    if deployed.get("reason"):
        lines.append(f"Model choice: <b>{_e(deployed.get('model'))}</b>. {_e(deployed['reason'])}.")
    gate = meta.get("gate")
    if gate and gate.get("reason") == "no champion yet":
        # this model is the champion: say how it got there, not what was true before it
        lines.append(
            "Quality gate: the first model of this prediction; it became the champion without a "
            "predecessor to beat (later models must beat it on their holdout)."
        )
    elif gate and gate.get("reason"):
        lines.append(f"Quality gate: {_e(gate['reason'])}.")
    rates = tier_conversion(report)
    if rates:
        parts = ", ".join(f"{_e(r['tier'])} <b>{r['rate']:.0%}</b>" for r in rates)
        lines.append(
            f"Outcome rate by tier on the held-out {words} (tiers by the current cut-offs): "
            f"{parts}."
        )
    items = "".join(f"<li>{line}</li>" for line in lines)
    warnings = "".join(f"<li>{_e(w)}</li>" for w in meta.get("warnings", []))
    body = f"<ul>{items}</ul>"
    if warnings:
        body += f'<div class="warn"><b>Warnings</b><ul>{warnings}</ul></div>'
    if report.challenger:
        ch = report.challenger
        body += (
            f'<p class="note">A challenger ({_e(ch.get("version"))}) is waiting: '
            f"{_e((ch.get('gate') or {}).get('reason', ''))}.</p>"
        )
    facts = [
        ("version", meta.get("version")),
        ("trained on", f"{split.get('train', {}).get('n', 0):,} examples"),
        ("data as of", (meta.get("as_of") or "-")[:16]),
        ("config hash", meta.get("config_hash")),
        ("training time", f"{meta.get('seconds', 0):.1f} s"),
    ]
    body += (
        '<p class="facts">'
        + " &middot; ".join(f"{_e(k)}: <b>{_e(v)}</b>" for k, v in facts)
        + "</p>"
    )
    return Section("Summary", body)


def section_baselines(report: ReportInput) -> Section:
    """Model and baselines side by side on the same holdout."""
    meta = report.metadata
    columns = {
        "binary": [
            ("auc", "AUC"),
            ("pr_auc", "PR-AUC"),
            ("log_loss", "log loss"),
            ("brier", "Brier"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "F1"),
        ],
        "multiclass": [
            ("accuracy", "accuracy"),
            ("macro_f1", "macro F1"),
            ("log_loss", "log loss"),
        ],
        "regression": [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²")],
    }[report.task]
    rows = [{"name": "leadscore model", **meta.get("metrics", {})}]
    for name, values in meta.get("baselines", {}).items():
        rows.append({"name": BASELINE_NAMES.get(name, name), **values})
    text = (
        "<p>Every row is scored on the same held-out examples. A model worth using beats "
        "every simple alternative; higher AUC / PR-AUC / F1 / R² and lower log loss / Brier / "
        "errors are better.</p>"
    )
    threshold = meta.get("metrics", {}).get("threshold")
    if report.task == "binary" and threshold is not None:
        text += f"<p>Precision, recall and F1 use the threshold {threshold:.3f}.</p>"
    digits = 2 if report.task == "regression" else 3
    return Section(
        "Model vs. simple alternatives", text + _table(rows, [("name", ""), *columns], digits)
    )


def section_lift(report: ReportInput) -> Section | None:
    """Outcome rate by score decile and the cumulative gain curve."""
    deciles = report.metadata.get("metrics", {}).get("tables", {}).get("deciles", [])
    if report.task != "binary" or not deciles:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    overall = report.metadata["metrics"].get("positive_rate") or 0
    x = [d["decile"] for d in deciles]
    ax1.bar(x, [d["actual"] for d in deciles], color=MODEL_COLOR)
    ax1.axhline(overall, color="#c0392b", linestyle="--", label=f"average {overall:.0%}")
    ax1.set_xticks(x)
    ax1.set_xlabel("score decile (1 = top 10% of scores)")
    ax1.set_ylabel("outcome rate")
    ax1.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax1.set_title("Outcome rate by score decile")
    ax1.legend(frameon=False)
    share = np.concatenate(
        [[0], np.cumsum([d["n"] for d in deciles]) / sum(d["n"] for d in deciles)]
    )
    gain = np.concatenate([[0], [d["cumulative_gain"] for d in deciles]])
    ax2.plot(share, gain, marker="o", color=MODEL_COLOR, label="leadscore model")
    if report.holdout is not None:
        y = report.holdout["label"].to_numpy(dtype=float)
        for name in _baseline_columns(report.holdout):
            p = report.holdout[f"baseline_{name}"].to_numpy(dtype=float)
            order = np.argsort(-p, kind="stable")
            curve = np.concatenate([[0], np.cumsum(y[order]) / max(y.sum(), 1)])
            ax2.plot(
                np.linspace(0, 1, len(curve)),
                curve,
                color=BASELINE_COLORS.get(name, "gray"),
                linewidth=1,
                label=BASELINE_NAMES.get(name, name),
            )
    ax2.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1, label="random order")
    ax2.set_xlabel("share of records contacted, best scores first")
    ax2.set_ylabel("share of all positive outcomes")
    ax2.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax2.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax2.set_title("Cumulative gain")
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    table = _table(
        deciles,
        [
            ("decile", "decile"),
            ("n", "records"),
            ("min_score", "lowest score"),
            ("actual", "outcome rate"),
            ("lift", "lift"),
            ("cumulative_gain", "cumulative gain"),
        ],
        formats={
            "min_score": _pct,
            "actual": _pct,
            "lift": _times,
            "cumulative_gain": _pct,
        },
    )
    return Section(
        "Lift and gain",
        "<p>If sales work the list from the top, how many of the eventual positives do they "
        "reach? Bars far above the dashed average on the left mean the score separates well."
        f"</p>{_png(fig)}{table}",
    )


def section_curves(report: ReportInput) -> Section | None:
    """ROC and precision-recall curves of the model and the baselines."""
    h = report.holdout
    if report.task != "binary" or h is None or h["label"].nunique() < 2:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    y = h["label"].to_numpy(dtype=int)
    series = [("leadscore model", h["prediction"], MODEL_COLOR, 2.2)]
    series += [
        (BASELINE_NAMES.get(n, n), h[f"baseline_{n}"], BASELINE_COLORS.get(n, "gray"), 1.2)
        for n in _baseline_columns(h)
    ]
    for label, p, color, width in series:
        fpr, tpr, _ = roc_curve(y, p.to_numpy(dtype=float))
        ax1.plot(fpr, tpr, color=color, linewidth=width, label=label)
        precision, recall, _ = precision_recall_curve(y, p.to_numpy(dtype=float))
        ax2.plot(recall, precision, color=color, linewidth=width, label=label)
    ax1.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1)
    ax1.set_xlabel("false positive rate")
    ax1.set_ylabel("true positive rate")
    ax1.set_title("ROC curve")
    ax1.legend(frameon=False, fontsize=8, loc="lower right")
    ax2.axhline(y.mean(), color="black", linestyle=":", linewidth=1)
    ax2.set_xlabel("recall (share of positives found)")
    ax2.set_ylabel("precision (share flagged that are positive)")
    ax2.set_title("Precision-recall curve")
    ax2.legend(frameon=False, fontsize=8, loc="upper right")
    fig.tight_layout()
    thresholds = report.metadata.get("metrics", {}).get("tables", {}).get("thresholds", [])
    table = _table(
        thresholds,
        [
            ("threshold", "threshold"),
            ("flagged_share", "share flagged"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "F1"),
        ],
        formats={"flagged_share": _pct, "precision": _pct, "recall": _pct},
    )
    return Section("ROC and precision-recall", f"{_png(fig)}<h3>Threshold table</h3>{table}")


def section_threshold_explorer(report: ReportInput) -> Section | None:
    """Binary: a slider over the score cut-off (scoring/explorer.py)."""
    holdout = report.holdout
    if report.task != "binary" or holdout is None or not len(holdout):
        return None
    extra = report.explorer or ExplorerInput(np.zeros(0), 0.0)
    data = explorer_data(
        holdout["label"].to_numpy(dtype=int),
        holdout["prediction"].to_numpy(dtype=float),
        extra.recent,
        extra.recent_days,
        extra.tiers,
    )
    return Section(
        "Threshold explorer",
        "<p>Move the slider to see what calling every lead above a score would mean.</p>"
        + explorer_html(data, element_id=f"explorer-{report.name}"),
    )


def section_calibration(report: ReportInput) -> Section | None:
    """Reliability: predicted probability vs observed rate."""
    rows = report.metadata.get("metrics", {}).get("tables", {}).get("reliability", [])
    if report.task != "binary" or not rows:
        return None
    fig, ax = _figure(5.2, 4.2)
    predicted = [r["predicted"] for r in rows]
    observed = [r["observed"] for r in rows]
    top = max(max(predicted), max(observed)) * 1.05
    ax.plot([0, top], [0, top], color="black", linestyle=":", linewidth=1, label="perfect")
    ax.plot(predicted, observed, marker="o", color=MODEL_COLOR, label="leadscore model")
    ax.set_xlabel("predicted probability (bin average)")
    ax.set_ylabel("observed outcome rate")
    ax.set_title("Calibration")
    ax.legend(frameon=False)
    calibration = report.metadata.get("deployed", {}).get("calibration") or {}
    note = (
        f"<p>Probabilities were recalibrated on validation ({_e(calibration.get('method'))} "
        "scaling).</p>"
        if calibration.get("used")
        else "<p>CatBoost's own probabilities were already calibrated on validation; no "
        "recalibration was needed.</p>"
    )
    return Section(
        "Calibration",
        "<p>When the model says 30%, about 30% should happen: points near the diagonal mean "
        f"the probabilities can be read at face value.</p>{note}{_png(fig)}",
    )


def section_importance(report: ReportInput) -> Section | None:
    """Global feature importance."""
    importance = report.metadata.get("feature_importance", {})
    if not importance:
        return None
    top = sorted(importance.items(), key=lambda kv: -kv[1])[:15][::-1]
    fig, ax = _figure(6.8, 0.32 * len(top) + 1)
    ax.barh([feature_label(k) for k, _ in top], [v for _, v in top], color=MODEL_COLOR)
    ax.set_xlabel("importance (share of the model's decisions, %)")
    ax.set_title("What the model looks at")
    return Section(
        "Feature importance",
        "<p>How much each input moves the score overall. Each scored record also carries its "
        f"own top reasons.</p>{_png(fig)}",
    )


def section_distribution(report: ReportInput) -> Section | None:
    """Distribution of the latest scores (or of the holdout predictions) and tiers."""
    scores = report.scores
    fig, ax = _figure()
    if scores is not None and len(scores):
        values = scores["probability"].to_numpy(dtype=float)
        source = f"the latest scoring run ({len(scores):,} records)"
    elif report.holdout is not None and report.task != "multiclass":
        values = report.holdout["prediction"].to_numpy(dtype=float)
        source = f"the holdout ({len(values):,} records)"
    else:
        plt.close(fig)
        return None
    if report.task == "binary":
        values = to_score(values)  # the 0-100 score reps see in Salesforce, not a probability
    ax.hist(values, bins=40, color=MODEL_COLOR, alpha=0.85)
    xlabel = {
        "binary": "score (0-100, as written to Salesforce)",
        "multiclass": "probability of the predicted class",
        "regression": "predicted value",
    }[report.task]
    ax.set_xlabel(xlabel)
    ax.set_ylabel("records")
    ax.set_title("Score distribution")
    body = f"<p>Scores of {source}.</p>{_png(fig)}"
    if scores is not None and len(scores) and scores["tier"].notna().any():
        counts = scores["tier"].value_counts().sort_index()
        body += _table(
            [
                {"tier": k, "records": int(v), "share": float(v) / len(scores)}
                for k, v in counts.items()
            ],
            [("tier", "tier"), ("records", "records"), ("share", "share")],
            formats={"share": _pct},
        )
    rates = tier_conversion(report)
    if rates:
        body += (
            "<p>Outcome rate per tier on the holdout (each held-out record placed in the tier "
            "its score reaches under the current cut-offs):</p>"
        )
        body += _table(
            rates,
            [
                ("tier", "tier"),
                ("records", "held-out records"),
                ("outcomes", "outcomes"),
                ("rate", "outcome rate"),
            ],
            formats={"rate": _pct},
        )
    return Section("Score distribution", body)


def tier_conversion(report: ReportInput) -> list[dict[str, Any]]:
    """Each tier's outcome rate on the holdout, highest tier first (binary predictions).

    The holdout's predictions come from the model evaluated on it (not the deployed one, which
    saw those rows); each is placed in the tier whose lowest probability in the latest scoring
    run it reaches.

    Args:
        report: the report's input.

    Returns:
        ``tier, records, outcomes, rate`` per tier; empty without tiers, scores or holdout.
    """
    scores, holdout = report.scores, report.holdout
    if (
        report.task != "binary"
        or scores is None
        or not len(scores)
        or holdout is None
        or not len(holdout)
        or "tier" not in scores
        or scores["tier"].isna().all()
    ):
        return []
    floors = scores.dropna(subset=["tier"]).groupby("tier")["probability"].min()
    floors = floors.sort_values()  # lowest tier first: a higher tier overwrites it
    p = holdout["prediction"].to_numpy(dtype=float)
    tiers = np.full(len(p), floors.index[0], dtype=object)
    for tier, floor in floors.items():
        tiers[p >= floor] = tier
    labels = holdout["label"].to_numpy(dtype=float)
    rows = []
    for tier in reversed(floors.index):
        mask = tiers == tier
        n = int(mask.sum())
        outcomes = int(labels[mask].sum())
        rows.append(
            {"tier": tier, "records": n, "outcomes": outcomes, "rate": outcomes / n if n else 0.0}
        )
    return rows


def section_confusion(report: ReportInput) -> Section | None:
    """Multiclass: confusion matrix and per-class metrics."""
    tables = report.metadata.get("metrics", {}).get("tables", {})
    confusion = tables.get("confusion")
    if report.task != "multiclass" or not confusion:
        return None
    matrix = np.asarray(confusion["matrix"], dtype=float)
    classes = confusion["classes"]
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.0 * len(classes) + 1.8))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(matrix[i, j]):,}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix")
    table = _table(
        tables.get("per_class", []),
        [
            ("class", "class"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "F1"),
            ("support", "examples"),
        ],
    )
    return Section(
        "Classes",
        "<p>Rows are the actual classes, columns what the model predicted; the diagonal is "
        f"right.</p>{_png(fig)}{table}",
    )


def section_residuals(report: ReportInput) -> Section | None:
    """Regression: predicted vs actual, and the decile table."""
    h = report.holdout
    if report.task != "regression" or h is None or h.empty:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    actual = h["label"].to_numpy(dtype=float)
    predicted = h["prediction"].to_numpy(dtype=float)
    ax1.scatter(predicted, actual, s=6, alpha=0.35, color=MODEL_COLOR)
    lo, hi = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax1.plot([lo, hi], [lo, hi], color="black", linestyle=":", linewidth=1)
    ax1.set_xlabel("predicted")
    ax1.set_ylabel("actual")
    ax1.set_title("Predicted vs. actual")
    ax2.hist(actual - predicted, bins=40, color=MODEL_COLOR, alpha=0.85)
    ax2.set_xlabel("actual - predicted")
    ax2.set_ylabel("records")
    ax2.set_title("Residuals")
    fig.tight_layout()
    deciles = report.metadata.get("metrics", {}).get("tables", {}).get("deciles", [])
    table = _table(
        deciles,
        [
            ("decile", "decile"),
            ("n", "records"),
            ("mean_score", "mean predicted"),
            ("actual", "mean actual"),
        ],
        digits=2,
    )
    return Section("Errors", f"{_png(fig)}<h3>By predicted decile</h3>{table}")


def section_drift(report: ReportInput) -> Section | None:
    """Drift between training, validation and holdout; the recency and calibration choices."""
    meta = report.metadata
    drift = meta.get("drift")
    if not drift:
        return None
    levels = drift.get("label") or {}
    task = report.task
    if task == "multiclass":
        classes = meta.get("classes") or []

        def level(v: Any) -> str:
            return ", ".join(f"{c} {_pct(x)}" for c, x in zip(classes, v or [], strict=False))
    else:

        def level(v: Any) -> str:
            return _pct(v) if task == "binary" else _fmt(v)

    split = meta.get("split", {})
    rows = [
        {
            "part": name,
            "n": split.get(key, {}).get("n"),
            "from": (split.get(key, {}).get("from") or "")[:10],
            "to": (split.get(key, {}).get("to") or "")[:10],
            "label": level(levels.get(key)),
        }
        for key, name in (("train", "training"), ("valid", "validation"), ("test", "holdout"))
    ]
    table = _table(
        rows,
        [("part", "period"), ("n", "examples"), ("from", "from"), ("to", "to"), ("label", "label")],
    )
    factor = drift.get("label_factor")
    moved = (
        f"<p><b>The base rate moved by a factor of {factor:.1f}</b> between the periods: "
        "probabilities fitted on old data would be off; see the recalibration below.</p>"
        if factor and factor > 1.5
        else ""
    )
    psi = drift.get("feature_psi") or {}
    shifted = ", ".join(f"{_e(feature_label(k))} {v:.2f}" for k, v in list(psi.items())[:5])
    recency = (meta.get("training") or {}).get("recency") or {}
    tried = ", ".join(f"{_e(k)} {v:.4f}" for k, v in (recency.get("valid_loss") or {}).items())
    deploy = meta.get("deploy") or {}
    body = (
        f"{moved}{table}<p>Features that moved most between training and holdout (PSI; above "
        f"0.25 is a large shift): {shifted or 'none'}.</p>"
        f"<p>Recency treatment chosen on validation: <b>{_e(recency.get('name', 'none'))}</b>"
        + (f" (validation loss: {tried})" if tried else "")
        + ".</p>"
        f"<p>The holdout was scored by a model fitted on {deploy.get('evaluated_rows', 0):,} "
        "training + validation examples, with its baselines fitted on exactly the same rows; "
        f"the deployed model is fitted on {deploy.get('rows', 0):,} "
        f"({_e(deploy.get('fit', 'pre_holdout'))}).</p>"
    )
    sampling = meta.get("sampling")
    if sampling:
        body += (
            f"<p><b>Stratified training sample</b>: {sampling['sampled_rows']:,} of "
            f"{sampling['train_rows']:,} training rows (every positive, "
            f"{sampling['negative_rate']:.1%} of the negatives, weighted back); validation and "
            f"holdout whole. Quality lost, measured on {sampling['probe_rows']:,} rows fitted "
            f"whole and sampled: holdout AUC {sampling['probe_auc_full']:.4f} / "
            f"{sampling['probe_auc_sampled']:.4f}, a loss of {sampling['auc_loss']:.4f}.</p>"
        )
    calibration = meta.get("calibration")
    if calibration:
        raw, cal = calibration.get("holdout_raw", {}), calibration.get("holdout", {})
        body += (
            f"<p>Recalibration: <b>{_e(calibration.get('method') or 'none')}</b>, chosen by "
            f"{_e(calibration.get('chosen_by', ''))}. Holdout before / after: log loss "
            f"{_fmt(raw.get('log_loss'), 4)} / {_fmt(cal.get('log_loss'), 4)}, Brier "
            f"{_fmt(raw.get('brier'), 4)} / {_fmt(cal.get('brier'), 4)}, ECE (10 equal-count "
            f"bins) {_fmt(raw.get('ece'), 4)} / {_fmt(cal.get('ece'), 4)}.</p>"
            + _table(
                cal.get("reliability", []),
                [("n", "examples"), ("predicted", "mean predicted"), ("observed", "observed")],
            )
        )
    return Section("Drift and calibration", body)


SectionBuilder = Callable[[ReportInput], Section | None]

SECTIONS: tuple[SectionBuilder, ...] = (
    section_summary,
    section_baselines,
    section_lift,
    section_curves,
    section_threshold_explorer,
    section_calibration,
    section_drift,
    section_confusion,
    section_residuals,
    section_importance,
    section_distribution,
)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f9;
color:#1d2733}
header{background:#1f3b5c;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{max-width:1160px;margin:0 auto;padding:16px 24px}
h2.prediction{margin:28px 0 8px;font-size:20px;border-bottom:2px solid #1f3b5c;padding-bottom:4px}
section{background:#fff;border-radius:8px;padding:14px 20px;margin:12px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
section h3{margin:4px 0 10px;font-size:16px;color:#1f3b5c}
img{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e3e7ec;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f0f3f7}
.warn{background:#fff4e5;border-left:4px solid #e08e0b;padding:6px 12px;margin:8px 0}
.note{color:#5a6b7d}.facts{color:#5a6b7d;font-size:13px}
.psi-ok{color:#1a7f37}.psi-warn{color:#9a6700}.psi-alert{color:#cf222e;font-weight:600}
nav a{color:#fff;margin-right:14px;font-size:13px}
"""


def build_report(
    inputs: Sequence[ReportInput],
    *,
    title: str = "leadscore model report",
    generated_at: datetime | None = None,
    extra_sections: Sequence[SectionBuilder] = (),
) -> str:
    """The whole HTML page.

    Args:
        inputs: one per prediction.
        title: page title.
        generated_at: timestamp shown in the header (default: now).
        extra_sections: more section builders, appended to :data:`SECTIONS` (e.g. monitoring).

    Returns:
        HTML with every plot embedded.
    """
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{_e(i.name)}">{_e(i.name)}</a>' for i in inputs)
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body><header><h1>{_e(title)}</h1>"
        f"<p>Generated {when}</p><nav>{nav}</nav></header><main>"
    ]
    for report in inputs:
        task = {"binary": "yes/no outcome", "multiclass": "class", "regression": "number"}[
            report.task
        ]
        parts.append(
            f'<h2 class="prediction" id="{_e(report.name)}">{_e(report.name)} '
            f'<span class="note">({_e(task)} per {_e(report.metadata.get("entity", "record"))})'
            "</span></h2>"
        )
        for builder in (*SECTIONS, *extra_sections):
            section = builder(report)
            if section is not None:
                parts.append(f"<section><h3>{_e(section.title)}</h3>{section.body}</section>")
    parts.append("</main></body></html>")
    return "".join(parts)
