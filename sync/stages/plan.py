"""The ``plan`` job: what a push would write, without writing."""

from __future__ import annotations

from typing import Any

from connector.salesforce import (
    SalesforceClient,
)
from connector.segment import estimate_batch_requests
from sync.config import Settings
from sync.progress import Reporter
from sync.run import SILENT, open_store, salesforce_settings
from sync.salesforce_writeback import plan_campaign, plan_salesforce
from sync.segment_sync import (
    audience_messages,
    plan_segment,
)
from sync.stages.push import audience_members


def run_plan(
    settings: Settings, *, reporter: Reporter = SILENT, client: SalesforceClient | None = None
) -> dict[str, Any]:
    """What ``push`` would do now, per target, and what it would cost: a dry run.

    Nothing is written to Salesforce, Segment or the store's ledger. Salesforce is asked only
    for describes (field names and validation).

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client.

    Returns:
        ``targets`` (one entry per prediction target and audience target: counts of records to
        create / update / leave unchanged / hold back by hysteresis / reject as invalid, waiting
        for a retry, dead and gone; a sample of changes; audience entries and exits; estimated
        calls), ``estimated_api_calls`` (Salesforce, on the path the connector would choose),
        ``estimated_segment_requests`` and ``api_calls`` (what the plan itself used).
    """
    writes_salesforce = any(p.salesforce for p in settings.predictions) or any(
        a.salesforce for a in settings.audiences
    )
    sf = client or (SalesforceClient(salesforce_settings(settings)) if writes_salesforce else None)
    targets: list[dict[str, Any]] = []
    try:
        with open_store(settings, "plan", reporter=reporter) as store:
            # a run describes each object once, and reads /limits at most once
            calls: dict[str, Any] = {"describe": set(), "limits": 0, "other": 0}
            if sf is not None:
                sf.connect()
            for spec in settings.predictions:
                if spec.salesforce is None or sf is None:
                    continue
                reporter.stage(f"{spec.name}: diffing against the Salesforce ledger")
                plan = plan_salesforce(
                    sf, store, spec, settings.writeback, batch_size=settings.store.batch_size
                )
                assert plan is not None
                estimate = plan["estimated_calls"]
                calls["describe"].add(plan["object"])
                calls["limits"] |= estimate["limits"]
                calls["other"] += estimate["read_back"] + estimate["writes"]
                targets.append({"target": "salesforce", "prediction": spec.name, **plan})
            members = audience_members(store, settings) if settings.audiences else {}
            for audience in settings.audiences:
                ids = members[audience.name][0]
                if audience.salesforce is not None and sf is not None:
                    plan = plan_campaign(sf, store, audience, ids, describe=False)
                    if plan["estimated_calls"]:
                        calls["describe"].add("CampaignMember")
                    calls["other"] += plan["estimated_calls"]
                    targets.append(
                        {"target": "salesforce campaign", "audience": audience.name, **plan}
                    )
            segment_requests = 0
            if settings.segment is not None:
                for spec in settings.predictions:
                    plan = plan_segment(store, spec, settings.segment, settings.writeback)
                    if plan is not None:
                        segment_requests += plan["estimated_requests"]
                        targets.append({"target": "segment", "prediction": spec.name, **plan})
                for audience in settings.audiences:
                    ids, at = members[audience.name]
                    if audience.segment is None or at is None:
                        continue
                    built = audience_messages(
                        store,
                        audience=audience.name,
                        entity=settings.prediction(audience.prediction).entity,
                        members=ids,
                        at=at,
                        trait=audience.segment.trait,
                        unmatched=audience.segment.unmatched,
                    )
                    requests = estimate_batch_requests(built.messages, settings.segment)
                    segment_requests += requests
                    targets.append(
                        {
                            "target": "segment audience",
                            "audience": audience.name,
                            "members": len(ids),
                            "enter": built.enter,
                            "exit": built.exit,
                            "no_segment_user": built.counts.no_segment_user,
                            "messages": len(built.messages),
                            "estimated_requests": requests,
                        }
                    )
    finally:
        if client is None and sf is not None:
            sf.close()
    estimated = len(calls["describe"]) + calls["limits"] + calls["other"]
    return {
        "targets": targets,
        "estimated_api_calls": estimated,
        "estimated_segment_requests": segment_requests,
        "api_calls": sf.counter.api_calls if sf is not None else 0,
    }
