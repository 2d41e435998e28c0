"""REST reads: ``SELECT COUNT()``, ``query``/``queryAll`` pages, records by id, ``/limits``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from simple_salesforce.format import format_soql

from connector.clock import parse_utc
from connector.errors import (
    BudgetExceeded,
    ConfigError,
    check_next_page,
)
from connector.salesforce.describe import ObjectDescription, describe_object
from connector.salesforce.session import SalesforceClient, translate_errors
from connector.salesforce.settings import COLLECTION_SIZE

log = logging.getLogger("leadscore.salesforce")


def _converters(
    description: ObjectDescription, fields: Sequence[str]
) -> list[Callable[[Any], Any] | None]:
    out: list[Callable[[Any], Any] | None] = []
    for name in fields:
        kind = description.fields[name.lower()].type
        if kind == "datetime":
            out.append(parse_utc)
        elif kind == "date":
            out.append(date.fromisoformat)
        else:
            out.append(None)
    return out


def selection_soql(
    description: ObjectDescription,
    fields: Sequence[str],
    cursor_field: str,
    since: datetime | None,
    *,
    select: str | None = None,
    ordered: bool = True,
) -> str:
    """SOQL over validated names (``{:literal}``) and escaped values, never formatted input."""
    columns = select if select is not None else ", ".join(fields)
    order = " ORDER BY {:literal}, Id" if ordered else ""
    if since is None:
        args: list[Any] = [columns, description.name]
        if ordered:
            args.append(cursor_field)
        return format_soql("SELECT {:literal} FROM {:literal}" + order, *args)
    args = [columns, description.name, cursor_field, since.replace(tzinfo=UTC)]
    if ordered:
        args.append(cursor_field)
    return format_soql("SELECT {:literal} FROM {:literal} WHERE {:literal} >= {}" + order, *args)


def count_records(
    client: SalesforceClient,
    sobject: str,
    *,
    cursor_field: str = "SystemModstamp",
    since: datetime | None = None,
    include_deleted: bool = False,
) -> int:
    """Count the records a read would return (``SELECT COUNT()``, one call).

    Args:
        client: connected client.
        sobject: object API name.
        cursor_field: validated datetime field.
        since: count records with ``cursor_field >= since``; None counts all.
        include_deleted: count deleted records too (``queryAll``).

    Returns:
        The number of records.
    """
    description = describe_object(client, sobject)
    soql = selection_soql(description, [], cursor_field, since, select="COUNT()", ordered=False)
    with translate_errors(f"count on {description.name}"):
        result = client.sf.query(soql, include_deleted=include_deleted)
    return int(result.get("totalSize", 0))


def read_records(
    client: SalesforceClient,
    sobject: str,
    fields: Sequence[str],
    *,
    cursor_field: str = "SystemModstamp",
    since: datetime | None = None,
    include_deleted: bool = False,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Read records changed since a cursor value, in REST pages, ordered by (cursor, Id).

    The SOQL is built by ``format_soql`` from field names already validated against describe and
    from escaped values, never by formatting user input.

    Args:
        client: connected client.
        sobject: object API name.
        fields: validated fields (describe spelling), including ``Id`` and ``cursor_field`` (and
            ``IsDeleted`` to see deletions).
        cursor_field: the datetime field to filter and order by.
        since: read records with ``cursor_field >= since`` (inclusive: boundary rows are
            de-duplicated by the store); None reads everything.
        include_deleted: use ``queryAll`` so that deleted records (``IsDeleted = true``) are
            returned too.
        on_total: called once with the query's ``totalSize``.

    Yields:
        Pages of plain dicts with typed values.
    """
    description = describe_object(client, sobject)
    soql = selection_soql(description, fields, cursor_field, since)
    convert = list(zip(fields, _converters(description, fields), strict=True))
    page_size = client.settings.page_size
    headers = {"Sforce-Query-Options": f"batchSize={page_size}"}
    page: list[dict[str, Any]] = []
    followed: set[str] = set()
    with translate_errors(f"query on {description.name}"):
        # Ask for the first page ourselves to learn totalSize; query_more pages follow
        # nextRecordsUrl (which keeps the query or queryAll endpoint).
        result = client.sf.query(soql, include_deleted=include_deleted, headers=headers)
        if on_total is not None:
            on_total(int(result.get("totalSize", 0)))
        while True:
            for record in result["records"]:
                page.append(
                    {
                        name: (
                            fn(record[name])
                            if fn is not None and record[name] is not None
                            else record[name]
                        )
                        for name, fn in convert
                    }
                )
            if page:
                yield page
                page = []
            if result.get("done", True):
                return
            check_next_page(followed, result["nextRecordsUrl"], f"query on {description.name}")
            result = client.sf.query_more(
                result["nextRecordsUrl"], identifier_is_url=True, headers=headers
            )


