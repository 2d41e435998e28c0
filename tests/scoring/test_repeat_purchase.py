"""The textbook value model (BG/NBD x Gamma-Gamma) on customers drawn from its own story."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scoring.repeat_purchase import RepeatPurchaseModel, applies

HORIZON = 180.0


def buyers(n: int, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Customers who buy at a Poisson rate and may drop out after each purchase (BG/NBD), with
    spend per purchase drawn around a customer's own mean (Gamma-Gamma).

    Returns:
        The model's feature columns at the anchor, the spend in the ``HORIZON`` days after it,
        and the number of purchase days in them.
    """
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.6, 1 / 12.0, n)  # purchases per day: r = 0.6, alpha = 12
    drop = rng.beta(0.8, 3.0, n)
    mean_spend = 1 / rng.gamma(6.0, 1 / 300.0, n)  # q = 6, v = 300: about 60 a purchase
    tenure = rng.uniform(60, 360, n)
    rows, spend, future = [], np.zeros(n), np.zeros(n)
    for i in range(n):
        times, t, alive = [0.0], 0.0, True
        while alive:
            t += rng.exponential(1 / rate[i])
            if t >= tenure[i] + HORIZON:
                break
            times.append(t)
            alive = rng.random() >= drop[i]
        days = np.floor(times)
        past = np.unique(days[days < tenure[i]])
        ahead = np.unique(days[days >= tenure[i]])
        values = rng.gamma(4.0, mean_spend[i] / 4.0, len(past) + len(ahead))
        rows.append(
            {
                "order_active_days_all": float(len(past)),
                "order_days_since_first": float(tenure[i]),
                "order_days_since_last": float(tenure[i] - past.max()),
                "order_value_sum_all": float(values[: len(past)].sum()),
            }
        )
        spend[i] = values[len(past) :].sum()
        future[i] = len(ahead)
    return pd.DataFrame(rows), spend, future


def test_the_fit_predicts_what_its_own_story_generates():
    frame, spend, future = buyers(3000)
    train, test = slice(0, 2000), slice(2000, None)
    model = RepeatPurchaseModel.fit(
        frame.iloc[train], spend[train], event="order", horizon_days=HORIZON, value=True
    )
    assert model is not None and model.gamma_gamma is not None
    counts = RepeatPurchaseModel.fit(
        frame.iloc[train], future[train], event="order", horizon_days=HORIZON, value=False
    )
    assert counts is not None and counts.gamma_gamma is None
    expected = counts.predict(frame.iloc[test])
    predicted = model.predict(frame.iloc[test])
    # calibrated in total, and better than the mean for each customer
    assert expected.sum() == pytest.approx(future[test].sum(), rel=0.15)
    assert predicted.sum() == pytest.approx(spend[test].sum(), rel=0.2)
    mean_error = np.sqrt(np.mean((spend[test] - spend[train].mean()) ** 2))
    assert np.sqrt(np.mean((spend[test] - predicted) ** 2)) < 0.9 * mean_error
    # more purchase days at the same tenure and recency: more purchases ahead
    one = frame.iloc[[0, 0]].copy()
    one["order_active_days_all"] = [2.0, 8.0]
    one["order_days_since_last"] = 5.0
    low, high = counts.predict(one)
    assert high > low


def test_json_round_trip_and_rows_without_history():
    frame, spend, _ = buyers(800, seed=8)
    # customers with no purchase before the anchor: NaN recency, no purchase days
    empty = pd.DataFrame(
        {
            "order_active_days_all": [0.0, 0.0],
            "order_days_since_first": [np.nan, np.nan],
            "order_days_since_last": [np.nan, np.nan],
            "order_value_sum_all": [0.0, 0.0],
        }
    )
    frame = pd.concat([frame, empty], ignore_index=True)
    spend = np.concatenate([spend, [10.0, 30.0]])
    model = RepeatPurchaseModel.fit(frame, spend, event="order", horizon_days=HORIZON, value=True)
    assert model is not None
    again = RepeatPurchaseModel.from_json(json.loads(json.dumps(model.to_json())))
    np.testing.assert_allclose(again.predict(frame), model.predict(frame))
    assert model.predict(empty).tolist() == [20.0, 20.0]  # the mean label of such rows
    assert np.isfinite(model.predict(frame)).all()


def test_it_needs_its_columns_and_enough_repeat_buyers():
    frame, spend, _ = buyers(15, seed=1)
    assert applies(frame.columns, "order") and not applies(frame.columns, "visit")
    assert not applies(frame.drop(columns="order_active_days_all").columns, "order")
    too_few = RepeatPurchaseModel.fit(frame, spend, event="order", horizon_days=HORIZON, value=True)
    assert too_few is None


def test_refunds_missing_amounts_and_extreme_buyers_give_finite_predictions():
    frame, spend, _ = buyers(600, seed=4)
    frame.loc[:20, "order_value_sum_all"] = -50.0  # refunds larger than the purchases
    frame.loc[21:40, "order_value_sum_all"] = np.nan  # amounts that were never filled in
    frame.loc[41, ["order_active_days_all", "order_value_sum_all"]] = [5000.0, 1e9]
    frame.loc[42, "order_days_since_first"] = 0.0  # bought for the first time just now
    model = RepeatPurchaseModel.fit(frame, spend, event="order", horizon_days=HORIZON, value=True)
    assert model is not None
    assert np.isfinite(model.predict(frame)).all()
