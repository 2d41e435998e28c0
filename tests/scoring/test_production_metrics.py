"""Monitoring computations on known data: PSI, profiles, realized performance by band and AUC."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from connector.store import Store
from scoring.events import ENTITIES
from scoring.features import FeatureColumns
from scoring.production_metrics import (
    build_profile,
    categorical_profile,
    expected_shares,
    measure_drift,
    numeric_profile,
    profile_shares,
    psi,
    realized_performance,
    sample_entity_ids,
)
from sync.config import load_settings
from sync.jobs import run_monitor

from .conftest import load_rows


def test_psi_on_known_distributions():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)  # 0.2747
    # an empty bin is floored, not infinite
    assert math.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))
    with pytest.raises(ValueError):
        psi([1.0], [0.5, 0.5])


def test_numeric_profile_uses_quantile_bins_and_counts_missing():
    values = np.arange(1000, dtype=float)
    profile = numeric_profile(values)
    assert len(profile["edges"]) == 9
    assert profile["shares"] == pytest.approx([0.1] * 10)
    assert psi(expected_shares(profile), profile_shares(profile, values)) == pytest.approx(0)
    # half the values now missing, the rest shifted to the top: a large shift
    shifted = np.concatenate([np.full(500, np.nan), np.arange(500, 1000, dtype=float)])
    assert profile_shares(profile, shifted)[-1] == pytest.approx(0.5)
    assert psi(expected_shares(profile), profile_shares(profile, shifted)) > 1.0
    # a mild shift stays below the usual 0.1 threshold
    assert psi(expected_shares(profile), profile_shares(profile, values + 10)) < 0.1


def test_categorical_profile_pools_rare_and_unseen_categories():
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    profile = categorical_profile(values, top=2)
    assert profile["shares"] == {"a": 0.5, "b": 0.3} and profile["other"] == pytest.approx(0.2)
    now = ["a"] * 50 + ["b"] * 30 + ["z"] * 20  # z was never seen: counted with the rest
    assert psi(expected_shares(profile), profile_shares(profile, now)) == pytest.approx(0)


def test_measure_drift_ranks_features_and_scores():
    rng = np.random.default_rng(0)
    columns = FeatureColumns(["Industry"], ["NumberOfEmployees"], [], [], derived=[])
    reference = pd.DataFrame(
        {
            "Industry": rng.choice(["Software", "Retail"], 2000),
            "NumberOfEmployees": rng.normal(100, 10, 2000),
        }
    )
    p_ref = rng.uniform(0, 1, 2000)
    profile = build_profile(reference, columns, p_ref)
    current = reference.assign(NumberOfEmployees=rng.normal(130, 10, 2000))
    report = measure_drift(profile, current, rng.uniform(0, 1, 2000))
    assert report.max_feature == "NumberOfEmployees" and report.max_feature_psi > 1.0
    assert report.features["Industry"] < 0.02
    assert report.score_psi < 0.05
    assert len(report.score_bins["reference"]) == len(report.score_bins["current"]) == 10


def test_realized_performance_on_known_outcomes():
    scores = pd.DataFrame(
        {
            "entity_id": ["1", "2", "3", "4", "5", "6", "7", "8"],
            "probability": [0.9, 0.8, 0.7, 0.5, 0.45, 0.4, 0.1, 0.05],
            "tier": ["A", "A", "A", "B", "B", "B", "D", "D"],
        }
    )
    outcomes = pd.DataFrame(
        {
            "entity_id": ["1", "2", "4", "8"],
            "before": [False, False, False, True],
            "label": [True, True, True, False],
        }
    )
    figures = realized_performance(scores, outcomes, ["A", "B", "C", "D"])
    # lead 8 had converted before scoring: left out
    assert figures["leads"] == 7 and figures["conversions"] == 3
    # positives 0.9, 0.8, 0.5 vs negatives 0.7, 0.45, 0.4, 0.1: 11 of 12 pairs ordered
    assert figures["auc"] == pytest.approx(11 / 12)
    bands = {b["band"]: (b["leads"], b["conversions"]) for b in figures["bands"]}
    assert bands == {"A": (3, 2), "B": (3, 1), "C": (0, 0), "D": (1, 0)}


LEAD_ROWS = [
    # id, probability, tier, converted date (None: never)
    ("00Q000000000000001", 0.9, "A", date(2025, 3, 6)),
    ("00Q000000000000002", 0.8, "A", date(2025, 3, 20)),
    ("00Q000000000000003", 0.7, "A", None),  # not written to Salesforce: left out
    ("00Q000000000000004", 0.5, "B", date(2025, 3, 25)),
    ("00Q000000000000005", 0.45, "B", None),
    ("00Q000000000000006", 0.4, "B", None),
    ("00Q000000000000007", 0.1, "D", None),
    ("00Q000000000000008", 0.05, "D", date(2025, 2, 20)),  # converted before scoring
    ("00Q000000000000009", 0.12, "D", date(2025, 4, 15)),  # converted after the window
]


def test_monitor_job_records_realized_performance_of_written_scores(tmp_path):
    synced = datetime(2025, 5, 1)
    scored_at = datetime(2025, 3, 1, 10)
    store_path = tmp_path / "leadscore.duckdb"
    with Store(store_path) as store:
        load_rows(
            store,
            "Lead",
            [
                {
                    "Id": i,
                    "IsConverted": converted is not None,
                    "ConvertedDate": converted,
                    "CreatedDate": datetime(2025, 1, 1),
                    "SystemModstamp": datetime(2025, 1, 1),
                    "IsDeleted": False,
                }
                for i, _, _, converted in LEAD_ROWS
            ],
            synced=synced,
        )

        def scores(at: datetime) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "entity_id": [r[0] for r in LEAD_ROWS],
                    "model_version": "v1",
                    "probability": [r[1] for r in LEAD_ROWS],
                    "score": [int(100 * r[1]) for r in LEAD_ROWS],
                    "tier": [r[2] for r in LEAD_ROWS],
                    "reasons": None,
                    "scored_at": at,
                }
            )

        store.append_scores("lead_conversion", scores(scored_at - timedelta(hours=2)))
        store.append_scores("lead_conversion", scores(scored_at))  # the day's last run counts
        store.append_scores("lead_conversion", scores(datetime(2025, 4, 20)))  # window open
        store.record_outcomes(
            "salesforce",
            "Lead",
            [
                {
                    "record_id": r[0],
                    "field": "Lead_Score__c",
                    "value": int(100 * r[1]),
                    "success": r[0] != "00Q000000000000003",
                    "error": "FIELD_CUSTOM_VALIDATION",
                }
                for r in LEAD_ROWS
            ],
        )
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[store]
path = "{store_path}"
[salesforce]
login_url = "https://login.salesforce.com"
[salesforce.streams.Lead]
fields = ["Industry"]
[[predictions]]
name = "lead_conversion"
label = {{ event = "converted", within_days = 30 }}
[predictions.tiers]
A = 0.6
B = 0.35
C = 0.15
[predictions.salesforce]
object = "Lead"
fields = {{ score = "Lead_Score__c" }}
"""
    )
    settings = load_settings(config, environ={})
    result = run_monitor(settings)
    figures = result.counts["predictions"]["lead_conversion"]
    assert figures["drift"]["level"] == "unavailable"  # no model trained here
    realized = figures["realized"]
    assert realized["evaluated"] == 1 and realized["runs"] == 1
    latest = realized["latest"]
    assert latest["scored_at"] == scored_at and latest["score_run_id"] == 2
    # kept: 1 2 4 5 6 7 9 (3 not written, 8 converted before); positives 1 2 4
    assert (latest["leads"], latest["conversions"]) == (7, 3)
    assert latest["auc"] == pytest.approx(1.0)  # 0.9 0.8 0.5 above 0.45 0.4 0.12 0.1
    bands = {b["band"]: (b["leads"], b["conversions"]) for b in latest["bands"]}
    assert bands == {"A": (2, 2), "B": (3, 1), "C": (0, 0), "D": (2, 0)}
    # a second run evaluates nothing new
    assert (
        run_monitor(settings).counts["predictions"]["lead_conversion"]["realized"]["evaluated"] == 0
    )


def test_a_large_population_is_profiled_on_a_fixed_random_sample_of_its_entities(org_store):
    con = org_store.read_connection()
    entity = ENTITIES["lead"]
    every = sample_entity_ids(con, entity, 10_000)
    assert len(every) == 900 and every.is_monotonic_increasing
    sample = sample_entity_ids(con, entity, 250)
    assert len(sample) == 250 and sample.is_monotonic_increasing
    assert set(sample) < set(every)
    assert sample.tolist() == sample_entity_ids(con, entity, 250).tolist()  # same sample again
    # spread over the whole id range, not the first 250 ids
    assert sample.iloc[-1] > every.iloc[600]
