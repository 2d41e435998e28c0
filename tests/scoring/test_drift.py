"""Time-ordered data that drifts and interacts: same-row baselines, recency, recalibration.

Also the point-in-time rule for value and date-part features: an event moved after the anchor
changes the label, never a feature.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from connector.store import Store
from scoring.events import create_events_view, entity_sources, resolve_entity
from scoring.features import FeatureColumns, build_features
from scoring.labels import build_examples
from scoring.pipeline import ScoringError, train_prediction
from scoring.spec import PredictionSpec
from tests.scoring.conftest import customer_frames, load_table
from tests.scoring.test_tasks import AS_OF, FAST, customer_spec

START = datetime(2024, 1, 1)


def drifting_contacts(n: int = 4000, seed: int = 3) -> pd.DataFrame:
    """Contacts over 400 days whose base rate rises from ~5 % to ~30 %, with an interaction."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.random(n))
    segment = rng.choice(["a", "b", "c"], size=n)
    size = rng.integers(1, 200, size=n)
    visits = rng.poisson(2, size=n)
    logit = (
        -3.6
        + 2.6 * t
        + 0.9 * np.log1p(visits)
        + 1.8 * ((segment == "a") & (size > 100))
        - 0.8 * ((segment == "b") & (size > 100))
    )
    won = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "contact_id": [f"C{i:05d}" for i in range(n)],
            "created_at": [START + timedelta(days=float(v) * 400) for v in t],
            "segment": segment,
            "size": size,
            "visits": visits,
            "won": won.astype(int),
        }
    )


def contact_spec(**training) -> PredictionSpec:
    return PredictionSpec.model_validate(
        {
            "name": "won",
            "entity": "contact",
            "entity_table": {
                "table": "contacts",
                "id_column": "contact_id",
                "time_column": "created_at",
            },
            "label": {"field": "won"},
            "training": {**FAST, **training},
        }
    )


@pytest.fixture(scope="module")
def drift_store(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("drift") / "drift.duckdb")
    load_table(store, "contacts", drifting_contacts())
    yield store
    store.close()


@pytest.fixture(scope="module")
def drifted(drift_store):
    return train_prediction(drift_store.con, contact_spec(), as_of=None)


def test_baselines_and_model_are_fit_on_the_same_rows_and_deployed_on_all(drifted):
    ids = drifted.fit_ids
    holdout = set(drifted.holdout["entity_id"])
    evaluated = set(ids["evaluated_catboost"])
    assert evaluated == set(ids["evaluated_linear"]) == set(ids["evaluated_tree"])
    assert not evaluated & holdout  # never trained on what it is scored on
    assert len(evaluated) + len(holdout) == drifted.metadata["examples"]["used"]
    assert set(ids["deployed_catboost"]) == evaluated | holdout
    deploy = drifted.metadata["deploy"]
    assert deploy["fit"] == "all" and deploy["rows"] == len(evaluated | holdout)
    assert deploy["evaluated_rows"] == len(evaluated)
    # the newest holdout row is the newest row the deployed model saw
    assert pd.Timestamp(deploy["fit_through"]) == pd.Timestamp(drifted.holdout["anchor_at"].max())


def test_drift_is_measured_and_warned_about(drifted):
    drift = drifted.metadata["drift"]
    assert drift["label"]["test"] > 1.5 * drift["label"]["train"]
    assert drift["label_factor"] > 1.5
    assert any("moved by a factor" in w for w in drifted.warnings)
    calibration = drifted.metadata["calibration"]
    assert set(calibration["holdout"]) >= {"log_loss", "brier", "ece", "reliability"}
    assert len(calibration["holdout"]["reliability"]) == 10


def test_recalibration_on_the_recent_window_beats_none(drift_store, drifted):
    raw = train_prediction(drift_store.con, contact_spec(calibration="none"), as_of=None)
    assert drifted.metadata["calibration"]["method"] is not None
    calibrated, uncalibrated = drifted.metadata["metrics"], raw.metadata["metrics"]
    assert calibrated["log_loss"] < 0.995 * uncalibrated["log_loss"]
    assert calibrated["ece"] < uncalibrated["ece"]


def test_pre_holdout_deploy_keeps_the_evaluated_model(drift_store):
    outcome = train_prediction(
        drift_store.con,
        contact_spec(deploy_fit="pre_holdout", recency="none", calibration="platt"),
        as_of=None,
    )
    assert outcome.metadata["deploy"]["fit"] == "pre_holdout"
    assert outcome.predictor is outcome.evaluated
    assert set(outcome.fit_ids["deployed_catboost"]) == set(outcome.fit_ids["evaluated_catboost"])
    assert outcome.metadata["training"]["recency"]["name"] == "none"