def read_records_in(
    client: SalesforceClient,
    sobject: str,
    fields: Sequence[str],
    field: str,
    values: Sequence[str],
    *,
    include_deleted: bool = False,
) -> list[dict[str, Any]]:
    """Read the records whose ``field`` is one of ``values`` (``WHERE field IN (...)``).

    The fresh job reads the leads it was told about and their Tasks and CampaignMembers this
    way: one query per 200 values (the SOQL stays well under its length limit).

    Args:
        client: connected client.
        sobject: object API name.
        fields: validated fields (describe spelling), including ``Id``.
        field: a validated field (``Id``, ``WhoId``, ``LeadId``).
        values: the values (ids) to match.
        include_deleted: use ``queryAll`` so that deleted records come back too.

    Returns:
        Plain dicts with typed values.
    """
    description = describe_object(client, sobject)
    convert = list(zip(fields, _converters(description, fields), strict=True))
    unique = sorted({str(v) for v in values if v})
    out: list[dict[str, Any]] = []
    for start in range(0, len(unique), COLLECTION_SIZE):
        chunk = unique[start : start + COLLECTION_SIZE]
        soql = format_soql(
            "SELECT {:literal} FROM {:literal} WHERE {:literal} IN {}",
            ", ".join(fields),
            description.name,
            field,
            chunk,
        )
        with translate_errors(f"query on {description.name}"):
            records = client.sf.query_all_iter(soql, include_deleted=include_deleted)
            for record in records:
                out.append(
                    {
                        name: (
                            fn(record[name])
                            if fn is not None and record[name] is not None
                            else record[name]
                        )
                        for name, fn in convert
                    }
                )
    return out


def _id18(record_id: str) -> str:
    """The 18-character form of a Salesforce id (15-character ids get their checksum)."""
    if len(record_id) != 15:
        return record_id
    suffix = ""
    for chunk in range(3):
        bits = sum(
            1 << i
            for i, char in enumerate(record_id[chunk * 5 : chunk * 5 + 5])
            if "A" <= char <= "Z"
        )
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return record_id + suffix


def id18(record_id: str) -> str:
    """The 18-character form of a Salesforce id (what the API returns), for matching ids.

    Args:
        record_id: a 15- or 18-character id.

    Returns:
        The 18-character id (other strings unchanged).
    """
    return _id18(record_id)


_ID = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


def read_campaigns(
    client: SalesforceClient, campaign_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Look Campaigns up by id.

    Args:
        client: connected client.
        campaign_ids: Campaign ids (``701...``), as configured.

    Returns:
        Found campaigns by the id as given: ``{"Name", "IsActive"}``.

    Raises:
        ConfigError: an id is malformed.
    """
    by_id18: dict[str, str] = {}
    for raw in campaign_ids:
        if not _ID.match(raw) or not raw.startswith("701"):
            raise ConfigError(f"'{raw}' is not a Campaign id", hint="Campaign ids start with 701")
        by_id18[_id18(raw)] = raw
    if not by_id18:
        return {}
    soql = format_soql("SELECT Id, Name, IsActive FROM Campaign WHERE Id IN {}", list(by_id18))
    with translate_errors("campaign lookup"):
        records = list(client.sf.query_all_iter(soql))
    return {
        by_id18.get(_id18(r["Id"]), r["Id"]): {"Name": r.get("Name"), "IsActive": r.get("IsActive")}
        for r in records
    }


def read_records_by_id(
    client: SalesforceClient, sobject: str, ids: Sequence[str], fields: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Read the current values of some fields of records given by id (sObject Collections GET).

    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_retrieve.htm

    Args:
        client: connected client.
        sobject: object API name.
        ids: record ids (read 200 per request, which keeps the URL short).
        fields: field API names (describe spelling).

    Returns:
        Record id -> ``{field: value}`` for the records that exist.
    """
    name = describe_object(client, sobject).name
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), COLLECTION_SIZE):
        chunk = list(ids[start : start + COLLECTION_SIZE])
        with translate_errors(f"read of {len(chunk)} {name} records"):
            records = client.sf.restful(
                f"composite/sobjects/{name}",
                method="GET",
                params={"ids": ",".join(chunk), "fields": ",".join(["Id", *fields])},
            )
        for record in records or []:
            if record:
                out[str(record["Id"])] = {f: record.get(f) for f in fields}
    return out


