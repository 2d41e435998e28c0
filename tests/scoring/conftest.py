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
