"""Write-back to Salesforce: score fields (update by Id or upsert by external id) and Campaigns.

The diff (``sync/diff.py``) decides what to send: only values that differ from what Salesforce last
confirmed, with hysteresis, explicit nulls, retries after a backoff, dead letters and records that
are gone. Values Salesforce would reject (judged from describe) are not sent: they are recorded as
failed with Salesforce's error code, without spending an API call.

Every request's records are recorded as ``sending`` before it goes out (write-ahead) and with their
outcome when Salesforce answers, batch by batch. A batch whose answer never arrived (the process
died) is settled by reading the records back (:func:`reconcile_in_flight`): a field found holding
the value sent is recorded as written and never sent twice; nothing is marked written that
Salesforce did not confirm.

The same preparation prices a run before it happens (:func:`plan_salesforce`): the records to
create, update, leave, hold back or reject, and the API calls of the path the connector would take.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from connector.errors import ConfigError, Interrupted, is_gone_record_error
from connector.salesforce import (
    COLLECTION_SIZE,
    LARGE_RUN_CALLS,
    ObjectDescription,
    SalesforceClient,
    check_allowance,
    check_field_value,
    choose_write_path,
    describe_object,
    estimate_campaign_sync_calls,
    estimate_write_calls,
    id18,
    read_records_by_id,
    resolve_fields,
    sync_campaign_members,
    write_records,
)
from connector.store import Store
from connector.store.space import check_free_space, ledger_rows_bytes
from scoring.audiences import score_frame
from scoring.events import SpecError, resolve_entity
from sync.config import AudienceConfig, PredictionConfig, WritebackSettings
from sync.diff import Diff, changed_values, diff_outputs, output_values
from sync.progress import Reporter
from sync.run import BATCH_CACHE_MB, map_large_buffers, release_memory
from sync.writeback import (
    RecordOutcome,
    TargetCounts,
    error_code,
    ledger_policy,
    record_batch,
)

__all__ = [
    "TARGET",
    "PushCounts",
    "campaign_object",
    "changed_values",
    "ledger_policy",
    "output_values",
    "plan_campaign",
    "plan_salesforce",
    "push_campaign",
    "push_salesforce",
    "reconcile_in_flight",
]

TARGET = "salesforce"
CAMPAIGN_OBJECT = "CampaignMember"
log = logging.getLogger("leadscore.push")


@dataclass
class PushCounts(TargetCounts):
    """What a push did for one prediction and target.

    Attributes:
        records: scored records considered.
        unchanged: records whose fields all equal the confirmed values.
        sent: records sent.
        written: records the target confirmed.
        failed: records the target rejected (recorded in the ledger with their error).
        errors: failed records by error code.
        recovered: fields of an interrupted batch found already written on read-back.
        hysteresis: records held back because their probability barely moved.
        invalid: records not sent because a value would be rejected (recorded as failed).
        deferred: records with a rejected row waiting for its next attempt.
        dead: records with a dead-letter row (sent again after ``leadscore retry --dead``).
        gone: records deleted or merged in the target (never retried).
    """

    sent: int = 0
    recovered: int = 0
    hysteresis: int = 0
    invalid: int = 0
    deferred: int = 0
    dead: int = 0
    gone: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable counts."""
        return {
            "records": self.records,
            "unchanged": self.unchanged,
            "sent": self.sent,
            "written": self.written,
            "failed": self.failed,
            "errors": dict(self.errors),
            "recovered": self.recovered,
            "hysteresis": self.hysteresis,
            "invalid": self.invalid,
            "deferred": self.deferred,
            "dead": self.dead,
            "gone": self.gone,
        }


def _same_value(confirmed: Any, current: Any) -> bool:
    """Whether a value read back from Salesforce is the one sent (numbers come back as floats)."""
    if isinstance(confirmed, int | float) and isinstance(current, int | float):
        return float(confirmed) == float(current)
    return confirmed == current


