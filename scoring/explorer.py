"""The threshold explorer: a slider over the score cut-off, as a self-contained HTML fragment.

For every cut-off (0 to 100 in score points, a score being the probability in percent) the
fragment shows, from the holdout, the precision and recall of calling the leads above it, and,
from the recent arrivals, how many leads a day land above it and how many conversions a day they
are expected to bring (the sum of their calibrated probabilities). Markers show where today's
tier boundaries sit. Everything (data and script) is inline: the page works offline.

:func:`figures_at` computes the same figures in Python for one cut-off; the page shows exactly
these numbers (the browser test in ``tests/scoring/test_explorer_browser.py`` checks it).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STEPS = 100
"""Slider positions: cut-offs 0.00, 0.01, ... 1.00 (score points)."""


@dataclass(frozen=True)
class ExplorerInput:
    """What the explorer needs besides the holdout.

    Attributes:
        recent: probabilities of the leads that arrived in the last ``recent_days`` days.
        recent_days: length of that period.
        tiers: tier name -> probability cut-off in force (empty for percentile tiers).
    """

    recent: np.ndarray
    recent_days: float
    tiers: dict[str, float] = field(default_factory=dict)


def figures_at(
    y: np.ndarray,
    p: np.ndarray,
    recent: np.ndarray,
    recent_days: float | None,
    cutoff: float,
) -> dict[str, Any]:
    """What calling every lead at or above ``cutoff`` means.

    Args:
        y: holdout labels (0/1).
        p: holdout probabilities.
        recent: probabilities of the leads that arrived in the last ``recent_days`` days.
        recent_days: length of that period (None or 0: daily figures are unknown).
        cutoff: minimum probability.

    Returns:
        ``cutoff, precision, recall, flagged_share, per_day, conversions_per_day``; precision is
        None when no holdout lead reaches the cut-off, recall when there are no positives.
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    recent = np.asarray(recent, dtype=float)
    flagged = p >= cutoff
    tp = int((flagged & (y == 1)).sum())
    positives = int((y == 1).sum())
    above = recent[recent >= cutoff]
    days = float(recent_days) if recent_days else 0.0
    return {
        "cutoff": round(float(cutoff), 2),
        "precision": round(tp / int(flagged.sum()), 4) if flagged.any() else None,
        "recall": round(tp / positives, 4) if positives else None,
        "flagged_share": round(float(flagged.mean()), 4) if len(p) else None,
        "per_day": round(len(above) / days, 2) if days > 0 else None,
        "conversions_per_day": round(float(above.sum()) / days, 2) if days > 0 else None,
    }


def explorer_data(
    y: np.ndarray,
    p: np.ndarray,
    recent: np.ndarray,
    recent_days: float | None,
    tiers: Mapping[str, float],
) -> dict[str, Any]:
    """The explorer's data: figures at every slider position and the tier boundaries.

    Args:
        y: holdout labels.
        p: holdout probabilities.
        recent: probabilities of recent arrivals.
        recent_days: days of recent arrivals.
        tiers: tier name -> probability cut-off in force.

    Returns:
        ``rows`` (one per cut-off), ``tiers`` (name, cut-off in score points), ``holdout`` and
        ``recent`` sizes, ``recent_days``, and the starting position (the best tier's cut-off).
    """
    rows = [figures_at(y, p, recent, recent_days, i / STEPS) for i in range(STEPS + 1)]
    boundaries = [
        {"name": str(name), "score": round(float(cut) * STEPS)}
        for name, cut in sorted(tiers.items(), key=lambda kv: -kv[1])
        if 0 <= float(cut) <= 1
    ]
    start = boundaries[0]["score"] if boundaries else STEPS // 2
    return {
        "rows": rows,
        "tiers": boundaries,
        "holdout": len(p),
        "recent": len(recent),
        "recent_days": float(recent_days or 0),
        "start": start,
    }


_STYLE = """
.lsx{border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;max-width:760px;margin:8px 0}
.lsx label{font-weight:600;display:block;margin-bottom:6px}
.lsx input[type=range]{width:100%}
.lsx .lsx-scale{position:relative;height:22px;font-size:12px;color:#5a6b7d}
.lsx .lsx-mark{position:absolute;top:0;transform:translateX(-50%);border-left:2px solid #1f5fa8;
 padding-left:3px;white-space:nowrap}
.lsx dl{display:grid;grid-template-columns:repeat(3,minmax(150px,1fr));gap:6px 16px;margin:10px 0}
.lsx dt{font-size:12px;color:#5a6b7d}.lsx dd{margin:0;font-size:20px;font-weight:600}
"""

