"""Features computed in-process from posted records equal the SQL features of the store."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from scoring.events import Entity
from scoring.features import FeatureColumns, PostedEvents, build_features, features_from_records

ITEM = Entity("item", "items", "Id", "CreatedDate", deleted_column=None)
ANCHOR = datetime(2026, 6, 1, 12, 0)
COLUMNS = FeatureColumns(
    categorical=["Industry"],
    numeric=["Employees"],
    events=["visit", "order"],
    windows_days=[7, 30],
    values=["order", "refund"],  # refund is valued but not counted: never a feature value
    active_days=True,
    date_parts=["weekday", "hour"],
    repeat_days=True,
)


def _org(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "Id": [f"i{k}" for k in range(40)],
            "CreatedDate": [ANCHOR - timedelta(days=int(d)) for d in rng.integers(1, 60, 40)],
            "Industry": rng.choice(["Tech", "Retail", None], 40),
            "Employees": np.where(rng.random(40) < 0.2, np.nan, rng.integers(1, 500, 40)),
        }
    )
    rows = []
    for k in range(40):
        for _ in range(int(rng.integers(0, 12))):
            event = str(rng.choice(["visit", "order", "refund", "other"]))
            at = ANCHOR - timedelta(seconds=int(rng.integers(-5 * 86400, 45 * 86400)))
            value = None if event == "visit" or rng.random() < 0.2 else float(rng.integers(5, 900))
            rows.append((f"i{k}", event, at, value))
        # exactly on a window edge, and exactly at the anchor (not counted)
        rows.append((f"i{k}", "visit", ANCHOR - timedelta(days=7), None))
        rows.append((f"i{k}", "order", ANCHOR, 10.0))
    events = pd.DataFrame(rows, columns=["entity_id", "event", "ts", "value"])
    return items, events


def test_posted_features_equal_the_sql_features():
    items, events = _org()
    con = duckdb.connect()
    con.register("items_frame", items)
    con.execute("CREATE TABLE items AS SELECT * FROM items_frame")
    con.register("events_frame", events)
    con.execute("CREATE TABLE raw_events AS SELECT * FROM events_frame")
    con.execute("CREATE VIEW item_events AS SELECT * FROM raw_events")
    anchors = pd.DataFrame({"entity_id": items["Id"], "anchor_at": ANCHOR})
    sql = build_features(con, ITEM, anchors, COLUMNS)

    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in items.to_dict("records")
    ]
    index = {r["Id"]: i for i, r in enumerate(records)}
    posted = PostedEvents(
        row=events["entity_id"].map(index).to_numpy(),
        name=events["event"].tolist(),
        at=events["ts"].to_numpy().astype("datetime64[us]"),
        value=events["value"].astype(float).to_numpy(),
    )
    mine = features_from_records(ITEM, records, posted, ANCHOR, COLUMNS)

    assert list(mine["entity_id"]) == list(sql["entity_id"])
    assert mine["order_value_sum_30d"].sum() > 0 and mine["active_days_30d"].sum() > 0
    for column in COLUMNS.names:
        if column in COLUMNS.cat_features:
            assert list(mine[column]) == list(sql[column]), column
        else:
            np.testing.assert_allclose(
                mine[column].to_numpy(float),
                sql[column].to_numpy(float),
                rtol=1e-12,
                err_msg=column,
            )


def test_no_events_at_all():
    items, _ = _org()
    records = items.head(3).to_dict("records")
    empty = PostedEvents(
        row=np.zeros(0, dtype=np.int64),
        name=[],
        at=np.zeros(0, "datetime64[us]"),
        value=np.zeros(0),
    )
    out = features_from_records(ITEM, records, empty, ANCHOR, COLUMNS)
    assert (out["visit_30d"] == 0).all() and out["order_value_mean_7d"].isna().all()
    assert out["days_since_last_event"].isna().all() and (out["active_days_30d"] == 0).all()


@pytest.mark.parametrize("traits", [[{"name": "x", "kind": "count"}]])
def test_traits_need_the_store(traits):
    columns = FeatureColumns(categorical=[], numeric=[], events=[], windows_days=[7], traits=traits)
    with pytest.raises(ValueError, match="computed traits"):
        features_from_records(
            ITEM, [], PostedEvents(np.zeros(0), [], np.zeros(0), np.zeros(0)), ANCHOR, columns
        )
