"""Customers with a known answer: order values (value tiers, lifetime value) and churn.

Beside the Salesforce org, the generator writes a billing system's view of the same period: one
row per customer and one per order, plus the hidden model's answer for three predictions (all
anchored ``ANCHOR_OFFSET_DAYS`` after a customer joined):

- **lifetime value** (regression): the total order value in ``[anchor, anchor + 180 days)``;
- **value tier** (multiclass): that total bucketed ``BRONZE < 500 <= SILVER <= 3000 < GOLD``;
- **churn** (binary): no order in ``[anchor, anchor + 90 days)``.

Each customer orders as a Poisson process of rate ``lam`` (per day) until a churn time drawn with
hazard ``h`` (per day); order values are lognormal with mean ``mu``. ``lam``, ``mu`` and ``h``
depend on firmographics and plan, and ``lam`` also on a latent appetite that only shows through
past orders. With these parameters, and whether the customer is still active at the anchor, the
oracle answers are closed-form (expected value, churn probability) or simulated (tier
probabilities); they are the ceiling any model can reach. ``docs/sandbox.md`` documents the
constants.

The tables are ``_customer``, ``_customer_order`` and ``_customer_truth`` in the sandbox database
(underscored: not served over the API). :func:`export_customers` writes the first two as Parquet
files, the way a billing export reaches leadscore (``[[sources]]``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DAY = 86_400
CUSTOMERS_PER_LEAD = 0.1
MIN_CUSTOMERS = 200
HISTORY_DAYS = 720
ANCHOR_OFFSET_DAYS = 60
LTV_DAYS = 180
CHURN_DAYS = 90
TIERS = (("BRONZE", None, 500.0), ("SILVER", 500.0, 3000.0), ("GOLD", 3000.0, None))
"""BRONZE < 500 <= SILVER <= 3000 < GOLD (the bounds of the 180-day order value)."""
TIER_SIMULATIONS = 200

PLANS = ("Starter", "Growth", "Enterprise")
PLAN_WEIGHTS = (0.55, 0.33, 0.12)
PLAN_RATE = {"Starter": 0.0, "Growth": 0.45, "Enterprise": 0.9}  # log order rate
PLAN_VALUE = {"Starter": 120.0, "Growth": 350.0, "Enterprise": 1100.0}  # mean order value
PLAN_HAZARD = {"Starter": 0.5, "Growth": 0.0, "Enterprise": -0.6}  # log churn hazard
INDUSTRY_RATE = {
    "Retail": 0.35,
    "Software": 0.2,
    "Technology": 0.15,
    "Healthcare": 0.0,
    "Education": -0.25,
    "Government": -0.4,
}
REGION_HAZARD = {"NA": -0.2, "EU": 0.0, "APAC": 0.15, "LATAM": 0.35}
COUNTRIES = {
    "United States": "NA",
    "Canada": "NA",
    "United Kingdom": "EU",
    "Germany": "EU",
    "France": "EU",
    "Australia": "APAC",
    "Japan": "APAC",
    "Brazil": "LATAM",
    "Mexico": "LATAM",
}
BASE_RATE = -3.4  # log orders per day: about one order a month for a typical customer
BASE_HAZARD = -6.2  # log churn hazard per day: a typical customer stays about 16 months
LATENT_SIGMA = 0.5
VALUE_SIGMA = 0.45  # lognormal spread of one order's value
EMPLOYEE_VALUE = 0.18  # order value grows with employees^0.18


_SCHEMA = (
    "CREATE TABLE _customer (customer_id TEXT PRIMARY KEY, joined_at INTEGER, Industry TEXT, "
    "Country TEXT, NumberOfEmployees INTEGER, Plan TEXT, Seats INTEGER)",
    "CREATE TABLE _customer_order (order_id TEXT PRIMARY KEY, customer_id TEXT, "
    "ordered_at INTEGER, amount REAL)",
    "CREATE TABLE _customer_truth (customer_id TEXT PRIMARY KEY, anchor_at INTEGER, "
    "active_at_anchor INTEGER, order_rate REAL, order_value REAL, churn_hazard REAL, "
    "ltv_expected REAL, ltv_actual REAL, p_churn REAL, churned INTEGER, p_bronze REAL, "
    "p_silver REAL, p_gold REAL, tier TEXT, ltv_closed INTEGER, churn_closed INTEGER)",
)


def _tables(conn: sqlite3.Connection) -> None:
    # plain execute: executescript would commit the generator's open transaction
    for table in ("_customer", "_customer_order", "_customer_truth"):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in _SCHEMA:
        conn.execute(statement)


def tier_of(values: np.ndarray) -> np.ndarray:
    """The value tier of 180-day order totals.

    Args:
        values: totals.

    Returns:
        Tier names.
    """
    v = np.asarray(values, dtype=float)
    return np.where(v < TIERS[0][2], "BRONZE", np.where(v <= TIERS[1][2], "SILVER", "GOLD"))


TIER_CHUNK_CUSTOMERS = 1_000
"""Customers whose tier simulations are drawn at once (memory only: the draws do not change)."""
INSERT_ROWS = 50_000
"""Rows converted to Python objects and inserted at once (memory only)."""


@dataclass
class _CustomerData:
    """Customers and their oracle answers (one row each), orders as compact arrays."""

    customers: pd.DataFrame
    truth: pd.DataFrame
    ids: np.ndarray
    order_customer: np.ndarray
    """Customer index of each order, orders sorted by (``ordered_at``, ``order_id``)."""
    order_number: np.ndarray
    """The ``n`` of each order's ``order_id`` ``OR{n:09d}`` (its draw order), same sort."""
    ordered_at: np.ndarray
    amount: np.ndarray


