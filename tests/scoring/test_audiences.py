"""Audience expressions (checked as expressions only, evaluated in DuckDB); percentile tiers."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from connector.errors import ConfigError
from scoring.audiences import AudienceError, evaluate_audiences, score_frame, validate_expression
from scoring.events import Entity
from scoring.tiers import assign_tiers_by, percentiles
from sync.config import load_settings
from tests.sync.conftest import write_config

COLUMNS = ["tier", "predicted_class", "created_at", "Industry", "probability", "scored_at"]


@pytest.mark.parametrize(
    "expression",
    [
        "tier = 'A' AND created_at >= now() - INTERVAL 7 DAY",
        "predicted_class = 'GOLD' AND created_at >= DATE '2024-02-11'",
        "lower(Industry) LIKE 'tech%' OR probability BETWEEN 0.5 AND 0.9",
        "tier IN ('A', 'B') AND Industry IS NOT NULL AND created_at > scored_at - INTERVAL 1 DAY",
        "CASE WHEN tier = 'A' THEN probability > 0.7 ELSE false END",
    ],
)
def test_boolean_expressions_over_known_columns_are_accepted(expression):
    assert validate_expression(expression, COLUMNS) <= {c.lower() for c in COLUMNS}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("tier = 'A'; DROP TABLE score_history", "';' is not allowed"),
        ("tier = 'A') UNION (SELECT 1", "not a statement"),
        ("tier IN (SELECT tier FROM score_history)", "subquery"),
        ("EXISTS (SELECT 1)", "subquery"),
        ("tier = 'A' ORDER BY 1", "not a valid SQL expression"),
        ("count(*) > 1", "not allowed"),
        ("getenv('HOME') = 'x'", "function 'getenv' is not allowed"),
        ("read_text('/etc/passwd') IS NOT NULL", "not allowed"),
        ("sum(probability) OVER () > 1", "window"),
        ("tiers = 'A'", "unknown column 'tiers' (did you mean 'tier'?)"),
        ("t.tier = 'A'", "without a table prefix"),
        ("tier = ?", "parameter"),
        ("tier =", "not a valid SQL expression"),
    ],
)
def test_statements_subqueries_unknown_columns_and_unsafe_functions_are_rejected(
    expression, message
):
    with pytest.raises(AudienceError, match=None) as caught:
        validate_expression(expression, COLUMNS)
    assert message in str(caught.value)


def test_audiences_are_evaluated_over_scores_joined_with_the_entity_table():
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE sf_lead AS SELECT * FROM (VALUES "
        "('1', 'Tech', TIMESTAMP '2024-03-01', false), "
        "('2', 'Tech', TIMESTAMP '2023-01-01', false), "
        "('3', 'Retail', TIMESTAMP '2024-03-02', true)) t(Id, Industry, CreatedDate, IsConverted)"
    )
    scores = pd.DataFrame(
        {
            "entity_id": ["1", "2", "3"],
            "model_version": "v1",
            "probability": [0.9, 0.8, 0.95],
            "score": [90, 80, 95],
            "tier": ["A", "A", "A"],
            "reasons": None,
            "scored_at": pd.Timestamp("2024-03-05"),
        }
    )
    entity = Entity("lead", "sf_lead", "Id", "CreatedDate", stream="Lead", deleted_column=None)
    members = evaluate_audiences(
        con,
        score_frame(scores, "binary"),
        entity,
        {
            "hot_new": "tier = 'A' AND created_at >= scored_at - INTERVAL 7 DAY "
            "AND NOT IsConverted",
            "tech": "Industry = 'Tech' AND percentile >= 50",
            "nobody": "score > 100",
        },
    )
    assert members == {"hot_new": {"1"}, "tech": {"1"}, "nobody": set()}
    with pytest.raises(AudienceError, match="unknown column 'Region'"):
        evaluate_audiences(con, score_frame(scores, "binary"), entity, {"x": "Region = 'EU'"})


def test_tiers_by_percentile_keep_their_share_of_the_population():
    p = np.linspace(0.01, 0.30, 100)  # a poorly calibrated model: no one reaches 0.6
    by_probability = assign_tiers_by(p, {"A": 0.6, "B": 0.2}, "C")
    assert "A" not in set(by_probability)
    by_rank = assign_tiers_by(p, {"A": 0.9, "B": 0.5}, "C", by="percentile")
    assert list(by_rank).count("A") == 11 and list(by_rank).count("B") == 40
    assert percentiles(np.array([0.2, 0.2, 0.5, 0.1])).tolist() == [0.625, 0.625, 1.0, 0.25]


def test_a_bad_audience_is_a_config_error_naming_the_key(tmp_path):
    config = write_config(
        tmp_path,
        """
[[audiences]]
name = "hot"
prediction = "lead_conversion"
where = "tier = 'A' AND Industy = 'Tech'"
[audiences.salesforce]
campaign_id = "701000000000001AAA"
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert "audiences[0].where" in str(caught.value)
    assert "did you mean 'Industry'" in str(caught.value)
    config.write_text(
        config.read_text().replace("Industy = 'Tech'", "1 = 1; DELETE FROM writeback_ledger")
    )
    with pytest.raises(ConfigError, match="';' is not allowed"):
        load_settings(config, environ={})
