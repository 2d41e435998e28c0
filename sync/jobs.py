"""The jobs, one function each: the whole run reads from here.

``run_pull`` -> ``run_train`` -> ``run_score`` -> ``run_push``; ``run_all`` chains them. The CLI and
the scheduler only call these functions.

Every job records itself in the run log (start, end, status, counts, API calls, error). Expected
failures are :class:`~connector.errors.LeadscoreError` one-liners; they are logged in the run log
and re-raised for the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import roc_auc_score

from connector.errors import ConfigError, LeadscoreError
from connector.files import import_table
from connector.http import CallCounter
from connector.salesforce import (
    SalesforceClient,
    SalesforceSettings,
    db_type,
    describe_object,
    read_records,
    resolve_fields,
    since_with_overlap,
)
from connector.store import Store, quote_identifier, raw_table_name, utc_now
from scoring.metrics import headline
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
from scoring.report import ReportInput, build_report
from sync.config import PredictionConfig, Settings, load_settings
from sync.demo import prepare_workdir, write_sandbox_files
from sync.progress import Reporter, SilentReporter
from sync.push import push_salesforce

SILENT = SilentReporter()


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
    try:
        yield result
    except BaseException as exc:
        result.status = "failed"
        message = (
            str(exc)
            if isinstance(exc, LeadscoreError | ScoringError)
            else f"{type(exc).__name__}: {exc}"
        )
        if isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        result.api_calls = (counter.api_calls - calls_before) if counter else 0
        store.finish_run(
            result.run_id,
            status="failed",
            counts=result.counts,
            api_calls=result.api_calls,
            error=message,
        )
        raise
    result.seconds = time.perf_counter() - started
    result.api_calls = (counter.api_calls - calls_before) if counter else 0
    store.finish_run(
        result.run_id, status=result.status, counts=result.counts, api_calls=result.api_calls
    )


def _open_store(settings: Settings) -> Store:
    return Store(settings.store.path)


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


def run_pull(
    settings: Settings,
    *,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
) -> JobResult:
    """Pull every configured Salesforce stream incrementally into the store.

    Each stream is read by ``SystemModstamp`` (or its configured cursor field) from the committed
    cursor minus the overlap window; every page is upserted together with its cursor in one
    transaction.

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client (``run_all`` shares one).

    Returns:
        Counts per stream: fetched, new, changed, unchanged.
    """
    salesforce = _salesforce(settings)
    sf = client or SalesforceClient(salesforce)
    with _open_store(settings) as store, _recorded(store, "pull", sf.counter) as result:
        sf.connect()
        totals = {"fetched": 0, "new": 0, "changed": 0, "unchanged": 0}
        streams: dict[str, dict[str, int]] = {}
        for sobject, stream in salesforce.streams.items():
            setting = f"salesforce.streams.{sobject}"
            description = describe_object(sf, sobject)
            fields = resolve_fields(
                description,
                ["Id", stream.cursor_field, *stream.fields],
                setting=f"{setting}.fields",
            )
            cursor = description.field(stream.cursor_field)
            if cursor is None or cursor.type != "datetime":
                raise ConfigError(
                    f"{setting}.cursor_field: '{stream.cursor_field}' is not a datetime field "
                    f"of {description.name}",
                    hint="use SystemModstamp",
                )
            table = raw_table_name("salesforce", description.name)
            columns = {
                name: (
                    description.fields[name.lower()].type,
                    db_type(description.fields[name.lower()].type),
                )
                for name in fields
            }
            added = store.ensure_table(description.name, table, columns, key="Id")
            if added:
                # New columns are empty for rows already stored: read the stream again in full to
                # fill them.
                reporter.stage(
                    f"{description.name}: new fields {', '.join(added)}; re-reading it in full"
                )
                store.reset_cursor(description.name)
            since = since_with_overlap(
                store.read_cursor(description.name), salesforce.overlap_seconds
            )
            query_started = utc_now()
            counts = {"fetched": 0, "new": 0, "changed": 0, "unchanged": 0}
            with reporter.track(f"pull {description.name}") as task:
                for page in read_records(
                    sf,
                    description.name,
                    fields,
                    cursor_field=cursor.name,
                    since=since,
                    on_total=task.set_total,
                ):
                    frame = pd.DataFrame.from_records(page, columns=fields)
                    page_counts = store.upsert_page(
                        description.name, table, frame, key="Id", cursor_field=cursor.name
                    )
                    counts["fetched"] += len(page)
                    counts["new"] += page_counts.inserted
                    counts["changed"] += page_counts.updated
                    counts["unchanged"] += page_counts.unchanged
                    task.advance(len(page))
            store.mark_synced(description.name, query_started)
            streams[description.name] = counts
            for key in totals:
                totals[key] += counts[key]
        result.counts = {**totals, "pulled": totals["new"] + totals["changed"], "streams": streams}
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
        as_of = source.as_of or datetime.fromtimestamp(source.path.stat().st_mtime, UTC)
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(UTC).replace(tzinfo=None)
        stream = _source_stream(source.table)
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
    with _open_store(settings) as store, _recorded(store, "import") as result:
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
    with _open_store(settings) as store, _recorded(store, "train") as result:
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
                )
                current = load_champion(settings.store.models_dir, spec.name)
                gate = (
                    compare_with_champion(
                        store.con, spec, outcome, current.load(), current.metadata
                    )
                    if current is not None
                    else {"promote": True, "reason": "no champion yet"}
                )
            except ScoringError as exc:
                raise _scoring_error(exc) from None
            metadata = {**outcome.metadata, "gate": gate}
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
                "seconds": outcome.metadata["seconds"],
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
    with _open_store(settings) as store, _recorded(store, "score") as result:
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
    with _open_store(settings) as store, _recorded(store, "report") as result:
        inputs = []
        for spec in settings.predictions:
            champion = load_champion(settings.store.models_dir, spec.name)
            if champion is None:
                reporter.stage(f"{spec.name}: no model yet; left out of the report")
                continue
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
        tmp.write_text(build_report(inputs), encoding="utf-8")
        tmp.replace(path)
        result.counts = {"path": str(path), "predictions": [i.name for i in inputs]}
    return result


# -- push ------------------------------------------------------------------------------------------
# ---------


def run_push(
    settings: Settings, *, reporter: Reporter = SILENT, client: SalesforceClient | None = None
) -> JobResult:
    """Write each prediction's latest scores to its configured Salesforce fields (changes only).

    Args:
        settings: configuration.
        reporter: progress.
        client: an already connected client.

    Returns:
        Per prediction: records considered, unchanged, sent, written, failed (with error codes).
    """
    sf = client or SalesforceClient(_salesforce(settings))
    with _open_store(settings) as store, _recorded(store, "push", sf.counter) as result:
        sf.connect()
        pushed: dict[str, Any] = {}
        for spec in settings.predictions:
            counts = push_salesforce(sf, store, spec, reporter)
            pushed[spec.name] = {
                "records": counts.records,
                "unchanged": counts.unchanged,
                "sent": counts.sent,
                "written": counts.written,
                "failed": counts.failed,
                "errors": dict(counts.errors),
            }
        failed = sum(p["failed"] for p in pushed.values())
        result.counts = {
            "written": sum(p["written"] for p in pushed.values()),
            "failed": failed,
            "predictions": pushed,
        }
        if failed:
            result.status = "partial"
    return result


# -- run -------------------------------------------------------------------------------------------
# ---------


def run_all(settings: Settings, *, reporter: Reporter = SILENT) -> JobResult:
    """Pull, train the predictions that have no model yet, score, push.

    Args:
        settings: configuration.
        reporter: progress.

    Returns:
        The combined result; ``counts`` has one entry per job and the headline numbers.
    """
    started = time.perf_counter()
    client = SalesforceClient(_salesforce(settings))
    jobs: dict[str, JobResult] = {}
    try:
        jobs["pull"] = run_pull(settings, reporter=reporter, client=client)
        missing = [
            p.name
            for p in settings.predictions
            if load_champion(settings.store.models_dir, p.name) is None
        ]
        for name in missing:
            jobs[f"train:{name}"] = run_train(settings, prediction=name, reporter=reporter)
        jobs["score"] = run_score(settings, reporter=reporter)
        jobs["push"] = run_push(settings, reporter=reporter, client=client)
    finally:
        client.close()
    result = JobResult("run", seconds=time.perf_counter() - started)
    result.status = "partial" if any(j.status != "ok" for j in jobs.values()) else "ok"
    result.api_calls = client.counter.api_calls
    result.counts = {
        "pulled": jobs["pull"].counts["pulled"],
        "scored": jobs["score"].counts["scored"],
        "written": jobs["push"].counts["written"],
        "failed": jobs["push"].counts["failed"],
        "trained": [name.split(":", 1)[1] for name in jobs if name.startswith("train:")],
        "jobs": {name: job.to_json() for name, job in jobs.items()},
    }
    for name, job in jobs.items():
        if name.startswith("train:"):
            result.artifacts.setdefault("holdout", {}).update(job.artifacts.get("holdout", {}))
            result.counts.setdefault("models", {}).update(job.counts["predictions"])
    return result


# -- status
# -------------------------------------------------------------------------------------------------


def read_status(settings: Settings, *, limit: int = 10) -> dict[str, Any]:
    """The last runs from the run log and the champion model of each prediction.

    Args:
        settings: configuration.
        limit: how many runs.

    Returns:
        ``runs`` (newest first) and ``models``.
    """
    runs: list[dict[str, Any]] = []
    if settings.store.path.exists():
        with Store(settings.store.path, read_only=True) as store:
            runs = store.recent_runs(limit)
    models = {}
    for spec in settings.predictions:
        champion = load_champion(settings.store.models_dir, spec.name)
        metric, _ = headline(spec.task)
        metrics = champion.metadata.get("metrics", {}) if champion else {}
        models[spec.name] = (
            {
                "version": champion.version,
                "auc": metrics.get("auc"),
                "metric": metric,
                "value": metrics.get(metric),
            }
            if champion
            else None
        )
    return {"store": str(settings.store.path), "runs": runs, "models": models}


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
    """
    from connector.sandbox import Sandbox

    prepare_workdir(workdir, fresh=False)
    sandbox = Sandbox(
        workdir / "sandbox",
        leads=leads,
        seed=seed,
        port=port,
        regenerate=False,
        on_progress=_generation_progress(reporter),
    )
    sandbox.start()
    try:
        write_sandbox_files(workdir, sandbox.info, command="sandbox")
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
        workdir / "sandbox", leads=leads, seed=seed, on_progress=_generation_progress(reporter)
    )
    sandbox.start()
    try:
        config = write_sandbox_files(workdir, sandbox.info, command="demo")
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