def _restored(state: dict[str, Any]) -> np.random.Generator:
    """A generator continuing from a saved bit-generator state (the default PCG64)."""
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _tier_shares(
    seed: int,
    hazard: np.ndarray,
    lam: np.ndarray,
    log_mean: np.ndarray,
    active: np.ndarray,
    chunk: int | None = None,
    shard: int = 0,
) -> np.ndarray:
    """Each customer's share of BRONZE, SILVER and GOLD over ``TIER_SIMULATIONS`` simulated lives.

    The stream ``[seed, 9002]`` draws every simulation's lifetime first, then every order count,
    then every order value (``TIER_SIMULATIONS`` x customers each). Drawing all of them at once
    takes about 250 bytes per simulation (5 GB at 1M leads), so the draws are replayed chunk by
    chunk of ``TIER_CHUNK_CUSTOMERS`` customers instead: a first pass records the bit generator's
    state where each chunk's lifetimes and counts begin, and the last pass re-draws them from
    those states. Numpy draws element by element, so the numbers are exactly those of the single
    draws (and so are the per-simulation sums, which stay in the same order).

    Args:
        seed: the org's seed.
        hazard: churn hazard per customer.
        lam: order rate per customer.
        log_mean: mean log order value per customer.
        active: whether each customer is active at its anchor.
        chunk: customers drawn at once, ``TIER_CHUNK_CUSTOMERS`` by default (changes the memory,
            never the result).
        shard: the org's shard (``generator.SHARD_LEADS``); shards after the first have their own
            stream ``[seed, 9002, shard]``.

    Returns:
        A (customers, 3) array of the BRONZE, SILVER and GOLD shares.
    """
    n = len(hazard)
    sims = TIER_SIMULATIONS
    sim = np.random.default_rng(shard_stream([seed, 9002], shard))
    step = chunk or TIER_CHUNK_CUSTOMERS
    chunks = [(low, min(n, low + step)) for low in range(0, n, step)]

    def life(draw: np.random.Generator, low: int, high: int) -> np.ndarray:
        span = np.minimum(draw.exponential(1.0 / np.repeat(hazard[low:high], sims)), LTV_DAYS)
        return span * np.repeat(active[low:high], sims)

    life_states = []
    for low, high in chunks:
        life_states.append(sim.bit_generator.state)
        life(sim, low, high)
    count_states = []
    for (low, high), state in zip(chunks, life_states, strict=True):
        count_states.append(sim.bit_generator.state)
        sim.poisson(np.repeat(lam[low:high], sims) * life(_restored(state), low, high))
    shares = np.empty((n, 3))
    for (low, high), life_state, count_state in zip(chunks, life_states, count_states, strict=True):
        spans = life(_restored(life_state), low, high)
        k = _restored(count_state).poisson(np.repeat(lam[low:high], sims) * spans)
        size = (high - low) * sims
        who = np.repeat(np.arange(size), k)
        values = np.exp(sim.normal(np.repeat(log_mean[low:high], sims)[who], VALUE_SIGMA))
        totals = np.bincount(who, weights=values, minlength=size)
        tiers = tier_of(totals).reshape(high - low, sims)
        for column, (name, _, _) in enumerate(TIERS):
            shares[low:high, column] = (tiers == name).mean(axis=1)
    return shares


