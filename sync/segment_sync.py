"""Segment in a run: pull (exports, Profile API, identity resolution) and push (traits, audiences).

- **Pull**: import the configured warehouse / Profiles Sync export files that are new since the
  last run; read the Profile API for CRM records that have not been read recently (newest records
  first, up to ``segment.max_profiles_per_run``); then rebuild the identity map
  (``connector/store/identity.py``). Every skipped line and every unmatched profile is counted
  with its reason.
- **Push**: for each prediction with ``[predictions.segment]``, send identify calls that set the
  changed traits (score, tier, ...) on the person's profile, diffed against the write-back ledger
  (target ``segment``, object ``profile``); and, for audiences, ``Audience Entered`` /
  ``Audience Exited`` track events when membership changes (ledger object ``audience``). Nothing is
  marked written until Segment answered 200 for the batch that carried it.
"""

from __future__ import annotations

import glob
import json
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from connector.errors import ConfigError
from connector.files import SegmentImportResult, import_segment_export
from connector.segment import (
    ProfileClient,
    SegmentSettings,
    TrackingClient,
    estimate_batch_requests,
    identify_message,
    message_id,
    read_profiles,
    track_message,
)
from connector.store import Store
from connector.store.identity import resolve_identities, segment_recipients
from connector.store.profiles import lookups_to_read, save_profiles
from scoring.audiences import score_frame
from sync.config import PredictionConfig, WritebackSettings
from sync.diff import Diff, diff_outputs, merge_diffs
from sync.progress import Reporter
from sync.run import BATCH_CACHE_MB, map_large_buffers, release_memory
from sync.writeback import RecordOutcome, TargetCounts, record_batch

TARGET = "segment"
PROFILE_OBJECT = "profile"
AUDIENCE_OBJECT = "audience"
AUDIENCE_ENTERED = "Audience Entered"
AUDIENCE_EXITED = "Audience Exited"


# -- pull ------------------------------------------------------------------------------------------


def export_files(settings: SegmentSettings, base: Path) -> list[tuple[Path, str]]:
    """The export files configured in ``[[segment.exports]]``, globs expanded.

    Args:
        settings: the ``[segment]`` section.
        base: the directory relative paths are relative to (the config file's).

    Returns:
        (file, kind) pairs, in a stable order.

    Raises:
        ConfigError: a configured path matches no file.
    """
    found: list[tuple[Path, str]] = []
    for index, export in enumerate(settings.exports):
        pattern = Path(export.path).expanduser()
        pattern = pattern if pattern.is_absolute() else base / pattern
        matches = sorted(Path(p) for p in glob.glob(str(pattern)))
        if not matches:
            raise ConfigError(
                f"segment.exports[{index}].path: no file matches '{export.path}'",
                hint=f"check the path (relative paths start at {base})",
            )
        found += [(path, export.kind) for path in matches if path.is_file()]
    return found


def summarise_imports(results: Iterable[SegmentImportResult]) -> dict[str, Any]:
    """Fold import results into the run summary: totals, skipped lines by reason, examples.

    Args:
        results: one per file.

    Returns:
        ``files, already_imported, lines, imported, duplicates, skipped, skipped_by_reason,
        examples``.
    """
    summary: dict[str, Any] = {
        "files": 0,
        "already_imported": 0,
        "lines": 0,
        "imported": 0,
        "duplicates": 0,
        "skipped": 0,
        "skipped_by_reason": {},
        "examples": [],
    }
    reasons: Counter[str] = Counter()
    for result in results:
        summary["files"] += 1
        summary["already_imported"] += int(result.already_imported)
        summary["lines"] += result.lines
        summary["imported"] += result.imported
        summary["duplicates"] += result.duplicates
        reasons.update(result.skipped)
        summary["examples"] += result.examples[: max(0, 10 - len(summary["examples"]))]
    summary["skipped"] = sum(reasons.values())
    summary["skipped_by_reason"] = dict(sorted(reasons.items()))
    return summary


