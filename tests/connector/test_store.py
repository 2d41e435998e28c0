"""The DuckDB store: raw tables, cursors committed with their page, run log, schema evolution."""

from __future__ import annotations

import logging
from datetime import datetime

import duckdb
import pandas as pd
import pytest

from connector.errors import ConfigError
from connector.store import Store, quote_identifier, raw_table_name

COLUMNS = {
    "Id": ("id", "VARCHAR"),
    "Industry": ("picklist", "VARCHAR"),
    "SystemModstamp": ("datetime", "TIMESTAMP"),
}


def page(*rows: tuple[str, str | None, datetime]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["Id", "Industry", "SystemModstamp"])


def test_upsert_counts_new_changed_and_unchanged_rows_and_advances_the_cursor(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.ensure_table("Lead", "sf_lead", COLUMNS, key="Id")
        first = store.upsert_page(
            "Lead",
            "sf_lead",
            page(("a", "x", datetime(2024, 1, 1)), ("b", None, datetime(2024, 1, 2))),
            key="Id",
            cursor_field="SystemModstamp",
        )
        again = store.upsert_page(
            "Lead",
            "sf_lead",
            page(("b", "y", datetime(2024, 1, 3)), ("a", "x", datetime(2024, 1, 1))),
            key="Id",
            cursor_field="SystemModstamp",
        )
        assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
        assert (again.inserted, again.updated, again.unchanged) == (0, 1, 1)
        assert store.read_cursor("Lead") == datetime(2024, 1, 3)
        assert store.query_df("SELECT Industry FROM sf_lead ORDER BY Id")["Industry"].tolist() == [
            "x",
            "y",
        ]


def test_a_value_change_within_the_same_second_counts_as_changed(tmp_path):
    # Salesforce timestamps have second resolution: two edits in one second share a SystemModstamp
    with Store(tmp_path / "s.duckdb") as store:
        store.ensure_table("Lead", "sf_lead", COLUMNS, key="Id")
        stamp = datetime(2024, 1, 1, 12, 0, 0)
        store.upsert_page(
            "Lead", "sf_lead", page(("a", "x", stamp)), key="Id", cursor_field="SystemModstamp"
        )
        counts = store.upsert_page(
            "Lead", "sf_lead", page(("a", "y", stamp)), key="Id", cursor_field="SystemModstamp"
        )
        assert (counts.updated, counts.unchanged) == (1, 0)
        assert store.query_df("SELECT Industry FROM sf_lead")["Industry"].tolist() == ["y"]


def test_a_failed_page_rolls_back_rows_and_cursor_together(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.ensure_table("Lead", "sf_lead", COLUMNS, key="Id")
        store.upsert_page(
            "Lead",
            "sf_lead",
            page(("a", "x", datetime(2024, 1, 1))),
            key="Id",
            cursor_field="SystemModstamp",
        )
        bad = page(("c", "z", datetime(2024, 2, 1)))
        bad["SystemModstamp"] = ["not a timestamp"]  # fails inside the transaction
        with pytest.raises(duckdb.Error):
            store.upsert_page("Lead", "sf_lead", bad, key="Id", cursor_field="SystemModstamp")
        assert store.read_cursor("Lead") == datetime(2024, 1, 1)
        assert store.query_df("SELECT count(*) AS n FROM sf_lead")["n"].item() == 1


DELETED = {**COLUMNS, "IsDeleted": ("boolean", "BOOLEAN")}


def merge(store: Store, *rows: tuple[str, str | None, datetime, bool]):
    frame = pd.DataFrame(rows, columns=["Id", "Industry", "SystemModstamp", "IsDeleted"])
    return store.upsert_page(
        "Lead", "sf_lead", frame, key="Id", cursor_field="SystemModstamp", deleted_field="IsDeleted"
    )


def stored(store: Store) -> list[tuple[str, str | None]]:
    rows = store.query_records("SELECT Id, Industry FROM sf_lead ORDER BY Id")
    return [(r["Id"], r["Industry"]) for r in rows]


def test_pages_of_new_records_and_pages_that_hold_stored_ones_merge_alike(tmp_path):
    # all-new pages are inserted without a join with the table; a page with a stored record
    # fails that insert on the key and is merged again the full way, with nothing doubled
    day = datetime(2024, 1, 1)
    with Store(tmp_path / "s.duckdb") as store:
        store.ensure_table("Lead", "sf_lead", DELETED, key="Id")
        assert merge(store, ("a", "x", day, False), ("b", "x", day, False)).inserted == 2
        mixed = merge(store, ("c", "x", datetime(2024, 1, 2), False), ("a", "y", day, False))
        assert (mixed.inserted, mixed.updated, mixed.unchanged) == (1, 1, 0)
        assert merge(store, ("d", None, datetime(2024, 1, 3), False)).inserted == 1
        gone = merge(store, ("b", None, datetime(2024, 1, 4), True))
        assert (gone.inserted, gone.deleted) == (0, 1)
        assert stored(store) == [("a", "y"), ("c", "x"), ("d", None)]
        assert store.read_cursor("Lead") == datetime(2024, 1, 4)
    # a new session starts with the fast path: a page of stored records falls back as well
    with Store(tmp_path / "s.duckdb") as store:
        again = merge(store, ("c", "x", datetime(2024, 1, 2), False), ("e", "z", day, False))
        assert (again.inserted, again.updated, again.unchanged) == (1, 0, 1)
        assert stored(store) == [("a", "y"), ("c", "x"), ("d", None), ("e", "z")]
        assert store.read_cursor("Lead") == datetime(2024, 1, 4)


def test_a_bulk_csv_page_with_stored_records_falls_back_to_the_full_merge(tmp_path):
    csv = tmp_path / "page.csv"
    with Store(tmp_path / "s.duckdb") as store:
        store.ensure_table("Lead", "sf_lead", COLUMNS, key="Id")
        for body, expected in (
            ("a,x,2024-01-01T00:00:00.000Z\nb,,2024-01-02T00:00:00.000Z\n", (2, 0, 0)),
            ("b,y,2024-01-03T00:00:00.000Z\nc,z,2024-01-03T00:00:00.000Z\n", (1, 1, 0)),
        ):
            csv.write_text("Id,Industry,SystemModstamp\n" + body)
            counts = store.upsert_csv(
                "Lead", "sf_lead", csv, key="Id", cursor_field="SystemModstamp"
            )
            assert (counts.inserted, counts.updated, counts.unchanged) == expected
        assert stored(store) == [("a", "x"), ("b", "y"), ("c", "z")]


def test_new_columns_are_added_to_existing_tables(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.ensure_table("Lead", "sf_lead", COLUMNS, key="Id")
        added = store.ensure_table(
            "Lead", "sf_lead", {**COLUMNS, "Country": ("string", "VARCHAR")}, key="Id"
        )
        assert added == ["Country"]
        assert store.source_fields("Lead")["Country"] == "string"


def test_run_log_records_start_and_end(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        run = store.start_run("pull")
        store.finish_run(run, status="failed", counts={"fetched": 3}, api_calls=2, error="boom")
        (last,) = store.recent_runs(1)
    assert last["job"] == "pull" and last["status"] == "failed"
    assert last["counts"] == {"fetched": 3} and last["api_calls"] == 2 and last["error"] == "boom"


def test_the_store_reopens_with_its_data_and_migrations_applied_once(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.mark_synced("Lead", datetime(2024, 5, 1))
    with Store(path) as store:
        assert store.synced_through(["Lead"]) == datetime(2024, 5, 1)
        assert store.synced_through(["Lead", "Task"]) is None


def test_an_unopenable_store_is_a_config_error(tmp_path):
    not_a_db = tmp_path / "junk.duckdb"
    not_a_db.write_text("this is not a database")
    with pytest.raises(ConfigError, match="cannot open store"):
        Store(not_a_db)


def test_identifiers_are_validated():
    assert quote_identifier("Lead_Score__c") == '"Lead_Score__c"'
    for bad in ('a"; DROP TABLE x; --', "1abc", "a b", ""):
        with pytest.raises(ValueError):
            quote_identifier(bad)
    assert raw_table_name("salesforce", "CampaignMember") == "sf_campaign_member"


def test_shared_values_counts_sharing_over_the_whole_table_for_a_few_keys(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.con.execute("CREATE TABLE people (Id VARCHAR, Email VARCHAR)")
        store.con.execute(
            "INSERT INTO people VALUES ('a', 'x@e.com'), ('b', 'y@e.com'), ('c', 'x@e.com'), "
            "('d', '  '), ('e', NULL)"
        )
        # 'a' shares its email with 'c', which is not among the keys asked for
        found = store.shared_values("people", "Id", "Email", ["a", "b", "d", "e", "zz"])
        assert found == {"a": ("x@e.com", 2), "b": ("y@e.com", 1)}
        assert store.shared_values("people", "Id", "Email", []) == {}


def _memory_limit(store: Store) -> str:
    return store.read_connection().execute("SELECT current_setting('memory_limit')").fetchone()[0]


@pytest.mark.parametrize("configured", [None, 80, 2048])
def test_bounded_cache_caps_duckdb_memory_for_a_batch_loop_and_sets_it_back(tmp_path, configured):
    with Store(tmp_path / "s.duckdb", memory_limit_mb=configured) as store:
        before = _memory_limit(store)
        with store.bounded_cache(100):
            # the store's own lower limit wins; otherwise the cap
            assert _memory_limit(store) == ("76.2 MiB" if configured == 80 else "95.3 MiB")
            # a query bigger than the cap still runs (DuckDB evicts and spills)
            total = (
                store.read_connection()
                .execute("SELECT count(DISTINCT i) FROM range(3000000) t(i)")
                .fetchone()[0]
            )
            assert total == 3_000_000
        assert _memory_limit(store) == before


def test_an_error_inside_a_write_is_reported_as_itself_not_as_an_aborted_transaction(tmp_path):
    rows = [
        {"record_id": f"00Q{i:015d}", "field": "Lead_Score__c", "value": i % 100, "success": True}
        for i in range(50_000)
    ]
    # the store's own limit holds even for the ledger write that falls back from its cap
    with Store(tmp_path / "s.duckdb", memory_limit_mb=1) as store:
        with pytest.raises(duckdb.OutOfMemoryException):
            store.record_outcomes("salesforce", "Lead", rows)
        assert len(store.ledger("salesforce", "Lead")) == 0  # usable after it; nothing half-done


def test_bounded_caches_nest_and_the_lower_cap_holds(tmp_path):
    with Store(tmp_path / "s.duckdb") as store, store.bounded_cache(64):
        with store.bounded_cache(200):
            assert _memory_limit(store) == "61.0 MiB"
        with store.bounded_cache(32):
            assert _memory_limit(store) == "30.5 MiB"
        assert _memory_limit(store) == "61.0 MiB"


def test_a_ledger_write_too_big_for_its_cache_cap_is_written_uncapped(tmp_path, monkeypatch):
    rows = [
        {"record_id": f"00Q{i:015d}", "field": "Lead_Score__c", "value": i % 100, "success": True}
        for i in range(50_000)
    ]
    monkeypatch.setattr("connector.store.database.LEDGER_CACHE_MB", 1)
    with Store(tmp_path / "s.duckdb") as store:
        with store.bounded_cache(64):
            store.record_attempts("salesforce", "Lead", rows)
            store.record_outcomes("salesforce", "Lead", rows)
            assert _memory_limit(store) == "61.0 MiB"  # the job's cap is back
        ledger = store.ledger("salesforce", "Lead")
    assert len(ledger) == 50_000
    assert set(ledger["status"]) == {"written"}


def test_a_page_too_big_for_its_cache_cap_is_merged_uncapped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("connector.store.database.PAGE_CACHE_MB", 1)
    day = datetime(2024, 1, 1)
    ids = [f"00Q{i:015d}" for i in range(50_000)]
    page = pd.DataFrame({"Id": ids, "Industry": "x", "SystemModstamp": day})
    with Store(tmp_path / "s.duckdb") as store, caplog.at_level(logging.INFO):
        store.ensure_table("Lead", "sf_lead", COLUMNS, key="Id")
        with store.bounded_cache(64):
            first = store.upsert_page(
                "Lead", "sf_lead", page, key="Id", cursor_field="SystemModstamp"
            )
            assert _memory_limit(store) == "61.0 MiB"  # the job's cap is back
        # the same records again: the fast path fails on the key, the full merge runs
        again = store.upsert_page(
            "Lead", "sf_lead", page.assign(Industry="y"), key="Id", cursor_field="SystemModstamp"
        )
        industries = store.query_records("SELECT Industry, count(*) AS n FROM sf_lead GROUP BY 1")
    assert (first.inserted, again.updated) == (50_000, 50_000)
    assert industries == [{"Industry": "y", "n": 50_000}]
    assert "page of sf_lead over 1 MB" in caplog.text