# -- value and date-part features -------------------------------------------------------------


def value_spec() -> PredictionSpec:
    """90-day spend from orders (value features over 30 and 60 days)."""
    return customer_spec(
        name="ltv",
        categorical_fields=[],
        task="regression",
        label={"event": "order", "within_days": 90, "aggregate": "sum"},
        features={"windows_days": [30, 60]},
    )


def _examples_and_features(store: Store, columns: FeatureColumns | None = None):
    spec = value_spec()
    entity = resolve_entity(store.con, spec)
    sources = entity_sources(store.con, entity, spec)
    create_events_view(store.con, entity, sources)
    frame = build_examples(store.con, entity, spec, AS_OF, sources).frame
    columns = columns or FeatureColumns(
        [],
        [],
        ["order"],
        [30, 60],
        [],
        values=["order"],
        active_days=True,
        date_parts=["weekday"],
        repeat_days=True,
    )
    return frame, build_features(store.con, entity, frame, columns), columns


def test_value_and_date_part_features_are_point_in_time(tmp_path):
    customers, orders = customer_frames(200)
    store = Store(tmp_path / "value.duckdb")
    load_table(store, "customers", customers)
    load_table(store, "orders", orders)
    frame, before, columns = _examples_and_features(store)
    names = columns.names
    assert {"order_value_sum_30d", "order_value_max_60d", "order_days_since_last"} <= set(names)
    assert {"order_count_all", "order_value_sum_all", "active_days_60d", "anchor_weekday"} <= set(
        names
    )
    assert "anchor_weekday" in columns.cat_features
    assert (before["anchor_weekday"] == pd.to_datetime(frame["anchor_at"]).dt.strftime("%a")).all()
    # RFM by hand for one customer with history
    row = before[before["order_count_all"] > 1].iloc[0]
    mine = orders[
        (orders["customer_id"] == row["entity_id"]) & (orders["ordered_at"] < row["anchor_at"])
    ]
    assert row["order_count_all"] == len(mine)
    assert row["order_value_sum_all"] == pytest.approx(mine["amount"].sum())
    assert row["order_active_days_all"] == mine["ordered_at"].dt.date.nunique()
    assert row["order_days_since_last"] == pytest.approx(
        (row["anchor_at"] - mine["ordered_at"].max()).total_seconds() / 86400
    )
    # move every order in a label window later (still inside it) and make it ten times larger
    anchors = frame.set_index("entity_id")["anchor_at"]
    at = orders["customer_id"].map(anchors)
    after = orders["ordered_at"] >= at
    moved = orders.copy()
    moved.loc[after, "ordered_at"] = moved.loc[after, "ordered_at"] + timedelta(hours=1)
    moved.loc[after, "amount"] = moved.loc[after, "amount"] * 10
    load_table(store, "orders", moved)
    frame2, later, _ = _examples_and_features(store, columns)
    changed = frame2.set_index("entity_id")["label"] != frame.set_index("entity_id")["label"]
    assert changed.sum() > 10  # the label moved...
    pd.testing.assert_frame_equal(later[names], before[names])  # ...no feature did
    store.close()


def test_constant_features_are_left_out(tmp_path):
    customers, orders = customer_frames(300)
    customers["constant"] = 7
    store = Store(tmp_path / "c.duckdb")
    load_table(store, "customers", customers)
    load_table(store, "orders", orders)
    spec = value_spec()
    spec = spec.model_copy(update={"anchor": spec.anchor.model_copy(update={"offset_days": 0})})
    meta = train_prediction(store.con, spec, as_of=AS_OF).metadata
    # a creation anchor: days since creation is 0 for everyone
    assert "days_since_created" in meta["features"]["dropped"]
    assert "constant" not in meta["features"]["numeric"]
    assert "days_since_created" not in FeatureColumns(**meta["features"]).names
    store.close()


def test_a_value_column_that_is_not_numeric_is_named(tmp_path):
    customers, orders = customer_frames(150)
    orders["amount"] = orders["amount"].astype(str)
    orders.loc[orders.index[3], "amount"] = "n/a"
    store = Store(tmp_path / "bad.duckdb")
    load_table(store, "customers", customers)
    load_table(store, "orders", orders)
    with pytest.raises(ScoringError, match=r"value_column: column 'amount' of table 'orders' is "):
        train_prediction(store.con, value_spec(), as_of=AS_OF)
    store.close()


def test_dropped_columns_are_out_of_the_model_order():
    columns = FeatureColumns(["a"], ["b"], ["e"], [7], ["days_since_created"])
    assert replace(columns, dropped=["b"]).names == ["a", "e_7d", "days_since_created"]
