"""Write-back: send only the scores that differ from what the target last confirmed.

The ledger holds, per record and field, the last value the target system confirmed. A record is sent
when any of its mapped fields differs from that value (or was never confirmed); only the differing
fields are sent. Each batch's per-record outcomes are committed to the ledger before the next batch
goes out, so a crash loses at most the confirmation of one batch - and re-sending a score update is
idempotent.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from connector.errors import Interrupted
from connector.salesforce import (
    LARGE_RUN_CALLS,
    SalesforceClient,
    check_allowance,
    describe_object,
    estimate_write_calls,
    read_records_by_id,
    resolve_fields,
    write_records,
)
from connector.store import Store
from sync.config import PredictionConfig
from sync.progress import Reporter

TARGET = "salesforce"
log = logging.getLogger("leadscore.push")


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
        recovered: fields of an interrupted batch found already written on read-back.
    """

    records: int = 0
    unchanged: int = 0
    sent: int = 0
    written: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    recovered: int = 0


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
        "scored_at": lambda s: (
            pd.to_datetime(s["scored_at"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ").map(json.dumps)
        ),
        # reasons fit a 255-character text field by construction (scoring.explain); the cut is
        # a guard. No reasons is null, not an empty string (an empty Segment trait is a value).
        "reasons": lambda s: s["reasons"].map(
            lambda v: json.dumps(v[:255] if isinstance(v, str) else None)
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


def _same_value(confirmed: Any, current: Any) -> bool:
    """Whether a value read back from Salesforce is the one sent (numbers come back as floats)."""
    if isinstance(confirmed, int | float) and isinstance(current, int | float):
        return float(confirmed) == float(current)
    return confirmed == current


def reconcile_in_flight(client: SalesforceClient, store: Store, sobject: str) -> int:
    """Settle the ledger rows of a batch whose answer never arrived (the process died mid-push).

    Each such row is still ``sending``. The record is read back: a field that already holds the
    value we sent is recorded as written (so it is not sent twice); any other is recorded as failed
    and goes out again with the next push.

    Args:
        client: connected client.
        store: the store.
        sobject: object name (describe spelling).

    Returns:
        Fields found already written.
    """
    pending = store.query_df(
        "SELECT record_id, field, attempted_value FROM writeback_ledger "
        "WHERE target = ? AND object = ? AND status = 'sending'",
        [TARGET, sobject],
    )
    if pending.empty:
        return 0
    fields = sorted(set(pending["field"]))
    current = read_records_by_id(client, sobject, sorted(set(pending["record_id"])), fields)
    rows, recovered = [], 0
    for record_id, name, attempted in pending.itertuples(index=False):
        value = json.loads(attempted)
        written = record_id in current and _same_value(value, current[record_id].get(name))
        recovered += written
        rows.append(
            {
                "record_id": record_id,
                "field": name,
                "value": value,
                "success": written,
                "error": None
                if written
                else "UNCONFIRMED: the batch was interrupted before Salesforce answered",
            }
        )
    store.record_outcomes(TARGET, sobject, rows)
    log.warning(
        "%s: %d field(s) of an interrupted batch were already written, %d will be sent again",
        sobject,
        recovered,
        len(rows) - recovered,
    )
    return recovered


def push_salesforce(
    client: SalesforceClient,
    store: Store,
    prediction: PredictionConfig,
    reporter: Reporter,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> PushCounts:
    """Write a prediction's latest scores to Salesforce, sending only changes.

    Each batch is recorded as ``sending`` before it goes out and with its outcome when Salesforce
    answers; a batch interrupted in between is settled by :func:`reconcile_in_flight` first.

    Args:
        client: connected Salesforce client.
        store: the store (scores and ledger).
        prediction: the prediction and its output mapping.
        reporter: progress.
        should_stop: checked after each batch is recorded; True stops before the next one.

    Returns:
        Counts.

    Raises:
        Interrupted: a stop was requested between batches.
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
    counts.recovered = reconcile_in_flight(client, store, description.name)
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

    def intents(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"record_id": r["Id"], "field": k, "value": v}
            for r in chunk
            for k, v in r.items()
            if k != "Id"
        ]

    planned = estimate_write_calls(
        len(batch), bulk_write_threshold=client.settings.bulk_write_threshold
    )
    if planned and (planned > LARGE_RUN_CALLS or len(batch) > client.settings.bulk_write_threshold):
        check_allowance(client, planned_calls=planned, what=f"write of {len(batch):,} records")
    with reporter.track(f"push {description.name}", total=len(batch)) as task:
        # Outcomes come per batch, each record exactly once with its final outcome (transient
        # failures after their retries), matched back by id. Each request's records are recorded
        # as in flight first (write-ahead), so that a crash mid-request is reconciled by reading
        # back rather than by writing again.
        for outcomes in write_records(
            client,
            description.name,
            batch,
            before_send=lambda chunk: store.record_attempts(
                TARGET, description.name, intents(chunk)
            ),
        ):
            rows = []
            for outcome in outcomes:
                record = records[outcome["id"]]
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
            if should_stop is not None and should_stop() and counts.sent < len(batch):
                raise Interrupted(
                    f"push: stopped on request after {counts.sent:,} of {len(batch):,} records; "
                    "every "
                    "answered batch is in the ledger and the next push sends the rest"
                )
    return counts