def reconcile_in_flight(
    client: SalesforceClient,
    store: Store,
    sobject: str,
    writeback: WritebackSettings | None = None,
) -> int:
    """Settle the ledger rows of a batch whose answer never arrived (the process died mid-push).

    Each such row is still ``sending``. The record is read back: a field that already holds the
    value we sent is recorded as written (so it is not sent twice); any other is recorded as failed
    and goes out again with the next push.

    Args:
        client: connected client.
        store: the store.
        sobject: object name (describe spelling).
        writeback: retry policy for the rows found unwritten.

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
    # Not an attempt Salesforce rejected: no backoff, so the next push sends it at once.
    store.record_outcomes(
        TARGET, sobject, rows, max_attempts=ledger_policy(writeback)["max_attempts"]
    )
    log.warning(
        "%s: %d field(s) of an interrupted batch were already written, %d will be sent again",
        sobject,
        recovered,
        len(rows) - recovered,
    )
    return recovered


@dataclass
class SalesforceWrite:
    """A prepared Salesforce write: the diff and the request records of one batch.

    Attributes:
        object: object name (describe spelling).
        mode: ``update`` or ``upsert``.
        key: the field records are matched by (``Id`` or the external id field).
        fields: output kind -> field name (describe spelling).
        diff: the diff against the ledger.
        records: request records (``{key: ..., field: value, ...}``), one per record to send.
        record_ids: write key -> the entity's record id (the ledger's ``record_id``).
    """

    object: str
    mode: str
    key: str
    fields: dict[str, str]
    diff: Diff
    records: list[dict[str, Any]]
    record_ids: dict[str, str]


def _external_keys(
    store: Store, prediction: PredictionConfig, column: str, ids: Collection[str]
) -> tuple[dict[str, str], Counter[str]]:
    """Entity id -> the value of its external id field, and how many entities share each value.

    Read for one batch of entities (the store counts the sharing over the whole table).
    """
    try:
        entity = resolve_entity(store.read_connection(), prediction)
    except SpecError as exc:
        raise ConfigError(f"prediction '{prediction.name}': {exc}") from None
    columns = {c.lower(): c for c in store.table_columns(entity.table)}
    found = columns.get(column.lower())
    if found is None:
        raise ConfigError(
            f"predictions.{prediction.name}.salesforce.external_id_field: the store's "
            f"{entity.table} has no column '{column}'",
            hint="pull that field (add it to the stream's fields) or pick another key",
        )
    shared = store.shared_values(entity.table, entity.id_column, found, ids)
    return {k: v for k, (v, _) in shared.items()}, Counter({v: n for v, n in shared.values()})


def _describe_check(description: ObjectDescription) -> Callable[[str, Any], str | None]:
    def check(name: str, value: Any) -> str | None:
        found = description.field(name)
        return None if found is None else check_field_value(found, value)

    return check


def _reject_records(diff: Diff, rejected: dict[str, str]) -> None:
    """Move records that cannot be sent (no key, a shared key) from the changes to invalid."""
    if not rejected:
        return
    mask = diff.changes["record_id"].isin(set(rejected))
    moved = diff.changes[mask].assign(error=lambda f: f["record_id"].map(rejected))
    diff.invalid = pd.concat(
        [diff.invalid, moved[["record_id", "field", "kind", "value", "error"]]], ignore_index=True
    )
    known = set(diff.changes.loc[mask & diff.changes["before"].notna(), "record_id"])
    ids = set(moved["record_id"])
    diff.update -= len(ids & known)
    diff.create -= len(ids - known)
    diff.invalid_records += len(ids)
    diff.changes = diff.changes[~mask].reset_index(drop=True)


@dataclass
class _Target:
    """Where a prediction's Salesforce outputs go (describe spellings)."""

    object: str
    mode: str
    key: str
    fields: dict[str, str]
    check: Callable[[str, Any], str | None]


