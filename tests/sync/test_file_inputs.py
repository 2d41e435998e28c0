"""Inputs that real files have, through the CLI: integer and YYYYMMDD time columns, epoch seconds,
whitespace-separated files, an entity table derived from an event table, as_of from the data."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from tests.sync.test_cli import leadscore


def assert_one_line_error(result, *fragments: str) -> None:
    """One ``error:`` line (progress lines may precede it), no traceback."""
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


FAST = """[predictions.training]
depths = [4]
l2_leaf_regs = [3.0]
one_hot_max_sizes = [2]
max_iterations = 150
"""

ORDERS_CONFIG = (
    """[store]
path = "store.duckdb"
models_dir = "models"

[[sources]]
path = "orders.txt"
table = "orders"
id_column = "order_id"
delimiter = "whitespace"
time_formats = {{ day = "yyyymmdd" }}
entities = {{ table = "buyers", id_column = "buyer", time_column = "day" }}

[[predictions]]
name = "repeat"
entity = "buyer"
entity_table = {{ table = "buyers", id_column = "buyer", time_column = "first_event_at" }}
label = {{ event = "order", within_days = 60, aggregate = "count", threshold = {threshold} }}
anchor = {{ offset_days = 30 }}
features = {{ windows_days = [30] }}
[[predictions.events]]
table = "orders"
entity_column = "buyer"
time_column = "day"
event = "order"
value_column = "amount"
"""
    + FAST
)


def write_orders(tmp_path: Path, *, bad_day: str | None = None) -> tuple[Path, datetime]:
    """Buyers whose repeat orders depend on their first-month spend, as aligned text columns."""
    rng = np.random.default_rng(11)
    start = datetime(2024, 1, 1)
    lines = ["  order_id   buyer      day      amount"]
    newest = start
    order = 0
    for b in range(700):
        first = start + timedelta(days=int(rng.integers(0, 500)))
        big = rng.random() < 0.4
        rate = 0.12 if big else 0.02
        day = first
        while day < start + timedelta(days=540):
            amount = rng.gamma(2, 60 if big else 15)
            lines.append(f"  O{order:06d}   B{b:04d}   {day:%Y%m%d}   {amount:9.2f}")
            newest = max(newest, day)
            order += 1
            day += timedelta(days=1 + int(rng.exponential(1 / rate)))
    if bad_day is not None:
        lines.insert(5, f"  X000001   B0001   {bad_day}   10.00")
    (tmp_path / "orders.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "orders.txt", newest


def test_whitespace_file_yyyymmdd_times_and_derived_entities(tmp_path):
    _, newest = write_orders(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(ORDERS_CONFIG.format(threshold=2))
    imported = leadscore("import", "--config", str(config), "--json")
    assert imported.returncode == 0, imported.stderr
    tables = json.loads(imported.stdout)["counts"]["tables"]
    assert tables["orders"]["columns"] == 4 and tables["orders"]["rows"] > 3000
    trained = leadscore("train", "--config", str(config), "--json")
    assert trained.returncode == 0, trained.stderr
    repeat = json.loads(trained.stdout)["counts"]["predictions"]["repeat"]
    assert repeat["split"] == "time"
    assert repeat["metrics"]["auc"] > 0.6
    meta = json.loads(next((tmp_path / "models" / "repeat").glob("*/metadata.json")).read_text())
    # as_of is the newest order day in the file, not the file's modification time
    assert meta["as_of"].startswith(f"{newest:%Y-%m-%d}")
    names = meta["features"]
    assert names["values"] == ["order"] and "weekday" in names["date_parts"]
    assert meta["examples"]["censored"] > 0  # buyers whose window ends after the newest order


def test_a_time_value_that_cannot_be_read_names_its_line(tmp_path):
    write_orders(tmp_path, bad_day="2024-13-45")
    config = tmp_path / "config.toml"
    config.write_text(ORDERS_CONFIG.format(threshold=2))
    result = leadscore("import", "--config", str(config))
    assert_one_line_error(result, "orders.txt: line 6", "'2024-13-45'", "yyyymmdd")


def test_no_labelled_examples_says_how_many_were_censored(tmp_path):
    write_orders(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        ORDERS_CONFIG.format(threshold=2).replace("within_days = 60", "within_days = 3000")
    )
    result = leadscore("train", "--config", str(config))
    assert_one_line_error(result, "no labelled examples", "censored", "by as_of")


EPOCH_CONFIG = (
    """[store]
path = "store.duckdb"
models_dir = "models"

[[sources]]
path = "signups.csv"
table = "signups"
id_column = "id"
time_formats = {{ {column} = "{fmt}" }}