def shard_stream(key: list[int], shard: int) -> list[int]:
    """A random stream's key within a shard of the org (``generator.SHARD_LEADS``).

    The first shard's key is ``key`` itself, as before orgs had shards (so an org of one shard
    is unchanged); later shards append their number.
    """
    return [*key, shard] if shard else key


def _customer_data(
    seed: int, n: int, as_of: int, shard: int = 0, first_customer: int = 0, first_order: int = 0
) -> _CustomerData:
    """Draw the customers, their orders and the oracle's answers (as :func:`generate_customers`).

    ``shard`` > 0 draws from that shard's own streams; customer and order numbers start at
    ``first_customer`` and ``first_order``.
    """
    rng = np.random.default_rng(shard_stream([seed, 9001], shard))
    ids = np.array([f"CU{i:07d}" for i in range(first_customer, first_customer + n)], dtype=object)
    joined = as_of - rng.uniform(ANCHOR_OFFSET_DAYS, HISTORY_DAYS, n) * DAY
    joined = (joined // 60 * 60).astype(np.int64)
    industries = np.array(list(INDUSTRY_RATE), dtype=object)
    industry = industries[rng.integers(0, len(industries), n)]
    countries = np.array(list(COUNTRIES), dtype=object)
    country = countries[rng.integers(0, len(countries), n)]
    region = np.array([COUNTRIES[c] for c in country], dtype=object)
    employees = np.exp(rng.uniform(np.log(2), np.log(8000), n)).astype(int)
    plan_index = rng.choice(len(PLANS), size=n, p=PLAN_WEIGHTS)
    # bigger companies buy bigger plans more often
    upgrade = (employees > 1000) & (rng.random(n) < 0.4)
    plan_index = np.where(upgrade, np.minimum(plan_index + 1, 2), plan_index)
    plan = np.array(PLANS, dtype=object)[plan_index]
    seats = np.maximum(1, (employees * rng.uniform(0.01, 0.1, n)).astype(int))
    latent = rng.normal(0, LATENT_SIGMA, n)
    lam = np.exp(
        BASE_RATE
        + np.array([PLAN_RATE[p] for p in plan])
        + np.array([INDUSTRY_RATE[i] for i in industry])
        + 0.1 * np.log(seats)
        + latent
    )
    mu = np.array([PLAN_VALUE[p] for p in plan]) * (employees / 100.0) ** EMPLOYEE_VALUE
    hazard = np.exp(
        BASE_HAZARD
        + np.array([PLAN_HAZARD[p] for p in plan])
        + np.array([REGION_HAZARD[r] for r in region])
        - 0.25 * latent
    )
    churn_at = joined + rng.exponential(1.0 / hazard) * DAY
    end = np.minimum(churn_at, as_of)
    alive_days = np.maximum(end - joined, 0) / DAY
    counts = rng.poisson(lam * alive_days)
    owner = np.repeat(np.arange(n), counts)
    times = joined[owner] + rng.uniform(0, 1, len(owner)) * alive_days[owner] * DAY
    times = times.astype(np.int64)
    log_mean = np.log(mu) - VALUE_SIGMA**2 / 2
    amounts = np.round(np.exp(rng.normal(log_mean[owner], VALUE_SIGMA)), 2)
    # Orders sort by (ordered_at, order_id); order_id "OR{i:09d}" sorts like i, which already
    # increases, so a stable sort on the time is that order (without a string per order).
    order = np.argsort(times, kind="stable")
    o_owner, o_time, o_amount = owner[order], times[order], amounts[order]
    del owner, times, amounts
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "joined_at": joined,
            "Industry": industry,
            "Country": country,
            "NumberOfEmployees": employees,
            "Plan": plan,
            "Seats": seats,
        }
    )
    anchor = joined + ANCHOR_OFFSET_DAYS * DAY
    active = churn_at > anchor
    # actual outcomes from the drawn orders (summed in the sorted order, as always)
    in_ltv = (o_time >= anchor[o_owner]) & (o_time < anchor[o_owner] + LTV_DAYS * DAY)
    in_churn = (o_time >= anchor[o_owner]) & (o_time < anchor[o_owner] + CHURN_DAYS * DAY)
    ltv_actual = np.bincount(o_owner[in_ltv], weights=o_amount[in_ltv], minlength=n)
    churn_orders = np.bincount(o_owner[in_churn], minlength=n)
    del in_ltv, in_churn

    def expected_alive(days: float) -> np.ndarray:
        # E[min(T, days)] for T ~ Exp(hazard): memoryless from the anchor
        return (1 - np.exp(-hazard * days)) / hazard

    ltv_expected = np.where(active, lam * mu * expected_alive(LTV_DAYS), 0.0)
    total = hazard + lam
    p_no_order = hazard / total * (1 - np.exp(-total * CHURN_DAYS)) + np.exp(-total * CHURN_DAYS)
    p_churn = np.where(active, p_no_order, 1.0)
    # tier probabilities by simulation (same parameters; order values from the lognormal)
    shares = _tier_shares(seed, hazard, lam, log_mean, active, shard=shard)
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "anchor_at": anchor.astype(np.int64),
            "active_at_anchor": active.astype(int),
            "order_rate": lam,
            "order_value": mu,
            "churn_hazard": hazard,
            "ltv_expected": ltv_expected,
            "ltv_actual": ltv_actual,
            "p_churn": p_churn,
            "churned": (churn_orders == 0).astype(int),
            "p_bronze": shares[:, 0],
            "p_silver": shares[:, 1],
            "p_gold": shares[:, 2],
            "tier": tier_of(ltv_actual),
            "ltv_closed": (anchor + LTV_DAYS * DAY <= as_of).astype(int),
            "churn_closed": (anchor + CHURN_DAYS * DAY <= as_of).astype(int),
        }
    )
    return _CustomerData(customers, truth, ids, o_owner, order + first_order, o_time, o_amount)


