"""The jobs, one function each: the whole run reads from here.

``run_pull`` -> ``run_train`` -> ``run_score`` -> ``run_push``; ``run_all`` chains them. The CLI and
the scheduler only call these functions.

Every job records itself in the run log (start, end, status, counts, API calls, error). Expected
failures are :class:`~connector.errors.LeadscoreError` one-liners; they are logged in the run log
and re-raised for the caller.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import roc_auc_score

from connector.errors import Busy, ConfigError, Interrupted, LeadscoreError, RequestError
from connector.files import (
    convert_time_columns,
    derive_entities,
    import_segment_export,
    import_table,
    newest_time,
)
from connector.history import (
    JobHistory,
    dead_letter_rows,
    dead_letters,
    fail_abandoned_runs,
    job_histories,
    last_api_usage,
    read_alert_states,
    record_run,
    revive_dead_letters,
)
from connector.http import CallCounter
from connector.salesforce import (
    LARGE_RUN_CALLS,
    OUTPUT_FIELD_TYPES,
    BulkJob,
    FieldDescription,
    SalesforceClient,
    SalesforceSettings,
    StreamSettings,
    bulk_cursor,
    check_allowance,
    count_records,
    create_custom_field,
    db_type,
    describe_object,
    field_metadata,
    read_bulk,
    read_campaigns,
    read_limits,
    read_records,
    resolve_fields,
    since_with_overlap,
    start_bulk_query,
    suggest_field,
)
from connector.segment import estimate_batch_requests
from connector.store import PageCounts, Store, quote_identifier, raw_table_name, utc_now
from scoring.audiences import AudienceError, evaluate_audiences, score_frame
from scoring.events import SpecError, resolve_entity
from scoring.metrics import headline
from scoring.monitor import (
    reference_profile,
)
from scoring.pipeline import (
    ScoringError,
    compare_with_champion,
    score_entities,
    train_prediction,
)
from scoring.registry import (
    ModelVersion,
    RegistryError,
    list_versions,
    load_challenger,
    load_champion,
    load_version,
    promote,
    rollback,
    save_version,
)
from scoring.report import ReportInput, Section, build_report
from scoring.traits import TraitSpec
from sync.alerts import Condition, evaluate, job_conditions
from sync.config import JOB_NAMES, PredictionConfig, Settings, load_settings
from sync.demo import ensure_audience_campaign, prepare_workdir, write_sandbox_files
from sync.health import overdue_jobs
from sync.lock import LockHolder, RunLock, lock_path
from sync.logs import run_context
from sync.monitoring import (
    monitor_conditions,
    monitor_prediction,
    monitoring_page,
    monitoring_report_body,
)
from sync.progress import Reporter, SilentReporter
from sync.push import plan_campaign, plan_salesforce, push_campaign, push_salesforce
from sync.segment import (
    audience_messages,
    plan_segment,
    pull_segment,
    push_audience,
    push_segment,
    summarise_imports,
)

SILENT = SilentReporter()
log = logging.getLogger("leadscore.jobs")

# Checked between pages and batches: True asks the running job to stop at the next checkpoint.
StopCheck = Callable[[], bool]


@dataclass
class JobResult:
    """The outcome of one job run.

    Attributes:
        job: job name.
        status: ``ok``, ``partial``, ``failed`` or ``skipped``.
        counts: job-specific counts (JSON-serialisable).
        api_calls: calls made against remote API allowances.
        seconds: wall time.
        run_id: the run-log id.
        artifacts: in-process results that are not part of the JSON output (e.g. holdout
            predictions).
    """

    job: str
    status: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)
    api_calls: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable part."""
        return {
            "job": self.job,
            "status": self.status,
            "counts": self.counts,
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
        }


@contextmanager
def _recorded(store: Store, job: str, counter: CallCounter | None = None) -> Iterator[JobResult]:
    """Record a job in the run log around the block; failures are logged and re-raised."""
    result = JobResult(job)
    result.run_id = store.start_run(job)
    calls_before = counter.api_calls if counter else 0
    started = time.perf_counter()

    def counts() -> dict[str, Any]:
        # the org's allowance as last reported by Sforce-Limit-Info, for `status` and alerts
        if counter is not None and counter.org_usage is not None:
            used, limit = counter.org_usage
            return {**result.counts, "api_usage": {"used": used, "max": limit}}
        return result.counts

    with run_context(job, result.run_id):
        log.info("%s started", job)
        try:
            yield result
        except BaseException as exc:
            # A stop request ends the run at a checkpoint: what it did is committed (partial).
            result.status = "partial" if isinstance(exc, Interrupted) else "failed"
            message = (
                str(exc)
                if isinstance(exc, LeadscoreError | ScoringError)
                else f"{type(exc).__name__}: {exc}"
            )
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            result.seconds = time.perf_counter() - started
            result.api_calls = (counter.api_calls - calls_before) if counter else 0
            store.finish_run(
                result.run_id,
                status=result.status,
                counts=counts(),
                api_calls=result.api_calls,
                error=message,
            )
            # INFO: the caller decides how loudly to report it (the CLI prints one line, the
            # scheduler logs an error).
            log.info(
                "%s %s after %.1f s: %s",
                job,
                "stopped" if result.status == "partial" else "failed",
                result.seconds,
                message,
            )
            raise
        result.seconds = time.perf_counter() - started
        result.api_calls = (counter.api_calls - calls_before) if counter else 0
        store.finish_run(
            result.run_id, status=result.status, counts=counts(), api_calls=result.api_calls
        )
        log.info(
            "%s %s in %.1f s (%d API calls)", job, result.status, result.seconds, result.api_calls
        )


@contextmanager
def _open_store(
    settings: Settings,
    job: str,
    *,
    should_stop: StopCheck | None = None,
    reporter: Reporter = SILENT,
    wait_seconds: float | None = None,
) -> Iterator[Store]:
    """Take the store's run lock for ``job``, then open the store.

    Only one process may write a DuckDB file, and two runs of a job must never overlap, so every
    job holds the lock (re-entrant: ``sync`` holds it around its pull, score and push). A run waits
    up to ``schedule.lock_wait_seconds`` for another to finish, then gives up with :class:`Busy`.
    """

    def waiting(holder: LockHolder | None) -> None:
        who = holder.describe() if holder else "another leadscore process"
        reporter.stage(f"waiting up to {wait:g} s for {who} to finish")
        log.info("%s: waiting up to %g s for %s to finish", job, wait, who)

    wait = settings.schedule.lock_wait_seconds if wait_seconds is None else wait_seconds
    lock = RunLock(
        lock_path(settings.store.path),
        job,
        wait_seconds=wait,
        should_stop=should_stop,
        on_wait=waiting,
    )
    with lock:
        store = Store(settings.store.path)
        try:
            if lock.took_over is not None:
                abandoned = fail_abandoned_runs(
                    store,
                    f"abandoned: {lock.took_over.describe()} ended without recording an outcome "
                    "(killed or crashed); committed pages and batches are kept",
                )
                if abandoned:
                    log.warning("marked %d abandoned run(s) as failed", abandoned)
            yield store
        finally:
            store.close()


def _check_stop(should_stop: StopCheck | None, job: str, where: str) -> None:
    """Raise :class:`Interrupted` at a checkpoint when a stop was requested."""
    if should_stop is not None and should_stop():
        raise Interrupted(
            f"{job}: stopped on request {where}; committed work is kept and the next run resumes"
        )


def _salesforce(settings: Settings) -> SalesforceSettings:
    if settings.salesforce is None:
        raise ConfigError(
            "this configuration has no [salesforce] section",
            hint="add one (see config.example.toml) to pull from or push to Salesforce",
        )
    return settings.salesforce


def _scoring_error(exc: ScoringError) -> LeadscoreError:
    return LeadscoreError(str(exc))


# -- pull ------------------------------------------------------------------------------------------
# ---------


