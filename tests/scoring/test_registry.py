"""The model registry: a stored version loads back into exactly the predictor that was saved."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier

from scoring.features import FeatureColumns
from scoring.model import Predictor
from scoring.registry import load_champion, save_version


def test_a_version_with_traits_loads_with_the_same_feature_order(tmp_path):
    # every kind of feature column, computed traits included
    columns = FeatureColumns(
        categorical=["Industry"],
        numeric=["NumberOfEmployees"],
        events=["task_web_visit"],
        windows_days=[7],
        derived=["days_since_created"],
        traits=[{"name": "product_usage_14d", "event": "Feature Used", "window_days": 14}],
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "Industry": rng.choice(["Software", "Retail"], 200),
            "NumberOfEmployees": rng.integers(1, 500, 200).astype(float),
            "task_web_visit_7d": rng.integers(0, 4, 200).astype(float),
            "days_since_created": rng.uniform(0, 90, 200),
            "product_usage_14d": rng.integers(0, 10, 200).astype(float),
        }
    )
    label = (frame["product_usage_14d"] + rng.normal(0, 2, 200) > 5).astype(int)
    model = CatBoostClassifier(iterations=20, verbose=False, allow_writing_files=False)
    model.fit(frame[columns.names], label, cat_features=["Industry"])
    saved = Predictor("binary", model, columns.names, columns.cat_features)

    save_version(
        tmp_path, "p", saved, {"task": "binary", "features": asdict(columns)}, champion=True
    )
    champion = load_champion(tmp_path, "p")
    assert champion is not None
    loaded = champion.load()
    assert loaded.features == columns.names  # traits last, as FeatureColumns orders them
    assert loaded.cat_features == ["Industry"]
    np.testing.assert_allclose(loaded.predict(frame), saved.predict(frame))
