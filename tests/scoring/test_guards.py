"""Guards: minimum data, leakage warnings, the quality gate; the registry's champion/challenger."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from connector.store import Store
from scoring.pipeline import ScoringError, compare_with_champion, train_prediction
from scoring.registry import (
    RegistryError,
    list_versions,
    load_challenger,
    load_champion,
    promote,
    rollback,
    save_version,
)
from scoring.spec import PredictionSpec
from tests.scoring.conftest import load_table

FAST = {
    "depths": [4],
    "l2_leaf_regs": [3.0],
    "one_hot_max_sizes": [2],
    "max_iterations": 200,
    "early_stopping_rounds": 20,
}


def rows(n: int = 1000, seed: int = 0, positives: float | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    segment = rng.choice(["a", "b", "c"], size=n)
    p = 1 / (1 + np.exp(-(1.5 * x1 - x2 + (segment == "a"))))
    label = rng.random(n) < (p if positives is None else positives)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x1": x1,
            "x2": x2,
            "segment": segment,
            "noise": rng.normal(size=n),
            "label": label.astype(int),
        }
    )


def spec(**overrides) -> PredictionSpec:
    base = {
        "name": "p",
        "entity": "row",
        "entity_table": {"table": "rows", "id_column": "id"},
        "label": {"field": "label"},
        "training": FAST,
    }
    base.update(overrides)
    return PredictionSpec.model_validate(base)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        load_table(s, "rows", rows())
        yield s


def test_minimum_data_guard_names_the_counts_and_the_setting(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        load_table(s, "rows", rows(400, positives=0.02))
        with pytest.raises(ScoringError, match=r"each class .*1: \d+ positive.*min_per_class"):
            train_prediction(s.con, spec(training={**FAST, "min_per_class": 20}), as_of=None)
        with pytest.raises(ScoringError, match=r"\(400; need at least 500, training.min_examples"):
            train_prediction(s.con, spec(training={**FAST, "min_examples": 500}), as_of=None)


def test_constant_label_is_a_clear_error(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        load_table(s, "rows", rows(300).assign(label=1))
        with pytest.raises(ScoringError, match=r"label is constant .*all 300 examples are 1"):
            train_prediction(s.con, spec(), as_of=None)


def test_unknown_columns_are_clear_errors(store):
    with pytest.raises(ScoringError, match=r"column 'nosie' .*did you mean 'noise'"):
        train_prediction(store.con, spec(exclude_fields=["nosie"]), as_of=None)
    with pytest.raises(ScoringError, match=r"label\.field: column 'labels'"):
        train_prediction(store.con, spec(label={"field": "labels"}), as_of=None)
    with pytest.raises(ScoringError, match="rule: feature 'x3' does not exist"):
        train_prediction(store.con, spec(rule=[{"feature": "x3", "gt": 0}]), as_of=None)


def test_leakage_warnings_for_a_near_perfect_feature_and_a_post_outcome_field(tmp_path):
    frame = rows()
    frame["stage"] = np.where(frame["label"] == 1, "won", "open")  # filled after the outcome
    frame.loc[:5, "stage"] = "open"
    with Store(tmp_path / "s.duckdb") as s:
        load_table(s, "rows", frame)
        outcome = train_prediction(s.con, spec(post_outcome_fields=["stage"]), as_of=None)
    warnings = " | ".join(outcome.warnings)
    assert "possible leakage: stage alone predicts the label" in warnings
    assert "stage is usually filled in after the outcome" in warnings
    assert outcome.metadata["warnings"] == outcome.warnings


def test_rule_baseline_is_scored_beside_the_model(store):
    rule = [{"feature": "x1", "gt": 0.5, "points": 2}, {"feature": "segment", "in": ["a"]}]
    meta = train_prediction(store.con, spec(rule=rule), as_of=None).metadata
    assert set(meta["baselines"]) == {"logistic", "tree", "rule"}
    assert 0.5 < meta["baselines"]["rule"]["auc"] < meta["metrics"]["auc"]
    assert {"auc", "pr_auc", "log_loss", "brier", "precision", "recall", "f1"} <= set(
        meta["metrics"]
    )
    tables = meta["metrics"]["tables"]
    assert len(tables["deciles"]) == 10 and len(tables["reliability"]) == 10
    assert tables["deciles"][0]["lift"] > 1.5


def test_quality_gate_keeps_a_worse_model_as_challenger_then_promote_and_rollback(store, tmp_path):
    models = tmp_path / "models"
    good_spec = spec()
    good = train_prediction(store.con, good_spec, as_of=None)
    first = save_version(
        models, "p", good.predictor, good.metadata, champion=True, holdout=good.holdout
    )
    worse_spec = spec(exclude_fields=["x1"])  # same target, weaker features
    worse = train_prediction(store.con, worse_spec, as_of=None)
    champion = load_champion(models, "p")
    gate = compare_with_champion(store.con, worse_spec, worse, champion.load(), champion.metadata)
    assert gate["promote"] is False and gate["champion"] > gate["new"]
    assert "vs champion" in gate["reason"]
    second = save_version(
        models, "p", worse.predictor, {**worse.metadata, "gate": gate}, champion=gate["promote"]
    )
    assert load_champion(models, "p").version == first.version
    assert load_challenger(models, "p").version == second.version
    assert promote(models, "p").version == second.version
    assert load_champion(models, "p").version == second.version
    assert load_challenger(models, "p") is None
    assert rollback(models, "p").version == first.version
    assert load_champion(models, "p").version == first.version
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback(models, "p")
    with pytest.raises(RegistryError, match="has no model version 'nope'"):
        promote(models, "p", "nope")
    # a changed target is not comparable: the new model replaces the champion
    other = spec(label={"field": "label", "positive": [0]})
    flipped = train_prediction(store.con, other, as_of=None)
    assert (
        compare_with_champion(store.con, other, flipped, champion.load(), champion.metadata)[
            "promote"
        ]
        is True
    )
    assert len(list_versions(models, "p")) == 2


def test_registry_stores_no_pickle_and_reloads_identical_predictions(store, tmp_path):
    s = spec(training={**FAST, "calibration": "isotonic"})
    outcome = train_prediction(store.con, s, as_of=None)
    outcome.predictor.weight = 0.5  # exercise the linear model's JSON round trip too
    version = save_version(
        tmp_path / "m",
        "p",
        outcome.predictor,
        outcome.metadata,
        champion=True,
        holdout=outcome.holdout,
    )
    files = sorted(p.name for p in version.path.iterdir())
    assert files == ["holdout.parquet", "linear.json", "metadata.json", "model.cbm"]
    meta = json.loads((version.path / "metadata.json").read_text())
    assert meta["deployed"]["calibrator"]["method"] == "isotonic"
    assert {"config_hash", "as_of", "features", "metrics", "baselines", "seconds"} <= set(meta)
    frame = outcome.features
    assert np.allclose(version.load().predict(frame), outcome.predictor.predict(frame))
