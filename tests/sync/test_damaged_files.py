"""Damaged CSV sources are refused with the file and line, and never replace a good table.

What an adversarial tester fed `leadscore import`: ragged rows, empty and binary files, an
unterminated quote, NUL bytes, and a header-only file that used to replace a good table with 0
rows at exit 0.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.errors import ConfigError
from connector.files import import_table
from connector.store import Store
from sync.cli import app

GOOD = "id,country,visits\n1,DE,3\n2,FR,5\n3,IT,1\n"

CONFIG = """[store]
path = "store.duckdb"
models_dir = "models"

[[sources]]
path = "leads.csv"
table = "leads"
id_column = "id"
{extra}
[[predictions]]
name = "p"
entity = "lead"
entity_table = {{ table = "leads", id_column = "id" }}
label = {{ event = "converted", within_days = 30 }}
"""

DAMAGED: list[tuple[str, bytes, str]] = [
    ("ragged_short", b"id,country,visits\n1,DE,3\n2,FR\n3,IT,1\n", "line 3 has 2 fields"),
    ("ragged_long", b"id,country,visits\n1,DE,3\n2,FR,5,9\n", "line 3 has 4 fields"),
    ("empty", b"", "the file is empty"),
    ("binary", bytes(range(256)) * 4, "not UTF-8 text"),
    ("unterminated", b'id,country,visits\n1,"DE,3\n2,FR,5\n', "quote opened on line 2"),
    ("nul", b"id,country,visits\n1,D\x00E,3\n2,FR,5\n", "line 2 holds a NUL byte"),
    ("nul_header", b"id\x00,country\n1,DE\n", "line 1 holds a NUL byte"),
    ("header_only", b"id,country,visits\n", "holds no rows; leads keeps its 3 rows"),
]


def run_import(directory: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["import", "--config", str(directory / "config.toml"), "--json"], env={}
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("name, content, message", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_csv_is_named_with_its_line_and_keeps_the_table(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    source = tmp_path / "leads.csv"
    source.write_text(GOOD)
    (tmp_path / "config.toml").write_text(CONFIG.format(extra=""))
    code, output = run_import(tmp_path)
    assert code == 0, output
    source.write_bytes(content)
    code, output = run_import(tmp_path)
    assert code == 2, output
    assert message in output and "leads.csv" in output, output
    assert "Traceback" not in output and "id column" not in output
    with Store(tmp_path / "store.duckdb") as store:
        assert store.query_df("SELECT count(*) AS n FROM leads")["n"].item() == 3


def test_an_empty_table_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_text(GOOD)
    (tmp_path / "config.toml").write_text(CONFIG.format(extra="allow_empty = true\n"))
    assert run_import(tmp_path)[0] == 0
    (tmp_path / "leads.csv").write_text("id,country,visits\n")
    code, output = run_import(tmp_path)
    assert code == 0, output
    assert json.loads(output)["counts"]["tables"]["leads"]["rows"] == 0


def test_compressed_and_semicolon_files_still_import(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.csv.gz", "wt") as out:
        out.write('id;name\n1;"Smith; John"\n2;"multi\nline"\n')
    with Store(tmp_path / "s.duckdb") as store:
        result = import_table(store, tmp_path / "a.csv.gz", "a", id_column="id")
        assert result.rows == 2
        with pytest.raises(ConfigError, match="line 3 has 3 fields"):
            (tmp_path / "b.csv").write_text("id;x\n1;a\n2;b;c\n")
            import_table(store, tmp_path / "b.csv", "b", id_column="id")