def _target(client: SalesforceClient, prediction: PredictionConfig) -> _Target | None:
    output = prediction.salesforce
    if output is None:
        return None
    description = describe_object(client, output.object)
    names = resolve_fields(
        description,
        list(output.fields.values()),
        setting=f"predictions.{prediction.name}.salesforce.fields",
    )
    key = "Id"
    if output.mode == "upsert":
        assert output.external_id_field is not None
        key = resolve_fields(
            description,
            [output.external_id_field],
            setting=f"predictions.{prediction.name}.salesforce.external_id_field",
        )[0]
    return _Target(
        object=description.name,
        mode=output.mode,
        key=key,
        fields=dict(zip(output.fields, names, strict=True)),
        check=_describe_check(description),
    )


def _prepared_batches(
    store: Store,
    prediction: PredictionConfig,
    target: _Target,
    writeback: WritebackSettings,
    batch_size: int,
    record_ids: Collection[str] | None = None,
) -> Iterator[SalesforceWrite]:
    """The write, one batch of scored records at a time (each batch diffed with its own ledger).

    Every rule of the diff is per record, so diffing batch by batch gives the same changes as
    one diff of every record; percentiles are of the whole run. With ``record_ids`` (the fresh
    job's few leads) only those records are diffed, in one batch.
    """
    output = prediction.salesforce
    assert output is not None
    run = store.latest_run_id(prediction.name)
    population = store.run_probabilities(run) if run is not None else None
    for scores, ledger in _score_and_ledger_batches(
        store, prediction.name, target.object, batch_size, record_ids
    ):
        keys, shared = (
            _external_keys(store, prediction, target.key, scores["entity_id"])
            if target.mode == "upsert"
            else ({}, Counter())
        )
        diff = diff_outputs(
            score_frame(scores, prediction.task, population),
            ledger,
            target.fields,
            task=prediction.task,
            epsilon=output.epsilon,
            sync_nulls=set(output.sync_nulls),
            trend_threshold=writeback.trend_threshold,
            check=target.check,
        )
        yield _write_of(diff, target, keys, shared)


