"""How far the store is complete: the time training, scoring and monitoring look back from."""

from __future__ import annotations

from datetime import datetime

from connector.errors import ConfigError, LeadscoreError
from connector.store import Store, utc_now
from sync.config import PredictionConfig, Settings


def store_as_of(store: Store, settings: Settings) -> datetime:
    """How far the store is complete: the earliest ``synced_through`` of the configured streams."""
    if settings.salesforce is None:
        raise ConfigError(
            "this configuration has no [salesforce] section",
            hint="add one, or describe the entity with entity_table and [[sources]]",
        )
    streams = [describe_name for describe_name in settings.salesforce.streams]
    known = {s.lower(): s for s in store.cursor_streams()}
    through = store.synced_through([known.get(s.lower(), s) for s in streams])
    if through is None:
        raise LeadscoreError(
            "the store has not been fully pulled yet",
            hint="run `leadscore pull --config FILE` first",
        )
    return through


def source_stream(table: str) -> str:
    """The sync-cursor stream name recording how recent an imported table is."""
    return f"file:{table}"


def prediction_as_of(store: Store, settings: Settings, spec: PredictionConfig) -> datetime | None:
    """How far the data of one prediction is complete.

    Built-in entities read pulled streams; an entity table (and its event tables) imported from
    files is complete up to each source's ``as_of``; other tables count as complete now.
    """
    if spec.entity_table is None:
        return store_as_of(store, settings)
    tables = {spec.entity_table.table, *(e.table for e in spec.events)}
    streams = [source_stream(t) for t in tables if store.read_cursor(source_stream(t))]
    through = store.synced_through(streams) if streams else None
    return through or utc_now()
