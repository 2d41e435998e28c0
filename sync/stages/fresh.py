"""The ``fresh`` job: leads scored and written within a minute of their creation or change.

A cycle is two steps with a seam between them:

1. *Which leads*: a trigger names the leads that changed and the position to commit once they
   are done. :func:`poll_batch` is the polling trigger (one SOQL query per object on
   ``SystemModstamp`` of Lead, Task and CampaignMember since the job's own cursor, records read
   whole and stored); change data capture is another trigger that
   builds the same :class:`FreshBatch` from change events (its replay id as the position).
2. *Score and write them*: :func:`score_leads` reads those leads and their Tasks and
   CampaignMembers into the store (no stream cursor moves), scores them with each lead
   prediction's champion from point-in-time features (the batch ``score`` job's code, restricted
   to these ids), appends a partial scoring run, pushes their changed outputs through the usual
   diff, ledger and hysteresis, and commits the trigger's position with the first-write latencies.

A crash between the write and the position commit repeats the batch next cycle; the write-back
ledger turns the repeat into no writes (a record is never written twice for one change).

The store is shared with ``sync`` and ``train`` through the run lock: a cycle borrows the lock
from a running long job at its next checkpoint (see ``docs/architecture.md``, "Speed to lead").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from connector.errors import ConfigError, LeadscoreError
from connector.salesforce import SalesforceClient, SalesforceStream, since_with_overlap
from connector.store import Store, raw_table_name, utc_now
from scoring.pipeline import ScoringError, score_entities
from scoring.registry import load_champion
from sync.capacity import apply_capacity_tiers
from sync.config import PredictionConfig, Settings
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded, salesforce_settings, scoring_error
from sync.salesforce_writeback import TARGET, push_salesforce
from sync.segment_sync import push_segment
from sync.stages.score import score_time_for

if TYPE_CHECKING:
    from connector.salesforce.pubsub import ChangeEvent

# The object the fresh job scores, and the related objects it reads with each lead: object ->
# the field naming the lead. Converted leads' Tasks move to their Contact; batch scoring maps
# them back, the fresh job does not need to (a converted lead is no longer worked as a lead).
log = logging.getLogger("leadscore.fresh")

LEAD = "Lead"
RELATED = {"Task": "WhoId", "Event": "WhoId", "CampaignMember": "LeadId"}
POLL = "poll"


@dataclass(frozen=True)
class FreshBatch:
    """Leads to score now, and where the trigger stands once they are done.

    Attributes:
        lead_ids: the leads that were created or changed (or whose Tasks/CampaignMembers were).
        trigger: the position's key in the store (``poll``, ``cdc:/data/LeadChangeEvent``).
        position: JSON-serialisable position committed after the leads' writes are confirmed
            (poll cursors per object, a replay id); None commits nothing.
        stored: objects whose changed records the trigger already stored (the poll reads them
            whole); :func:`score_leads` then reads only leads missing from the store, and not
            those objects again. A trigger that knows only ids leaves it empty.
        events: the change events behind the batch (cdc trigger), recorded in the store in
            the transaction that commits ``position`` (``Store.commit_fresh_position``).
        changes: the Lead change events whose payloads give the leads' fields (cdc trigger):
            :func:`score_leads` stores the leads from them and reads through REST only what
            they cannot give (``SalesforceStream.apply_changes``).
        new_leads: leads the trigger saw created: nothing of theirs is older than they are,
            so their Tasks and CampaignMembers are not read (records made in the seconds
            between creation and scoring reach the store with the next pull).
    """

    lead_ids: frozenset[str]
    trigger: str
    position: Any = None
    stored: frozenset[str] = frozenset()
    events: tuple[dict[str, Any], ...] = ()
    changes: tuple[ChangeEvent, ...] = ()
    new_leads: frozenset[str] = frozenset()


def lead_predictions(settings: Settings) -> list[PredictionConfig]:
    """The predictions the fresh job scores: lead entities written to Salesforce Leads."""
    return [
        p
        for p in settings.predictions
        if p.entity == "lead"
        and p.entity_table is None
        and p.task != "regression"  # percentiles need the whole population: batch only
    ]


def _streams(settings: Settings, client: SalesforceClient) -> dict[str, SalesforceStream]:
    """The configured Lead stream and the related ones, by object name."""
    sf = salesforce_settings(settings)
    by_lower = {k.lower(): (k, v) for k, v in sf.streams.items()}
    out = {}
    for name in (LEAD, *RELATED):
        if name.lower() in by_lower:
            key, stream = by_lower[name.lower()]
            out[name] = SalesforceStream(client, key, stream)
    if LEAD not in out:
        raise ConfigError(
            "the fresh job scores leads, but [salesforce.streams.Lead] is not configured",
            hint="add the Lead stream, or leave [fresh] out",
        )
    return out


def poll_batch(
    settings: Settings, store: Store, client: SalesforceClient
) -> tuple[FreshBatch, dict[str, Any]]:
    """The polling trigger: leads changed since the job's cursor, directly or by a related record.

    One SOQL query per object (Lead, Task, CampaignMember) reads the records changed since the
    object's cursor (less the configured overlap) with every configured field and stores them
    (no stream cursor moves); the leads are the changed Leads and the leads named by changed
    Tasks (``WhoId``) and CampaignMembers (``LeadId``). Three calls per cycle when nothing else
    is needed. Before its first cycle the job starts from the pull's cursor of each object.

    Args:
        settings: configuration.
        store: the store (the job's position, the pull's cursors).
        client: connected client.

    Returns:
        The batch (leads, new per-object cursors), and per object what the poll read.
    """
    sf = salesforce_settings(settings)
    position: dict[str, str] = dict(store.fresh_position(POLL) or {})
    ids: set[str] = set()
    new_position = dict(position)
    streams = _streams(settings, client)
    polled: dict[str, Any] = {}
    for name, stream in streams.items():
        saved = position.get(name)
        cursor = pd.Timestamp(saved).to_pydatetime() if saved else store.read_cursor(name)
        if cursor is None:
            raise LeadscoreError(
                f"fresh: {name} has not been pulled into the store yet",
                hint="run `leadscore pull --config FILE` (or sync) once first",
            )
        polled[name], values, newest = stream.read_changed(
            store,
            "Id" if name == LEAD else RELATED[name],
            since_with_overlap(cursor, sf.overlap_seconds),
        )
        ids |= values
        newest = max(cursor, newest) if newest is not None else cursor
        new_position[name] = newest.isoformat()
    batch = FreshBatch(frozenset(ids), POLL, new_position, frozenset(streams))
    return batch, {name: result.to_json() for name, result in polled.items()}


def score_leads(
    settings: Settings,
    store: Store,
    client: SalesforceClient,
    batch: FreshBatch,
    *,
    reporter: Reporter = SILENT,
    now: Callable[[], datetime] = utc_now,
) -> dict[str, Any]:
    """Read, score and write the leads of a batch, then commit its position: the seam.

    Every trigger ends here. Leads that are not leads (a Task's ``WhoId`` naming a Contact),
    deleted or unknown are left out.

    Args:
        settings: configuration.
        store: the store, held by the caller.
        client: connected client.
        batch: the leads and the position to commit.
        reporter: progress.
        now: the clock (scoring time is :func:`score_time_for` of it, as in the batch job).

    Returns:
        Counts: ``leads``, ``read`` per object, per prediction ``scored`` and the push counts,
        ``latencies`` (seconds from creation to the first confirmed score write).
    """
    streams = _streams(settings, client)
    ids = {i for i in batch.lead_ids if i}
    read: dict[str, Any] = {}
    lead_table = raw_table_name("salesforce", LEAD)
    if ids:
        known = set(store.values_by_key(lead_table, "Id", "Id", ids))
        need = ids - known if LEAD in batch.stored else ids
        if batch.changes:
            # Change events carry the leads' fields: store them, read only what they lack.
            applied, unread = streams[LEAD].apply_changes(store, batch.changes)
            read["events"] = applied.to_json()
            covered = {i for event in batch.changes for i in event.record_ids} - unread
            need = need - covered  # not in place: need may be ids itself
        if need:
            result, _ = streams[LEAD].read_where(store, "Id", need)
            read[LEAD] = result.to_json()
        created = store.values_by_key(lead_table, "Id", "CreatedDate", ids)
        ids = set(created)  # leads only: a Task's WhoId may name a Contact
        for name, stream in streams.items():
            if name == LEAD or not ids:
                continue
            # the trigger stored this object's changes; new leads' records are among them
            wanted = ids - known if name in batch.stored else ids
            wanted = wanted - batch.new_leads  # nothing of a lead created seconds ago is older
            if wanted:
                read[name] = stream.read_where(store, RELATED[name], wanted)[0].to_json()
    else:
        created = {}
    created = {k: v for k, v in created.items() if isinstance(v, datetime)}
    predictions: dict[str, Any] = {}
    latencies: list[dict[str, Any]] = []
    score_time = score_time_for(now())
    for spec in lead_predictions(settings):
        champion = load_champion(settings.store.models_dir, spec.name)
        if champion is None:
            predictions[spec.name] = {"skipped": "no champion model yet"}
            continue
        if not ids:
            predictions[spec.name] = {"scored": 0}
            continue
        reporter.stage(f"{spec.name}: scoring {len(ids)} leads with model {champion.version}")
        try:
            scores = score_entities(
                store.read_connection(),
                spec,
                champion.load(),
                champion.metadata,
                score_time=score_time,
                entity_ids=ids,
            )
        except ScoringError as exc:
            raise scoring_error(exc) from None
        scores, _ = apply_capacity_tiers(store, spec, champion, scores)
        if not scores.empty:
            store.append_scores(spec.name, scores, partial=True)
        counts: dict[str, Any] = {"version": champion.version, "scored": len(scores)}
        output = spec.salesforce
        if output is not None and not scores.empty:
            field = next(iter(output.fields.values()))
            before = store.confirmed_record_ids(output.object, field)
            pushed = push_salesforce(
                client,
                store,
                spec,
                reporter,
                writeback=settings.writeback,
                record_ids=set(scores["entity_id"]),
            )
            counts.update(pushed.to_json())
            first = (set(scores["entity_id"]) - before) & store.confirmed_record_ids(
                output.object, field
            )
            latencies += _latencies(store, spec, output.object, first, created, batch.trigger)
        if spec.segment is not None and settings.segment is not None and not scores.empty:
            counts["segment"] = _push_segment_traits(
                settings, store, spec, reporter, set(scores["entity_id"])
            )
        predictions[spec.name] = counts
    if batch.position is not None:
        store.commit_fresh_position(batch.trigger, batch.position, latencies, batch.events)
    return {
        "trigger": batch.trigger,
        "leads": len(ids),
        "read": read,
        "predictions": predictions,
        "latencies": [round(r["seconds"], 3) for r in latencies],
    }


def _push_segment_traits(
    settings: Settings,
    store: Store,
    spec: PredictionConfig,
    reporter: Reporter,
    ids: set[str],
) -> dict[str, Any]:
    """The scored leads' changed traits to Segment, as the push sends them (the same diff).

    Segment failing does not undo or hold back the Salesforce writes: its counts say so
    (``failed``) and the cycle is partial; the next cycle or sync sends what is still due.
    """
    from connector.segment import TrackingClient

    assert settings.segment is not None
    client = TrackingClient(settings.segment)
    try:
        return push_segment(
            client,
            store,
            spec,
            reporter,
            writeback=settings.writeback,
            batch_size=settings.store.batch_size,
            record_ids=ids,
        ).to_json()
    except LeadscoreError as exc:
        log.warning("fresh: Segment traits not sent: %s", exc)
        return {"failed": len(ids), "error": str(exc)}
    finally:
        client.close()


def _latencies(
    store: Store,
    spec: PredictionConfig,
    sobject: str,
    first: set[str],
    created: dict[str, datetime],
    trigger: str,
) -> list[dict[str, Any]]:
    """Creation -> confirmed write of leads written for the first time."""
    if not first:
        return []
    out = []
    for record_id, confirmed_at in store.confirmed_times(TARGET, sobject, first).items():
        made = created.get(record_id)
        if made is None:
            continue
        out.append(
            {
                "prediction": spec.name,
                "entity_id": str(record_id),
                "created_at": made,
                "confirmed_at": confirmed_at,
                "seconds": (confirmed_at - made).total_seconds(),
                "trigger": trigger,
            }
        )
    return out


def _in_chunks(
    settings: Settings,
    store: Store,
    client: SalesforceClient,
    batch: FreshBatch,
    size: int,
    reporter: Reporter,
) -> dict[str, Any]:
    """:func:`score_leads` over chunks of ``size`` leads; the position commits with the last."""
    ids = sorted(batch.lead_ids)
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
    total: dict[str, Any] = {}
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        members = set(chunk)
        part = FreshBatch(
            frozenset(chunk),
            batch.trigger,
            batch.position if last else None,
            batch.stored,
            events=batch.events if last else (),
            changes=tuple(e for e in batch.changes if members & set(e.record_ids)),
            new_leads=batch.new_leads & members,
        )
        counts = score_leads(settings, store, client, part, reporter=reporter)
        if not total:
            total = counts
            continue
        total["leads"] += counts["leads"]
        total["latencies"] += counts["latencies"]
        for name, figures in counts["predictions"].items():
            mine = total["predictions"].setdefault(name, {})
            for key, value in figures.items():
                if isinstance(value, int) and isinstance(mine.get(key), int):
                    mine[key] += value
    return total


def run_fresh(
    settings: Settings,
    *,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
    batch: FreshBatch | None = None,
    catch_up: bool = False,
) -> JobResult:
    """One fresh cycle: find the changed leads (or take ``batch``), score and write them.

    The store is taken with ``fresh.max_wait_seconds`` of patience: a running sync or train
    lends it at its next checkpoint (see :mod:`sync.lock`); beyond that the cycle gives up with
    :class:`connector.errors.Busy` and the next cycle catches up (the cursor has not moved).

    Args:
        settings: configuration (``[fresh]``; defaults when the section is absent).
        reporter: progress.
        client: a connected client kept between cycles (``serve``); one is made otherwise.
        batch: the leads to score (another trigger); None polls.
        catch_up: the poll is the cdc trigger's catch-up (after a subscription failure or an
            expired replay id); without a batch a cycle polls whatever the trigger.

    Returns:
        The cycle's result (see :func:`score_leads`); ``skipped`` when no prediction has a
        champion yet.
    """
    from sync.config import FreshSettings

    fresh = settings.fresh or FreshSettings()
    if batch is None and fresh.trigger != POLL and not catch_up:
        # trigger = "cdc" follows change events inside `serve`; a cycle run on its own (the
        # `leadscore fresh` command) is a polling catch-up, which never hurts.
        log.info("fresh.trigger = %s: this cycle polls (a catch-up)", fresh.trigger)
    sf = client or SalesforceClient(salesforce_settings(settings))
    try:
        with (
            open_store(
                settings,
                "fresh",
                reporter=reporter,
                wait_seconds=fresh.max_wait_seconds,
                borrow=True,
            ) as store,
            recorded(store, "fresh", sf.counter) as result,
        ):
            sf.connect()
            polled: dict[str, Any] = {}
            if batch is None:
                batch, polled = poll_batch(settings, store, sf)
            result.counts = _in_chunks(settings, store, sf, batch, fresh.max_leads, reporter)
            if polled:
                result.counts["polled"] = polled
            failed = sum(
                p.get("failed", 0) + p.get("segment", {}).get("failed", 0)
                for p in result.counts["predictions"].values()
            )
            if failed:
                result.status = "partial"
    finally:
        if client is None:
            sf.close()
    return result
