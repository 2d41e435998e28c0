"""Small synthetic stores for scoring tests, loaded through the same store API a pull uses."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connector.salesforce import db_type
from connector.store import Store, raw_table_name

LEAD = {
    "Id": "id",
    "Industry": "picklist",
    "Title": "string",
    "NumberOfEmployees": "int",
    "Status": "picklist",
    "IsConverted": "boolean",
    "ConvertedDate": "date",
    "ConvertedContactId": "reference",
    "CreatedDate": "datetime",
    "SystemModstamp": "datetime",
    "IsDeleted": "boolean",
    "Lead_Score__c": "double",
}
TASK = {
    "Id": "id",
    "WhoId": "reference",
    "Type": "picklist",
    "CreatedDate": "datetime",
    "SystemModstamp": "datetime",
}
MEMBER = {
    "Id": "id",
    "LeadId": "reference",
    "HasResponded": "boolean",
    "FirstRespondedDate": "date",
    "SystemModstamp": "datetime",
}
STREAMS = {"Lead": LEAD, "Task": TASK, "CampaignMember": MEMBER}


def load_rows(store: Store, stream: str, rows: list[dict], *, synced: datetime) -> None:
    types = STREAMS[stream]
    table = raw_table_name("salesforce", stream)
    store.ensure_table(stream, table, {n: (t, db_type(t)) for n, t in types.items()}, key="Id")
    if rows:
        frame = pd.DataFrame.from_records(
            [{n: r.get(n) for n in types} for r in rows], columns=list(types)
        )
        store.upsert_page(stream, table, frame, key="Id", cursor_field="SystemModstamp")
    store.mark_synced(stream, synced)


def build_store(
    path: Path, leads: list[dict], tasks: list[dict], members: list[dict], *, synced: datetime
) -> Store:
    store = Store(path)
    for stream, rows in (("Lead", leads), ("Task", tasks), ("CampaignMember", members)):
        load_rows(store, stream, rows, synced=synced)
    return store


def synthetic_org(
    n: int, seed: int = 0, end: datetime = datetime(2025, 6, 30)
) -> tuple[list, list, list]:
    """Leads whose conversion depends on industry and web visits before a campaign response."""
    rng = np.random.default_rng(seed)
    industries = ["Software", "Retail", "Education", "Finance"]
    effect = {"Software": 1.2, "Retail": -0.3, "Education": -1.0, "Finance": 0.4}
    leads, tasks, members = [], [], []
    for i in range(n):
        lead_id = f"00Q{i:015d}"
        created = end - timedelta(days=int(rng.integers(60, 400)), hours=int(rng.integers(0, 24)))
        anchor_day = (created + timedelta(days=int(rng.integers(1, 30)))).date()
        anchor = datetime.combine(anchor_day, datetime.min.time())
        industry = industries[int(rng.integers(0, 4))]
        visits = int(rng.poisson(1.5))
        for v in range(visits):
            tasks.append(
                {
                    "Id": f"00T{i:09d}{v:06d}",
                    "WhoId": lead_id,
                    "Type": "Web Visit",
                    "CreatedDate": anchor - timedelta(hours=int(rng.integers(1, 6 * 24))),
                    "SystemModstamp": anchor,
                }
            )
        # a sales call after the anchor for converters: leakage if features looked past the anchor
        logit = -1.0 + effect[industry] + 0.9 * np.log1p(visits)
        converted = rng.random() < 1 / (1 + np.exp(-logit))
        if converted:
            tasks.append(
                {
                    "Id": f"00T{i:09d}999999",
                    "WhoId": lead_id,
                    "Type": "Call",
                    "CreatedDate": anchor + timedelta(hours=5),
                    "SystemModstamp": anchor,
                }
            )
        members.append(
            {
                "Id": f"00v{i:015d}",
                "LeadId": lead_id,
                "HasResponded": True,
                "FirstRespondedDate": anchor_day,
                "SystemModstamp": anchor,
            }
        )
        leads.append(
            {
                "Id": lead_id,
                "Industry": industry,
                "Title": f"Title {i}",
                "NumberOfEmployees": int(rng.integers(1, 500)),
                "Status": "Closed - Converted" if converted else "Open",
                "IsConverted": bool(converted),
                "ConvertedDate": anchor_day + timedelta(days=int(rng.integers(0, 20)))
                if converted
                else None,
                "CreatedDate": created,
                "SystemModstamp": created,
                "IsDeleted": False,
                "Lead_Score__c": None,
                "_p_true": float(
                    1 / (1 + np.exp(-logit))
                ),  # not a column: the ground truth for tests
            }
        )
    return leads, tasks, members


@pytest.fixture
def org_store(tmp_path: Path):
    leads, tasks, members = synthetic_org(900)
    store = build_store(
        tmp_path / "store.duckdb", leads, tasks, members, synced=datetime(2025, 6, 30)
    )
    store.p_true = {lead["Id"]: lead["_p_true"] for lead in leads}  # type: ignore[attr-defined]
    yield store
    store.close()


@pytest.fixture
def day() -> date:
    return date(2025, 3, 10)


PLAN_RATE = {"basic": 0.5, "pro": 1.2, "enterprise": 2.5}  # orders per 30 days
PLAN_AMOUNT = {"basic": 40.0, "pro": 120.0, "enterprise": 400.0}


def customer_frames(
    n: int, seed: int = 0, end: datetime = datetime(2025, 6, 30)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers (as an imported table would hold them) and their orders.

    Order frequency depends on plan and region, order value on plan; a customer stops ordering
    after a random churn time (hazard higher for basic plans).
    """
    rng = np.random.default_rng(seed)
    plans = rng.choice(list(PLAN_RATE), size=n, p=[0.5, 0.35, 0.15])
    region = rng.integers(1, 5, size=n)  # a numeric-coded category
    joined = [end - timedelta(days=int(d)) for d in rng.integers(200, 700, size=n)]
    customers = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "joined_at": joined,
            "plan": plans,
            "region_code": region,
            "seats": rng.integers(1, 50, size=n),
            "industry": rng.choice(["Software", "Retail", "Health"], size=n),
        }
    )
    orders = []
    for i in range(n):
        rate = PLAN_RATE[plans[i]] * (1.4 if region[i] == 1 else 1.0) / 30.0
        life = float(rng.exponential(300 if plans[i] != "basic" else 120))
        horizon = min((end - joined[i]).days, life)
        k = rng.poisson(rate * horizon)
        for j, day in enumerate(np.sort(rng.uniform(0, horizon, size=k))):
            orders.append(
                {
                    "order_id": f"O{i:05d}{j:04d}",
                    "customer_id": f"C{i:05d}",
                    "ordered_at": joined[i] + timedelta(days=float(day)),
                    "amount": round(float(rng.lognormal(np.log(PLAN_AMOUNT[plans[i]]), 0.3)), 2),
                    "status": "refunded" if rng.random() < 0.1 else "paid",
                }
            )
    return customers, pd.DataFrame(orders)


def load_table(store: Store, table: str, frame: pd.DataFrame) -> None:
    """Write a frame as a store table (what an import leaves behind)."""
    store.con.register("_frame", frame)
    try:
        store.con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM _frame')
    finally:
        store.con.unregister("_frame")


@pytest.fixture
def customer_store(tmp_path: Path):
    customers, orders = customer_frames(700)
    store = Store(tmp_path / "customers.duckdb")
    load_table(store, "customers", customers)
    load_table(store, "orders", orders)
    yield store
    store.close()