def _pull_stream(
    sf: SalesforceClient,
    store: Store,
    settings: Settings,
    sobject: str,
    stream: StreamSettings,
    reporter: Reporter,
    after_page: Callable[[dict[str, Any]], None] = lambda counts: None,
    *,
    sweep: bool = False,
) -> dict[str, Any]:
    """Pull one stream: resume a bulk download, or read the changes by REST or Bulk API 2.0.

    - REST (up to ``bulk_read_threshold`` rows): pages ordered by (cursor, Id); each page is
      upserted with the cursor in one transaction, so a crash resumes after the last page.
    - Bulk API 2.0 (a first sync, or more rows): results are unordered, so each page is
      upserted with the job id and the next page's locator (``bulk_checkpoint``); a crash
      resumes the same job at that page, and the cursor moves only when the job is read to the
      end, to ``min(newest row, job created)`` (:func:`connector.salesforce.bulk_cursor`).
    - Deletions: incremental reads use ``queryAll`` and remove rows whose ``IsDeleted`` is true
      from the store (a first read skips deleted records). Records purged from the recycle bin
      are invisible to ``queryAll``: when the stream was last pulled more than
      ``salesforce.recycle_bin_days`` ago (or ``sweep`` asks for it), every live id is read
      after the changes and stored rows without one are removed (:func:`_sweep_deletions`).

    ``after_page`` is called with the stream's counts after every committed page (run_pull
    records progress and honours a stop request there: the checkpoint makes stopping safe).
    """
    s = settings.salesforce
    setting = f"salesforce.streams.{sobject}"
    description = describe_object(sf, sobject)
    name = description.name
    fields = resolve_fields(
        description, ["Id", stream.cursor_field, *stream.fields], setting=f"{setting}.fields"
    )
    cursor = description.field(stream.cursor_field)
    if cursor is None or cursor.type != "datetime":
        raise ConfigError(
            f"{setting}.cursor_field: '{stream.cursor_field}' is not a datetime field of {name}",
            hint="use SystemModstamp",
        )
    table = raw_table_name("salesforce", name)
    columns = {
        f: (description.fields[f.lower()].type, db_type(description.fields[f.lower()].type))
        for f in fields
    }
    added = store.ensure_table(name, table, columns, key="Id")
    if added:
        # New columns are empty for rows already stored: read the stream again in full to fill them.
        reporter.stage(f"{name}: new fields {', '.join(added)}; re-reading it in full")
        store.reset_cursor(name)
        store.drop_bulk(name)
    deleted_field = "IsDeleted" if description.field("IsDeleted") is not None else None
    query_fields = [
        *fields,
        *([deleted_field] if deleted_field and deleted_field not in fields else []),
    ]
    counts: dict[str, Any] = {
        "path": "rest",
        "fetched": 0,
        "new": 0,
        "changed": 0,
        "unchanged": 0,
        "deleted": 0,
        "swept": 0,
    }

    def add(page_counts: PageCounts, fetched: int) -> None:
        counts["fetched"] += fetched
        counts["new"] += page_counts.inserted
        counts["changed"] += page_counts.updated
        counts["unchanged"] += page_counts.unchanged
        counts["deleted"] += page_counts.deleted

    def read_job(job: BulkJob, locator: str | None) -> None:
        counts["path"] = "bulk"
        if locator != "null":  # "null": every page is stored already
            with reporter.track(f"pull {name} (bulk)") as task:
                for page in read_bulk(
                    sf, job, locator=locator, workdir=store.path.parent, on_total=task.set_total
                ):
                    page_counts = store.upsert_csv(
                        name,
                        table,
                        page.path,
                        key="Id",
                        cursor_field=cursor.name,
                        deleted_field=deleted_field,
                        locator=page.next_locator or "null",
                    )
                    add(page_counts, page.records)
                    task.advance(page.records)
                    after_page(counts)
        checkpoint = store.bulk_checkpoint(name)
        store.finish_bulk(name, bulk_cursor(checkpoint["max_cursor"] if checkpoint else None, job))

    checkpoint = store.bulk_checkpoint(name)
    if checkpoint is not None and checkpoint["fields"] != query_fields:
        store.drop_bulk(name)  # the configured fields changed: the job selects the old ones
        checkpoint = None
    if checkpoint is not None:
        job = BulkJob(checkpoint["job_id"], checkpoint["job_created"])
        reporter.stage(
            f"{name}: resuming bulk job {job.id} after {checkpoint['rows_stored']:,} stored rows"
        )
        try:
            read_job(job, checkpoint["locator"])
        except RequestError as exc:
            # The job is gone (results expire after 7 days) or failed: start a new one below.
            reporter.stage(f"{name}: cannot resume bulk job {job.id} ({exc.message}); restarting")
            store.drop_bulk(name)
        else:
            store.mark_synced(name, checkpoint["started_at"])
            return counts

    started = utc_now()
    current = store.read_cursor(name)
    last_synced = store.synced_through([name])
    since = since_with_overlap(current, s.overlap_seconds)
    # queryAll whenever the store may hold rows deleted since (a re-read after new fields too)
    include_deleted = deleted_field is not None and (current is not None or bool(added))
    if current is None and s.bulk_first_sync:
        total = None  # a first sync is read in bulk whatever its size: no COUNT() needed
    else:
        total = count_records(
            sf, name, cursor_field=cursor.name, since=since, include_deleted=include_deleted
        )
    if total is None or total > s.bulk_read_threshold:
        # create + one poll + result pages; /limits tells whether the org can afford it
        check_allowance(
            sf,
            planned_calls=2 + math.ceil((total or 0) / s.bulk_page_size),
            bulk_query_jobs=1,
            what=f"bulk pull of {name}",
        )
        job = start_bulk_query(
            sf,
            name,
            query_fields,
            cursor_field=cursor.name,
            since=since,
            include_deleted=include_deleted,
        )
        store.start_bulk(
            name,
            job_id=job.id,
            job_created=job.created,
            fields=query_fields,
            include_deleted=include_deleted,
            started_at=started,
        )
        read_job(job, None)
    elif total > 0:
        planned = math.ceil(total / s.page_size)
        if planned > LARGE_RUN_CALLS:
            check_allowance(sf, planned_calls=planned, what=f"pull of {total:,} {name} records")
        with reporter.track(f"pull {name}", total=total) as task:
            for page in read_records(
                sf,
                name,
                query_fields,
                cursor_field=cursor.name,
                since=since,
                include_deleted=include_deleted,
            ):
                frame = pd.DataFrame.from_records(page, columns=query_fields)
                page_counts = store.upsert_page(
                    name,
                    table,
                    frame,
                    key="Id",
                    cursor_field=cursor.name,
                    deleted_field=deleted_field,
                )
                add(page_counts, len(page))
                task.advance(len(page))
                after_page(counts)
    stale = last_synced is not None and started - last_synced > timedelta(days=s.recycle_bin_days)
    if current is not None and (sweep or stale):
        why = "on request" if sweep else f"last pulled {last_synced:%Y-%m-%d}"
        counts["swept"] = _sweep_deletions(sf, store, name, table, reporter, why=why)
        counts["deleted"] += counts["swept"]
    store.mark_synced(name, started)
    return counts


def _sweep_deletions(
    sf: SalesforceClient, store: Store, name: str, table: str, reporter: Reporter, *, why: str
) -> int:
    """Read every live id of an object and remove the stored rows that have none.

    Salesforce empties its recycle bin after 15 days, and purged records no longer appear in
    ``queryAll``, so an incremental pull after a long pause cannot see those deletions.
    https://help.salesforce.com/s/articleView?id=sf.home_delete.htm

    Returns:
        The number of stored rows removed.
    """
    s = sf.settings
    total = count_records(sf, name)
    reporter.stage(f"{name}: deletion sweep ({why}): reading {total:,} live ids")
    if total > s.bulk_read_threshold:
        check_allowance(
            sf,
            planned_calls=2 + math.ceil(total / s.bulk_page_size),
            bulk_query_jobs=1,
            what=f"deletion sweep of {name}",
        )
        job = start_bulk_query(sf, name, ["Id"])
        pages: Iterator[pd.DataFrame | Path] = (
            page.path for page in read_bulk(sf, job, workdir=store.path.parent)
        )
    else:
        pages = (
            pd.DataFrame.from_records(page, columns=["Id"])
            for page in read_records(sf, name, ["Id"])
        )
    return store.remove_absent(table, "Id", pages)


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
    rows changed (``SELECT COUNT()``); see :func:`_pull_stream` for the checkpoint rules. A run
    stopped by the API budget, an outage or a stop request keeps every committed page; the next
    run resumes.

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client (``run_all`` shares one).
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
    salesforce = _salesforce(settings)
    sf = client or SalesforceClient(salesforce)
    with (
        _open_store(settings, "pull", should_stop=should_stop, reporter=reporter) as store,
        _recorded(store, "pull", sf.counter) as result,
    ):
        sf.connect()
        keys = ("fetched", "new", "changed", "unchanged", "deleted")
        totals = dict.fromkeys(keys, 0)
        streams: dict[str, dict[str, Any]] = {}
        result.counts = {**totals, "pulled": 0, "streams": streams}
        for sobject, stream in salesforce.streams.items():

            def progress(counts: dict[str, Any], sobject: str = sobject) -> None:
                result.counts = {**result.counts, "streams": {**streams, sobject: counts}}
                _check_stop(should_stop, "pull", f"after a page of {sobject}")

            counts = _pull_stream(
                sf, store, settings, sobject, stream, reporter, progress, sweep=sweep
            )
            streams[sobject] = counts
            for key in keys:
                totals[key] += counts[key]
            result.counts = {
                **totals,
                "pulled": totals["new"] + totals["changed"],
                "streams": streams,
            }
        if settings.segment is not None:
            result.counts["segment"] = pull_segment(
                settings.segment, store, reporter, base=_config_dir(settings)
            )
    return result


