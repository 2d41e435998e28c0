"""``build_features`` (per-event rows aggregated in NumPy) computes what the old SQL query computed.

The old query is kept in ``reference_features.py``. Both run on the same generated stores, for
training anchors (one per entity, each at its own time) and for a scoring run (every entity at
one time), with every feature family: counts over windows, value statistics and RFM, active days,
recency, attributes and anchor parts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from connector.store import Store
from scoring.events import ENTITIES, create_events_view, entity_sources, resolve_entity
from scoring.features import FeatureColumns, build_features
from scoring.labels import build_examples, current_entity_ids
from scoring.spec import PredictionSpec
from tests.scoring.conftest import build_store, customer_frames, load_table, synthetic_org
from tests.scoring.reference_features import reference_features
from tests.scoring.test_tasks import AS_OF, customer_spec

LEAD = ENTITIES["lead"]
LEAD_SPEC = PredictionSpec(
    name="lead_conversion",
    label={"event": "converted", "within_days": 30},
    anchor={"event": "campaign_response"},
)


def assert_same(new: pd.DataFrame, old: pd.DataFrame, columns: FeatureColumns) -> None:
    """Same columns, dtypes and values; sums of values only up to their order of summation."""
    assert list(new.columns) == list(old.columns)
    sums = [c for c in columns.names if "_value_sum_" in c or "_value_mean_" in c]
    exact = [c for c in new.columns if c not in sums]
    pd.testing.assert_frame_equal(new[exact], old[exact], check_exact=True)
    pd.testing.assert_frame_equal(new[sums], old[sums], check_exact=False, rtol=1e-12)


@pytest.fixture(scope="module")
def lead_store(tmp_path_factory):
    leads, tasks, members = synthetic_org(400, seed=5)
    rng = np.random.default_rng(5)
    # converted leads' activity is logged on their contact (the alias), and other task types at
    # all hours from 100 days before creation on: windows, days and the alias join all matter
    for i, lead in enumerate(leads):
        if lead["IsConverted"]:
            lead["ConvertedContactId"] = f"003{i:015d}"
        for k in range(int(rng.integers(0, 16))):
            at = lead["CreatedDate"] + timedelta(hours=float(rng.uniform(-24 * 100, 24 * 40)))
            tasks.append(
                {
                    "Id": f"00X{i:09d}{k:06d}",
                    "WhoId": lead.get("ConvertedContactId") or lead["Id"],
                    "Type": str(rng.choice(["Email", "Call", "Web Visit", "Meeting"])),
                    "CreatedDate": at,
                    "SystemModstamp": at,
                }
            )
    store = build_store(
        tmp_path_factory.mktemp("leads") / "leads.duckdb",
        leads,
        tasks,
        members,
        synced=datetime(2025, 6, 30),
    )
    create_events_view(store.con, LEAD)
    yield store
    store.close()


LEAD_COLUMNS = FeatureColumns(
    ["Industry", "IsConverted"],
    ["NumberOfEmployees"],
    ["campaign_response", "task_call", "task_email", "task_meeting", "task_web_visit"],
    [1, 7, 30, 90],
    active_days=True,
    date_parts=["weekday", "month", "hour"],
)


def test_lead_features_at_training_anchors_are_unchanged(lead_store):
    examples = build_examples(lead_store.con, LEAD, LEAD_SPEC, datetime(2025, 6, 30))
    frame = examples.frame
    assert len(frame) > 300
    new = build_features(lead_store.con, LEAD, frame, LEAD_COLUMNS)
    old = reference_features(lead_store.con, LEAD, frame, LEAD_COLUMNS)
    assert_same(new, old, LEAD_COLUMNS)
    assert new["task_email_90d"].sum() > 100  # the generated events are counted at all
    assert new["active_days_90d"].max() > 1


def test_lead_features_of_a_scoring_run_are_unchanged(lead_store):
    ids = current_entity_ids(lead_store.con, LEAD)
    anchors = pd.DataFrame({"entity_id": ids, "anchor_at": pd.Timestamp("2025-05-01 10:00")})
    # ids the store does not hold, and no events at all, score with defaults as before
    anchors.loc[len(anchors)] = ["00Qunknown", pd.Timestamp("2025-05-01 10:00")]
    new = build_features(lead_store.con, LEAD, anchors, LEAD_COLUMNS)
    old = reference_features(lead_store.con, LEAD, anchors, LEAD_COLUMNS)
    assert_same(new, old, LEAD_COLUMNS)
    nothing = FeatureColumns(["Industry"], [], [], [7], derived=["days_since_last_event"])
    assert_same(
        build_features(lead_store.con, LEAD, anchors, nothing),
        reference_features(lead_store.con, LEAD, anchors, nothing),
        nothing,
    )


@pytest.mark.parametrize("scoring", [False, True], ids=["training", "scoring"])
def test_value_and_rfm_features_are_unchanged(tmp_path, scoring):
    customers, orders = customer_frames(250, seed=7)
    # amounts that are missing must be skipped by sums and means, as SQL's aggregates skip NULL
    orders.loc[orders.index % 13 == 0, "amount"] = None
    store = Store(tmp_path / "values.duckdb")
    load_table(store, "customers", customers)
    load_table(store, "orders", orders)
    # and NaN amounts propagate through sums, means and maxima, as in SQL
    store.con.execute("UPDATE orders SET amount = 'nan'::DOUBLE WHERE order_id LIKE '%03'")
    spec = customer_spec(
        name="ltv",
        task="regression",
        label={"event": "order", "within_days": 90, "aggregate": "sum"},
    )
    entity = resolve_entity(store.con, spec)
    sources = entity_sources(store.con, entity, spec)
    create_events_view(store.con, entity, sources)
    if scoring:
        ids = current_entity_ids(store.con, entity)
        frame = pd.DataFrame({"entity_id": ids, "anchor_at": pd.Timestamp(AS_OF)})
    else:
        frame = build_examples(store.con, entity, spec, AS_OF, sources).frame
    columns = FeatureColumns(
        ["plan", "region_code"],
        ["seats"],
        ["order"],
        [7, 30, 60],
        values=["order"],
        active_days=True,
        date_parts=["weekday"],
        repeat_days=True,
    )
    new = build_features(store.con, entity, frame, columns)
    old = reference_features(store.con, entity, frame, columns)
    assert_same(new, old, columns)
    assert new["order_value_max_60d"].notna().sum() > 20
    assert new["order_days_since_first"].notna().sum() > 100
    assert new["order_value_sum_all"].isna().any()  # a NaN amount reached the features
    assert (new["order_active_days_all"] < new["order_count_all"]).any()  # two orders, one day
    store.close()