def pull_segment(
    settings: SegmentSettings,
    store: Store,
    reporter: Reporter,
    *,
    base: Path,
    profile_client: ProfileClient | None = None,
) -> dict[str, Any]:
    """Import new export files, read the Profile API, and rebuild the identity map.

    Args:
        settings: the ``[segment]`` section.
        store: the store.
        reporter: progress.
        base: the directory export paths are relative to.
        profile_client: a Profile API client (default: one from ``settings``).

    Returns:
        ``imports`` (see :func:`summarise_imports`), ``profile_api`` (lookups, found, not found,
        failed, requests, unknown identity types) and ``identity`` (see ``IdentityResult``).
    """
    results = []
    files = export_files(settings, base)
    id_types = settings.id_types()
    for path, kind in files:
        reporter.stage(f"segment: importing {kind} from {path.name}")
        results.append(import_segment_export(store, path, kind, id_types=id_types))
    summary: dict[str, Any] = {"imports": summarise_imports(results)}
    api: dict[str, Any] = {"lookups": 0}
    if settings.space_id and settings.read and settings.max_profiles_per_run:
        lookups = lookups_to_read(
            store, refresh_hours=settings.refresh_hours, limit=settings.max_profiles_per_run
        )
        client = profile_client or ProfileClient(settings)
        unknown: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        calls_before = client.counter.api_calls
        started = time.perf_counter()
        try:
            with reporter.track("segment profiles", total=len(lookups)) as task:
                for chunk in read_profiles(client, lookups, on_read=lambda: None):
                    totals.update(save_profiles(store, chunk))
                    for read in chunk:
                        unknown.update(read.unknown_id_types)
                    task.advance(len(chunk))
        finally:
            if profile_client is None:
                client.close()
        api = {
            "lookups": len(lookups),
            **{k: int(v) for k, v in totals.items()},
            "requests": client.counter.api_calls - calls_before,
            "seconds": round(time.perf_counter() - started, 2),
            "unknown_identity_types": dict(unknown),
        }
    summary["profile_api"] = api
    reporter.stage("segment: resolving identities")
    summary["identity"] = resolve_identities(store, settings.identity).to_json()
    return summary


# -- push ------------------------------------------------------------------------------------------