def _config_dir(settings: Settings) -> Path:
    """The directory relative paths in the config file start from."""
    return settings.path.parent if settings.path is not None else Path.cwd()


def run_segment_import(
    settings: Settings,
    paths: list[Path],
    *,
    kind: str,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> JobResult:
    """Import Segment export files (warehouse / Profiles Sync) and rebuild the identity map.

    Bad lines are skipped and counted by reason (with file and line); the rest is imported.

    Args:
        settings: configuration (needs a ``[segment]`` section).
        paths: JSON-lines or Parquet files.
        kind: ``tracks``, ``identifies`` or ``id_graph``.
        force: import files again that were imported before.
        reporter: progress.

    Returns:
        ``imports`` (totals, skipped lines by reason, examples) and ``identity``.

    Raises:
        ConfigError: no ``[segment]`` section, or an unreadable file.
    """
    if settings.segment is None:
        raise ConfigError(
            "importing Segment exports needs a [segment] section in the config file",
            hint="add [segment] (see config.example.toml)",
        )
    from sync.identity import resolve_identities

    with (
        _open_store(settings, "segment_import", reporter=reporter) as store,
        _recorded(store, "segment_import") as result,
    ):
        results = []
        for path in paths:
            reporter.stage(f"importing {kind} from {path}")
            results.append(
                import_segment_export(
                    store, path, kind, id_types=settings.segment.id_types(), force=force
                )
            )
        result.counts = {"imports": summarise_imports(results)}
        reporter.stage("resolving identities")
        result.counts["identity"] = resolve_identities(store, settings.segment.identity).to_json()
    return result


# -- train
# --------------------------------------------------------------------------------------------------


def _as_of(store: Store, settings: Settings) -> datetime:
    """How far the store is complete: the earliest ``synced_through`` of the configured streams."""
    if settings.salesforce is None:
        raise ConfigError(
            "this configuration has no [salesforce] section",
            hint="add one, or describe the entity with entity_table and [[sources]]",
        )
    streams = [describe_name for describe_name in settings.salesforce.streams]
    rows = store.query_df("SELECT stream FROM sync_cursor")
    known = {s.lower(): s for s in rows["stream"]}
    through = store.synced_through([known.get(s.lower(), s) for s in streams])
    if through is None:
        raise LeadscoreError(
            "the store has not been fully pulled yet",
            hint="run `leadscore pull --config FILE` first",
        )
    return through


def _source_stream(table: str) -> str:
    """The sync-cursor stream name recording how recent an imported table is."""
    return f"file:{table}"


def _prediction_as_of(store: Store, settings: Settings, spec: PredictionConfig) -> datetime | None:
    """How far the data of one prediction is complete.

    Built-in entities read pulled streams; an entity table (and its event tables) imported from
    files is complete up to each source's ``as_of``; other tables count as complete now.
    """
    if spec.entity_table is None:
        return _as_of(store, settings)
    tables = {spec.entity_table.table, *(e.table for e in spec.events)}
    streams = [_source_stream(t) for t in tables if store.read_cursor(_source_stream(t))]
    through = store.synced_through(streams) if streams else None
    return through or utc_now()


def _import_sources(
    store: Store, settings: Settings, reporter: Reporter, *, only_missing: bool
) -> dict[str, Any]:
    imported: dict[str, Any] = {}
    for source in settings.sources:
        if only_missing and store.table_exists(source.table):
            continue
        reporter.stage(f"importing {source.path.name} into {source.table}")
        result = import_table(
            store,
            source.path,
            source.table,
            id_column=source.id_column,
            delimiter=source.delimiter,
            null_values=tuple(source.null_values),
            clean_names=True,
        )
        if source.row_id:
            table, row_id = quote_identifier(source.table), quote_identifier(source.row_id)
            with store.transaction() as con:
                con.execute(
                    f"CREATE OR REPLACE TABLE {table} AS "
                    f"SELECT row_number() OVER () AS {row_id}, * FROM {table}"
                )
        convert_time_columns(store, source.table, dict(source.time_formats), path=source.path)
        if source.entities is not None:
            e = source.entities
            derive_entities(store, source.table, e.table, e.id_column, e.time_column)
        as_of = (
            source.as_of
            or newest_time(store, source.table)
            or datetime.fromtimestamp(source.path.stat().st_mtime, UTC)
        )
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(UTC).replace(tzinfo=None)
        tables = [source.table, *([source.entities.table] if source.entities else [])]
        for stream in (_source_stream(t) for t in tables):
            with store.transaction() as con:
                con.execute(
                    "INSERT OR REPLACE INTO sync_cursor (stream, cursor_value, synced_through, "
                    "updated_at) VALUES (?, ?, ?, ?)",
                    [stream, as_of, as_of, utc_now()],
                )
        imported[source.table] = {"rows": result.rows, "columns": len(result.columns)}
    return imported


def run_import(settings: Settings, *, reporter: Reporter = SILENT) -> JobResult:
    """Import every ``[[sources]]`` file into its store table (replacing the table).

    Args:
        settings: configuration.
        reporter: progress.

    Returns:
        Rows and columns per table.
    """
    with (
        _open_store(settings, "import", reporter=reporter) as store,
        _recorded(store, "import") as result,
    ):
        tables = _import_sources(store, settings, reporter, only_missing=False)
        result.counts = {"rows": sum(t["rows"] for t in tables.values()), "tables": tables}
    return result


def _output_fields(settings: Settings, prediction: PredictionConfig) -> set[str]:
    """Fields any prediction writes to the scored object: never features."""
    out: set[str] = set()
    for p in settings.predictions:
        if p.entity == prediction.entity and p.salesforce is not None:
            out |= set(p.salesforce.fields.values())
    return out


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Headline metrics without the tables."""
    return {k: v for k, v in metrics.items() if k != "tables"}


def _prediction_traits(settings: Settings, spec: PredictionConfig) -> list[TraitSpec]:
    """The ``[[traits]]`` a prediction uses as features (``features.traits``; default all)."""
    chosen = spec.features.traits
    return [t for t in settings.traits if chosen is None or t.name in chosen]


def run_train(
    settings: Settings, *, prediction: str | None = None, reporter: Reporter = SILENT
) -> JobResult:
    """Train a model per prediction (or the named one); it becomes champion if it passes the gate.

    The quality gate scores the current champion on the new model's holdout: the new model becomes
    champion only if its holdout metric is not worse (within ``training.quality_tolerance``);
    otherwise it is stored as the challenger (``leadscore models promote`` makes it champion).

    Args:
        settings: configuration.
        prediction: train only this prediction.
        reporter: progress.

    Returns:
        Per prediction: ``version``, ``champion``, ``metrics``, ``baselines``, ``deployed`` (the
        model / blend / fall-back choice and why), ``gate``, ``warnings``, ``examples``.
        ``artifacts["holdout"]`` holds the holdout predictions by prediction name.
    """
    targets = [settings.prediction(prediction)] if prediction else list(settings.predictions)
    with (
        _open_store(settings, "train", reporter=reporter) as store,
        _recorded(store, "train") as result,
    ):
        if settings.sources:
            _import_sources(store, settings, reporter, only_missing=True)
        trained: dict[str, Any] = {}
        holdouts: dict[str, pd.DataFrame] = {}
        for spec in targets:
            as_of = _prediction_as_of(store, settings, spec)
            when = f" as of {as_of:%Y-%m-%d %H:%M} UTC" if as_of else ""
            reporter.stage(f"{spec.name}: training set{when}")
            try:
                outcome = train_prediction(
                    store.con,
                    spec,
                    as_of=as_of,
                    exclude_fields={f.lower() for f in _output_fields(settings, spec)},
                    progress=lambda stage, name=spec.name: reporter.stage(f"{name}: {stage}"),
                    traits=_prediction_traits(settings, spec),
                )
                current = load_champion(settings.store.models_dir, spec.name)
                gate = (
                    compare_with_champion(
                        store.con, spec, outcome, current.load(), current.metadata
                    )
                    if current is not None
                    else {"promote": True, "reason": "no champion yet"}
                )
                # Reference for drift monitoring: the population this model would score at the
                # cut-off (static tables have no time: their scoring time is now).
                reporter.stage(f"{spec.name}: profiling the scored population for drift monitoring")
                profile = reference_profile(
                    store.con,
                    spec,
                    outcome.predictor,
                    outcome.metadata,
                    at=score_time_for(as_of or utc_now()),
                )
            except ScoringError as exc:
                raise _scoring_error(exc) from None
            metadata = {**outcome.metadata, "gate": gate, "monitoring_profile": profile}
            version = save_version(
                settings.store.models_dir,
                spec.name,
                outcome.predictor,
                metadata,
                champion=bool(gate["promote"]),
                holdout=outcome.holdout,
            )
            for warning in outcome.warnings:
                reporter.stage(f"{spec.name}: warning: {warning}")
            if not gate["promote"]:
                reporter.stage(f"{spec.name}: kept as challenger, not champion: {gate['reason']}")
            holdouts[spec.name] = outcome.holdout
            trained[spec.name] = {
                "version": version.version,
                "champion": bool(gate["promote"]),
                "task": spec.task,
                "examples": outcome.metadata["examples"]["used"],
                "metrics": _summary(outcome.metadata["metrics"]),
                "baselines": outcome.metadata["baselines"],
                "deployed": {
                    k: v for k, v in outcome.metadata["deployed"].items() if k != "calibrator"
                },
                "gate": gate,
                "warnings": outcome.warnings,
                "split": outcome.metadata["split"]["method"],
                "split_reason": outcome.metadata["split"].get("reason"),
                "deploy": outcome.metadata.get("deploy"),
                "seconds": outcome.metadata["seconds"],
                "skipped_traits": outcome.metadata["traits"]["skipped"],
            }
        result.counts = {"predictions": trained}
        result.artifacts["holdout"] = holdouts
    return result


# -- score
# --------------------------------------------------------------------------------------------------


def score_time_for(as_of: datetime) -> datetime:
    """The scoring time for data complete up to ``as_of``: floored to the hour.

    Flooring makes features (and so scores) identical for every run within the same hour, so a
    re-run writes nothing; events of the current hour count from the next hour on.

    Args:
        as_of: how far the store is complete.

    Returns:
        The scoring time.
    """
    return as_of.replace(minute=0, second=0, microsecond=0)


def run_score(
    settings: Settings, *, reporter: Reporter = SILENT, train_missing: bool = False
) -> JobResult:
    """Score every current entity of each prediction with its champion model, with reasons.

    Args:
        settings: configuration.
        reporter: progress.
        train_missing: train first when a prediction has no model yet (``run``).

    Returns:
        Per prediction: model version, records scored and the tier distribution.
    """
    with (
        _open_store(settings, "score", reporter=reporter) as store,
        _recorded(store, "score") as result,
    ):
        scored: dict[str, Any] = {}
        for spec in settings.predictions:
            as_of = _prediction_as_of(store, settings, spec) or utc_now()
            score_time = score_time_for(as_of)
            champion = load_champion(settings.store.models_dir, spec.name)
            if champion is None:
                raise LeadscoreError(
                    f"prediction '{spec.name}' has no trained model",
                    hint="run `leadscore train --config FILE` first",
                )
            reporter.stage(f"{spec.name}: scoring with model {champion.version}")
            try:
                scores = score_entities(
                    store.con, spec, champion.load(), champion.metadata, score_time=score_time
                )
            except ScoringError as exc:
                raise _scoring_error(exc) from None
            store.append_scores(spec.name, scores)
            scored[spec.name] = {
                "version": champion.version,
                "scored": len(scores),
                "tiers": {
                    str(k): int(v)
                    for k, v in scores["tier"].dropna().value_counts().sort_index().items()
                },
                "score_time": score_time.isoformat(),
            }
        result.counts = {"scored": sum(s["scored"] for s in scored.values()), "predictions": scored}
    return result


# -- models and report
# ---------------------------------------------------------------------------------------


def _registry_error(exc: RegistryError) -> ConfigError:
    return ConfigError(str(exc), hint="`leadscore models list --config FILE` shows the versions")


def _version_row(version: ModelVersion, champion: str | None, challenger: str | None) -> dict:
    meta = version.metadata
    metric, _ = headline(meta.get("task", "binary"))
    return {
        "version": version.version,
        "role": "champion"
        if version.version == champion
        else ("challenger" if version.version == challenger else ""),
        "task": meta.get("task", "binary"),
        "metric": metric,
        "value": meta.get("metrics", {}).get(metric),
        "deployed": meta.get("deployed", {}).get("model", "catboost"),
        "examples": meta.get("examples", {}).get("used"),
        "config_hash": meta.get("config_hash"),
        "trained_seconds": meta.get("seconds"),
    }


def list_models(settings: Settings, *, prediction: str | None = None) -> dict[str, list[dict]]:
    """Every stored model version per prediction, with its role and headline metric.

    Args:
        settings: configuration.
        prediction: only this prediction.

    Returns:
        Prediction name -> versions (oldest first).
    """
    names = (
        [settings.prediction(prediction).name]
        if prediction
        else [p.name for p in settings.predictions]
    )
    out: dict[str, list[dict]] = {}
    root = settings.store.models_dir
    for name in names:
        champion = load_champion(root, name)
        challenger = load_challenger(root, name)
        out[name] = [
            _version_row(
                v,
                champion.version if champion else None,
                challenger.version if challenger else None,
            )
            for v in list_versions(root, name)
        ]
    return out


def show_model(settings: Settings, prediction: str, version: str | None = None) -> dict[str, Any]:
    """The metadata of a model version (default: the champion).

    Args:
        settings: configuration.
        prediction: prediction name.
        version: version id.

    Returns:
        The metadata (without the bulky tables).

    Raises:
        ConfigError: unknown prediction or version, or no model yet.
    """
    name = settings.prediction(prediction).name
    root = settings.store.models_dir
    try:
        model = load_version(root, name, version) if version else load_champion(root, name)
    except RegistryError as exc:
        raise _registry_error(exc) from None
    if model is None:
        raise ConfigError(
            f"prediction '{name}' has no trained model", hint="run `leadscore train` first"
        )
    meta = dict(model.metadata)
    meta["metrics"] = _summary(meta.get("metrics", {}))
    meta.pop("spec", None)
    return meta


def promote_model(settings: Settings, prediction: str, version: str | None = None) -> dict:
    """Make a version (default: the challenger) the champion.

    Args:
        settings: configuration.
        prediction: prediction name.
        version: version id.

    Returns:
        ``prediction, champion``.
    """
    name = settings.prediction(prediction).name
    try:
        model = promote(settings.store.models_dir, name, version)
    except RegistryError as exc:
        raise _registry_error(exc) from None
    return {"prediction": name, "champion": model.version}


def rollback_model(settings: Settings, prediction: str) -> dict:
    """Make the previous champion the champion again.

    Args:
        settings: configuration.
        prediction: prediction name.

    Returns:
        ``prediction, champion``.
    """
    name = settings.prediction(prediction).name
    try:
        model = rollback(settings.store.models_dir, name)
    except RegistryError as exc:
        raise _registry_error(exc) from None
    return {"prediction": name, "champion": model.version}


def run_report(
    settings: Settings, *, out: Path | None = None, reporter: Reporter = SILENT
) -> JobResult:
    """Write the self-contained HTML report of every prediction's champion.

    Args:
        settings: configuration.
        out: the HTML file (default: ``report.html`` beside the config file).
        reporter: progress.

    Returns:
        ``path`` and the predictions in the report.
    """
    path = (
        Path(out)
        if out
        else ((settings.path.parent if settings.path else Path.cwd()) / "report.html")
    )
    with (
        _open_store(settings, "report", reporter=reporter) as store,
        _recorded(store, "report") as result,
    ):
        inputs = []
        monitoring: dict[str, str] = {}
        for spec in settings.predictions:
            champion = load_champion(settings.store.models_dir, spec.name)
            if champion is None:
                reporter.stage(f"{spec.name}: no model yet; left out of the report")
                continue
            reporter.stage(f"{spec.name}: measuring drift and realized performance")
            as_of = _prediction_as_of(store, settings, spec) or utc_now()
            monitoring[spec.name] = monitoring_report_body(store, settings, spec, as_of)
            reporter.stage(f"{spec.name}: drawing the report of model {champion.version}")
            inputs.append(
                ReportInput(
                    name=spec.name,
                    metadata=champion.metadata,
                    holdout=champion.holdout(),
                    scores=store.latest_scores(spec.name),
                    challenger=(
                        c.metadata
                        if (c := load_challenger(settings.store.models_dir, spec.name))
                        else None
                    ),
                )
            )
        if not inputs:
            raise LeadscoreError(
                "no prediction has a trained model", hint="run `leadscore train` first"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            build_report(
                inputs,
                extra_sections=[
                    lambda report: Section(
                        "Monitoring: drift and realized conversion", monitoring[report.name]
                    )
                ],
            ),
            encoding="utf-8",
        )
        tmp.replace(path)
        result.counts = {"path": str(path), "predictions": [i.name for i in inputs]}
    return result


# -- push ------------------------------------------------------------------------------------------
# ---------


def _audience_members(
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
        scores = store.latest_scores(name)
        if scores.empty:
            out.update({a: (set(), None) for a in mine})
            continue
        try:
            entity = resolve_entity(store.con, spec)
            if not store.table_exists(entity.table):
                raise LeadscoreError(
                    f"audiences of '{name}': the store has no {entity.table} table yet",
                    hint="run `leadscore pull --config FILE` first",
                )
            members = evaluate_audiences(store.con, score_frame(scores, spec.task), entity, mine)
        except (AudienceError, SpecError) as exc:
            raise ConfigError(str(exc), hint="fix the audience's where expression") from None
        at = pd.Timestamp(scores["scored_at"].max()).to_pydatetime()
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
    sf = client or (SalesforceClient(_salesforce(settings)) if writes_salesforce else None)
    with (
        _open_store(settings, "push", should_stop=should_stop, reporter=reporter) as store,
        _recorded(store, "push", sf.counter if sf else None) as result,
    ):
        pushed: dict[str, Any] = {}
        if sf is not None and writes_salesforce:
            sf.connect()
        for spec in settings.predictions:
            if spec.salesforce is None or sf is None:
                continue
            counts = push_salesforce(
                sf, store, spec, reporter, writeback=settings.writeback, should_stop=should_stop
            )
            pushed[spec.name] = counts.to_json()
        failed = sum(p["failed"] for p in pushed.values())
        result.counts = {
            "written": sum(p["written"] for p in pushed.values()),
            "failed": failed,
            "predictions": pushed,
        }
        members = _audience_members(store, settings) if settings.audiences else {}
        campaigns: dict[str, Any] = {}
        for audience in settings.audiences:
            if audience.salesforce is None or sf is None:
                continue
            _check_stop(should_stop, "push", "before the campaigns")
            reporter.stage(f"audience {audience.name}: campaign {audience.salesforce.campaign_id}")
            campaigns[audience.name] = push_campaign(
                sf, store, audience, members[audience.name][0], writeback=settings.writeback
            )
            failed += campaigns[audience.name]["failed"]
        if campaigns:
            result.counts["campaigns"] = campaigns
        if settings.segment is not None and (
            any(p.segment for p in settings.predictions)
            or any(a.segment for a in settings.audiences)
        ):
            segment = _push_segment(settings, store, reporter, members)
            if segment["predictions"]:
                result.counts["segment"] = segment["predictions"]
            if segment["audiences"]:
                result.counts["segment_audiences"] = segment["audiences"]
            failed += sum(p["failed"] for p in segment["predictions"].values())
            failed += sum(p["failed"] for p in segment["audiences"].values())
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
                client, store, spec, reporter, writeback=settings.writeback
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
    sf = client or (SalesforceClient(_salesforce(settings)) if writes_salesforce else None)
    targets: list[dict[str, Any]] = []
    try:
        with _open_store(settings, "plan", reporter=reporter) as store:
            # a run describes each object once, and reads /limits at most once
            calls: dict[str, Any] = {"describe": set(), "limits": 0, "other": 0}
            if sf is not None:
                sf.connect()
            for spec in settings.predictions:
                if spec.salesforce is None or sf is None:
                    continue
                reporter.stage(f"{spec.name}: diffing against the Salesforce ledger")
                plan = plan_salesforce(sf, store, spec, settings.writeback)
                assert plan is not None
                estimate = plan["estimated_calls"]
                calls["describe"].add(plan["object"])
                calls["limits"] |= estimate["limits"]
                calls["other"] += estimate["read_back"] + estimate["writes"]
                targets.append({"target": "salesforce", "prediction": spec.name, **plan})
            members = _audience_members(store, settings) if settings.audiences else {}
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


def run_retry(
    settings: Settings,
    *,
    dead: bool = True,
    gone: bool = False,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
) -> JobResult:
    """Make dead letters due again and push: ``leadscore retry --dead`` (after fixing the cause).

    Args:
        settings: configuration.
        dead: revive dead rows.
        gone: also revive rows of records that were deleted or merged (restored since).
        reporter: progress.
        client: an already connected client.

    Returns:
        The push's result, with ``revived`` (ledger rows made due again) in its counts.
    """
    revived = 0
    if dead or gone:
        with _open_store(settings, "retry", reporter=reporter) as store:
            revived = revive_dead_letters(store, include_gone=gone)
        reporter.stage(f"{revived:,} dead-letter row(s) due again; pushing")
    result = run_push(settings, reporter=reporter, client=client)
    result.counts["revived"] = revived
    return result


# -- run -------------------------------------------------------------------------------------------
# ---------


def run_all(
    settings: Settings, *, reporter: Reporter = SILENT, should_stop: StopCheck | None = None
) -> JobResult:
    """Pull, train the predictions that have no model yet, score, push: the ``sync`` job.

    The run log gets a ``sync`` row around the rows of its parts, and the store's run lock is held
    throughout, so nothing else runs between the pull and the push.

    Args:
        settings: configuration.
        reporter: progress.
        should_stop: checked between pages, batches and steps.

    Returns:
        The combined result; ``counts`` has one entry per job and the headline numbers.

    Raises:
        Interrupted: a stop was requested (the run is recorded as partial).
    """
    client = SalesforceClient(_salesforce(settings))
    jobs: dict[str, JobResult] = {}
    try:
        with (
            _open_store(settings, "sync", should_stop=should_stop, reporter=reporter) as store,
            _recorded(store, "sync", client.counter) as result,
        ):
            jobs["pull"] = run_pull(
                settings, reporter=reporter, client=client, should_stop=should_stop
            )
            missing = [
                p.name
                for p in settings.predictions
                if load_champion(settings.store.models_dir, p.name) is None
            ]
            for name in missing:
                _check_stop(should_stop, "sync", "before training")
                jobs[f"train:{name}"] = run_train(settings, prediction=name, reporter=reporter)
            _check_stop(should_stop, "sync", "before scoring")
            jobs["score"] = run_score(settings, reporter=reporter)
            _check_stop(should_stop, "sync", "before pushing")
            jobs["push"] = run_push(
                settings, reporter=reporter, client=client, should_stop=should_stop
            )
            _summarise_sync(result, jobs)
    finally:
        client.close()
    return result


def _summarise_sync(result: JobResult, jobs: dict[str, JobResult]) -> None:
    """Fill a sync result from the results of its parts."""
    result.status = "partial" if any(j.status != "ok" for j in jobs.values()) else "ok"
    result.counts = {
        "pulled": jobs["pull"].counts["pulled"],
        "scored": jobs["score"].counts["scored"],
        "written": jobs["push"].counts["written"],
        "failed": jobs["push"].counts["failed"],
        "trained": [name.split(":", 1)[1] for name in jobs if name.startswith("train:")],
        "jobs": {name: job.to_json() for name, job in jobs.items()},
    }
    if "segment" in jobs["push"].counts:
        result.counts["segment_written"] = sum(
            p["written"] for p in jobs["push"].counts["segment"].values()
        )
    for name, job in jobs.items():
        if name.startswith("train:"):
            result.artifacts.setdefault("holdout", {}).update(job.artifacts.get("holdout", {}))
            result.counts.setdefault("models", {}).update(job.counts["predictions"])


# -- setup and doctor ------------------------------------------------------------------------


def _tier_values(prediction: PredictionConfig) -> list[str]:
    """Tier names, best first, then the lowest tier: the values of a tier picklist."""
    best_first = sorted(prediction.tiers, key=lambda tier: -prediction.tiers[tier])
    return [*best_first, prediction.lowest_tier]


def _output_fields_of(settings: Settings) -> list[tuple[PredictionConfig, str, str, str]]:
    """(prediction, object, output kind, field) for every configured Salesforce output."""
    out = []
    for prediction in settings.predictions:
        if prediction.salesforce is not None:
            for kind, name in prediction.salesforce.fields.items():
                out.append((prediction, prediction.salesforce.object, kind, name))
    return out


def _field_problem(
    prediction: PredictionConfig, kind: str, found: FieldDescription
) -> tuple[str, str] | None:
    """What is wrong with an existing output field, and how to fix it (None: nothing)."""
    spec = OUTPUT_FIELD_TYPES.get(kind)
    if spec is not None and found.type not in spec.describe_types:
        wanted = " or ".join(spec.describe_types)
        return (
            f"is a {found.type} field; {kind} needs {wanted}",
            f"map {kind} to another field in [predictions.salesforce] fields, or change its type",
        )
    if not found.updateable:
        return (
            "the integration user cannot edit it",
            "grant Edit in the field's field-level security to the integration user's profile "
            "or permission set",
        )
    if spec is not None and spec.picklist and found.restricted_picklist:
        missing = [v for v in _tier_values(prediction) if v not in found.picklist_values]
        if missing:
            return (
                f"the restricted picklist lacks the values {', '.join(missing)}",
                "add them to the field's values in Setup, or unrestrict the picklist",
            )
    return None


def run_setup(
    settings: Settings, *, dry_run: bool = False, reporter: Reporter = SILENT
) -> JobResult:
    """Create the Salesforce custom fields the predictions write to, through the Tooling API.

    Fields that exist are checked and left alone; missing ones are created with the type their
    output kind needs (``connector.salesforce.OUTPUT_FIELD_TYPES``); describe is read again
    afterwards, because a real org also needs field-level security granted before the
    integration user can see a new field.

    Args:
        settings: configuration.
        dry_run: only report what would be created.
        reporter: progress.

    Returns:
        ``fields``: one row per output field (object, field, kind, action, detail, fix), with
        action ``exists``, ``created``, ``would create`` or ``problem``; status ``partial`` when
        any field has a problem.
    """
    sf = SalesforceClient(settings.salesforce)
    try:
        with (
            _open_store(settings, "setup", reporter=reporter) as store,
            _recorded(store, "setup", sf.counter) as result,
        ):
            sf.connect()
            rows: list[dict[str, Any]] = []
            created: list[dict[str, Any]] = []
            for prediction, sobject, kind, name in _output_fields_of(settings):
                description = describe_object(sf, sobject)
                row: dict[str, Any] = {
                    "object": description.name,
                    "field": name,
                    "kind": kind,
                    "action": "exists",
                    "detail": "",
                    "fix": "",
                }
                rows.append(row)
                found = description.field(name)
                if found is not None:
                    row["field"] = found.name
                    problem = _field_problem(prediction, kind, found)
                    row["detail"] = found.type
                    if problem is not None:
                        row["action"] = "problem"
                        row["detail"], row["fix"] = problem
                    continue
                spec = OUTPUT_FIELD_TYPES.get(kind)
                if spec is None:
                    row.update(action="problem", detail=f"no field type is known for {kind}")
                    continue
                metadata = field_metadata(kind, name, picklist=_tier_values(prediction))
                row["detail"] = _describe_metadata(metadata)
                if dry_run:
                    row["action"] = "would create"
                    continue
                reporter.stage(f"creating {description.name}.{name} ({row['detail']})")
                create_custom_field(sf, description.name, name, metadata)
                row["action"] = "created"
                created.append(row)
            if created:
                # Real orgs: a new field is invisible until field-level security grants it.
                sf.forget_describes()
                for row in created:
                    found = describe_object(sf, row["object"]).field(row["field"])
                    if found is None:
                        row.update(
                            action="problem",
                            detail="created, but the integration user cannot see it",
                            fix="grant field-level security on it to the integration user's "
                            "profile or permission set, then run setup again",
                        )
                    elif not found.updateable:
                        row.update(
                            action="problem",
                            detail="created, but the integration user cannot edit it",
                            fix="grant Edit in its field-level security",
                        )
            problems = sum(1 for row in rows if row["action"] == "problem")
            result.counts = {
                "fields": rows,
                "created": sum(1 for row in rows if row["action"] == "created"),
                "would_create": sum(1 for row in rows if row["action"] == "would create"),
                "problems": problems,
                "dry_run": dry_run,
            }
            if problems:
                result.status = "partial"
    finally:
        sf.close()
    return result


def _describe_metadata(metadata: dict[str, Any]) -> str:
    """A short type description: ``Number(3,0)``, ``Text(255)``, ``Picklist(A,B,C,D)``."""
    kind = metadata["type"]
    if kind == "Number":
        return f"Number({metadata['precision']},{metadata['scale']})"
    if kind == "Text":
        return f"Text({metadata['length']})"
    if kind == "Picklist":
        values = [v["fullName"] for v in metadata["valueSet"]["valueSetDefinition"]["value"]]
        return f"Picklist({','.join(values)})"
    return str(kind)


@dataclass
class Check:
    """One line of ``leadscore doctor``.

    Attributes:
        check: what was checked.
        ok: whether it passed.
        detail: what was found.
        fix: how to fix it (empty when ok).
    """

    check: str
    ok: bool
    detail: str
    fix: str = ""


def run_doctor(
    settings: Settings, *, campaigns: Sequence[str] = (), reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Check the Salesforce setup: login, allowance, streams, output fields and campaigns.

    Nothing is written (to Salesforce or the store).

    Args:
        settings: configuration.
        campaigns: Campaign ids to check (default: the Campaigns the audiences mirror).
        reporter: progress.

    Returns:
        ``ok`` (no problem found), ``checks`` (``check, ok, detail, fix`` each) and
        ``api_calls``.
    """
    s = _salesforce(settings)
    campaigns = list(campaigns) or [
        a.salesforce.campaign_id for a in settings.audiences if a.salesforce is not None
    ]
    checks: list[Check] = []
    sf = SalesforceClient(s)
    try:
        reporter.stage(f"logging in to {s.login_url} ({s.auth})")
        try:
            sf.connect()
        except LeadscoreError as exc:
            checks.append(Check("login", False, exc.message, exc.hint or ""))
            return _doctor_result(checks, sf)
        checks.append(Check("login", True, f"{s.auth} login to {sf.instance_url}"))
        checks.append(_check_allowance(sf))
        for sobject, stream in s.streams.items():
            checks.extend(_check_stream(sf, sobject, stream))
        for prediction, sobject, kind, name in _output_fields_of(settings):
            checks.append(_check_output(sf, prediction, sobject, kind, name))
        checks.extend(_check_campaigns(sf, campaigns))
        return _doctor_result(checks, sf)
    finally:
        sf.close()


def _doctor_result(checks: list[Check], sf: SalesforceClient) -> dict[str, Any]:
    return {
        "ok": all(c.ok for c in checks),
        "problems": sum(1 for c in checks if not c.ok),
        "checks": [c.__dict__ for c in checks],
        "api_calls": sf.counter.api_calls,
    }


def _check_allowance(sf: SalesforceClient) -> Check:
    try:
        limits = read_limits(sf)
    except LeadscoreError as exc:
        return Check("API allowance", False, exc.message, exc.hint or "")
    daily = limits.get("DailyApiRequests") or {}
    total, left = int(daily.get("Max") or 0), int(daily.get("Remaining") or 0)
    share = sf.settings.max_share_of_daily_limit
    detail = f"{left:,} of {total:,} daily API calls left"
    jobs = limits.get("DailyBulkV2QueryJobs")
    if jobs:
        detail += f"; {int(jobs.get('Remaining') or 0):,} bulk query jobs"
    if share is not None and total and total - left >= share * total:
        return Check(
            "API allowance",
            False,
            detail + f"; runs stop at {share:.0%} used (salesforce.max_share_of_daily_limit)",
            "wait for the 24-hour window, or raise salesforce.max_share_of_daily_limit",
        )
    if jobs and int(jobs.get("Remaining") or 0) == 0:
        return Check(
            "API allowance", False, detail, "bulk pulls wait for the 24-hour window to pass"
        )
    return Check("API allowance", True, detail)


def _check_stream(sf: SalesforceClient, sobject: str, stream: StreamSettings) -> list[Check]:
    setting = f"salesforce.streams.{sobject}"
    try:
        description = describe_object(sf, sobject)
    except LeadscoreError as exc:
        return [Check(f"stream {sobject}", False, exc.message, exc.hint or "")]
    problems = []
    for name in stream.fields:
        if description.field(name) is None:
            problems.append(
                Check(
                    f"{description.name}.{name}",
                    False,
                    f"does not exist or is not visible ({setting}.fields)",
                    suggest_field(description, name)
                    + " Otherwise grant read access in field-level security.",
                )
            )
    cursor = description.field(stream.cursor_field)
    if cursor is None or cursor.type != "datetime":
        problems.append(
            Check(
                f"{description.name}.{stream.cursor_field}",
                False,
                f"is not a datetime field ({setting}.cursor_field)",
                "use SystemModstamp",
            )
        )
    if problems:
        return problems
    return [Check(f"stream {description.name}", True, f"{len(stream.fields)} fields readable")]


def _check_output(
    sf: SalesforceClient, prediction: PredictionConfig, sobject: str, kind: str, name: str
) -> Check:
    label = f"{sobject}.{name}"
    try:
        description = describe_object(sf, sobject)
    except LeadscoreError as exc:
        return Check(label, False, exc.message, exc.hint or "")
    found = description.field(name)
    if found is None:
        return Check(
            label,
            False,
            f"the {kind} field does not exist or is not visible to the integration user",
            "run `leadscore setup --config FILE`, or grant field-level security on it",
        )
    problem = _field_problem(prediction, kind, found)
    if problem is not None:
        return Check(label, False, *problem)
    return Check(label, True, f"{kind}: {found.type}, editable")


def _check_campaigns(sf: SalesforceClient, campaigns: Sequence[str]) -> list[Check]:
    try:
        member = describe_object(sf, "CampaignMember")
    except LeadscoreError as exc:
        return [Check("campaign members", False, exc.message, exc.hint or "")]
    locked = [
        f
        for f in ("CampaignId", "LeadId", "ContactId")
        if member.field(f) is None or not member.field(f).createable  # type: ignore[union-attr]
    ]
    checks = [
        Check(
            "campaign members",
            not locked,
            "the integration user can add and remove campaign members"
            if not locked
            else f"cannot set CampaignMember {', '.join(locked)}",
            ""
            if not locked
            else "grant Create and Delete on Campaign Members and Edit on "
            "Campaigns (Marketing User) to the integration user",
        )
    ]
    if not campaigns:
        return checks
    try:
        found = read_campaigns(sf, campaigns)
    except LeadscoreError as exc:
        return [*checks, Check("campaigns", False, exc.message, exc.hint or "")]
    for campaign in campaigns:
        record = found.get(campaign)
        if record is None:
            checks.append(
                Check(
                    f"campaign {campaign}",
                    False,
                    "does not exist or is not visible",
                    "check the campaign id",
                )
            )
        elif not record["IsActive"]:
            checks.append(
                Check(
                    f"campaign {campaign}",
                    False,
                    f"'{record['Name']}' is not active",
                    "activate the campaign in Salesforce",
                )
            )
        else:
            checks.append(Check(f"campaign {campaign}", True, f"'{record['Name']}', active"))
    return checks


# -- status
# -------------------------------------------------------------------------------------------------


def _open_for_reading(path: Path, wait_seconds: float = 5.0) -> Store | None:
    """Open the store read-only, waiting briefly while a run in another process has it open.

    DuckDB lets one process write a file, or several read it, not both.

    Returns:
        The store, or None when it stayed busy.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return Store(path, read_only=True)
        except ConfigError as exc:
            if "in use" not in str(exc) or time.monotonic() >= deadline:
                if "in use" in str(exc):
                    return None
                raise
            time.sleep(0.2)


def _model_age(champion: Any, now: datetime) -> dict[str, Any]:
    """Version, headline holdout metric (AUC for binary) and age of a champion model."""
    trained = champion.metadata.get("trained_at")
    if trained is None:
        try:  # version ids start with the UTC training time: 20250601T120000Z-ab12
            trained = datetime.strptime(champion.version[:16], "%Y%m%dT%H%M%SZ").isoformat()
        except ValueError:
            trained = datetime.fromtimestamp(champion.path.stat().st_mtime, UTC).isoformat()
    trained_at = datetime.fromisoformat(str(trained)).replace(tzinfo=None)
    metrics = champion.metadata.get("metrics", {})
    metric, _ = headline(champion.metadata.get("task", "binary"))
    return {
        "version": champion.version,
        "auc": metrics.get("auc"),
        "metric": metric,
        "value": metrics.get(metric),
        "trained_at": trained_at,
        "age_days": round((now - trained_at).total_seconds() / 86400, 2),
    }


def next_run_times(settings: Settings, now: datetime) -> dict[str, datetime]:
    """When each scheduled job runs next by the configured schedule.

    An interval schedule counts from when ``serve`` starts, so its next time is ``now`` plus the
    interval here.

    Args:
        settings: configuration.
        now: naive UTC.

    Returns:
        Job -> next time (naive UTC).
    """
    aware = now.replace(tzinfo=UTC)
    out = {}
    for job in settings.schedule.jobs():
        trigger = settings.schedule.trigger(job)
        nxt = trigger.get_next_fire_time(None, aware)
        if nxt is not None:
            out[job] = nxt.astimezone(UTC).replace(tzinfo=None)
    return out


def read_status(
    settings: Settings, *, limit: int = 10, now: datetime | None = None
) -> dict[str, Any]:
    """Everything ``leadscore status`` shows: per job, the store's health, the models.

    Args:
        settings: configuration.
        limit: how many recent runs to list.
        now: reference time (naive UTC; default now).

    Returns:
        ``store``, ``busy`` (the holder of the run lock, when a run is going on), ``runs`` (newest
        first), ``jobs`` (per job: schedule, last run, next run, failures), ``dead_letters``,
        ``api_usage``, ``alerts`` (active conditions), ``models`` (champion, AUC, age).
    """
    now = now or utc_now()
    holder = RunLock(lock_path(settings.store.path), "status").holder()
    runs: list[dict[str, Any]] = []
    histories: dict[str, Any] = {}
    dead, usage, alerts = None, None, []
    dead_rows: list[dict[str, Any]] = []
    readable = False
    if settings.store.path.exists():
        store = _open_for_reading(settings.store.path)
        if store is not None:
            readable = True
            with store:
                runs = store.recent_runs(limit)
                histories = job_histories(store, now)
                dead = dead_letters(store)
                dead_rows = dead_letter_rows(store)
                usage = last_api_usage(store)
                alerts = [
                    {"key": k, "since": v["since"], "message": v["message"]}
                    for k, v in sorted(read_alert_states(store).items())
                    if v["active"]
                ]
    upcoming = next_run_times(settings, now)
    schedules = settings.schedule.jobs()
    # Overdue by the run log alone (serve may not be running at all): due at the first scheduled
    # time after the job was last active, and not started within the misfire grace since.
    active = {
        name: max(t for t in (h.last_run["started_at"], h.last_run["finished_at"]) if t)
        for name, h in histories.items()
        if h.last_run is not None and h.last_run["status"] != "skipped"
    }
    overdue = {
        name: when.replace(tzinfo=None)
        for name, when in overdue_jobs(
            settings.schedule,
            {k: v.replace(tzinfo=UTC) for k, v in active.items() if k in schedules},
            since=datetime(1970, 1, 1, tzinfo=UTC),
            running=set() if holder is None else {holder.job},
            now=now.replace(tzinfo=UTC),
        ).items()
        if name in active
    }
    jobs_out: dict[str, Any] = {}
    for job in [*JOB_NAMES, *sorted(set(histories) - set(JOB_NAMES))]:
        history = histories.get(job)
        if history is None and job not in schedules:
            continue
        last = history.last_run if history else None
        jobs_out[job] = {
            "schedule": schedules[job].describe() if job in schedules else None,
            "last_run": (
                {k: last[k] for k in ("run_id", "started_at", "finished_at", "status", "error")}
                if last
                else None
            ),
            "next_run": upcoming.get(job),
            "overdue_since": overdue.get(job),
            "last_ok_at": history.last_ok_at if history else None,
            "consecutive_failures": history.consecutive_failures if history else 0,
            "failures_24h": history.failures_24h if history else 0,
        }
    models: dict[str, Any] = {}
    for spec in settings.predictions:
        champion = load_champion(settings.store.models_dir, spec.name)
        models[spec.name] = _model_age(champion, now) if champion else None
    return {
        "store": str(settings.store.path),
        "readable": readable or not settings.store.path.exists(),
        "busy": holder.describe() if holder else None,
        "runs": runs,
        "jobs": jobs_out,
        "dead_letters": dead,
        "dead_letter_rows": dead_rows,
        "api_usage": usage,
        "alerts": alerts,
        "models": models,
    }


# -- monitor ---------------------------------------------------------------------------------------


def run_monitor(
    settings: Settings, *, reporter: Reporter = SILENT, max_runs: int = 60
) -> JobResult:
    """Measure drift of each prediction and record the realized performance of past scores.

    Args:
        settings: configuration (``[monitor]`` thresholds).
        reporter: progress.
        max_runs: most scoring runs whose realized performance is computed in one go (the backlog
            is worked off over later runs).

    Returns:
        Per prediction: ``drift`` (level ``ok|warn|alert|unavailable``, score and feature PSIs) and
        ``realized`` (latest conversion by band and AUC).
    """
    with (
        _open_store(settings, "monitor", reporter=reporter) as store,
        _recorded(store, "monitor") as result,
    ):
        as_of = _as_of(store, settings)
        out = {}
        for spec in settings.predictions:
            reporter.stage(f"{spec.name}: drift and realized performance")
            out[spec.name] = monitor_prediction(store, settings, spec, as_of, max_runs)
        result.counts = {"predictions": out}
    return result


# -- one entry point for the CLI and the scheduler -------------------------------------------------


def monitoring_html(settings: Settings, result: JobResult) -> str:
    """A standalone HTML page of a monitor run (``leadscore monitor --html``).

    Args:
        settings: configuration.
        result: the monitor job's result.

    Returns:
        The page.
    """
    with _open_store(settings, "monitor report") as store:
        return monitoring_page(store, settings, result.counts)


def run_job(
    settings: Settings,
    job: str,
    *,
    reporter: Reporter = SILENT,
    should_stop: StopCheck | None = None,
    prediction: str | None = None,
    sweep: bool = False,
) -> JobResult:
    """Run a job by name and raise or clear the alerts its outcome settles.

    Args:
        settings: configuration.
        job: ``pull``, ``score``, ``push``, ``sync``, ``train`` or ``monitor``.
        reporter: progress.
        should_stop: cooperative stop (pull, push and sync check it between pages and batches).
        prediction: ``train`` only this prediction.
        sweep: ``pull`` also sweeps deletions purged from the recycle bin (see :func:`run_pull`).

    Returns:
        The job's result.

    Raises:
        ConfigError: no such job.
        Busy: another run held the store lock for longer than ``schedule.lock_wait_seconds``.
        LeadscoreError: the job failed (recorded in the run log, alerts evaluated).
    """
    runners: dict[str, Callable[[], JobResult]] = {
        "pull": lambda: run_pull(settings, reporter=reporter, should_stop=should_stop, sweep=sweep),
        "score": lambda: run_score(settings, reporter=reporter),
        "push": lambda: run_push(settings, reporter=reporter, should_stop=should_stop),
        "sync": lambda: run_all(settings, reporter=reporter, should_stop=should_stop),
        "train": lambda: run_train(settings, prediction=prediction, reporter=reporter),
        "monitor": lambda: run_monitor(settings, reporter=reporter),
    }
    if job not in runners:
        close = difflib.get_close_matches(job, JOB_NAMES, n=1)
        raise ConfigError(
            f"no job named '{job}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
            hint=f"jobs are {', '.join(JOB_NAMES)}",
        )
    try:
        result = runners[job]()
    except (Busy, Interrupted):
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, LeadscoreError) else f"{type(exc).__name__}: {exc}"
        settle_alerts(settings, job, "failed", {}, message)
        raise
    conditions = monitor_conditions(result.counts, settings) if job == "monitor" else []
    settle_alerts(settings, job, result.status, result.counts, None, extra=conditions)
    return result


def read_job_histories(settings: Settings) -> dict[str, JobHistory]:
    """The run log summarised per job (``serve`` seeds its state with it).

    Args:
        settings: configuration.

    Returns:
        Job -> history.

    Raises:
        ConfigError: the store directory is not writable.
        Busy: another process held the store for longer than ``schedule.lock_wait_seconds``.
    """
    with _open_store(settings, "serve") as store:
        return job_histories(store)


def record_skipped(
    settings: Settings,
    skips: list[tuple[str, datetime, str]],
    *,
    wait_seconds: float | None = None,
) -> None:
    """Record runs that never started (missed, overlapping, store busy) in the run log.

    Args:
        settings: configuration.
        skips: (job, when it was due, why).
        wait_seconds: how long to wait for the store (default ``schedule.lock_wait_seconds``).

    Raises:
        Busy: the store stayed busy.
    """
    with _open_store(settings, "record skipped runs", wait_seconds=wait_seconds) as store:
        now = utc_now()
        for job, when, reason in skips:
            due = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
            record_run(store, job, started_at=due, finished_at=now, status="skipped", error=reason)


def settle_service_alerts(settings: Settings, conditions: list[Condition]) -> None:
    """Evaluate conditions found by ``serve`` itself (missed schedules), without waiting.

    The watchdog must work while a job runs: when the run lock is held by this very process (its
    worker thread), the store is opened alongside the worker's connection; when another process
    holds it, the pass is skipped and the next one catches up.

    Args:
        settings: configuration.
        conditions: the conditions.
    """
    lock = RunLock(lock_path(settings.store.path), "alerts", wait_seconds=0)
    try:
        lock.acquire()
    except Busy:
        holder = lock.holder()
        if holder is None or holder.pid != os.getpid():
            return
        with Store(settings.store.path) as store:
            evaluate(store, settings, conditions)
        return
    try:
        with Store(settings.store.path) as store:
            evaluate(store, settings, conditions)
    finally:
        lock.release()


def settle_alerts(
    settings: Settings,
    job: str,
    status: str,
    counts: dict[str, Any],
    error: str | None,
    *,
    extra: list[Condition] | None = None,
) -> None:
    """Evaluate the alert conditions a run settles; never raises (alerts must not fail a job).

    Args:
        settings: configuration.
        job: job name.
        status: run status.
        counts: run counts.
        error: error line of a failed run.
        extra: more conditions (drift from ``monitor``, missed schedules from ``serve``).
    """
    conditions = [*job_conditions(job, status, counts, error, settings), *(extra or [])]
    if not conditions:
        return
    try:
        with _open_store(settings, f"alerts after {job}") as store:
            evaluate(store, settings, conditions)
    except Exception as exc:  # an alert problem is logged, never raised into the job's outcome
        log.warning("alerts after %s were not evaluated: %s", job, exc)


# -- sandbox and demo
# -----------------------------------------------------------------------------------------


def _generation_progress(reporter: Reporter):  # noqa: ANN202 - a closure over the reporter
    """Adapt the generator's (stage, done, total) callback to the reporter: a line per stage."""
    seen: set[str] = set()

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            reporter.stage(f"sandbox: {stage}")

    return on_progress


def run_sandbox(
    workdir: Path,
    *,
    port: int = 0,
    leads: int = 20_000,
    seed: int = 42,
    reporter: Reporter = SILENT,
    ready: Any = None,
    org: str = "classic",
) -> None:
    """Serve a generated org until interrupted, with config files for any client in ``workdir``.

    An existing sandbox in ``workdir`` (same data file) is served again rather than regenerated.

    Args:
        workdir: where the org's data, TLS material and the config files live.
        port: TCP port on 127.0.0.1 (0: any free port).
        leads: leads to generate when the org is new.
        seed: generator seed.
        reporter: progress.
        ready: called with the sandbox info once it is serving (used by tests).
        org: the generator's hidden model (``classic``, ``interacting``, ``drifting``).
    """
    from connector.sandbox import Sandbox

    prepare_workdir(workdir, fresh=False)
    sandbox = Sandbox(
        workdir / "sandbox",
        leads=leads,
        seed=seed,
        org=org,
        port=port,
        regenerate=False,
        on_progress=_generation_progress(reporter),
        segment=True,
    )
    sandbox.start()
    try:
        sandbox.export_segment()
        write_sandbox_files(
            workdir,
            sandbox.info,
            command="sandbox",
            campaign_id=ensure_audience_campaign(sandbox),
        )
        if ready is not None:
            ready(sandbox.info)
        sandbox.serve_forever()
    finally:
        sandbox.stop()


def run_demo(
    workdir: Path, *, leads: int = 20_000, seed: int = 42, reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Generate an org, serve it in-process and run pull, train, score and push against it.

    Args:
        workdir: working directory (cleared of a previous demo's files).
        leads: leads in the generated org.
        seed: generator seed.
        reporter: progress.

    Returns:
        Headline figures: ``leads, pulled, scored, written, api_calls, model_auc, oracle_auc,
            auc_ratio,
        seconds``, plus where the files are.
    """
    from connector.sandbox import Sandbox

    started = time.perf_counter()
    prepare_workdir(workdir, fresh=True)
    reporter.stage(f"generating a synthetic org with {leads:,} leads (seed {seed})")
    sandbox = Sandbox(
        workdir / "sandbox",
        leads=leads,
        seed=seed,
        on_progress=_generation_progress(reporter),
        segment=True,
    )
    sandbox.start()
    try:
        # The CDP history as a warehouse export, imported by the pull (docs/sandbox.md).
        sandbox.export_segment()
        config = write_sandbox_files(
            workdir, sandbox.info, command="demo", campaign_id=ensure_audience_campaign(sandbox)
        )
        reporter.stage(f"sandbox serving at {sandbox.url}")
        settings = load_settings(config)
        result = run_all(settings, reporter=reporter)
        holdout = result.artifacts["holdout"]["lead_conversion"]
        truth = sandbox.ground_truth()
        # the org's leads as Salesforce lists them: the generator soft-deletes a few
        org_leads = int(sandbox.sql("SELECT count(*) FROM Lead WHERE NOT IsDeleted")[0][0])
    finally:
        sandbox.stop()
    merged = holdout.merge(
        truth[["lead_id", "p_true"]], left_on="entity_id", right_on="lead_id", how="inner"
    )
    model = result.counts["models"]["lead_conversion"]
    model_auc = model["metrics"]["auc"]
    oracle_auc = float(roc_auc_score(merged["label"], merged["p_true"]))
    return {
        "leads": org_leads,
        "pulled": result.counts["pulled"],
        "scored": result.counts["scored"],
        "written": result.counts["written"],
        "segment_written": result.counts.get("segment_written", 0),
        "failed": result.counts["failed"],
        "api_calls": result.api_calls,
        "model_auc": round(model_auc, 4),
        "oracle_auc": round(oracle_auc, 4),
        "auc_ratio": round(model_auc / oracle_auc, 4),
        "holdout": len(holdout),
        "model_version": model["version"],
        "seconds": round(time.perf_counter() - started, 2),
        "workdir": str(workdir),
        "config": str(config),
    }
