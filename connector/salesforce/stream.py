"""One pulled Salesforce object: how it is read (REST or Bulk API 2.0), checkpointed and swept.

:class:`SalesforceStream` is the only place that decides between a REST query and a Bulk API 2.0
job for a pull, and that knows how a read resumes after a crash: orchestration asks it to
``sync`` into the store and receives a :class:`StreamResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.clock import from_epoch_days, from_epoch_millis
from connector.errors import ConfigError, LeadscoreError, RequestError
from connector.progress import Reporter
from connector.salesforce.bulk import BulkJob, bulk_cursor, read_bulk, start_bulk_query
from connector.salesforce.describe import db_type, describe_object, resolve_fields
from connector.salesforce.rest import (
    check_allowance,
    count_records,
    read_records,
    read_records_in,
    since_with_overlap,
)
from connector.salesforce.session import SalesforceClient
from connector.salesforce.settings import LARGE_RUN_CALLS, StreamSettings
from connector.store import PageCounts, Store, raw_table_name, utc_now
from connector.store.space import check_free_space, raw_rows_bytes

if TYPE_CHECKING:  # imported on first use by _frame: every CLI command imports this package
    import pandas as pd

    from connector.salesforce.pubsub import ChangeEvent


@dataclass
class StreamResult:
    """What one pull of one object did.

    Attributes:
        path: ``rest`` or ``bulk``.
        fetched: records read.
        new: rows inserted.
        changed: rows whose values changed.
        unchanged: rows read again with the same values.
        deleted: rows removed (``IsDeleted`` or the sweep).
        swept: rows removed because only the deletion sweep found them gone.
    """

    path: str = "rest"
    fetched: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    swept: int = 0

    def to_json(self) -> dict[str, Any]:
        """The counts as the run log and ``--json`` show them."""
        return asdict(self)


class SalesforceStream:
    """One configured object (``[salesforce.streams.<Object>]``) pulled incrementally."""

    def __init__(self, client: SalesforceClient, sobject: str, settings: StreamSettings) -> None:
        """Bind an object to its client and settings.

        Args:
            client: the connected client.
            sobject: the object's name as configured.
            settings: the stream's settings (cursor field, fields).
        """
        self.client = client
        self.sobject = sobject
        self.settings = settings

    def sync(
        self,
        store: Store,
        reporter: Reporter,
        after_page: Callable[[dict[str, Any]], None] = lambda counts: None,
        *,
        sweep: bool = False,
    ) -> StreamResult:
        """Pull the object's changes: resume a bulk download, or read them by REST or Bulk API 2.0.

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
          after the changes and stored rows without one are removed (:meth:`_sweep_deletions`).

        Args:
            store: the store.
            reporter: progress.
            after_page: called with the counts after every committed page (the pull job records
                progress and honours a stop request there: the checkpoint makes stopping safe).
            sweep: read every live id after the changes and remove stored rows without one.

        Returns:
            What the pull read and changed.
        """
        s = self.client.settings
        sf, sobject, stream = self.client, self.sobject, self.settings
        setting = f"salesforce.streams.{sobject}"
        description = describe_object(sf, sobject)
        name = description.name
        # the cursor first, so that a misspelt cursor_field is reported under its own key
        resolve_fields(description, [stream.cursor_field], setting=f"{setting}.cursor_field")
        fields = resolve_fields(
            description, ["Id", stream.cursor_field, *stream.fields], setting=f"{setting}.fields"
        )
        cursor = description.field(stream.cursor_field)
        if cursor is None or cursor.type != "datetime":
            raise ConfigError(
                f"{setting}.cursor_field: '{stream.cursor_field}' is not a datetime field "
                f"of {name}",
                hint="use SystemModstamp",
            )
        table = raw_table_name("salesforce", name)
        columns = {
            f: (description.fields[f.lower()].type, db_type(description.fields[f.lower()].type))
            for f in fields
        }
        added = store.ensure_table(name, table, columns, key="Id")
        # labels for what reps read: reasons say "Seniority", not "Seniority__c"
        store.save_field_labels(
            (
                description.fields[f.lower()].name,
                description.fields[f.lower()].label,
                f"currency:{s.currency}"
                if description.fields[f.lower()].type == "currency"
                else description.fields[f.lower()].type,
            )
            for f in fields
        )
        if added:
            # New columns are empty for rows already stored: read the stream again in full to
            # fill them.
            reporter.stage(f"{name}: new fields {', '.join(added)}; re-reading it in full")
            store.reset_cursor(name)
            store.drop_bulk(name)
        refresh = self._full_read_due(store, name, stream, reporter)
        deleted_field = "IsDeleted" if description.field("IsDeleted") is not None else None
        query_fields = [
            *fields,
            *([deleted_field] if deleted_field and deleted_field not in fields else []),
        ]
        counts = StreamResult()

        def add(page_counts: PageCounts, fetched: int) -> None:
            counts.fetched += fetched
            counts.new += page_counts.inserted
            counts.changed += page_counts.updated
            counts.unchanged += page_counts.unchanged
            counts.deleted += page_counts.deleted

        # A first read writes every record: its size is checked against the disk once known.
        first_read = store.read_cursor(name) is None

        def read_job(job: BulkJob, locator: str | None) -> None:
            counts.path = "bulk"
            if locator != "null":  # "null": every page is stored already
                with reporter.track(f"pull {name} (bulk)") as task:

                    def total(rows: int) -> None:
                        task.set_total(rows)
                        if first_read:  # the job counted the rows: will the disk hold them?
                            check_free_space(
                                store.path,
                                raw_rows_bytes(rows, len(query_fields)),
                                f"first sync of {rows:,} {name} records",
                            )

                    for page in read_bulk(
                        sf, job, locator=locator, workdir=store.path.parent, on_total=total
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
                        after_page(counts.to_json())
            checkpoint = store.bulk_checkpoint(name)
            store.finish_bulk(
                name, bulk_cursor(checkpoint["max_cursor"] if checkpoint else None, job)
            )

        checkpoint = store.bulk_checkpoint(name)
        if checkpoint is not None and checkpoint["fields"] != query_fields:
            store.drop_bulk(name)  # the configured fields changed: the job selects the old ones
            checkpoint = None
        if checkpoint is not None:
            job = BulkJob(checkpoint["job_id"], checkpoint["job_created"])
            reporter.stage(
                f"{name}: resuming bulk job {job.id} after "
                f"{checkpoint['rows_stored']:,} stored rows"
            )
            try:
                read_job(job, checkpoint["locator"])
            except RequestError as exc:
                # The job is gone (results expire after 7 days) or failed: start a new one below.
                reporter.stage(
                    f"{name}: cannot resume bulk job {job.id} ({exc.message}); restarting"
                )
                store.drop_bulk(name)
            else:
                store.mark_synced(name, checkpoint["started_at"])
                return counts

        started = utc_now()
        current = store.read_cursor(name)
        last_synced = store.synced_through([name])
        since = since_with_overlap(current, s.overlap_seconds)
        # queryAll whenever the store may hold rows deleted since (a re-read after new fields too)
        include_deleted = deleted_field is not None and (
            current is not None or bool(added) or refresh
        )
        if current is None and s.bulk_first_sync:
            total = None  # a first sync is read in bulk whatever its size: no COUNT() needed
        else:
            total = count_records(
                sf, name, cursor_field=cursor.name, since=since, include_deleted=include_deleted
            )
        # The server's time before the read (the count's answer, or the job's creation): every
        # change committed before it is read, so the next read's overlap is anchored there. The
        # newest row read is no anchor: in a quiet org, the records of the last push would be
        # read again on every cycle.
        read_from = sf.counter.server_time
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
            read_from = job.created
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
                    frame = _frame(page, columns=query_fields)
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
                    after_page(counts.to_json())
        if read_from is not None:
            store.advance_cursor(name, read_from)
        stale = last_synced is not None and started - last_synced > timedelta(
            days=s.recycle_bin_days
        )
        if current is not None and (sweep or stale):
            why = "on request" if sweep else f"last pulled {last_synced:%Y-%m-%d}"
            counts.swept = self._sweep_deletions(store, name, table, reporter, why=why)
            counts.deleted += counts.swept
        store.mark_synced(name, started)
        if current is None:
            store.mark_full_read(name, started)
        return counts

    def _layout(self, store: Store) -> tuple[str, str, list[str], str, str | None]:
        """(object, raw table, query fields, cursor field, deleted field) of a pulled object."""
        description = describe_object(self.client, self.sobject)
        fields = resolve_fields(
            description,
            ["Id", self.settings.cursor_field, *self.settings.fields],
            setting=f"salesforce.streams.{self.sobject}.fields",
        )
        table = raw_table_name("salesforce", description.name)
        if not store.table_exists(table):
            raise LeadscoreError(
                f"{description.name} has not been pulled into the store yet",
                hint="run `leadscore pull --config FILE` first",
            )
        deleted = "IsDeleted" if description.field("IsDeleted") is not None else None
        query_fields = [*fields, *([deleted] if deleted and deleted not in fields else [])]
        known = set(store.table_columns(table))
        query_fields = [f for f in query_fields if f in known or f == deleted]
        return description.name, table, query_fields, fields[1], deleted

    def changed_since(self, field: str, since: datetime | None) -> tuple[set[str], datetime | None]:
        """The values of ``field`` (an id) on records changed since a time, and the newest change.

        The fresh job's poll: which leads changed, which leads' Tasks or CampaignMembers did.
        Reads ``Id``, the cursor field and ``field`` only, deleted records included.

        Args:
            field: the id field to collect (``Id``, ``WhoId``, ``LeadId``).
            since: changes at or after this time (inclusive; None reads every record).

        Returns:
            (the field's non-empty values, the newest cursor value seen or None).
        """
        description = describe_object(self.client, self.sobject)
        setting = f"salesforce.streams.{self.sobject}"
        cursor = resolve_fields(description, [self.settings.cursor_field], setting=setting)[0]
        column = resolve_fields(description, [field], setting=setting)[0]
        select = list(dict.fromkeys(["Id", cursor, column]))
        values: set[str] = set()
        newest: datetime | None = None
        for page in read_records(
            self.client,
            description.name,
            select,
            cursor_field=cursor,
            since=since,
            include_deleted=description.field("IsDeleted") is not None,
        ):
            for record in page:
                if record[column]:
                    values.add(str(record[column]))
                if record[cursor] is not None and (newest is None or record[cursor] > newest):
                    newest = record[cursor]
        return values, newest

    def read_changed(
        self, store: Store, field: str, since: datetime | None
    ) -> tuple[StreamResult, set[str], datetime | None]:
        """Read the records changed since a time into the store (no cursor moves), in one query.

        The fresh job's poll: the changed Leads, Tasks or CampaignMembers with every configured
        field, so the records are stored by the same call that finds them.

        Args:
            store: the store (the object must have been pulled once).
            field: the id field whose values to collect (``Id``, ``WhoId``, ``LeadId``).
            since: changes at or after this time (inclusive).

        Returns:
            What was read and changed, the field's values on records that were new or changed
            in the store (a record whose stored values did not change, such as a lead whose
            only change was leadscore's own score write, names nothing), the newest cursor value.
        """
        name, table, query_fields, cursor, deleted = self._layout(store)
        column = resolve_fields(
            describe_object(self.client, self.sobject),
            [field],
            setting=f"salesforce.streams.{self.sobject}",
        )[0]
        select = list(dict.fromkeys([*query_fields, column]))
        result = StreamResult()
        values: set[str] = set()
        newest: datetime | None = None
        for page in read_records(
            self.client,
            name,
            select,
            cursor_field=cursor,
            since=since,
            include_deleted=deleted is not None,
        ):
            changed: set[str] = set()
            counts = store.merge_records(
                table,
                _frame(page, select),
                key="Id",
                cursor_field=cursor,
                deleted_field=deleted,
                changed=changed,
            )
            for record in page:
                if record[column] and str(record["Id"]) in changed:
                    values.add(str(record[column]))
                if record[cursor] is not None and (newest is None or record[cursor] > newest):
                    newest = record[cursor]
            result.fetched += len(page)
            result.new += counts.inserted
            result.changed += counts.updated
            result.unchanged += counts.unchanged
            result.deleted += counts.deleted
        return result, values, newest

    def read_where(
        self, store: Store, field: str, values: set[str] | list[str]
    ) -> tuple[StreamResult, list[dict[str, Any]]]:
        """Read the records whose ``field`` is one of ``values`` into the store (no cursor moves).

        Args:
            store: the store (the object must have been pulled once).
            field: the field to match (``Id``, ``WhoId``, ``LeadId``).
            values: ids.

        Returns:
            What was read and changed, and the records read.
        """
        name, table, query_fields, cursor, deleted = self._layout(store)
        column = resolve_fields(
            describe_object(self.client, self.sobject),
            [field],
            setting=f"salesforce.streams.{self.sobject}",
        )[0]
        result = StreamResult()
        if not values:
            return result, []
        records = read_records_in(
            self.client,
            name,
            query_fields,
            column,
            sorted(values),
            include_deleted=deleted is not None,
        )
        frame = _frame(records, query_fields)
        counts = store.merge_records(
            table, frame, key="Id", cursor_field=cursor, deleted_field=deleted
        )
        result.fetched = len(records)
        result.new, result.changed = counts.inserted, counts.updated
        result.unchanged, result.deleted = counts.unchanged, counts.deleted
        return result, records

    def apply_changes(
        self, store: Store, changes: Sequence[ChangeEvent]
    ) -> tuple[StreamResult, set[str]]:
        """Store records built from change events instead of reading them (no API call).

        A create or undelete carries every field of the record (Pub/Sub API: all fields, empty
        ones null); an update carries the fields it changed (``changedFields``, nulled fields
        among them), applied onto the stored record. What an event cannot give is left to a
        REST read and named in the result: a record whose configured fields the event schema
        lacks (formula fields, which change events never carry), an update of a record not
        stored yet, a record after a gap or delete in the same changes. ``IsDeleted`` and
        ``SystemModstamp``, which change events never carry, are false and the event's
        ``LastModifiedDate`` (else its commit time); the next pull stores the record as
        Salesforce has it. An event older than the stored record (a pull stored a newer
        version before the event came, or came again after a restart) changes nothing.

        Args:
            store: the store (the object must have been pulled once).
            changes: the object's change events, in stream order.

        Returns:
            What was stored (``path`` ``events``), and the ids to read through REST.
        """
        name, table, query_fields, cursor, deleted = self._layout(store)
        description = describe_object(self.client, self.sobject)
        kinds = {f: description.fields[f.lower()].type for f in query_fields}
        derived = {"Id", cursor, *([deleted] if deleted else [])} - {"LastModifiedDate"}
        named = {rid for event in changes if event.entity == name for rid in event.record_ids}
        stored = store.rows_by_key(table, "Id", query_fields, named)
        built: dict[str, dict[str, Any]] = {}
        unread: set[str] = set()
        for event in changes:
            if event.entity != name:
                continue
            values = event.field_values
            missing = {f for f in query_fields if f not in event.carried} - derived
            when = _event_time(event, values)
            for rid in event.record_ids:
                mine = built.get(rid) or stored.get(rid)
                stamp = mine.get(cursor) if mine is not None else None
                if isinstance(stamp, datetime) and stamp > when and rid not in unread:
                    # The store holds a newer version (a pull stored it after this change, and
                    # the event came again after a restart): keep it, it includes this change.
                    continue
                if event.change_type in ("CREATE", "UNDELETE") and not missing:
                    row = {f: _event_value(kinds[f], values.get(f)) for f in query_fields}
                    built[rid] = row
                elif event.change_type == "UPDATE" and rid not in unread:
                    changed = {c.rsplit(".", 1)[-1] for c in event.changed_fields}
                    if mine is None or (changed & set(query_fields)) - event.carried:
                        unread.add(rid)
                        continue
                    row = dict(mine)
                    for f in changed & set(query_fields):
                        row[f] = _event_value(kinds[f], values.get(f))
                    built[rid] = row
                else:  # a gap, a delete, a create without every field: read it
                    built.pop(rid, None)
                    unread.add(rid)
                    continue
                built[rid].update({"Id": rid, cursor: when})
                if deleted:
                    built[rid][deleted] = False
                unread.discard(rid)
        result = StreamResult(path="events")
        if built:
            counts = store.merge_records(
                table,
                _frame(list(built.values()), query_fields),
                key="Id",
                cursor_field=cursor,
                deleted_field=deleted,
            )
            result.fetched = len(built)
            result.new, result.changed = counts.inserted, counts.updated
            result.unchanged, result.deleted = counts.unchanged, counts.deleted
        return result, unread

    @staticmethod
    def _full_read_due(store: Store, name: str, stream: StreamSettings, reporter: Reporter) -> bool:
        """Start a periodic full read when ``full_read_days`` have passed since the last one.

        Formula and roll-up fields change without moving ``SystemModstamp``, so incremental
        pulls never see their new values; re-reading everything now and then does.
        """
        if not stream.full_read_days or store.read_cursor(name) is None:
            return False
        last = store.full_read_at(name)
        if last is not None and utc_now() - last < timedelta(days=stream.full_read_days):
            return False
        reporter.stage(f"{name}: periodic full read (every {stream.full_read_days:g} days)")
        store.reset_cursor(name)
        store.drop_bulk(name)
        return True

    def _sweep_deletions(
        self, store: Store, name: str, table: str, reporter: Reporter, *, why: str
    ) -> int:
        """Read every live id of an object and remove the stored rows that have none.

        Salesforce empties its recycle bin after 15 days, and purged records no longer appear in
        ``queryAll``, so an incremental pull after a long pause cannot see those deletions.
        https://help.salesforce.com/s/articleView?id=sf.home_delete.htm

        Returns:
            The number of stored rows removed.
        """
        sf = self.client
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
            pages = (_frame(page, columns=["Id"]) for page in read_records(sf, name, ["Id"]))
        return store.remove_absent(table, "Id", pages)


def _event_time(event: ChangeEvent, values: dict[str, Any]) -> datetime:
    """When an event's change was made: its ``LastModifiedDate``, else its commit time."""
    stamp = values.get("LastModifiedDate")
    return from_epoch_millis(stamp) if isinstance(stamp, int) else event.commit_time


def _event_value(kind: str, value: Any) -> Any:
    """A change event's value as a REST read returns it (datetimes and dates are epoch numbers)."""
    if value is None:
        return None
    if kind == "datetime" and isinstance(value, int | float):
        return from_epoch_millis(value)
    if kind == "date" and isinstance(value, int):
        return from_epoch_days(value)
    return value


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A page of records as a DataFrame (pandas is imported here, when a pull needs it)."""
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=columns)
