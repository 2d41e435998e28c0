"""CSV and Parquet imports into the store."""

from __future__ import annotations

import pandas as pd
import pytest

from connector.errors import ConfigError
from connector.files import import_table
from connector.store import Store


def test_csv_and_parquet_imports(tmp_path):
    frame = pd.DataFrame(
        {"id": ["a", "b", "c"], "country": ["DE", "Select", None], "visits": [1, 2, 3]}
    )
    frame.to_csv(tmp_path / "leads.csv", sep=";", index=False)
    frame.to_parquet(tmp_path / "leads.parquet")
    with Store(tmp_path / "s.duckdb") as store:
        csv = import_table(
            store, tmp_path / "leads.csv", "leads_csv", id_column="id", null_values=("Select",)
        )
        pq = import_table(store, tmp_path / "leads.parquet", "leads_pq", id_column="id")
        assert csv.rows == pq.rows == 3 and csv.columns == ["id", "country", "visits"]
        countries = store.query_df("SELECT country FROM leads_csv ORDER BY id")["country"].tolist()
        assert countries[0] == "DE" and pd.isna(countries[1]) and pd.isna(countries[2])


def test_bad_files_are_clear_errors_and_keep_the_previous_table(tmp_path):
    good = tmp_path / "t.csv"
    good.write_text("id,x\n1,a\n2,b\n")
    dup = tmp_path / "dup.csv"
    dup.write_text("id,x\n1,a\n1,b\n")
    with Store(tmp_path / "s.duckdb") as store:
        import_table(store, good, "t", id_column="id")
        with pytest.raises(ConfigError, match="not a unique key"):
            import_table(store, dup, "t", id_column="id")
        with pytest.raises(ConfigError, match="id column 'key' not found"):
            import_table(store, good, "t", id_column="key")
        with pytest.raises(ConfigError, match="file not found"):
            import_table(store, tmp_path / "missing.csv", "t")
        with pytest.raises(ConfigError, match="unknown file type"):
            import_table(store, tmp_path / "s.duckdb", "t")
        assert store.query_df("SELECT count(*) AS n FROM t")["n"].item() == 2