def _order_rows(data: _CustomerData, low: int, high: int) -> list[tuple[Any, ...]]:
    """Rows ``low:high`` of ``_customer_order`` as Python values."""
    return list(
        zip(
            [f"OR{i:09d}" for i in data.order_number[low:high].tolist()],
            data.ids[data.order_customer[low:high]].tolist(),
            data.ordered_at[low:high].tolist(),
            data.amount[low:high].tolist(),
            strict=True,
        )
    )


def generate_customers(seed: int, n: int, as_of: int) -> dict[str, pd.DataFrame]:
    """Customers, orders and the oracle's answers.

    Args:
        seed: random seed.
        n: customers.
        as_of: end of the history, UTC epoch seconds.

    Returns:
        ``customers``, ``orders`` and ``truth`` frames (times in epoch seconds).
    """
    data = _customer_data(seed, n, as_of)
    orders = pd.DataFrame(
        _order_rows(data, 0, len(data.order_number)),
        columns=["order_id", "customer_id", "ordered_at", "amount"],
    )
    return {"customers": data.customers, "orders": orders, "truth": data.truth}


def _frame_rows(frame: pd.DataFrame, low: int, high: int) -> Iterator[tuple[Any, ...]]:
    """Rows ``low:high`` of a frame as Python values, NaN as None."""
    part = frame.iloc[low:high]
    return part.astype(object).where(part.notna(), None).itertuples(index=False, name=None)