def read_limits(client: SalesforceClient) -> dict[str, dict[str, int]]:
    """Read the org's limits (``/limits``) and remember them for :func:`check_allowance`.

    Args:
        client: connected client.

    Returns:
        Limits by name, e.g. ``{"DailyApiRequests": {"Max": 15000, "Remaining": 14982}}``.
    """
    with translate_errors("limits"):
        limits = {k: dict(v) for k, v in client.sf.limits().items() if isinstance(v, dict)}
    client._limits = limits
    return limits


def check_allowance(
    client: SalesforceClient, *, planned_calls: int, bulk_query_jobs: int = 0, what: str = "run"
) -> None:
    """Stop cleanly before a large piece of work the org's allowance cannot cover.

    Reads ``/limits`` once per client (later checks use the usage from ``Sforce-Limit-Info``).

    Args:
        client: connected client.
        planned_calls: API calls the work needs.
        bulk_query_jobs: Bulk API 2.0 query jobs it creates.
        what: what the work is, for the message.

    Raises:
        BudgetExceeded: the work would pass ``max_share_of_daily_limit`` of the daily allowance,
            ``max_calls_per_run``, or the daily bulk query job allowance.
    """
    settings = client.settings
    if settings.max_calls_per_run is not None:
        left = settings.max_calls_per_run - client.counter.api_calls
        if planned_calls > left:
            raise BudgetExceeded(
                f"stopped before the {what}: it needs about {planned_calls} API calls and "
                f"{left} remain under salesforce.max_calls_per_run = {settings.max_calls_per_run}",
                hint="raise the cap; committed work is kept and the next run resumes",
            )
    limits = client._limits if client._limits is not None else read_limits(client)
    daily = limits.get("DailyApiRequests") or {}
    total = int(daily.get("Max") or 0)
    used = total - int(daily.get("Remaining") or 0)
    if client.counter.org_usage is not None:
        used, total = client.counter.org_usage
    share = settings.max_share_of_daily_limit
    if share is not None and total and used + planned_calls > share * total:
        raise BudgetExceeded(
            f"stopped before the {what}: it needs about {planned_calls} API calls and the org "
            f"has used {used:,} of {total:,} daily calls "
            f"(salesforce.max_share_of_daily_limit = {share})",
            hint="raise the share, or let the next run go after the 24-hour window",
        )
    if bulk_query_jobs:
        jobs = limits.get("DailyBulkV2QueryJobs") or {}
        if "Remaining" in jobs and int(jobs["Remaining"]) < bulk_query_jobs:
            raise BudgetExceeded(
                f"stopped before the {what}: the org has {jobs['Remaining']} Bulk API 2.0 "
                "query jobs left today",
                hint="let the next run go after the 24-hour window",
            )
        if "Remaining" in jobs:
            jobs["Remaining"] = int(jobs["Remaining"]) - bulk_query_jobs


def since_with_overlap(cursor: datetime | None, overlap_seconds: int) -> datetime | None:
    """The lower bound of an incremental read: the cursor minus the overlap window.

    Args:
        cursor: last committed cursor value, or None.
        overlap_seconds: seconds to re-read before it.

    Returns:
        The bound, or None for a full read.
    """
    return None if cursor is None else cursor - timedelta(seconds=overlap_seconds)
