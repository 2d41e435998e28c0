"""Bulk API 2.0 jobs: query jobs downloaded page by page (``Sforce-Locator``) into CSV files."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from simple_salesforce.util import call_salesforce

from connector.clock import parse_utc
from connector.errors import (
    RequestError,
    TransientError,
    check_next_page,
)
from connector.salesforce.describe import describe_object
from connector.salesforce.rest import selection_soql
from connector.salesforce.session import SalesforceClient, translate_errors
from connector.salesforce.settings import MAX_POLL_SECONDS

log = logging.getLogger("leadscore.salesforce")


@dataclass(frozen=True)
class BulkJob:
    """A Bulk API 2.0 query job, enough to resume reading its results.

    Attributes:
        id: job id (``750...``).
        created: the job's ``createdDate`` (server clock, naive UTC).
    """

    id: str
    created: datetime


@dataclass(frozen=True)
class BulkPage:
    """One downloaded page of a Bulk API 2.0 query job.

    Attributes:
        job: the job.
        path: the page as a CSV file (header row, every value quoted, nulls empty). It is
            deleted when the reader moves on to the next page.
        records: records in the page (``Sforce-NumberOfRecords``).
        next_locator: locator of the next page, or None after the last page.
    """

    job: BulkJob
    path: Path
    records: int
    next_locator: str | None


def bulk_url(client: SalesforceClient, kind: str, *parts: str) -> str:
    """The URL of a Bulk API 2.0 resource (``kind``: ``query`` or ``ingest``)."""
    return client.sf.bulk2_url + "/".join((kind, *parts))


def bulk_call(
    client: SalesforceClient,
    method: str,
    url: str,
    *,
    what: str,
    accept: str = "application/json",
    content_type: str = "application/json",
    **kwargs: Any,
) -> requests.Response:
    """One Bulk API 2.0 request through our session (retries, refresh, budget, accounting).

    The headers are those simple-salesforce's ``bulk2.py`` sends; the session sets the current
    bearer token, so a session that expires mid-job is renewed and the request sent again.
    """
    headers = {"Content-Type": content_type, "Accept": accept, "X-PrettyPrint": "1"}
    with translate_errors(what):
        return call_salesforce(url, method, client.session, headers, **kwargs)


def _job_created(info: dict[str, Any]) -> datetime:
    """When Salesforce created a job: the upper bound of the cursor its rows may commit.

    No fallback to our own clock: a cursor bound later than the job's snapshot could skip rows.
    """
    raw = info.get("createdDate")
    try:
        return parse_utc(str(raw))
    except ValueError:
        raise RequestError(
            f"bulk job {info.get('id')}: Salesforce sent no readable createdDate ({raw!r})",
            hint="the next run starts a new job",
        ) from None


def start_bulk_query(
    client: SalesforceClient,
    sobject: str,
    fields: Sequence[str],
    *,
    cursor_field: str = "SystemModstamp",
    since: datetime | None = None,
    include_deleted: bool = False,
) -> BulkJob:
    """Create a Bulk API 2.0 query job (``query`` or ``queryAll``).

    The job's SOQL has no ``ORDER BY``: bulk results come in no guaranteed order, so the caller
    may only advance its cursor once every page is stored (see :func:`bulk_cursor`).

    Args:
        client: connected client.
        sobject: object API name.
        fields: validated fields (describe spelling).
        cursor_field: the datetime field to filter by.
        since: read records with ``cursor_field >= since``; None reads everything.
        include_deleted: include deleted records (``queryAll``).

    Returns:
        The job.
    """
    description = describe_object(client, sobject)
    soql = selection_soql(description, fields, cursor_field, since, ordered=False)
    body = {
        "operation": "queryAll" if include_deleted else "query",
        "query": soql,
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    }
    response = bulk_call(
        client,
        "POST",
        bulk_url(client, "query"),
        what=f"bulk query job on {description.name}",
        json=body,
    )
    info = response.json()
    log.info("bulk query job %s on %s", info["id"], description.name)
    return BulkJob(id=str(info["id"]), created=_job_created(info))


def wait_for_job(client: SalesforceClient, kind: str, job_id: str) -> dict[str, Any]:
    """Poll a job until it ends; the wait grows from ``bulk_poll_seconds`` to 30 s."""
    settings = client.settings
    waited = 0.0
    delay = settings.bulk_poll_seconds
    while True:
        client.sleep(delay)
        waited += delay
        info = bulk_call(
            client, "GET", bulk_url(client, kind, job_id), what=f"bulk job {job_id}"
        ).json()
        state = info.get("state")
        if state == "JobComplete":
            return dict(info)
        if state in ("Failed", "Aborted"):
            raise RequestError(
                f"bulk {kind} job {job_id} on {info.get('object')} ended {state}: "
                f"{info.get('errorMessage') or 'no message'}",
                hint="the job's error names the problem; the next run starts a new job",
            )
        if waited >= settings.bulk_timeout_seconds:
            raise TransientError(
                f"bulk {kind} job {job_id} still {state} after {waited:.0f} s",
                hint="raise salesforce.bulk_timeout_seconds; the next run picks the job up again",
            )
        delay = min(max(delay * 1.5, 0.5), MAX_POLL_SECONDS)


def read_bulk(
    client: SalesforceClient,
    job: BulkJob,
    *,
    locator: str | None = None,
    workdir: Path | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[BulkPage]:
    """Wait for a query job, then download its results page by page (``Sforce-Locator``).

    Each page is fetched whole (at most ``bulk_page_size`` records), so the session's retry
    policy also covers a connection dropped mid-body, and written to a temporary CSV file:
    memory holds one page at a time.

    Args:
        client: connected client.
        job: the query job (new, or resumed from a checkpoint).
        locator: resume from this page (None: from the first page).
        workdir: directory for the temporary page files (default: the system's).
        on_total: called with the job's record count once it completed.

    Yields:
        Pages; a page's file is removed when the next page is requested.
    """
    info = wait_for_job(client, "query", job.id)
    if on_total is not None:
        on_total(int(info.get("numberRecordsProcessed") or 0))
    url = bulk_url(client, "query", job.id, "results")
    followed: set[str] = {locator} if locator else set()
    while True:
        params: dict[str, Any] = {"maxRecords": client.settings.bulk_page_size}
        if locator:
            params["locator"] = locator
        response = bulk_call(
            client,
            "GET",
            url,
            what=f"bulk query results of job {job.id}",
            accept="text/csv",
            params=params,
        )
        count = int(response.headers.get("Sforce-NumberOfRecords", "0"))
        following = response.headers.get("Sforce-Locator") or ""
        next_locator = None if following in ("", "null") else following
        handle, name = tempfile.mkstemp(prefix="leadscore-bulk-", suffix=".csv", dir=workdir)
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(response.content)
            del response
            yield BulkPage(job=job, path=path, records=count, next_locator=next_locator)
        finally:
            path.unlink(missing_ok=True)
        if next_locator is None:
            return
        check_next_page(followed, next_locator, f"bulk query results of job {job.id}")
        locator = next_locator


def bulk_cursor(max_seen: datetime | None, job: BulkJob) -> datetime | None:
    """The cursor a finished bulk read may commit: ``min(newest value seen, job created)``.

    Bulk results are unordered, so nothing is committed per page. Once every page is stored,
    every change made before the job was created is in the store; a change after it may or may
    not be, so the cursor never passes the job's creation time (server clock) and the next
    incremental read starts there (minus the overlap).

    Args:
        max_seen: the newest cursor value among the job's rows, or None when it had none.
        job: the job.

    Returns:
        The cursor value to commit, or None to keep the current one.
    """
    if max_seen is None:
        return None
    return min(max_seen, job.created)
