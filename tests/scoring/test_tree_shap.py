"""The per-leaf SHAP table gives CatBoost's own SHAP values, for every kind of model we train."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier, CatBoostRegressor, Pool

from scoring import explain
from scoring.model import Predictor
from scoring.tree_shap import MAX_DEPTH, build_tree_shap, tree_shap


def _data(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "industry": rng.choice(list("abcdef"), n),
            "employees": rng.lognormal(3, 1, n),
            "source": rng.choice(list("uvwxyz"), n),
            "visits": rng.poisson(2, n).astype(float),
            "flag": rng.choice(["yes", "no"], n),
        }
    )


CATS = [0, 2, 4]


def _fit(kind: str, frame: pd.DataFrame):
    rng = np.random.default_rng(1)
    hot = frame["industry"].isin(["a", "b"]) & (frame["source"] == "u")
    if kind == "binary":  # CTR combinations of several categoricals (max_ctr_complexity 3)
        y = (hot | (frame["visits"] > 3) | (rng.random(len(frame)) < 0.2)).astype(int)
        model = CatBoostClassifier(iterations=40, depth=6, max_ctr_complexity=3, verbose=0)
    elif kind == "one_hot":
        y = ((frame["flag"] == "yes") ^ (frame["visits"] > 2)).astype(int)
        model = CatBoostClassifier(iterations=30, depth=5, one_hot_max_size=6, verbose=0)
    elif kind == "multiclass":
        y = np.where(frame["visits"] > 2, 2, np.where(frame["industry"] == "a", 1, 0))
        model = CatBoostClassifier(iterations=30, depth=4, loss_function="MultiClass", verbose=0)
    else:
        y = frame["visits"] * 3 + hot * 2 + rng.normal(size=len(frame))
        model = CatBoostRegressor(iterations=30, depth=MAX_DEPTH, verbose=0)
    return model.fit(frame, y, cat_features=CATS)


@pytest.mark.parametrize("kind", ["binary", "one_hot", "multiclass", "regression"])
def test_table_values_equal_catboost_shap_values(kind):
    frame = _data()
    model = _fit(kind, frame)
    rows = frame.iloc[:300]
    pool = Pool(rows, cat_features=CATS)
    table = build_tree_shap(model, frame.shape[1])
    assert table is not None
    leaves = np.asarray(model.calc_leaf_indexes(pool), dtype=np.int64)
    expected = np.asarray(model.get_feature_importance(data=pool, type="ShapValues"))
    if kind == "multiclass":
        rows_class = np.arange(len(rows)) % 3
        got = table.contributions(leaves, rows_class)
        want = expected[np.arange(len(rows)), rows_class, : frame.shape[1]]
    else:
        got = table.contributions(leaves)
        want = expected[:, : frame.shape[1]]
    assert np.abs(want).max() > 0.05  # the comparison is about something
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_deeper_models_fall_back_and_tables_are_built_once():
    frame = _data(600)
    noise = np.random.default_rng(2).integers(0, 2, len(frame))
    deep = CatBoostClassifier(iterations=3, depth=MAX_DEPTH + 1, verbose=0)
    deep.fit(frame, noise, cat_features=CATS)
    assert deep.get_tree_leaf_counts().max() > 2**MAX_DEPTH
    assert build_tree_shap(deep, frame.shape[1]) is None
    model = _fit("binary", frame)
    assert tree_shap(model, frame.shape[1]) is tree_shap(model, frame.shape[1])
    assert tree_shap(deep, frame.shape[1]) is None


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_contributions_in_row_blocks_equal_catboost_shap_values(kind, monkeypatch):
    """A batch's leaf indexes are taken a block of rows at a time; the values stay CatBoost's."""
    frame = _data(900)
    model = _fit(kind, frame)
    names = list(frame.columns)
    predictor = Predictor(
        kind,
        model,
        names,
        [names[i] for i in CATS],
        classes=["0", "1", "2"][: 3 if kind == "multiclass" else 2],
    )
    rows = frame.iloc[:250].reset_index(drop=True)
    expected = np.asarray(
        model.get_feature_importance(data=Pool(rows, cat_features=CATS), type="ShapValues")
    )
    monkeypatch.setattr(explain, "LEAF_BLOCK_ROWS", 64)  # 4 blocks, the last one short
    if kind == "multiclass":
        rows_class = np.arange(len(rows)) % 3
        got = explain.contributions(predictor, rows, rows_class=rows_class)
        want = expected[np.arange(len(rows)), rows_class, : len(names)]
    else:
        got = explain.contributions(predictor, rows)
        want = expected[:, : len(names)]
    np.testing.assert_allclose(got, want, atol=1e-5)