def _score_and_ledger_batches(
    store: Store,
    prediction: str,
    sobject: str,
    batch_size: int,
    record_ids: Collection[str] | None,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Latest scores and their ledger rows, batch by batch (or only some records, at once)."""
    if record_ids is None:
        for low, high, scores in store.latest_score_batches(prediction, batch_size):
            yield scores, store.ledger(TARGET, sobject, between=(low, high))
        return
    # by key: a fresh cycle's few records, whatever the org's size
    yield (
        store.latest_scores(prediction, entity_ids=record_ids),
        store.ledger(TARGET, sobject, record_ids=record_ids),
    )


def _write_of(
    diff: Diff, target: _Target, keys: dict[str, str], shared: Counter[str]
) -> SalesforceWrite:
    """The request records of a diff (an upsert's records without a unique key are invalid)."""
    wanted = diff.records_to_send()
    record_ids = {r: r for r in wanted}
    key = target.key
    if target.mode == "upsert":
        rejected = {
            r: f"MISSING_EXTERNAL_ID: no {key} to upsert by"
            if keys.get(r) is None
            else f"DUPLICATE_EXTERNAL_ID: {key} '{keys[r]}' is shared by several records"
            for r in wanted
            if keys.get(r) is None or shared[keys[r]] > 1
        }
        _reject_records(diff, rejected)
        wanted = {r: v for r, v in wanted.items() if r not in rejected}
        record_ids = {keys[r]: r for r in wanted}
        records = [{key: keys[r], **values} for r, values in wanted.items()]
    else:
        records = [{"Id": r, **values} for r, values in wanted.items()]
    return SalesforceWrite(
        object=target.object,
        mode=target.mode,
        key=key,
        fields=target.fields,
        diff=diff,
        records=records,
        record_ids=record_ids,
    )


def _in_flight(store: Store, sobject: str) -> int:
    rows = store.query_df(
        "SELECT count(DISTINCT record_id) AS n FROM writeback_ledger "
        "WHERE target = ? AND object = ? AND status = 'sending'",
        [TARGET, sobject],
    )
    return int(rows["n"].iloc[0])


def plan_salesforce(
    client: SalesforceClient,
    store: Store,
    prediction: PredictionConfig,
    writeback: WritebackSettings | None = None,
    *,
    batch_size: int | None = None,
) -> dict[str, Any] | None:
    """What a push of one prediction to Salesforce would do, and its price in API calls.

    Diffed batch by batch as the push diffs (memory of one batch, whatever the org's size): the
    counts are added up, the sample is taken from the first changes, and the writes are priced
    per batch, as the push sends them (one Bulk job or that many Collections calls a batch).

    Args:
        client: connected client.
        store: the store (read only).
        prediction: the prediction.
        writeback: ``[writeback]`` settings (sample size).
        batch_size: records per diff batch and per write (``store.batch_size``).

    Returns:
        ``object, mode, path, counts, sample, invalid, estimated_calls``; None when the prediction
        writes nothing to Salesforce.
    """
    w = writeback or WritebackSettings()
    target = _target(client, prediction)
    if target is None:
        return None
    settings = client.settings
    counts: Counter[str] = Counter()
    sample: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    writes, largest = 0, 0
    for part in _prepared_batches(store, prediction, target, w, batch_size or 1 << 62):
        counts.update(part.diff.counts())
        if len(sample) < w.plan_sample:
            sample += part.diff.sample(w.plan_sample - len(sample))
        if len(invalid) < w.plan_sample and not part.diff.invalid.empty:
            invalid += (
                part.diff.invalid.drop_duplicates("record_id")
                .head(w.plan_sample - len(invalid))[["record_id", "field", "value", "error"]]
                .assign(value=lambda f: f["value"].map(json.loads))
                .to_dict("records")
            )
        if part.records:
            writes += estimate_write_calls(
                len(part.records),
                bulk_write_threshold=settings.bulk_write_threshold,
                batch_size=settings.write_batch_size,
            )
            largest = max(largest, len(part.records))
    in_flight = _in_flight(store, target.object)
    calls = {
        "describe": 1,
        "read_back": math.ceil(in_flight / COLLECTION_SIZE) if target.mode == "update" else 0,
        # /limits (read before a large write) does not count against the allowance
        "limits": 0,
        "writes": writes,
    }
    calls["total"] = sum(calls.values())
    return {
        "object": target.object,
        "mode": target.mode,
        "key": target.key,
        "path": choose_write_path(largest, settings.bulk_write_threshold) if largest else None,
        "counts": {name: int(counts[name]) for name in Diff.COUNTS},
        "in_flight": in_flight,
        "sample": sample,
        "invalid": invalid,
        "estimated_calls": calls,
    }


def push_salesforce(
    client: SalesforceClient,
    store: Store,
    prediction: PredictionConfig,
    reporter: Reporter,
    *,
    writeback: WritebackSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int = 50_000,
    record_ids: Collection[str] | None = None,
) -> PushCounts:
    """Write a prediction's latest outputs to Salesforce, sending only changes.

    The scores are diffed against the ledger one batch of ``batch_size`` records at a time and
    the changes are written ``batch_size`` records at a time (one Bulk job, or that many records'
    Collections calls), so the push holds at most one batch of changes whatever the org's size.
    Each request is recorded as ``sending`` before it goes out and with its outcome when
    Salesforce answers; a batch interrupted in between is settled by :func:`reconcile_in_flight`
    first. Rejections are retried by later pushes after a backoff, up to ``max_attempts``.

    Args:
        client: connected Salesforce client.
        store: the store (scores and ledger).
        prediction: the prediction and its output mapping.
        reporter: progress.
        writeback: ``[writeback]`` settings (retries, dead letters).
        should_stop: checked after each batch is recorded; True stops before the next one.
        batch_size: records per diff batch and per write (``store.batch_size``).
        record_ids: write only these records' changes (the fresh job); None writes every
            change.

    Returns:
        Counts.

    Raises:
        Interrupted: a stop was requested between batches.
    """
    counts = PushCounts()
    output = prediction.salesforce
    if output is None:
        return counts
    policy = ledger_policy(writeback)
    target = _target(client, prediction)
    assert target is not None
    if output.mode == "update":
        counts.recovered = reconcile_in_flight(client, store, target.object, writeback)
    else:
        # An upsert is keyed by the external id, not by an Id to read back by: settle in-flight
        # rows as unconfirmed; sending them again is idempotent.
        _unconfirm_in_flight(store, target.object, policy)
    _check_first_push_space(store, prediction.name, target.object, len(target.fields))
    map_large_buffers()
    pending: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    with reporter.track(f"push {target.object}", total=None) as task:
        batches = _prepared_batches(
            store, prediction, target, writeback or WritebackSettings(), batch_size, record_ids
        )
        while True:
            # Reading a batch is capped like score's (the block cache grows with the org); the
            # ledger writes have their own cap (connector.store.database.LEDGER_CACHE_MB).
            with store.bounded_cache(BATCH_CACHE_MB):
                prepared = next(batches, None)
            if prepared is None:
                break
            diff = prepared.diff
            counts.records += diff.records
            counts.unchanged += diff.unchanged
            counts.hysteresis += diff.hysteresis
            counts.deferred += diff.deferred
            counts.dead += diff.dead
            counts.gone += diff.gone
            _record_invalid(store, target.object, diff, counts, policy)
            pending += prepared.records
            ids.update(prepared.record_ids)
            del prepared, diff
            release_memory()
            while len(pending) >= batch_size:
                chunk, pending = pending[:batch_size], pending[batch_size:]
                _write_chunk(
                    client, store, target, chunk, ids, counts, writeback, task, should_stop
                )
                waiting = {str(r[target.key]) for r in pending}
                ids = {k: v for k, v in ids.items() if k in waiting}
                _check_stop(should_stop, counts)
        if pending:
            _write_chunk(client, store, target, pending, ids, counts, writeback, task, should_stop)
    return counts


def _check_first_push_space(store: Store, prediction: str, sobject: str, fields: int) -> None:
    """Before a first push (no ledger row for the object yet): will the disk hold the ledger?"""
    if _ledger_rows(store, sobject):
        return
    run = store.latest_run_id(prediction)
    records = store.score_run_tiers(run)[0] if run is not None else 0
    check_free_space(
        store.path,
        ledger_rows_bytes(records, fields),
        f"first push of {records:,} {sobject} records",
    )


def _ledger_rows(store: Store, sobject: str) -> int:
    rows = store.query_df(
        "SELECT count(*) AS n FROM (SELECT 1 FROM writeback_ledger "
        "WHERE target = ? AND object = ? LIMIT 1)",
        [TARGET, sobject],
    )
    return int(rows["n"].iloc[0])


def _check_stop(should_stop: Callable[[], bool] | None, counts: PushCounts) -> None:
    if should_stop is not None and should_stop():
        raise Interrupted(
            f"push: stopped on request after {counts.sent:,} records; every answered batch is "
            "in the ledger and the next push sends the rest"
        )


def _record_invalid(
    store: Store, sobject: str, diff: Diff, counts: PushCounts, policy: dict[str, Any]
) -> None:
    """Rejected here rather than by Salesforce: the same ledger record, no API call spent."""
    if diff.invalid.empty:
        return
    counts.invalid += diff.invalid["record_id"].nunique()
    for error in diff.invalid.drop_duplicates("record_id")["error"]:
        counts.count_failure(error)
    store.record_outcomes(
        TARGET,
        sobject,
        [
            {"record_id": r, "field": f, "value": json.loads(v), "success": False, "error": e}
            for r, f, v, e in zip(
                diff.invalid["record_id"],
                diff.invalid["field"],
                diff.invalid["value"],
                diff.invalid["error"],
                strict=True,
            )
        ],
        **policy,
    )


def _write_chunk(
    client: SalesforceClient,
    store: Store,
    target: _Target,
    batch: list[dict[str, Any]],
    ids: dict[str, str],
    counts: PushCounts,
    writeback: WritebackSettings | None,
    task: Any,
    should_stop: Callable[[], bool] | None,
) -> None:
    """Write one batch of records (one Bulk job or its Collections calls) and record outcomes."""
    key = target.key

    def intents(chunk: Any) -> list[dict[str, Any]]:
        return [
            {"record_id": ids[str(r[key])], "field": k, "value": v}
            for r in chunk
            for k, v in r.items()
            if k != key
        ]

    planned = estimate_write_calls(
        len(batch),
        bulk_write_threshold=client.settings.bulk_write_threshold,
        batch_size=client.settings.write_batch_size,
    )
    if planned and (planned > LARGE_RUN_CALLS or len(batch) > client.settings.bulk_write_threshold):
        check_allowance(client, planned_calls=planned, what=f"write of {len(batch):,} records")
    by_key = {str(r[key]): r for r in batch}
    sent = 0
    # Outcomes come per request, each record exactly once with its final outcome (transient
    # failures after their retries), matched back by key. Each request's records are recorded as
    # in flight first (write-ahead), so that a crash mid-request is reconciled by reading back
    # rather than by writing again.
    for outcomes in write_records(
        client,
        target.object,
        batch,
        operation=target.mode,  # type: ignore[arg-type]
        external_id_field=key if target.mode == "upsert" else None,
        before_send=lambda chunk: store.record_attempts(TARGET, target.object, intents(chunk)),
    ):
        record_batch(
            store,
            TARGET,
            target.object,
            (
                RecordOutcome(
                    ids[outcome["id"]],
                    {k: v for k, v in by_key[outcome["id"]].items() if k != key},
                    outcome["success"],
                    outcome["error"],
                    gone=not outcome["success"]
                    and is_gone_record_error(error_code(outcome["error"])),
                )
                for outcome in outcomes
            ),
            counts,
            writeback,
        )
        counts.sent += len(outcomes)
        sent += len(outcomes)
        task.advance(len(outcomes))
        if sent < len(batch):
            _check_stop(should_stop, counts)


def _unconfirm_in_flight(store: Store, sobject: str, policy: dict[str, Any]) -> None:
    pending = store.query_df(
        "SELECT record_id, field, attempted_value FROM writeback_ledger "
        "WHERE target = ? AND object = ? AND status = 'sending'",
        [TARGET, sobject],
    )
    store.record_outcomes(
        TARGET,
        sobject,
        [
            {
                "record_id": r,
                "field": f,
                "value": json.loads(v),
                "success": False,
                "error": "UNCONFIRMED: the batch was interrupted before Salesforce answered",
            }
            for r, f, v in pending.itertuples(index=False)
        ],
        max_attempts=policy["max_attempts"],
    )


# -- audiences: Campaign membership (mirror) ------------------------------------------------------


def campaign_object() -> str:
    """The ledger object of Campaign memberships (field: the campaign id; value: member or not)."""
    return CAMPAIGN_OBJECT


@dataclass
class CampaignChange:
    """A Campaign's membership against what Salesforce confirmed.

    Attributes:
        audience: audience name.
        campaign_id: the Campaign.
        members: records in the audience now.
        confirmed: records Salesforce confirmed as members.
        enter: records to add.
        exit: records to remove.
        retry: records whose last membership change was rejected (sent again).
    """

    audience: str
    campaign_id: str
    members: set[str]
    confirmed: set[str]
    enter: set[str]
    exit: set[str]
    retry: set[str]

    @property
    def needed(self) -> bool:
        """Whether the Campaign must be synced."""
        return bool(self.enter or self.exit or self.retry)


def _campaign_change(store: Store, audience: AudienceConfig, members: set[str]) -> CampaignChange:
    assert audience.salesforce is not None
    campaign = audience.salesforce.campaign_id
    ledger = store.ledger(TARGET, CAMPAIGN_OBJECT)
    ledger = ledger[ledger["field"] == campaign]
    confirmed = {
        r
        for r, v in zip(ledger["record_id"], ledger["value"], strict=True)
        if isinstance(v, str) and json.loads(v) is True
    }
    retry = set(ledger.loc[ledger["status"].isin(["failed", "sending"]), "record_id"])
    return CampaignChange(
        audience.name,
        campaign,
        set(members),
        confirmed,
        enter=set(members) - confirmed,
        exit=confirmed - set(members),
        retry=retry,
    )


def plan_campaign(
    client: SalesforceClient,
    store: Store,
    audience: AudienceConfig,
    members: set[str],
    *,
    describe: bool = True,
) -> dict[str, Any]:
    """What mirroring an audience into its Campaign would do, and its API calls.

    The estimate assumes the Campaign's members are those Salesforce last confirmed.

    Args:
        client: the client (its settings).
        store: the store.
        audience: the audience (with ``salesforce.campaign_id``).
        members: records in the audience now.
        describe: count the describe of CampaignMember a fresh run makes.

    Returns:
        ``campaign_id, members, enter, exit, estimated_calls``.
    """
    change = _campaign_change(store, audience, members)
    calls = 0
    if change.needed:
        calls = int(describe) + estimate_campaign_sync_calls(
            len(change.confirmed),
            len(change.enter),
            len(change.exit),
            bulk_write_threshold=client.settings.bulk_write_threshold,
        )
    return {
        "campaign_id": change.campaign_id,
        "members": len(change.members),
        "enter": len(change.enter),
        "exit": len(change.exit),
        "estimated_calls": calls,
    }


def push_campaign(
    client: SalesforceClient,
    store: Store,
    audience: AudienceConfig,
    members: set[str],
    *,
    writeback: WritebackSettings | None = None,
) -> dict[str, Any]:
    """Mirror an audience into its Campaign: add who entered, remove who left.

    Skipped (no API call) when the audience equals the membership Salesforce last confirmed and
    nothing is waiting for a retry. Otherwise the Campaign's members are read and made equal to
    the audience (``sync_campaign_members``: members added by hand are removed). Each change's
    outcome goes into the ledger (object ``CampaignMember``, field = the campaign id, value =
    member or not).

    Args:
        client: connected client.
        store: the store.
        audience: the audience.
        members: records in the audience now.
        writeback: retry policy.

    Returns:
        ``campaign_id, members, added, removed, failed, errors``.
    """
    change = _campaign_change(store, audience, members)
    result: dict[str, Any] = {
        "campaign_id": change.campaign_id,
        "members": len(members),
        "added": 0,
        "removed": 0,
        "failed": 0,
        "errors": {},
    }
    if not change.needed:
        return result
    back = {id18(m): m for m in members} | {id18(m): m for m in change.confirmed}
    outcomes = sync_campaign_members(client, change.campaign_id, sorted(members))
    errors: Counter[str] = Counter()
    rows = []
    for outcome in outcomes:
        record_id = back.get(outcome["id"], outcome["id"])
        entered = outcome["action"] == "add"
        if outcome["success"]:
            result["added" if entered else "removed"] += 1
        else:
            result["failed"] += 1
            errors[error_code(outcome["error"])] += 1
        rows.append(
            {
                "record_id": record_id,
                "field": change.campaign_id,
                "value": entered,
                "success": outcome["success"],
                "error": outcome["error"],
                "gone": not outcome["success"]
                and is_gone_record_error(error_code(outcome["error"])),
            }
        )
    # Members Salesforce already had (added earlier, or by hand) are confirmed without a write.
    settled = {r["record_id"] for r in rows}
    rows += [
        {"record_id": m, "field": change.campaign_id, "value": m in members, "success": True}
        for m in change.enter | change.exit | change.retry
        if m not in settled
    ]
    store.record_outcomes(TARGET, CAMPAIGN_OBJECT, rows, **ledger_policy(writeback))
    result["errors"] = dict(errors)
    return result
