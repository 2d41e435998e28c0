"""A busy org: write calls above a batch size fail every record, as triggers at the CPU limit do."""

from __future__ import annotations

import pytest

from connector.sandbox import InjectedFaults, Sandbox
from tests.connector.sandbox.conftest import AS_OF, connect


def update(sf, ids, score):
    body = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, "id": i, "Lead_Score__c": score} for i in ids],
    }
    return sf.restful("composite/sobjects", method="PATCH", json=body)


@pytest.mark.parametrize("code", ["CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "UNABLE_TO_LOCK_ROW"])
def test_batches_above_the_size_fail_whole(tmp_path, code):
    with Sandbox(tmp_path, leads=80, seed=8, as_of=AS_OF) as box:
        sf = connect(box)
        ids = [r["Id"] for r in sf.query("SELECT Id FROM Lead LIMIT 60")["records"]]
        plan = InjectedFaults(busy_batch_size=25, busy_error=code, busy_objects=["Lead"])
        box.faults = plan
        failed = update(sf, ids, 11)
        assert {r["errors"][0]["statusCode"] for r in failed} == {code}
        assert box.sql("SELECT COUNT(*) FROM Lead WHERE Lead_Score__c = 11") == [(0,)]
        assert all(r["success"] for r in update(sf, ids[:25], 12))
        assert plan.batch_sizes == [60, 25] and plan.injected["busy_batch"] == 1
    with pytest.raises(ValueError, match="busy_error"):
        InjectedFaults(busy_batch_size=1, busy_error="NOPE")
