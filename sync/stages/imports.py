"""The ``import`` jobs: ``[[sources]]`` files and Segment exports into the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.clock import to_naive_utc
from connector.errors import ConfigError
from connector.files import import_segment_export, import_table
from connector.store import Store
from connector.store.imports import convert_time_columns, derive_entities, newest_time
from sync.config import Settings
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded
from sync.segment_sync import (
    summarise_imports,
)
from sync.stages.freshness import source_stream


def config_dir(settings: Settings) -> Path:
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
    from connector.store.identity import resolve_identities

    with (
        open_store(settings, "segment_import", reporter=reporter) as store,
        recorded(store, "segment_import") as result,
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


def import_sources(
    store: Store, settings: Settings, reporter: Reporter, *, only_missing: bool
) -> dict[str, Any]:
    """Import each ``[[sources]]`` file into its table and record how recent it is.

    Returns:
        Table -> rows and columns imported.
    """
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
            allow_empty=source.allow_empty,
        )
        if source.row_id:
            store.number_rows(source.table, source.row_id)
        convert_time_columns(store, source.table, dict(source.time_formats), path=source.path)
        tables = [source.table]
        if source.entities is not None:
            e = source.entities
            derive_entities(store, source.table, e.table, e.id_column, e.time_column)
            tables.append(e.table)
        # how recent the export is: its newest timestamp (the file's age says nothing about it)
        as_of = (
            source.as_of
            or newest_time(store, source.table)
            or datetime.fromtimestamp(source.path.stat().st_mtime, UTC)
        )
        as_of = to_naive_utc(as_of)
        for table in tables:
            store.mark_imported(source_stream(table), as_of)
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
        open_store(settings, "import", reporter=reporter) as store,
        recorded(store, "import") as result,
    ):
        tables = import_sources(store, settings, reporter, only_missing=False)
        result.counts = {"rows": sum(t["rows"] for t in tables.values()), "tables": tables}
    return result
