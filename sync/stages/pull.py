"""The ``pull`` job: every Salesforce stream and the Segment sources into the store."""

from __future__ import annotations

from typing import Any

from connector.salesforce import (
    SalesforceClient,
    SalesforceStream,
)
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
from sync.segment_sync import (
    pull_segment,
)
from sync.stages.imports import config_dir


def run_pull(
    settings: Settings,
    *,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
    should_stop: StopCheck | None = None,
    sweep: bool = False,
) -> JobResult:
    """Pull every configured Salesforce stream incrementally into the store.

    Each stream is read by ``SystemModstamp`` (or its configured cursor field) from the committed
    cursor minus the overlap window, by REST pages or a Bulk API 2.0 job depending on how many
    rows changed (``SELECT COUNT()``); see :class:`connector.salesforce.SalesforceStream` for the
    checkpoint rules. A run
    stopped by the API budget, an outage or a stop request keeps every committed page; the next
    run resumes.

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client (``run_sync`` shares one).
        should_stop: checked between pages; True stops the run after the committed page (the
            stream is not marked complete, so the next pull resumes from its cursor).
        sweep: also read every live id and remove stored rows whose record was deleted and
            purged from the recycle bin (automatic for streams last pulled longer ago than
            ``salesforce.recycle_bin_days``).

    Returns:
        Counts per stream: path (rest or bulk), fetched, new, changed, unchanged, deleted,
        swept (deletions only a sweep found).

    Raises:
        Interrupted: a stop was requested (the run is recorded as partial).
    """
    salesforce = salesforce_settings(settings)
    sf = client or SalesforceClient(salesforce)
    with (
        open_store(settings, "pull", should_stop=should_stop, reporter=reporter) as store,
        recorded(store, "pull", sf.counter) as result,
    ):
        keys = ("fetched", "new", "changed", "unchanged", "deleted")
        totals = dict.fromkeys(keys, 0)
        streams: dict[str, dict[str, Any]] = {}
        result.counts = {**totals, "pulled": 0, "streams": streams}

        def pull_salesforce() -> None:
            sf.connect()
            for sobject, stream in salesforce.streams.items():

                def progress(counts: dict[str, Any], sobject: str = sobject) -> None:
                    result.counts = {**result.counts, "streams": {**streams, sobject: counts}}
                    check_stop(should_stop, "pull", f"after a page of {sobject}")

                counts = (
                    SalesforceStream(sf, sobject, stream)
                    .sync(store, reporter, progress, sweep=sweep)
                    .to_json()
                )
                streams[sobject] = counts
                for key in keys:
                    totals[key] += counts[key]
                result.counts = {
                    **totals,
                    "pulled": totals["new"] + totals["changed"],
                    "streams": streams,
                }

        # Each source fails on its own (sync/parts.py): Segment still goes when Salesforce is
        # down, and the Salesforce data is kept when Segment's token was revoked.
        run_part(result, "salesforce", pull_salesforce)
        if settings.segment is not None:
            segment_settings = settings.segment
            # a Segment failure (a revoked Profile API token) leaves the Salesforce data pulled
            # and the run partial (sync/parts.py)
            segment = run_part(
                result,
                "segment",
                lambda: pull_segment(segment_settings, store, reporter, base=config_dir(settings)),
            )
            if segment is not None:
                result.counts["segment"] = segment
        finish_parts(result)
    return result
