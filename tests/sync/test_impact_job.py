"""`leadscore impact` end to end: pulled owners, users and opportunities, real score history."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from connector.errors import ConfigError
from connector.sandbox import Sandbox
from connector.sandbox.reps import rep_truth
from connector.store import Store
from scoring.registry import load_champion
from sync.cli import app
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.impact import lift_conditions
from sync.jobs import run_impact, run_job, run_pull, run_report

AS_OF = datetime(2026, 3, 1, 12, 0)
STREAMS = """
[salesforce.streams.User]
fields = ["Name", "IsActive", "Department"]

[salesforce.streams.Opportunity]
fields = ["Amount", "StageName", "IsWon", "IsClosed", "CloseDate", "OwnerId"]
"""


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"config template changed: {old!r} not found"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    workdir = tmp_path_factory.mktemp("impact-org")
    sandbox = Sandbox(workdir / "sandbox", leads=1500, seed=4, as_of=AS_OF).start()
    config = write_sandbox_files(workdir, sandbox.info, command="test")
    text = config.read_text()
    text = _edit(text, '"ConvertedContactId",', '"ConvertedContactId", "ConvertedOpportunityId",')
    text = _edit(text, '"CreatedDate", "IsDeleted"]', '"CreatedDate", "IsDeleted", "OwnerId"]')
    text = _edit(
        text,
        'fields = ["WhoId", "Type", "CreatedDate"]',
        'fields = ["WhoId", "Type", "CreatedDate", "OwnerId"]',
    )
    text = _edit(text, "[[predictions]]", STREAMS + "\n[[predictions]]")
    # A quick model: these tests are about what sales did, not model quality.
    text = _edit(
        text,
        "[predictions.salesforce]",
        "[predictions.training]\ndepth = 4\nmax_iterations = 150\n\n[predictions.salesforce]",
    )
    config.write_text(text + "\n[monitor]\nmin_top_tier_lift = 50\n")
    yield sandbox, config
    sandbox.stop()


def _history_the_reps_saw(sandbox: Sandbox, store: Store) -> None:
    """Score history as leadscore would have written it while the reps worked."""
    rows = sandbox.sql(
        "SELECT lead_id, responded_at, visible_score FROM _rep_first_touch ORDER BY lead_id"
    )
    truth = pd.DataFrame(rows, columns=["entity_id", "responded_at", "probability"])
    scored_at = pd.to_datetime(truth["responded_at"], unit="s").dt.ceil("15min")
    frame = pd.DataFrame(
        {
            "entity_id": truth["entity_id"],
            "model_version": "v-history",
            "probability": truth["probability"],
            "score": (truth["probability"] * 100).round().astype(int),
            "tier": pd.cut(
                truth["probability"], [-1, 0.15, 0.35, 0.6, 2], labels=["D", "C", "B", "A"]
            ).astype(str),
            "reasons": None,
            "scored_at": scored_at,
        }
    )
    store.append_scores("lead_conversion", frame)


def test_impact_before_any_score_says_why_and_never_prints_nan(org, tmp_path):
    _, config = org
    run_pull(load_settings(config, environ={}))
    result = CliRunner().invoke(app, ["impact", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    figures = data["counts"]["predictions"]["lead_conversion"]
    assert "no score history: nothing was scored yet" in figures["notes"]
    assert figures["overall"]["adoption_index"] is None
    assert "NaN" not in result.output


def test_impact_per_rep_with_names_teams_won_amounts_html_and_alert(org, tmp_path):
    sandbox, config = org
    settings = load_settings(config, environ={})
    run_pull(settings)
    with Store(settings.store.path) as store:
        _history_the_reps_saw(sandbox, store)
    html = tmp_path / "impact.html"
    result = CliRunner().invoke(
        app,
        ["impact", "--config", str(config), "--since", "2025-06-01", "--html", str(html)],
    )
    assert result.exit_code == 0, result.output
    assert "Avery Chen" in result.output and "adoption" in result.output
    page = html.read_text()
    assert "data:image/png;base64," in page and "By rep" in page
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert "NaN" not in text and "nan" not in text

    run = run_impact(settings, since=AS_OF - timedelta(days=270))
    figures = run.counts["predictions"]["lead_conversion"]
    json.dumps(figures, allow_nan=False, default=str)
    reps = pd.DataFrame(figures["reps"]).merge(rep_truth(), left_on="owner_id", right_on="user_id")
    assert set(reps["team"]) == {"Sales"}
    # 1,500 leads give each rep too small a queue to rank them (tests/scoring/
    # test_impact_sandbox.py does that on 20,000): here every rep is measured, from real pulls.
    assert len(reps) == 12 and (reps["first_touches"] > 0).all()
    assert reps["adoption_index"].notna().all()
    tiers = {row["tier"]: row for row in figures["realized"]}
    assert tiers["A"]["rate"] > tiers["D"]["rate"]
    assert sum(row["won_amount"] or 0 for row in figures["realized"]) > 0

    # monitor carries the headline (for /metrics) and the lift alert fires under its ratio
    monitor = run_job(settings, "monitor")
    headline = monitor.counts["predictions"]["lead_conversion"]["impact"]
    assert headline["top_tier_lift"] is not None and headline["top_tier_lift"] > 1, headline
    conditions = lift_conditions(monitor.counts, settings)
    assert [c.key for c in conditions] == ["lift:lead_conversion"] and conditions[0].active


def test_report_has_the_threshold_explorer_with_daily_figures_and_the_impact_section(org, tmp_path):
    _, config = org
    settings = load_settings(config, environ={})
    for job in ("pull", "train", "score"):
        assert run_job(settings, job).status == "ok"
    out = tmp_path / "report.html"
    run_report(settings, out=out)
    page = out.read_text()
    assert "<h3>Threshold explorer</h3>" in page
    assert "leads of the last 28 days" in page  # daily figures from recent arrivals
    assert "<h3>Impact: is the score used, and does it pay?</h3>" in page


def test_capacity_tiers_are_set_once_per_champion_and_on_request(org):
    _, config = org
    capacity = config.parent / "capacity.toml"
    capacity.write_text(
        _edit(config.read_text(), "C = 0.15\n", "C = 0.15\ncapacity = { A = 1, B = 2 }\n")
    )
    settings = load_settings(capacity, environ={})
    if load_champion(settings.store.models_dir, "lead_conversion") is None:
        assert run_job(settings, "train").status == "ok"
    first = run_job(settings, "score").counts["predictions"]["lead_conversion"]
    assert first["capacity"]["set_now"] is True
    cutoffs = first["capacity"]["cutoffs"]
    assert list(cutoffs) == ["A", "B", "C"] and cutoffs["A"] > cutoffs["B"]
    # about one A and two B leads a day among the last 28 days' arrivals
    assert first["capacity"]["expected_per_day"]["A"] == pytest.approx(1, abs=0.2)
    second = run_job(settings, "score").counts["predictions"]["lead_conversion"]
    assert second["capacity"] == {**first["capacity"], "set_now": False}
    with Store(settings.store.path) as store:
        latest = store.latest_scores("lead_conversion")
    assert set(latest.loc[latest["probability"] >= cutoffs["A"], "tier"]) == {"A"}
    again = run_job(settings, "score", retier=True).counts["predictions"]["lead_conversion"]
    assert again["capacity"]["set_now"] is True


def test_capacity_names_must_be_tiers(org, tmp_path):
    _, config = org
    bad = tmp_path / "config.toml"
    bad.write_text(
        _edit(config.read_text(), "C = 0.15\n", "C = 0.15\ncapacity = { AA = 1 }\n").replace(
            'path = "leadscore.duckdb"', f'path = "{config.parent / "leadscore.duckdb"}"'
        )
    )
    with pytest.raises(ConfigError, match=r"tiers.capacity names tier 'AA'.*did you mean 'A'"):
        load_settings(bad, environ={})