def write_customers(
    conn: sqlite3.Connection,
    *,
    seed: int,
    leads: int,
    as_of: int,
    shard: int = 0,
    first_customer: int = 0,
    first_order: int = 0,
) -> tuple[int, int]:
    """Generate the customers of an org (or of one shard of it) into its database.

    Orders stay numpy arrays until they are written, ``INSERT_ROWS`` at a time: a Python object
    per value for every order at once is most of this step's memory.

    Args:
        conn: the sandbox database (the caller commits).
        seed: the org's seed.
        leads: the org's (or the shard's) lead count: customers are a tenth of it, and the first
            shard has at least ``MIN_CUSTOMERS``.
        as_of: end of the history, UTC epoch seconds.
        shard: the shard (``generator.SHARD_LEADS``); the first one creates the tables.
        first_customer: the number of the shard's first customer (earlier shards' customers).
        first_order: the number of the shard's first order (earlier shards' orders).

    Returns:
        The customers and the orders written.
    """
    n = int(leads * CUSTOMERS_PER_LEAD)
    if shard == 0:
        n = max(MIN_CUSTOMERS, n)
        _tables(conn)
    if n == 0:
        return 0, 0
    data = _customer_data(seed, n, as_of, shard, first_customer, first_order)
    orders = len(data.order_number)
    for table, frame in (("_customer", data.customers), ("_customer_truth", data.truth)):
        marks = ", ".join("?" for _ in frame.columns)
        for low in range(0, len(frame), INSERT_ROWS):
            conn.executemany(
                f"INSERT INTO {table} VALUES ({marks})",
                _frame_rows(frame, low, low + INSERT_ROWS),
            )
        if table == "_customer":
            for low in range(0, orders, INSERT_ROWS):
                conn.executemany(
                    "INSERT INTO _customer_order VALUES (?, ?, ?, ?)",
                    _order_rows(data, low, min(orders, low + INSERT_ROWS)),
                )
    return n, orders


def _read(db_path: Path, table: str) -> pd.DataFrame:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return pd.read_sql_query(f"SELECT * FROM {table}", conn)


def _times(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for c in columns:
        frame[c] = pd.to_datetime(frame[c], unit="s")
    return frame


def export_customers(db_path: Path, out_dir: Path) -> dict[str, Path]:
    """Write the customers and orders as Parquet files, as a billing export would deliver them.

    Args:
        db_path: the sandbox database (``<workdir>/sandbox.sqlite``).
        out_dir: where to write ``customers.parquet`` and ``orders.parquet``.

    Returns:
        ``customers`` and ``orders`` paths.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"customers": out_dir / "customers.parquet", "orders": out_dir / "orders.parquet"}
    _times(_read(db_path, "_customer"), "joined_at").to_parquet(paths["customers"], index=False)
    _times(_read(db_path, "_customer_order"), "ordered_at").to_parquet(paths["orders"], index=False)
    return paths


def customer_truth(db_path: Path) -> pd.DataFrame:
    """The oracle's answers per customer (times as naive UTC datetimes).

    Args:
        db_path: the sandbox database.

    Returns:
        One row per customer.
    """
    return _times(_read(db_path, "_customer_truth"), "anchor_at")