_SCRIPT = """
(function () {
  var root = document.getElementById(%(id)s);
  var data = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
  var slider = root.querySelector('input[type=range]');
  function pct(v) { return v === null ? 'n/a' : (100 * v).toFixed(1) + ' %%'; }
  function num(v) { return v === null ? 'n/a' : v.toFixed(1); }
  function show() {
    var row = data.rows[Number(slider.value)];
    var out = function (name) { return root.querySelector('[data-out="' + name + '"]'); };
    out('cutoff').textContent = String(Math.round(row.cutoff * 100));
    out('precision').textContent = pct(row.precision);
    out('recall').textContent = pct(row.recall);
    out('flagged').textContent = pct(row.flagged_share);
    out('per-day').textContent = num(row.per_day);
    out('conversions').textContent = num(row.conversions_per_day);
    var tier = 'below every tier';
    for (var i = 0; i < data.tiers.length; i++) {
      if (row.cutoff * 100 >= data.tiers[i].score) { tier = 'tier ' + data.tiers[i].name; break; }
    }
    out('tier').textContent = tier;
  }
  slider.addEventListener('input', show);
  show();
})();
"""


def format_figures(row: Mapping[str, Any]) -> dict[str, str]:
    """The figures of one cut-off as the page displays them (the browser test compares these).

    Args:
        row: from :func:`figures_at`.

    Returns:
        Display text by output name.
    """

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    return {
        "cutoff": str(round(row["cutoff"] * 100)),
        "precision": pct(row["precision"]),
        "recall": pct(row["recall"]),
        "flagged": pct(row["flagged_share"]),
        "per-day": num(row["per_day"]),
        "conversions": num(row["conversions_per_day"]),
    }


def explorer_html(data: Mapping[str, Any], *, element_id: str = "threshold-explorer") -> str:
    """The explorer as an HTML fragment (style, markup, data and script inline).

    Args:
        data: from :func:`explorer_data`.
        element_id: the fragment's element id (unique per page).

    Returns:
        HTML to put inside a report section.
    """
    marks = "".join(
        f'<span class="lsx-mark" style="left:{t["score"]}%">{html.escape(t["name"])} '
        f"&ge; {t['score']}</span>"
        for t in data["tiers"]
    )
    # JSON inside <script> must not contain "</": escape the slash (valid JSON either way).
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    outputs = [
        ("cutoff", "Score cut-off"),
        ("tier", "Today's tier at this cut-off"),
        ("flagged", "Share of holdout leads above"),
        ("precision", "Precision: share of them that converted"),
        ("recall", "Recall: share of all conversions caught"),
        ("per-day", "New leads a day above the cut-off"),
        ("conversions", "Expected conversions a day from them"),
    ]
    cells = "".join(
        f'<div><dt>{html.escape(label)}</dt><dd data-out="{key}">-</dd></div>'
        for key, label in outputs
    )
    safe_id = html.escape(element_id)
    return (
        f"<style>{_STYLE}</style>"
        f'<div class="lsx" id="{safe_id}">'
        f'<label for="{safe_id}-slider">Score cut-off: call every lead scoring at least this '
        "much</label>"
        f'<input type="range" id="{safe_id}-slider" min="0" max="{STEPS}" step="1" '
        f'value="{int(data["start"])}" aria-label="Score cut-off">'
        f'<div class="lsx-scale">{marks}</div>'
        f"<dl>{cells}</dl>"
        f'<p class="note">Precision and recall from {data["holdout"]:,} holdout leads; '
        + (
            f"daily figures from the {data['recent']:,} leads of the last "
            f"{data['recent_days']:g} days. Expected conversions add up the leads' predicted "
            "probabilities.</p>"
            if data["recent_days"]
            else "no recent arrivals are known, so daily figures are not shown.</p>"
        )
        + f'<script type="application/json">{payload}</script>'
        f"<script>{_SCRIPT % {'id': json.dumps(element_id)}}</script>"
        "</div>"
    )