@dataclass
class SegmentPushCounts(TargetCounts):
    """What a Segment push did for one prediction or audience.

    Attributes:
        records: records considered.
        unchanged: records whose values all equal what Segment confirmed.
        no_segment_user: changed records with no Segment user id (not sent; see
            ``predictions.segment.unmatched``).
        messages: messages built.
        requests: ``/v1/batch`` requests sent.
        written: records whose messages Segment accepted.
        failed: records whose messages were rejected or could not be delivered.
        not_sent: records left unsent after repeated transient failures (sent by the next run).
        errors: failed records by error code.
    """

    no_segment_user: int = 0
    messages: int = 0
    requests: int = 0
    not_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable counts."""
        return {
            "records": self.records,
            "unchanged": self.unchanged,
            "no_segment_user": self.no_segment_user,
            "messages": self.messages,
            "requests": self.requests,
            "written": self.written,
            "failed": self.failed,
            "not_sent": self.not_sent,
            "errors": dict(self.errors),
        }


def _send(
    client: TrackingClient,
    store: Store,
    sobject: str,
    messages: list[dict[str, Any]],
    owners: list[tuple[str, dict[str, Any]]],
    counts: SegmentPushCounts,
    reporter: Reporter,
    label: str,
    writeback: WritebackSettings | None = None,
) -> None:
    """Send messages and ledger each record's fields once all of its messages have an outcome.

    ``owners[i]`` is ``(record id, {field: value})`` of ``messages[i]``; a record succeeds when all
    of its messages were accepted.
    """
    counts.messages += len(messages)
    requests_before = client.requests
    pending: dict[str, int] = Counter(owner for owner, _ in owners)
    failures: dict[str, str] = {}
    values: dict[str, dict[str, Any]] = {}
    for (owner, fields), _ in zip(owners, messages, strict=True):
        values.setdefault(owner, {}).update(fields)
    with reporter.track(label, total=len(pending)) as task:
        for indexes, outcomes in client.send(messages):
            done: list[str] = []
            for index, outcome in zip(indexes, outcomes, strict=True):
                owner = owners[index][0]
                if not outcome.success:
                    failures.setdefault(owner, outcome.error or "UNKNOWN: no detail")
                pending[owner] -= 1
                if pending[owner] == 0:
                    done.append(owner)
            outcomes = [
                RecordOutcome(owner, values[owner], owner not in failures, failures.get(owner))
                for owner in done
            ]
            record_batch(store, TARGET, sobject, outcomes, counts, writeback)
            task.advance(len(done))
    counts.not_sent += sum(1 for left in pending.values() if left > 0)
    counts.requests += client.requests - requests_before


@dataclass
class SegmentMessages:
    """Messages a Segment push would send, built without sending (shared by push and plan).

    Attributes:
        messages: identify / track messages.
        owners: ``owners[i]`` is ``(record id, {field: value})`` of ``messages[i]``.
        counts: counts so far (records, unchanged, no Segment user).
        diff: the diff behind it (trait pushes only).
        enter: records entering the audience (audience pushes only).
        exit: records leaving it.
    """

    messages: list[dict[str, Any]]
    owners: list[tuple[str, dict[str, Any]]]
    counts: SegmentPushCounts
    diff: Diff | None = None
    enter: int = 0
    exit: int = 0


def _address(
    recipient: tuple[str, str] | None, record_id: str, unmatched: str
) -> dict[str, str | None] | None:
    """A message's addressee, as ``identify_message`` / ``track_message`` keywords.

    The profile's user id, else one of its anonymous ids, else (with ``unmatched =
    "record_id"``) the record id as user id; None when there is nobody to send to.
    """
    if recipient is not None:
        kind, value = recipient
        if kind == "user_id":
            return {"user_id": value, "anonymous_id": None}
        return {"user_id": None, "anonymous_id": value}
    if unmatched == "record_id":
        return {"user_id": record_id, "anonymous_id": None}
    return None


def segment_messages(
    store: Store,
    prediction: PredictionConfig,
    writeback: WritebackSettings | None = None,
    *,
    batch_size: int | None = None,
) -> SegmentMessages:
    """The identify calls that set a prediction's changed traits (see :func:`push_segment`).

    Every message at once (a plan shows them); a push streams :func:`segment_batches`.

    Args:
        store: the store (scores, identity map, ledger).
        prediction: the prediction and its ``[predictions.segment]`` mapping.
        writeback: ``[writeback]`` settings (trend threshold).
        batch_size: records diffed at a time (None: all at once).

    Returns:
        The messages, their owners and the diff.
    """
    counts = SegmentPushCounts()
    built = SegmentMessages([], [], counts)
    diffs = []
    for part in segment_batches(store, prediction, writeback, batch_size=batch_size, counts=counts):
        built.messages += part.messages
        built.owners += part.owners
        if part.diff is not None:
            diffs.append(part.diff)
    if diffs:
        built.diff = merge_diffs(diffs)
    return built


def segment_batches(
    store: Store,
    prediction: PredictionConfig,
    writeback: WritebackSettings | None = None,
    *,
    batch_size: int | None = None,
    counts: SegmentPushCounts | None = None,
    record_ids: Collection[str] | None = None,
) -> Iterator[SegmentMessages]:
    """The identify calls of changed traits, one batch of scored records at a time.

    Each batch is diffed against its own records' ledger rows (every diff rule is per record),
    so a push holds one batch's scores, diff and messages whatever the number of leads.

    Args:
        store: the store (scores, identity map, ledger).
        prediction: the prediction and its ``[predictions.segment]`` mapping.
        writeback: ``[writeback]`` settings (trend threshold).
        batch_size: records per batch (None: one batch).
        counts: counts the batches add to (records, unchanged, no Segment user).
        record_ids: only these records, read by key in one batch (the fresh job's few leads).

    Yields:
        Each batch's messages, owners and diff (``counts`` is the shared one).
    """
    counts = counts if counts is not None else SegmentPushCounts()
    output = prediction.segment
    if output is None:
        return
    run = store.latest_run_id(prediction.name)
    if run is None:
        return
    population = store.run_probabilities(run)
    batches: Iterable[tuple[pd.DataFrame, pd.DataFrame]] = (
        [
            (
                store.latest_scores(prediction.name, entity_ids=record_ids),
                store.ledger(TARGET, PROFILE_OBJECT, record_ids=record_ids),
            )
        ]
        if record_ids is not None
        else (
            (scores, store.ledger(TARGET, PROFILE_OBJECT, between=(low, high)))
            for low, high, scores in store.latest_score_batches(
                prediction.name, batch_size or 1 << 62
            )
        )
    )
    for scores, ledger in batches:
        built = SegmentMessages([], [], counts)
        counts.records += len(scores)
        frame = score_frame(scores, prediction.task, population)
        diff = diff_outputs(
            frame,
            ledger,
            dict(output.traits),
            task=prediction.task,
            epsilon=output.epsilon,
            sync_nulls=set(output.sync_nulls),
            trend_threshold=(writeback or WritebackSettings()).trend_threshold,
            structured=True,
        )
        built.diff = diff
        traits = diff.records_to_send()
        counts.unchanged += len(scores) - len(traits)
        recipients = segment_recipients(store, prediction.entity, list(traits))
        by_record = frame.set_index("entity_id")
        for record_id, changed in traits.items():
            address = _address(recipients.get(record_id), record_id, output.unmatched)
            if address is None:
                counts.no_segment_user += 1
                continue
            row = by_record.loc[record_id]
            stamp = pd.Timestamp(row["scored_at"]).to_pydatetime()
            built.messages.append(
                identify_message(
                    **address,
                    traits=changed,
                    timestamp=stamp,
                    message_id=message_id(
                        record_id, prediction.name, str(row["model_version"]), changed
                    ),
                )
            )
            built.owners.append((record_id, changed))
        yield built


def push_segment(
    client: TrackingClient,
    store: Store,
    prediction: PredictionConfig,
    reporter: Reporter,
    *,
    writeback: WritebackSettings | None = None,
    batch_size: int = 50_000,
    record_ids: Collection[str] | None = None,
) -> SegmentPushCounts:
    """Set a prediction's latest outputs as traits on each person's Segment profile (changes only).

    The diff is ``sync/diff.py``'s, as for Salesforce (hysteresis, nulls, retries), taken one
    batch of ``batch_size`` records at a time; each batch's messages are sent before the next
    batch is read. Each record with a changed trait gets one identify call holding its changed
    traits. Its ``messageId`` is derived from (record, prediction, model version, traits), so a
    batch sent again after a lost answer is de-duplicated by Segment.

    Args:
        client: Tracking API client.
        store: the store (scores, identity map, ledger).
        prediction: the prediction and its ``[predictions.segment]`` mapping.
        reporter: progress.
        writeback: ``[writeback]`` settings (retries, dead letters).
        batch_size: records per batch (``store.batch_size``).
        record_ids: send only these records' changes (the fresh job); None: every change.

    Returns:
        Counts.
    """
    counts = SegmentPushCounts()
    map_large_buffers()
    batches = segment_batches(
        store, prediction, writeback, batch_size=batch_size, counts=counts, record_ids=record_ids
    )
    while True:
        # capped while a batch is read, as the Salesforce push (see push_salesforce)
        with store.bounded_cache(BATCH_CACHE_MB):
            built = next(batches, None)
        if built is None:
            break
        _send(
            client,
            store,
            PROFILE_OBJECT,
            built.messages,
            built.owners,
            counts,
            reporter,
            "push Segment traits",
            writeback,
        )
        del built
        release_memory()
    return counts


def plan_segment(
    store: Store,
    prediction: PredictionConfig,
    settings: SegmentSettings,
    writeback: WritebackSettings | None = None,
) -> dict[str, Any] | None:
    """What a Segment trait push would do, and the ``/v1/batch`` requests it would make.

    Args:
        store: the store (read only).
        prediction: the prediction.
        settings: the ``[segment]`` section (batch limits).
        writeback: ``[writeback]`` settings (sample size).

    Returns:
        ``counts, no_segment_user, messages, sample, estimated_requests``; None when the
        prediction writes nothing to Segment.
    """
    if prediction.segment is None:
        return None
    w = writeback or WritebackSettings()
    built = segment_messages(store, prediction, w)
    diff = built.diff
    counts: dict[str, int] = diff.counts() if diff else {"records": 0}
    if diff is not None and built.counts.no_segment_user:
        # records without a Segment user are not sent: count and show only the others
        sent = {owner for owner, _ in built.owners}
        diff.changes = diff.changes[diff.changes["record_id"].isin(sent)]
        updates = set(diff.changes.loc[diff.changes["before"].notna(), "record_id"])
        counts.update(create=len(sent - updates), update=len(sent & updates))
    return {
        "counts": counts,
        "no_segment_user": built.counts.no_segment_user,
        "messages": len(built.messages),
        "sample": diff.sample(w.plan_sample) if diff else [],
        "estimated_requests": estimate_batch_requests(built.messages, settings),
    }


def audience_messages(
    store: Store,
    *,
    audience: str,
    entity: str,
    members: Iterable[str],
    at: datetime,
    trait: str | None = None,
    unmatched: str = "skip",
) -> SegmentMessages:
    """The ``Audience Entered`` / ``Exited`` events (and trait updates) for membership changes.

    Args:
        store: the store (identity map, ledger).
        audience: audience name.
        entity: the members' entity.
        members: ids of the records in the audience now.
        at: when membership was evaluated.
        trait: optional boolean trait mirroring membership.
        unmatched: ``skip`` records without a Segment user id, or use the ``record_id``.

    Returns:
        Messages and owners; ``counts.records`` is the number of membership changes and
        ``counts.unchanged`` the members who stay.
    """
    counts = SegmentPushCounts()
    built = SegmentMessages([], [], counts)
    now_in = {str(m) for m in members}
    ledger = store.ledger(TARGET, AUDIENCE_OBJECT)
    ledger = ledger[ledger["field"] == audience]
    confirmed = {
        r: json.loads(v)
        for r, v in zip(ledger["record_id"], ledger["value"], strict=True)
        if isinstance(v, str)
    }
    was_in = {r for r, v in confirmed.items() if v is True}
    changes = sorted((r, True) for r in now_in - was_in)
    changes += sorted((r, False) for r in was_in - now_in)
    counts.records = len(changes)
    counts.unchanged = len(now_in & was_in)
    recipients = segment_recipients(store, entity, [r for r, _ in changes])
    for record_id, entered in changes:
        address = _address(recipients.get(record_id), record_id, unmatched)
        if address is None:
            # nothing is ever sent to them: counted apart, not as entering or leaving
            counts.no_segment_user += 1
            continue
        if entered:
            built.enter += 1
        else:
            built.exit += 1
        event = AUDIENCE_ENTERED if entered else AUDIENCE_EXITED
        built.messages.append(
            track_message(
                **address,
                event=event,
                properties={"audience": audience, "entity": entity, "record_id": record_id},
                timestamp=at,
                message_id=message_id(record_id, audience, event, at.isoformat()),
            )
        )
        built.owners.append((record_id, {audience: entered}))
        if trait:
            built.messages.append(
                identify_message(
                    **address,
                    traits={trait: entered},
                    timestamp=at,
                    message_id=message_id(record_id, audience, trait, entered, at.isoformat()),
                )
            )
            built.owners.append((record_id, {audience: entered}))
    return built


def push_audience(
    client: TrackingClient,
    store: Store,
    *,
    audience: str,
    entity: str,
    members: Iterable[str],
    at: datetime,
    trait: str | None = None,
    unmatched: str = "skip",
    reporter: Reporter,
    writeback: WritebackSettings | None = None,
) -> SegmentPushCounts:
    """Send ``Audience Entered`` / ``Audience Exited`` when a record's membership changed.

    Membership is diffed against the ledger (object ``audience``, field = the audience name,
    value = true or false). A record entering gets ``Audience Entered``, one leaving gets
    ``Audience Exited``, each with ``properties.audience``; with ``trait`` set, an identify call
    also sets that boolean trait. Message ids are derived from (record, audience, change,
    ``at``), so a retried batch is de-duplicated while a later re-entry is a new event.

    Args:
        client: Tracking API client.
        store: the store (identity map, ledger).
        audience: audience name.
        entity: the members' entity (``lead``).
        members: ids of the records in the audience now.
        at: when membership was evaluated (the events' timestamp).
        trait: optional boolean trait mirroring membership.
        unmatched: ``skip`` records without a Segment user id, or use the ``record_id`` as user id.
        reporter: progress.
        writeback: ``[writeback]`` settings (retries, dead letters).

    Returns:
        Counts (``records`` is the number of membership changes).
    """
    built = audience_messages(
        store,
        audience=audience,
        entity=entity,
        members=members,
        at=at,
        trait=trait,
        unmatched=unmatched,
    )
    _send(
        client,
        store,
        AUDIENCE_OBJECT,
        built.messages,
        built.owners,
        built.counts,
        reporter,
        f"audience {audience}",
        writeback,
    )
    return built.counts
