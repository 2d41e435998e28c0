"""Computed traits: point-in-time windows, filters, sums, every identity, use as features."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest

from connector.store import Store
from scoring.events import ENTITIES, create_events_view
from scoring.features import FeatureColumns, build_features
from scoring.traits import TraitSpec, check_traits, compute_traits

ANCHOR = datetime(2025, 5, 31)


@pytest.fixture
def store(tmp_path):
    """Two leads; lead A is known to Segment as user u1 and device d1, lead B as u2."""
    with Store(tmp_path / "s.duckdb") as s:
        s.con.execute(
            "CREATE TABLE sf_lead (Id VARCHAR PRIMARY KEY, CreatedDate TIMESTAMP, "
            "IsDeleted BOOLEAN)"
        )
        s.con.execute(
            "INSERT INTO sf_lead VALUES ('A', '2025-01-01', false), ('B', '2025-01-01', false)"
        )
        s.con.executemany(
            "INSERT INTO identity_map VALUES ('lead', ?, ?, ?, 'p', 'primary_email')",
            [["user_id", "u1", "A"], ["anonymous_id", "d1", "A"], ["user_id", "u2", "B"]],
        )
        rows = [
            # (message, event, user, anonymous, days before the anchor, properties)
            ("1", "Email Clicked", "u1", None, 1, {"campaign": "newsletter"}),
            ("2", "Email Clicked", None, "d1", 29.99, {"campaign": "newsletter"}),  # anonymous
            ("3", "Email Clicked", "u1", None, 30.01, {"campaign": "newsletter"}),  # too old
            ("4", "Email Clicked", "u1", None, 0, {"campaign": "newsletter"}),  # at the anchor
            ("5", "Email Clicked", "u1", None, -2, {"campaign": "newsletter"}),  # after it
            ("6", "Email Clicked", "u1", None, 3, {"campaign": "webinar"}),
            ("7", "Order Completed", "u1", "d1", 200, {"revenue": 100.5}),
            ("8", "Order Completed", None, "d1", 10, {"revenue": "20"}),
            ("9", "Order Completed", "u2", None, 5, {"revenue": 7}),
            ("10", "Email Clicked", "stranger", None, 1, {"campaign": "newsletter"}),
        ]
        s.con.executemany(
            "INSERT INTO seg_event VALUES (?, ?, ?, ?, NULL, ?, ?, NULL)",
            [[m, e, u, a, ANCHOR - timedelta(days=d), json.dumps(p)] for m, e, u, a, d, p in rows],
        )
        yield s


TRAITS = [
    TraitSpec(name="emails_clicked_30d", event="Email Clicked", window_days=30),
    TraitSpec(
        name="newsletter_clicks_30d",
        event="Email Clicked",
        window_days=30,
        where={"campaign": "newsletter"},
    ),
    TraitSpec(
        name="order_value_total", event="Order Completed", aggregate="sum", property="revenue"
    ),
    TraitSpec(name="orders_90d", event="Order Completed", window_days=90),
]


def test_traits_count_and_sum_strictly_before_the_anchor_over_every_identity(store):
    anchors = pd.DataFrame(
        {"entity_id": ["A", "B", "A"], "anchor_at": [ANCHOR, ANCHOR, ANCHOR - timedelta(days=2)]}
    )
    got = compute_traits(store.con, ENTITIES["lead"], anchors, TRAITS)
    assert got.to_dict("records") == [
        # A: the anonymous click counts through d1; the click at the anchor and after it do not
        {
            "emails_clicked_30d": 3.0,
            "newsletter_clicks_30d": 2.0,
            "order_value_total": 120.5,
            "orders_90d": 1.0,
        },
        {
            "emails_clicked_30d": 0.0,
            "newsletter_clicks_30d": 0.0,
            "order_value_total": 7.0,
            "orders_90d": 1.0,
        },
        # two days earlier, clicks 1 and 4 have not happened yet, and click 3 is now in the window
        {
            "emails_clicked_30d": 3.0,
            "newsletter_clicks_30d": 2.0,
            "order_value_total": 120.5,
            "orders_90d": 1.0,
        },
    ]


def test_a_trait_over_an_event_the_store_never_saw_is_skipped_with_a_suggestion(store):
    usable, skipped = check_traits(
        store.con, [*TRAITS, TraitSpec(name="clicks", event="Email Click", window_days=7)]
    )
    assert usable == TRAITS
    assert skipped == {
        "clicks": "no 'Email Click' events in the store (did you mean 'Email Clicked'?)"
    }


def test_invalid_trait_definitions_are_rejected():
    with pytest.raises(ValueError, match="needs a property"):
        TraitSpec(name="x", event="Order Completed", aggregate="sum")
    with pytest.raises(ValueError, match="only used with aggregate"):
        TraitSpec(name="x", event="Order Completed", property="revenue")
    with pytest.raises(ValueError):
        TraitSpec(name="not a name", event="X")
    with pytest.raises(ValueError, match="not a property name"):
        TraitSpec(name="x", event="X", where={"a'; drop table x; --": 1})


def test_traits_are_features_and_segment_events_join_the_events_view(store):
    create_events_view(store.con, ENTITIES["lead"])
    events = store.query_df(
        "SELECT entity_id, event, count(*) AS n FROM lead_events "
        "WHERE event LIKE 'seg_%' GROUP BY ALL ORDER BY ALL"
    )
    assert events.to_dict("records") == [
        {"entity_id": "A", "event": "seg_email_clicked", "n": 6},
        {"entity_id": "A", "event": "seg_order_completed", "n": 2},
        {"entity_id": "B", "event": "seg_order_completed", "n": 1},
    ]
    columns = FeatureColumns(
        [], [], ["seg_email_clicked"], [30], traits=[t.model_dump() for t in TRAITS[:2]]
    )
    anchors = pd.DataFrame({"entity_id": ["A", "B"], "anchor_at": [ANCHOR, ANCHOR]})
    frame = build_features(store.con, ENTITIES["lead"], anchors, columns)
    assert columns.names[-2:] == ["emails_clicked_30d", "newsletter_clicks_30d"]
    assert frame["seg_email_clicked_30d"].tolist() == [3.0, 0.0]
    assert frame["newsletter_clicks_30d"].tolist() == [2.0, 0.0]
