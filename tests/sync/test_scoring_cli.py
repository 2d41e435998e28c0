"""Scoring commands as a user runs them on a file-based config: import, train, models, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.sync.test_cli import assert_one_line_error, leadscore

CONFIG = """
[store]
path = "store.duckdb"
models_dir = "models"

[[sources]]
path = "accounts.csv"
table = "accounts"
id_column = "Account ID"
null_values = ["Select"]

[[predictions]]
name = "upsell"
entity = "account"
entity_table = {{ table = "accounts", id_column = "Account_ID" }}
label = {{ field = "Upgraded" }}
exclude_fields = [{exclude}]
[predictions.training]
depths = [4]
l2_leaf_regs = [3.0]
one_hot_max_sizes = [2]
max_iterations = 200
[[predictions.rule]]
feature = "Logins_Last_Month"
ge = 10
points = 2
"""


def write_project(
    tmp_path: Path, exclude: str = "", rows: int = 900, intercept: float = -2.0
) -> Path:
    rng = np.random.default_rng(7)
    n = rows
    plan = rng.choice(["Starter", "Team", "Select"], size=n)
    logins = rng.poisson(8, size=n)
    p = 1 / (1 + np.exp(-(intercept + 0.2 * logins + 1.0 * (plan == "Team"))))
    pd.DataFrame(
        {
            "Account ID": [f"A{i}" for i in range(n)],
            "Plan Name": plan,
            "Logins Last Month": logins,
            "Upgraded": (rng.random(n) < p).astype(int),
        }
    ).to_csv(tmp_path / "accounts.csv", index=False)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(exclude=exclude))
    return config


def test_import_train_models_and_report_from_a_csv(tmp_path):
    config = str(write_project(tmp_path))
    imported = leadscore("import", "--config", config, "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["counts"]["tables"]["accounts"]["rows"] == 900

    first = leadscore("train", "--config", config, "--prediction", "upsell", "--json")
    assert first.returncode == 0, first.stderr
    upsell = json.loads(first.stdout)["counts"]["predictions"]["upsell"]
    assert {"metrics", "baselines", "version", "champion"} <= set(upsell)
    assert upsell["champion"] is True
    assert set(upsell["baselines"]) == {"logistic", "tree", "rule"}
    assert upsell["metrics"]["auc"] > 0.6

    human = leadscore("train", "--config", config)
    assert human.returncode == 0, human.stderr
    assert "logistic" in human.stdout and "AUC" in human.stdout and "gate" in human.stdout

    listed = json.loads(leadscore("models", "list", "--config", config, "--json").stdout)
    versions = listed["upsell"]
    assert len(versions) == 2 and versions[-1]["role"] == "champion"

    rolled = leadscore("models", "rollback", "upsell", "--config", config, "--json")
    assert json.loads(rolled.stdout)["champion"] == versions[0]["version"]
    promoted = leadscore(
        "models", "promote", "upsell", "--config", config, "--version", versions[1]["version"]
    )
    assert promoted.returncode == 0 and versions[1]["version"] in promoted.stdout
    shown = json.loads(leadscore("models", "show", "upsell", "--config", config, "--json").stdout)
    assert (
        shown["version"] == versions[1]["version"]
        and "Plan_Name" in shown["features"]["categorical"]
    )

    scored = leadscore("score", "--config", config, "--json")
    assert scored.returncode == 0, scored.stderr
    out = tmp_path / "out" / "report.html"
    report = leadscore("report", "--config", config, "--out", str(out))
    assert report.returncode == 0, report.stderr
    page = out.read_text()
    assert "upsell" in page and "data:image/png;base64," in page
    # the monitoring section (drift against the training population) is part of the report
    assert "Monitoring: drift and realized conversion" in page
    assert "Drift against the training population" in page
    # what reps read: each tier's outcome rate, scores on their 0-100 scale, and the champion
    # is not described as "no champion yet"
    assert "Outcome rate by tier on the held-out" in page and "outcome rate</th>" in page
    assert "no champion yet" not in page
    # the report's folder ("out", above) is made when missing; one that cannot be made is one
    # line, found before the report is drawn
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the report's folder should be")
    refused = leadscore("report", "--config", config, "--out", str(blocker / "sub" / "r.html"))
    assert refused.returncode == 2
    assert_one_line_error(refused, "report --out", "cannot write there", "pick a file")
    # status after a report run (whose counts list its predictions) reads it, as text and JSON
    status = leadscore("status", "--config", config)
    assert status.returncode == 0, status.stderr
    assert "report.html" in status.stdout
    runs = json.loads(leadscore("status", "--config", config, "--json").stdout)["runs"]
    assert next(r for r in runs if r["job"] == "report")["counts"]["predictions"] == ["upsell"]


def test_scoring_errors_are_one_line(tmp_path):
    config = str(write_project(tmp_path, exclude='"Plan"'))
    assert_one_line_error(
        leadscore("train", "--config", config, "--json"),  # --json: no progress lines
        "exclude_fields: column 'Plan'",
        "did you mean 'Plan_Name'",
    )
    assert_one_line_error(
        leadscore("models", "rollback", "upsell", "--config", config),
        "no earlier champion",
    )
    assert_one_line_error(
        leadscore("report", "--config", config, "--json"), "no prediction has a trained"
    )


def test_promote_takes_only_versions_inside_the_registry(tmp_path):
    config = write_project(tmp_path)
    outside = tmp_path / "elsewhere" / "20250101T000000Z-abcd"
    outside.mkdir(parents=True)
    (outside / "metadata.json").write_text('{"version": "x", "task": "binary"}')
    for version in (str(outside), "../../elsewhere/20250101T000000Z-abcd", ".."):
        result = leadscore(
            "models", "promote", "upsell", "--config", str(config), "--version", version
        )
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result, "is not a version of prediction 'upsell'")
    assert not (tmp_path / "models" / "upsell" / "champion.json").exists()