[[predictions]]
name = "paid"
entity = "signup"
entity_table = {{ table = "signups", id_column = "id", time_column = "{column}" }}
label = {{ field = "paid" }}
"""
    + FAST
)


def write_signups(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 900
    seq = np.arange(n) * 3 + 100
    epoch = 1_700_000_000 + np.sort(rng.integers(0, 300 * 86400, n))
    visits = rng.poisson(3, n)
    p = 1 / (1 + np.exp(-(-2.0 + 0.5 * visits + 1.5 * seq / seq.max())))
    pd.DataFrame(
        {
            "id": [f"S{i}" for i in range(n)],
            "seq": seq,
            "signup_epoch": epoch,
            "visits": visits,
            "plan": rng.choice(["free", "trial"], n),
            "paid": (rng.random(n) < p).astype(int),
        }
    ).to_csv(tmp_path / "signups.csv", index=False)


def test_row_order_and_epoch_time_columns_give_a_time_split(tmp_path):
    for column, fmt in (("seq", "row_order"), ("signup_epoch", "epoch_seconds")):
        (tmp_path / fmt).mkdir()
        write_signups(tmp_path / fmt)
        config = tmp_path / fmt / "config.toml"
        config.write_text(EPOCH_CONFIG.format(column=column, fmt=fmt))
        trained = leadscore("train", "--config", str(config), "--json")
        assert trained.returncode == 0, trained.stderr
        paid = json.loads(trained.stdout)["counts"]["predictions"]["paid"]
        assert paid["split"] == "time", fmt
        assert "distinct anchor times" in paid["split_reason"]
        meta = json.loads(
            next((tmp_path / fmt / "models" / "paid").glob("*/metadata.json")).read_text()
        )
        # a sequence number orders the rows but has no calendar: no weekday or hour of it
        parts = meta["features"]["date_parts"]
        assert parts == [] if fmt == "row_order" else "weekday" in parts, (fmt, parts)


def test_a_time_format_may_name_the_column_as_the_file_spells_it(tmp_path):
    write_signups(tmp_path)
    frame = pd.read_csv(tmp_path / "signups.csv").rename(columns={"seq": "Seq No"})
    frame.to_csv(tmp_path / "signups.csv", index=False)
    config = tmp_path / "config.toml"
    config.write_text(
        EPOCH_CONFIG.format(column="Seq_No", fmt="row_order").replace(
            '{ Seq_No = "row_order" }', '{ "Seq No" = "row_order" }'
        )
    )
    trained = leadscore("train", "--config", str(config), "--json")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["counts"]["predictions"]["paid"]["split"] == "time"


def test_a_wrong_time_format_is_refused_at_config_load(tmp_path):
    write_signups(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(EPOCH_CONFIG.format(column="seq", fmt="row-order"))
    result = leadscore("import", "--config", str(config))
    assert_one_line_error(result, "time_formats", "row_order")


REPEAT_CONFIG = (
    """[store]
path = "store.duckdb"
models_dir = "models"

[[sources]]
path = "purchases.txt"
table = "purchases"
delimiter = "whitespace"
row_id = "row_id"
time_formats = { day = "yyyymmdd" }
entities = { table = "shoppers", id_column = "shopper", time_column = "day" }

[[predictions]]
name = "spend"
entity = "shopper"
entity_table = { table = "shoppers", id_column = "shopper", time_column = "first_event_at" }
task = "regression"
label = { event = "purchase", within_days = 180, aggregate = "sum" }
anchor = { date = 2024-07-01T00:00:00Z }
[[predictions.events]]
table = "purchases"
entity_column = "shopper"
time_column = "day"
event = "purchase"
value_column = "amount"
"""
    + FAST
)


def write_repeat_buyers(tmp_path: Path, n: int = 1500) -> None:
    """Shoppers who buy at their own Poisson rate and may drop out after each purchase, spending
    around their own mean (the story BG/NBD and Gamma-Gamma tell), as a file without ids."""
    rng = np.random.default_rng(21)
    start, end = datetime(2024, 1, 1), datetime(2025, 1, 31)
    lines = ["shopper day amount"]
    for s in range(n):
        rate = rng.gamma(0.7, 1 / 15.0)
        drop = rng.beta(1.0, 4.0)
        mean = 1 / rng.gamma(5.0, 1 / 200.0)
        t = rng.uniform(0, 120)
        while t < (end - start).days:
            lines.append(
                f"S{s:05d} {start + timedelta(days=t):%Y%m%d} {rng.gamma(4, mean / 4):.2f}"
            )
            if rng.random() < drop:
                break
            t += rng.exponential(1 / rate)
    (tmp_path / "purchases.txt").write_text("\n".join(lines) + "\n")


def test_spend_of_repeat_buyers_blends_the_textbook_model_and_scores(tmp_path):
    write_repeat_buyers(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(REPEAT_CONFIG)
    trained = leadscore("train", "--config", str(config), "--json")
    assert trained.returncode == 0, trained.stderr
    spend = json.loads(trained.stdout)["counts"]["predictions"]["spend"]
    assert "bg_nbd" in spend["baselines"]  # the textbook model is reported as a baseline
    version = next((tmp_path / "models" / "spend").glob("*/metadata.json")).parent
    meta = json.loads((version / "metadata.json").read_text())
    # on data that follows its story, the textbook model is blended in and stored as JSON
    assert meta["deployed"]["partner"] == "bg_nbd" and meta["deployed"]["weight"] < 1.0
    stored = json.loads((version / "repeat_purchase.json").read_text())
    assert stored["event"] == "purchase" and stored["horizon_days"] == 180
    assert meta["features"]["repeat_days"]  # purchase_active_days_all, its frequency input
    scored = leadscore("score", "--config", str(config), "--json")
    assert scored.returncode == 0, scored.stderr


def test_a_numeric_time_column_without_a_format_names_the_format_to_declare(tmp_path):
    write_orders(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        ORDERS_CONFIG.format(threshold=2).replace('time_formats = { day = "yyyymmdd" }\n', "")
    )
    result = leadscore("import", "--config", str(config))
    assert_one_line_error(result, "entities.time_column", "'day'", 'day = "yyyymmdd"')
    # the entity's own time column: epoch seconds read as plain numbers
    write_signups(tmp_path)
    config.write_text(
        EPOCH_CONFIG.format(column="signup_epoch", fmt="epoch_seconds").replace(
            'time_formats = { signup_epoch = "epoch_seconds" }\n', ""
        )
    )
    result = leadscore("train", "--config", str(config))
    assert_one_line_error(
        result, "entity_table.time_column", "'signup_epoch'", 'signup_epoch = "epoch_seconds"'
    )
