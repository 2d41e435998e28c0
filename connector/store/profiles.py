"""Segment Profile API reads in the store: ``seg_profile``, ``seg_trait``, ``seg_external_id``."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from connector.segment import ProfileRead
from connector.store.database import Store, utc_now


def save_profiles(store: Store, reads: Sequence[ProfileRead]) -> dict[str, int]:
    """Store one chunk of Profile API reads in one transaction.

    Found profiles replace their traits and add their identities and events (events already in the
    store, by message id, are skipped); lookups that found nothing are remembered so they are not
    read again before ``refresh_hours``. Failed reads are not recorded, so the next run retries.

    Args:
        store: the store.
        reads: the reads.

    Returns:
        Counts: ``found, not_found, failed, traits, external_ids, events``.
    """
    done = [r for r in reads if r.error is None]
    now = utc_now()
    counts = {
        "found": sum(r.found for r in done),
        "not_found": sum(not r.found for r in done),
        "failed": len(reads) - len(done),
        "traits": sum(len(r.traits) for r in done),
        "external_ids": sum(len(r.external_ids) for r in done),
        "events": 0,
    }
    if not done:
        return counts
    profiles = pd.DataFrame(
        {"lookup": [r.lookup for r in done], "found": [r.found for r in done], "fetched_at": now}
    )
    traits = pd.DataFrame(
        [
            {"profile_id": r.lookup, "name": k, "value": json.dumps(v), "updated_at": now}
            for r in done
            for k, v in r.traits.items()
        ],
        columns=["profile_id", "name", "value", "updated_at"],
    )
    ids = pd.DataFrame(
        [
            {
                "profile_id": r.lookup,
                "id_type": e["type"],
                "id_value": e["id"],
                "created_at": e["created_at"],
            }
            for r in done
            for e in r.external_ids
        ],
        columns=["profile_id", "id_type", "id_value", "created_at"],
    ).drop_duplicates(["profile_id", "id_type", "id_value"])
    events = pd.DataFrame(
        [{**e, "segment_id": r.lookup} for r in done for e in r.events if e["message_id"]],
        columns=[
            "message_id",
            "event",
            "user_id",
            "anonymous_id",
            "segment_id",
            "ts",
            "properties",
        ],
    ).drop_duplicates("message_id")
    with store.transaction() as con:
        for name, frame in (("_p", profiles), ("_t", traits), ("_i", ids), ("_e", events)):
            con.register(name, frame)
        try:
            con.execute(
                "INSERT OR REPLACE INTO seg_profile SELECT lookup, found, fetched_at FROM _p"
            )
            con.execute(
                "DELETE FROM seg_trait WHERE source = 'profile_api' AND profile_id IN "
                "(SELECT lookup FROM _p)"
            )
            con.execute(
                "INSERT OR REPLACE INTO seg_trait SELECT profile_id, name, CAST(value AS JSON), "
                "CAST(updated_at AS TIMESTAMP), 'profile_api' FROM _t"
            )
            con.execute(
                "INSERT OR IGNORE INTO seg_external_id SELECT profile_id, id_type, id_value, "
                "'profile_api', CAST(created_at AS TIMESTAMP) FROM _i"
            )
            inserted = con.execute(
                """INSERT INTO seg_event
                   SELECT message_id, event, user_id, anonymous_id, segment_id,
                          CAST(ts AS TIMESTAMP), CAST(properties AS JSON), NULL
                   FROM _e WHERE message_id NOT IN (SELECT message_id FROM seg_event)"""
            ).fetchall()
            counts["events"] = int(inserted[0][0]) if inserted else 0
        finally:
            for name in ("_p", "_t", "_i", "_e"):
                con.unregister(name)
    return counts
