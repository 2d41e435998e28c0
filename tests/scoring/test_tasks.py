"""Each task type end to end on small synthetic tables: train, evaluate vs baselines, score."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from connector.store import Store
from scoring.explain import MAX_REASON_CHARS
from scoring.pipeline import ScoringError, score_entities, train_prediction
from scoring.registry import save_version
from scoring.spec import PredictionSpec
from tests.scoring.conftest import customer_frames, load_table

AS_OF = datetime(2025, 6, 30)
FAST = {
    "depths": [4],
    "l2_leaf_regs": [3.0],
    "one_hot_max_sizes": [2],
    "max_iterations": 300,
    "early_stopping_rounds": 30,
}
CUSTOMERS = {"table": "customers", "id_column": "customer_id", "time_column": "joined_at"}
ORDERS = {
    "table": "orders",
    "entity_column": "customer_id",
    "time_column": "ordered_at",
    "event": "order",
    "value_column": "amount",
}


def customer_spec(**overrides) -> PredictionSpec:
    base = {
        "name": "customer",
        "entity": "customer",
        "entity_table": CUSTOMERS,
        "events": [ORDERS],
        "anchor": {"offset_days": 60},
        "categorical_fields": ["region_code"],
        "training": FAST,
    }
    base.update(overrides)
    return PredictionSpec.model_validate(base)


def test_regression_lifetime_value(customer_store, tmp_path):
    spec = customer_spec(
        name="ltv",
        task="regression",
        label={"event": "order", "within_days": 120, "aggregate": "sum"},
    )
    outcome = train_prediction(customer_store.con, spec, as_of=AS_OF)
    meta = outcome.metadata
    assert set(meta["metrics"]) >= {"mae", "rmse", "r2"}
    assert meta["metrics"]["r2"] > 0.2
    assert meta["metrics"]["rmse"] < meta["baselines"]["mean"]["rmse"]
    # the textbook value model (BG/NBD x Gamma-Gamma) is a baseline fitted on the model's rows
    assert set(meta["baselines"]) == {"ridge", "tree", "mean", "bg_nbd"}
    fit = outcome.fit_ids
    assert set(fit["evaluated_bg_nbd"]) == set(fit["evaluated_catboost"])
    assert set(fit["deployed_bg_nbd"]) == set(fit["deployed_catboost"])
    assert len(meta["metrics"]["tables"]["deciles"]) == 10
    assert "region_code" in meta["features"]["categorical"]  # declared: a numeric-coded category
    assert meta["features"]["events"] == ["order"]  # past orders are features
    assert meta["split"]["method"] == "time"
    version = save_version(
        tmp_path / "m", spec.name, outcome.predictor, meta, champion=True, holdout=outcome.holdout
    )
    scores = score_entities(
        customer_store.con, spec, version.load(), version.metadata, score_time=AS_OF
    )
    assert len(scores) == 700 and scores["tier"].isna().all()
    assert scores["score"].between(0, 100).all()
    assert scores["reasons"].str.len().max() <= MAX_REASON_CHARS


def test_multiclass_value_tiers_with_confusion_matrix(customer_store, tmp_path):
    spec = customer_spec(
        name="tier",
        task="multiclass",
        label={
            "event": "order",
            "within_days": 180,
            "aggregate": "sum",
            "classes": [
                {"name": "BRONZE", "lt": 300},
                {"name": "SILVER", "ge": 300, "le": 1500},
                {"name": "GOLD", "gt": 1500},
            ],
        },
        train_only_when={"column": "joined_at", "before": datetime(2024, 9, 1)},
    )
    outcome = train_prediction(customer_store.con, spec, as_of=AS_OF)
    meta = outcome.metadata
    assert meta["classes"] == ["BRONZE", "SILVER", "GOLD"]
    matrix = np.array(meta["metrics"]["tables"]["confusion"]["matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == meta["metrics"]["n"]
    assert meta["metrics"]["log_loss"] < meta["baselines"]["prior"]["log_loss"]
    assert meta["examples"]["filtered_by_train_only_when"] > 0
    version = save_version(tmp_path / "m", spec.name, outcome.predictor, meta, champion=True)
    scores = score_entities(
        customer_store.con, spec, version.load(), version.metadata, score_time=AS_OF
    )
    assert set(scores["tier"]) <= {"BRONZE", "SILVER", "GOLD"}
    assert scores["probability"].between(1 / 3 - 1e-9, 1).all()
    # every class's probability is kept (a JSON object), its top one being the predicted class
    first = json.loads(scores["class_probabilities"].iloc[0])
    assert set(first) == {"BRONZE", "SILVER", "GOLD"} and abs(sum(first.values()) - 1) < 1e-3
    assert max(first, key=first.get) == scores["tier"].iloc[0]
    stored = Store(tmp_path / "s.duckdb")
    stored.append_scores(spec.name, scores)
    assert json.loads(stored.latest_scores(spec.name)["class_probabilities"].iloc[0]) == first
    stored.close()


def test_static_table_binary_field_label_mixed_types_and_new_values_at_scoring(tmp_path):
    from connector.store import Store

    rng = np.random.default_rng(1)
    n = 1200
    channel = rng.choice(["web", "email", "event"], size=n)
    visits = rng.poisson(3, size=n).astype(float)
    logit = -1 + 1.2 * (channel == "event") + 0.5 * visits - 0.8 * (channel == "email")
    label = rng.random(n) < 1 / (1 + np.exp(-logit + 1.5))
    budget = rng.integers(1, 100, size=n).astype(str).astype(object)
    budget[:15] = "unknown"  # a numeric column with a few stray strings
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "channel": channel,
            "visits": visits,
            "budget": budget,
            "converted": np.where(label, "Yes", "No"),
        }
    )
    spec = PredictionSpec(
        name="static",
        entity="row",
        entity_table={"table": "rows", "id_column": "id"},
        label={"field": "converted", "positive": ["yes"]},
        training=FAST,
    )
    with Store(tmp_path / "s.duckdb") as store:
        load_table(store, "rows", frame)
        outcome = train_prediction(store.con, spec, as_of=None)
        meta = outcome.metadata
        assert meta["split"]["method"] == "stratified"
        assert meta["features"]["numeric"] == ["visits", "budget"]
        assert any("budget: mixed types" in note for note in meta["feature_notes"])
        assert meta["metrics"]["auc"] > 0.7
        # new rows with a category never seen in training and missing values
        extra = pd.DataFrame(
            {
                "id": [n, n + 1],
                "channel": ["podcast", None],
                "visits": [None, 4.0],
                "budget": ["n/a", None],
                "converted": [None, None],
            }
        )
        store.con.register("_extra", extra)
        store.con.execute("INSERT INTO rows SELECT * FROM _extra")
        version = save_version(tmp_path / "m", spec.name, outcome.predictor, meta, champion=True)
        scores = score_entities(
            store.con, spec, version.load(), version.metadata, score_time=datetime(2025, 1, 1)
        )
    assert len(scores) == n + 2
    assert scores["probability"].between(0, 1).all() and scores["probability"].notna().all()


def test_blend_or_fallback_is_recorded_when_logistic_wins_on_validation(tmp_path):
    """A purely linear signal in many numeric columns: logistic regression is hard to beat."""
    from connector.store import Store

    rng = np.random.default_rng(3)
    n, k = 1500, 12
    x = rng.normal(size=(n, k))
    label = rng.random(n) < 1 / (1 + np.exp(-(x @ np.linspace(0.2, 0.8, k))))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(k)])
    frame["id"], frame["label"] = np.arange(n), label.astype(int)
    spec = PredictionSpec(
        name="linear",
        entity="row",
        entity_table={"table": "rows", "id_column": "id"},
        label={"field": "label"},
        training={**FAST, "depths": [8], "l2_leaf_regs": [0.5]},
    )
    with Store(tmp_path / "s.duckdb") as store:
        load_table(store, "rows", frame)
        outcome = train_prediction(store.con, spec, as_of=None)
    deployed = outcome.metadata["deployed"]
    assert deployed["model"] in {"blend", "logistic"}
    assert "beat CatBoost on validation" in deployed["reason"]
    assert outcome.predictor.weight < 1 and outcome.predictor.linear is not None


def test_an_empty_table_is_a_clear_error(tmp_path):
    from connector.store import Store

    spec = PredictionSpec(
        name="empty",
        entity="row",
        entity_table={"table": "rows", "id_column": "id"},
        label={"field": "label"},
    )
    with Store(tmp_path / "s.duckdb") as store:
        store.con.execute("CREATE TABLE rows (id INTEGER, label INTEGER, x DOUBLE)")
        with pytest.raises(ScoringError, match=r"no labelled examples .*'rows' is empty"):
            train_prediction(store.con, spec, as_of=None)


def test_customer_frames_are_deterministic():
    a, _ = customer_frames(50, seed=5)
    b, _ = customer_frames(50, seed=5)
    assert a.equals(b)
