"""Write-back: send only the scores that differ from what the target last confirmed.

The ledger holds, per record and field, the last value the target system confirmed. A record is sent
when any of its mapped fields differs from that value (or was never confirmed); only the differing
fields are sent. Each batch's per-record outcomes are committed to the ledger before the next batch
goes out, so a crash loses at most the confirmation of one batch - and re-sending a score update is
idempotent.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from connector.salesforce import SalesforceClient, describe_object, resolve_fields, write_records
from connector.store import Store
from sync.config import PredictionConfig
from sync.progress import Reporter

TARGET = "salesforce"


@dataclass
class PushCounts:
    """What a push did for one prediction and target.

    Attributes:
        records: scored records considered.
        unchanged: records whose fields all equal the confirmed values.
        sent: records sent.
        written: records the target confirmed.
        failed: records the target rejected (recorded in the ledger with their error).
        errors: failed records by error code.
    """

    records: int = 0
    unchanged: int = 0
    sent: int = 0
    written: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def output_values(scores: pd.DataFrame, fields: dict[str, str]) -> pd.DataFrame:
    """The value each target field should hold, in long form.

    Args:
        scores: latest scores (``entity_id, model_version, probability, score, tier, scored_at``).
        fields: output kind -> target field name.

    Returns:
        ``record_id, field, value`` with ``value`` JSON-encoded (the ledger's representation).
    """
    encoders: dict[str, Any] = {
        "score": lambda s: s["score"].astype(int).map(json.dumps),
        "tier": lambda s: s["tier"].astype(str).map(json.dumps),
        "probability": lambda s: s["probability"].astype(float).round(4).map(json.dumps),
        "model_version": lambda s: s["model_version"].astype(str).map(json.dumps),
        # reasons fit a 255-character text field by construction (scoring.explain)
        "reasons": lambda s: s["reasons"].fillna("").astype(str).str.slice(0, 255).map(json.dumps),
        "scored_at": lambda s: (
            pd.to_datetime(s["scored_at"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ").map(json.dumps)
        ),
    }
    parts = [
        pd.DataFrame(
            {
                "record_id": scores["entity_id"].astype(str),
                "field": name,
                "value": encoders[kind](scores),
            }
        )
        for kind, name in fields.items()
    ]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["record_id", "field", "value"])
    )


def changed_values(desired: pd.DataFrame, ledger: pd.DataFrame) -> pd.DataFrame:
    """The desired values that differ from the last confirmed ones.

    Args:
        desired: ``record_id, field, value``.
        ledger: ledger rows (``record_id, field, value`` with the confirmed value, NULL if never
            confirmed).

    Returns:
        The subset of ``desired`` to send.
    """
    if ledger.empty:
        return desired
    merged = desired.merge(
        ledger[["record_id", "field", "value"]].rename(columns={"value": "confirmed"}),
        on=["record_id", "field"],
        how="left",
    )
    # Compare decoded values: DuckDB may re-serialise JSON (e.g. spacing) but not change its
    # meaning.
    same = [
        c is not None and not pd.isna(c) and json.loads(c) == json.loads(v)
        for v, c in zip(merged["value"], merged["confirmed"], strict=True)
    ]
    return merged.loc[[not s for s in same], ["record_id", "field", "value"]].reset_index(drop=True)


def push_salesforce(
    client: SalesforceClient,
    store: Store,
    prediction: PredictionConfig,
    reporter: Reporter,
) -> PushCounts:
    """Write a prediction's latest scores to Salesforce, sending only changes.

    Args:
        client: connected Salesforce client.
        store: the store (scores and ledger).
        prediction: the prediction and its output mapping.
        reporter: progress.

    Returns:
        Counts.
    """
    counts = PushCounts()
    output = prediction.salesforce
    if output is None:
        return counts
    description = describe_object(client, output.object)
    names = resolve_fields(
        description,
        list(output.fields.values()),
        setting=f"predictions.{prediction.name}.salesforce.fields",
    )
    fields = dict(zip(output.fields, names, strict=True))
    scores = store.latest_scores(prediction.name)
    counts.records = len(scores)
    if scores.empty:
        return counts
    desired = output_values(scores, fields)
    changes = changed_values(desired, store.ledger(TARGET, description.name))
    records: dict[str, dict[str, Any]] = {}
    for record_id, name, value in changes.itertuples(index=False):
        records.setdefault(record_id, {"Id": record_id})[name] = json.loads(value)
    counts.unchanged = counts.records - len(records)
    batch = list(records.values())
    with reporter.track(f"push {description.name}", total=len(batch)) as task:
        sent = 0
        for outcomes in write_records(client, description.name, batch):
            sent_records = batch[sent : sent + len(outcomes)]
            sent += len(outcomes)
            rows = []
            for record, outcome in zip(sent_records, outcomes, strict=True):
                if outcome["success"]:
                    counts.written += 1
                else:
                    counts.failed += 1
                    counts.errors[(outcome["error"] or "UNKNOWN").split(":")[0]] += 1
                for name, value in record.items():
                    if name != "Id":
                        rows.append(
                            {
                                "record_id": record["Id"],
                                "field": name,
                                "value": value,
                                "success": outcome["success"],
                                "error": outcome["error"],
                            }
                        )
            store.record_outcomes(TARGET, description.name, rows)
            counts.sent += len(outcomes)
            task.advance(len(outcomes))
    return counts
