"""Label windows, aggregation, filters, anchors and censoring for entity tables and events."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest

from connector.store import Store
from scoring.events import (
    Entity,
    SpecError,
    create_events_view,
    entity_sources,
    resolve_entity,
)
from scoring.features import FeatureColumns, build_features
from scoring.labels import (
    build_examples,
    classify,
    current_entity_id_batches,
    current_entity_ids,
)
from scoring.spec import ClassRange, PredictionSpec
from tests.scoring.conftest import load_table

JOINED = datetime(2025, 1, 1)
AS_OF = datetime(2025, 6, 1)
ORDERS = {
    "table": "orders",
    "entity_column": "customer_id",
    "time_column": "ordered_at",
    "event": "order",
    "value_column": "amount",
}


def spec(**overrides) -> PredictionSpec:
    base = {
        "name": "spend",
        "entity": "customer",
        "entity_table": {
            "table": "customers",
            "id_column": "customer_id",
            "time_column": "joined_at",
        },
        "events": [ORDERS],
        "task": "regression",
        "label": {"event": "order", "within_days": 30, "aggregate": "sum"},
        "anchor": {"offset_days": 10},
    }
    base.update(overrides)
    return PredictionSpec.model_validate(base)


def store_with(tmp_path, orders, customers=None, name="s.duckdb") -> Store:
    store = Store(tmp_path / name)
    customers = customers or [{"customer_id": "C1", "joined_at": JOINED, "plan": "pro"}]
    load_table(store, "customers", pd.DataFrame(customers))
    frame = pd.DataFrame(orders, columns=["customer_id", "ordered_at", "amount", "status"])
    load_table(store, "orders", frame.astype({"amount": float}))
    return store


def examples(store: Store, s: PredictionSpec, as_of=AS_OF):
    entity = resolve_entity(store.con, s)
    sources = entity_sources(store.con, entity, s)
    create_events_view(store.con, entity, sources)
    return entity, build_examples(store.con, entity, s, as_of, sources)


def order(day: float, amount: float = 100.0, status: str = "paid"):
    return ("C1", JOINED + timedelta(days=day), amount, status)


def test_sum_label_counts_only_the_window_after_the_anchor(tmp_path):
    # anchor = joined + 10 days; window [day 10, day 40)
    orders = [order(5, 7), order(10, 100), order(39.9, 50), order(40, 1000)]
    with store_with(tmp_path, orders) as store:
        _, ex = examples(store, spec())
    assert ex.frame["label"].tolist() == [150.0]
    assert ex.frame["anchor_at"].tolist() == [pd.Timestamp(JOINED + timedelta(days=10))]


@pytest.mark.parametrize(
    "anchor",
    [{"offset_days": 10}, {"date": datetime(2025, 1, 11)}, {"event": "signup", "offset_days": 0}],
    ids=["creation+offset", "fixed date", "event"],
)
def test_moving_an_order_into_the_window_changes_the_label_not_the_features(tmp_path, anchor):
    signup = {
        "table": "signups",
        "entity_column": "customer_id",
        "time_column": "at",
        "event": "signup",
    }
    s = spec(anchor=anchor, events=[ORDERS, signup])
    columns = FeatureColumns(["plan"], [], ["order"], [30], ["days_since_created"])
    frames = []
    for day, name in ((45, "late.duckdb"), (20, "inside.duckdb")):
        with store_with(tmp_path, [order(3, 10), order(day, 80)], name=name) as store:
            # every anchor kind lands on day 10 after joining
            signups = pd.DataFrame({"customer_id": ["C1"], "at": [JOINED + timedelta(days=10)]})
            load_table(store, "signups", signups)
            entity, ex = examples(store, s)
            assert ex.frame["anchor_at"].tolist() == [pd.Timestamp(JOINED + timedelta(days=10))]
            frames.append((ex.frame, build_features(store.con, entity, ex.frame, columns)))
    (late, late_features), (inside, inside_features) = frames
    assert late["label"].tolist() == [0.0] and inside["label"].tolist() == [80.0]
    assert late_features.drop(columns="label").equals(inside_features.drop(columns="label"))
    assert late_features["order_30d"].tolist() == [1.0]  # the order before the anchor counts


def test_property_filter_and_count_threshold(tmp_path):
    orders = [order(12, status="refunded"), order(13), order(14)]
    binary = spec(
        task="binary",
        label={
            "event": "order",
            "within_days": 30,
            "aggregate": "count",
            "threshold": 2,
            "where": {"column": "status", "in": ["paid"]},
        },
    )
    strict = spec(
        task="binary",
        label={
            "event": "order",
            "within_days": 30,
            "aggregate": "count",
            "threshold": 3,
            "where": {"column": "status", "equals": "paid"},
        },
    )
    with store_with(tmp_path, orders) as store:
        assert examples(store, binary)[1].frame["label"].tolist() == [1]
        assert examples(store, strict)[1].frame["label"].tolist() == [0]


def test_churn_is_no_order_in_the_window_and_open_windows_are_not_negatives(tmp_path):
    churn = spec(
        task="binary",
        label={"event": "order", "within_days": 90, "aggregate": "count", "comparison": "<"},
    )
    with store_with(tmp_path, [order(2)]) as store:
        _, closed = examples(store, churn)  # window [day 10, day 100) closed before AS_OF
        _, still_open = examples(store, churn, as_of=JOINED + timedelta(days=99))
    assert closed.frame["label"].tolist() == [1]  # nothing ordered: churned
    assert still_open.frame.empty and still_open.censored == 1  # not a negative, not a positive


def test_fixed_date_anchor_takes_only_entities_created_before_it(tmp_path):
    customers = [
        {"customer_id": "C1", "joined_at": JOINED, "plan": "pro"},
        {"customer_id": "C2", "joined_at": datetime(2025, 3, 1), "plan": "basic"},
    ]
    s = spec(anchor={"date": datetime(2025, 2, 1)})
    with store_with(tmp_path, [order(40, 30)], customers) as store:
        _, ex = examples(store, s)
    assert ex.frame["entity_id"].tolist() == ["C1"]
    assert ex.frame["anchor_at"].tolist() == [pd.Timestamp(2025, 2, 1)]
    assert ex.frame["label"].tolist() == [30.0]


def test_train_only_filters_by_column_time_and_by_event_after_the_anchor(tmp_path):
    customers = [
        {"customer_id": "C1", "joined_at": JOINED, "plan": "pro"},
        {"customer_id": "C2", "joined_at": datetime(2025, 2, 1), "plan": "basic"},
    ]
    orders = [order(10.5), ("C2", datetime(2025, 2, 20), 5.0, "paid")]
    mature = spec(train_only_when={"column": "joined_at", "before": datetime(2025, 1, 15)})
    touched = spec(train_only_when=[{"event": "order", "within_days": 1}])
    with store_with(tmp_path, orders, customers) as store:
        _, by_column = examples(store, mature)
        _, by_event = examples(store, touched)
    assert by_column.frame["entity_id"].tolist() == ["C1"] and by_column.filtered == 1
    assert by_event.frame["entity_id"].tolist() == ["C1"] and by_event.filtered == 1


def test_field_label_buckets_into_named_classes():
    ranges = [
        ClassRange(name="BRONZE", lt=10),
        ClassRange(name="SILVER", ge=10, le=25),
        ClassRange(name="GOLD", gt=25),
    ]
    values = pd.Series([9.99, 10, 25, 25.01, None])
    assert classify(values, ranges).tolist() == ["BRONZE", "SILVER", "SILVER", "GOLD", None]


def test_unknown_label_event_and_columns_are_clear_errors(tmp_path):
    with store_with(tmp_path, [order(12)]) as store:
        with pytest.raises(SpecError, match=r"label\.event 'purchase' is not an event"):
            examples(store, spec(label={"event": "purchase", "aggregate": "count"}))
        with pytest.raises(
            SpecError,
            match=r"column 'statuz' is not in table 'orders' \(did you "
            r"mean 'status'\?\)",
        ):
            examples(
                store,
                spec(
                    label={
                        "event": "order",
                        "aggregate": "count",
                        "where": {"column": "statuz", "equals": "paid"},
                    }
                ),
            )
        bad_table = {"table": "customers", "id_column": "id", "time_column": "joined_at"}
        with pytest.raises(SpecError, match=r"entity_table\.id_column: column 'id'"):
            examples(store, spec(entity_table=bad_table))


def test_spec_rejects_inconsistent_labels():
    with pytest.raises(ValueError, match="either event"):
        spec(label={"event": "order", "field": "x"})
    with pytest.raises(ValueError, match="needs classes"):
        spec(task="multiclass", label={"event": "order", "aggregate": "sum"})
    with pytest.raises(ValueError, match="aggregate = 'count' or 'sum'"):
        spec(label={"event": "order"})
    with pytest.raises(ValueError, match="not built in"):
        PredictionSpec(name="x", entity="customer", label={"field": "y"})


def test_current_ids_come_in_sorted_keyset_batches_and_by_key():
    con = duckdb.connect()
    con.execute("CREATE TABLE items (Id VARCHAR, IsDeleted BOOLEAN)")
    con.execute(
        "INSERT INTO items VALUES ('e', false), ('a', false), ('c', true), ('b', NULL), "
        "('d', false), (NULL, false), ('f', false)"
    )
    entity = Entity("item", "items", "Id", None)
    every = list(current_entity_ids(con, entity))
    assert every == ["a", "b", "d", "e", "f"]
    batches = [list(b) for b in current_entity_id_batches(con, entity, 2)]
    assert batches == [["a", "b"], ["d", "e"], ["f"]]
    assert [list(b) for b in current_entity_id_batches(con, entity, 5)] == [every]
    some = [list(b) for b in current_entity_id_batches(con, entity, 10, only={"f", "c", "a", "z"})]
    assert some == [["a", "f"]]
    assert list(current_entity_id_batches(con, entity, 10, only=set())) == []
