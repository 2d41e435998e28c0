"""The ``push`` job: changed scores and audiences to Salesforce and Segment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from connector.errors import ConfigError, LeadscoreError
from connector.salesforce import (
    SalesforceClient,
)
from connector.store import Store
from scoring.audiences import AudienceError, evaluate_audiences, score_frame
from scoring.events import SpecError, resolve_entity
from sync.config import Settings
from sync.parts import finish_parts, run_part
from sync.progress import Reporter
from sync.run import (
    SILENT,
    JobResult,
    StopCheck,
    check_stop,
    open_store,
    recorded,
    salesforce_settings,
)
from sync.salesforce_writeback import push_campaign, push_salesforce
from sync.segment_sync import (
    push_audience,
    push_segment,
)


def audience_members(
    store: Store, settings: Settings, *, only_segment: bool = False
) -> dict[str, tuple[set[str], datetime | None]]:
    """Evaluate every audience over its prediction's latest scores.

    Returns:
        Audience name -> (member ids, scoring time of the scores it was evaluated on).
    """
    out: dict[str, tuple[set[str], datetime | None]] = {}
    audiences = [a for a in settings.audiences if a.segment is not None or not only_segment]
    for name in sorted({a.prediction for a in audiences}):
        spec = settings.prediction(name)
        mine = {a.name: a.where for a in audiences if a.prediction == name}
        run = store.latest_run_id(name)
        if run is None:
            out.update({a: (set(), None) for a in mine})
            continue
        # One batch of scores at a time: only the member ids are kept.
        population = store.run_probabilities(run)
        members: dict[str, set[str]] = {a: set() for a in mine}
        at: datetime | None = None
        for _, _, scores in store.latest_score_batches(name, settings.store.batch_size):
            try:
                entity = resolve_entity(store.read_connection(), spec)
                if not store.table_exists(entity.table):
                    raise LeadscoreError(
                        f"audiences of '{name}': the store has no {entity.table} table yet",
                        hint="run `leadscore pull --config FILE` first",
                    )
                found = evaluate_audiences(
                    store.read_connection(),
                    score_frame(scores, spec.task, population),
                    entity,
                    mine,
                )
            except (AudienceError, SpecError) as exc:
                raise ConfigError(str(exc), hint="fix the audience's where expression") from None
            for a, ids in found.items():
                members[a] |= ids
            last = pd.Timestamp(scores["scored_at"].max()).to_pydatetime()
            at = last if at is None else max(at, last)
        out.update({a: (m, at) for a, m in members.items()})
    return out


def run_push(
    settings: Settings,
    *,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
    should_stop: StopCheck | None = None,
) -> JobResult:
    """Write each prediction's latest outputs and each audience to their targets (changes only).

    Salesforce fields first (update by Id or upsert), then Campaign memberships (mirror), then
    Segment traits and audience events. Rejected rows are retried by later pushes after a backoff
    and become dead letters after ``writeback.max_attempts``.

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client.
        should_stop: checked after each batch is recorded in the ledger; True stops the run
            before the next batch is sent.

    Returns:
        Per prediction: records considered, unchanged, held by hysteresis, invalid, sent, written,
        failed (with error codes); per audience: campaign and Segment changes.

    Raises:
        Interrupted: a stop was requested (the run is recorded as partial).
    """
    writes_salesforce = any(p.salesforce for p in settings.predictions) or any(
        a.salesforce for a in settings.audiences
    )
    sf = client or (SalesforceClient(salesforce_settings(settings)) if writes_salesforce else None)
    with (
        open_store(settings, "push", should_stop=should_stop, reporter=reporter) as store,
        recorded(store, "push", sf.counter if sf else None) as result,
    ):
        pushed: dict[str, Any] = {}
        campaigns: dict[str, Any] = {}
        result.counts = {"written": 0, "failed": 0, "predictions": pushed}
        members = audience_members(store, settings) if settings.audiences else {}

        def salesforce() -> None:
            assert sf is not None
            sf.connect()
            for spec in settings.predictions:
                if spec.salesforce is None:
                    continue
                counts = push_salesforce(
                    sf,
                    store,
                    spec,
                    reporter,
                    writeback=settings.writeback,
                    should_stop=should_stop,
                    batch_size=settings.store.batch_size,
                )
                pushed[spec.name] = counts.to_json()
            for audience in settings.audiences:
                if audience.salesforce is None:
                    continue
                check_stop(should_stop, "push", "before the campaigns")
                reporter.stage(
                    f"audience {audience.name}: campaign {audience.salesforce.campaign_id}"
                )
                campaigns[audience.name] = push_campaign(
                    sf, store, audience, members[audience.name][0], writeback=settings.writeback
                )

        # Each target fails on its own: a Salesforce outage does not hold back Segment's traits,
        # nor a revoked Segment key the Salesforce fields (sync/parts.py).
        if sf is not None and writes_salesforce:
            run_part(result, "salesforce", salesforce)
        failed = sum(p["failed"] for p in pushed.values())
        result.counts["written"] = sum(p["written"] for p in pushed.values())
        result.counts["failed"] = failed
        failed += sum(c["failed"] for c in campaigns.values())
        if campaigns:
            result.counts["campaigns"] = campaigns
        if settings.segment is not None and (
            any(p.segment for p in settings.predictions)
            or any(a.segment for a in settings.audiences)
        ):
            segment = run_part(
                result, "segment", lambda: _push_segment(settings, store, reporter, members)
            )
            if segment is not None:
                if segment["predictions"]:
                    result.counts["segment"] = segment["predictions"]
                if segment["audiences"]:
                    result.counts["segment_audiences"] = segment["audiences"]
                failed += sum(p["failed"] for p in segment["predictions"].values())
                failed += sum(p["failed"] for p in segment["audiences"].values())
        finish_parts(result)
        if failed:
            result.status = "partial"
    if client is None and sf is not None:
        sf.close()
    return result


def _push_segment(
    settings: Settings,
    store: Store,
    reporter: Reporter,
    members: dict[str, tuple[set[str], datetime | None]],
) -> dict[str, dict[str, Any]]:
    """Each prediction's changed traits and each audience's changes to Segment."""
    from connector.segment import TrackingClient

    assert settings.segment is not None
    client = TrackingClient(settings.segment)
    try:
        predictions = {
            spec.name: push_segment(
                client,
                store,
                spec,
                reporter,
                writeback=settings.writeback,
                batch_size=settings.store.batch_size,
            ).to_json()
            for spec in settings.predictions
            if spec.segment is not None
        }
        audiences = {}
        for audience in settings.audiences:
            if audience.segment is None:
                continue
            ids, at = members[audience.name]
            if at is None:
                continue
            audiences[audience.name] = push_audience(
                client,
                store,
                audience=audience.name,
                entity=settings.prediction(audience.prediction).entity,
                members=ids,
                at=at,
                trait=audience.segment.trait,
                unmatched=audience.segment.unmatched,
                reporter=reporter,
                writeback=settings.writeback,
            ).to_json()
        return {"predictions": predictions, "audiences": audiences}
    finally:
        client.close()
