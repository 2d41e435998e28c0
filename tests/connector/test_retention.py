"""Retention: score history thinned to changes and one row per lead per day, space reclaimed."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from connector.store import Store
from connector.store.retention import RetentionPolicy, apply_retention, reclaim_space

# (scored_at, {lead: (score, tier)}): hourly runs over two days
RUNS = [
    ("2026-03-01 10:00", {"a": (50, "B"), "b": (20, "D")}),
    ("2026-03-01 11:00", {"a": (51, "B"), "b": (20, "D")}),  # a: a small move, same tier
    ("2026-03-01 12:00", {"a": (81, "A"), "b": (20, "D")}),  # a: tier change
    ("2026-03-01 23:00", {"a": (82, "A"), "b": (20, "D")}),  # the day's last run
    ("2026-03-02 01:00", {"a": (83, "A"), "b": (21, "D")}),
    ("2026-03-02 02:00", {"a": (84, "A"), "b": (29, "D")}),  # b: a move of 8 points > 5
    ("2026-03-02 03:00", {"a": (84, "A"), "b": (29, "D")}),  # the latest run: kept whole
]


def add_runs(store: Store) -> list[int]:
    ids = []
    for at, leads in RUNS:
        frame = pd.DataFrame(
            {
                "entity_id": list(leads),
                "model_version": "v1",
                "probability": [s / 100 for s, _ in leads.values()],
                "score": [s for s, _ in leads.values()],
                "tier": [t for _, t in leads.values()],
                "reasons": None,
                "scored_at": pd.Timestamp(at),
            }
        )
        ids.append(store.append_scores("p", frame))
    return ids


def kept(store: Store, lead: str, ids: list[int]) -> list[int]:
    rows = store.query_df(
        "SELECT score_run_id FROM score_history WHERE entity_id = ? ORDER BY 1", [lead]
    )
    return [ids.index(int(r)) for r in rows["score_run_id"]]


def test_one_row_per_stretch_of_held_scores_and_every_run_still_readable(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        ids = add_runs(store)
        out = apply_retention(store, RetentionPolicy(), datetime(2026, 3, 2, 4))
        # a: a small move merges into its stretch, the tier change starts one, a new day with a
        # new score starts one; each stretch keeps its last row
        assert kept(store, "a", ids) == [1, 3, 6]
        # b: held all of day 1 (one row), moved a point on day 2, then 8 points (> 5)
        assert kept(store, "b", ids) == [3, 4, 6]
        assert out.score_rows == 8 and out.score_rows_kept == 6
        # the latest run stays whole: a push reads it
        assert len(store.latest_scores("p")) == 2
        # every run can still be read: the rows valid at its time (tiers exact, small moves not)
        at_noon = store.scores_at("p", datetime(2026, 3, 1, 12)).set_index("entity_id")
        assert at_noon.loc["a", "tier"] == "A" and at_noon.loc["b", "tier"] == "D"
        first = store.scores_at("p", datetime(2026, 3, 1, 10)).set_index("entity_id")
        assert first.loc["a", "tier"] == "B" and len(first) == 2
        runs = store.query_df("SELECT count(*) AS n FROM score_run")["n"][0]
        assert runs == len(RUNS)
        # a second vacuum changes nothing; days of history cut what is older
        assert apply_retention(store, RetentionPolicy(), datetime(2026, 3, 2, 4)).score_rows == 0
        apply_retention(store, RetentionPolicy(score_history_days=1), datetime(2026, 3, 3, 1, 30))
        assert kept(store, "a", ids) == [6] and kept(store, "b", ids) == [6]


def test_reclaiming_space_rewrites_a_mostly_free_file_and_keeps_sequences(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        big = pd.DataFrame(
            {
                "entity_id": [f"L{i:07d}" for i in range(200_000)],
                "model_version": "v1",
                "probability": 0.5,
                "score": 50,
                "tier": "B",
                "reasons": "x" * 120,
                "scored_at": pd.Timestamp("2026-03-01"),
            }
        )
        first = store.append_scores("p", big)
        store.append_scores("p", big.head(10))
        before, after, rewritten = reclaim_space(store)
        assert not rewritten
        apply_retention(store, RetentionPolicy(score_history_days=1), datetime(2026, 3, 5))
        before, after, rewritten = reclaim_space(store)
        assert rewritten and after < before * 0.6
        # the store still works, and its sequences go on where they were
        assert store.start_score_run() > first + 1
        assert len(store.latest_scores("p")) == 10


def test_a_step_the_disk_cannot_hold_is_refused_in_one_line_naming_the_store(tmp_path):
    from connector.errors import ConfigError
    from connector.store.space import check_free_space, ledger_rows_bytes, raw_rows_bytes

    store = tmp_path / "deep" / "store.duckdb"  # its folder does not exist yet
    check_free_space(store, raw_rows_bytes(1_000, 20), "first sync of 1,000 Lead records")
    needed = raw_rows_bytes(10**12, 20)  # a trillion rows: no disk holds them
    with pytest.raises(ConfigError) as error:
        check_free_space(store, needed, "first sync of 1,000,000,000,000 Lead records")
    message = str(error.value)
    assert str(store) in message and "needs about" in message and "TB" in message
    assert "\n" not in message and "store.path" in message
    assert ledger_rows_bytes(1_000_000, 5) < 2 * 1024**3
