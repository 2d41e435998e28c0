"""Writes: sObject Collections and Bulk API 2.0 ingest, per-record outcomes, campaign members."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any, Literal

import requests
from simple_salesforce.format import format_soql

from connector.errors import (
    Action,
    ConfigError,
    LeadscoreError,
    RequestError,
    classify_exception,
    is_transient_record_error,
)
from connector.salesforce.bulk import bulk_call, bulk_url, wait_for_job
from connector.salesforce.describe import FieldDescription, describe_object
from connector.salesforce.rest import _ID, _id18, read_records_by_id
from connector.salesforce.session import SalesforceClient, translate_errors
from connector.salesforce.settings import (
    BULK_MAX_UPLOAD_BYTES,
    BULK_NULL,
    BULK_RECORDS_PER_JOB,
    COLLECTION_SIZE,
    WriteOperation,
)
from connector.store import quote_identifier

log = logging.getLogger("leadscore.salesforce")


def choose_write_path(n_records: int, bulk_write_threshold: int) -> Literal["collections", "bulk"]:
    """The write path for a change set of ``n_records``.

    Args:
        n_records: records to write.
        bulk_write_threshold: ``salesforce.bulk_write_threshold``.

    Returns:
        ``bulk`` above the threshold, else ``collections``.
    """
    return "bulk" if n_records > bulk_write_threshold else "collections"


def estimate_write_calls(
    n_records: int,
    *,
    bulk_write_threshold: int = 2_000,
    polls: int = 1,
    batch_size: int = COLLECTION_SIZE,
) -> int:
    """The API calls a write of ``n_records`` takes on the path :func:`choose_write_path` picks.

    Collections: one call per 200 records. Bulk API 2.0 ingest, per job of up to 1,000,000
    records: create, upload, close, ``polls`` job-info polls and the successful-results download.
    Assumes no record fails (each failed record adds its failed-results download on the bulk
    path, and its retries) and that a job's CSV stays under :data:`BULK_MAX_UPLOAD_BYTES` (about
    500 bytes a record, far more than scores, tiers and reasons take).

    Args:
        n_records: records to write.
        bulk_write_threshold: ``salesforce.bulk_write_threshold``.
        polls: job-info requests until a bulk job reports ``JobComplete``.
        batch_size: records per Collections call (``salesforce.write_batch_size``).

    Returns:
        The number of API calls.
    """
    if n_records <= 0:
        return 0
    if choose_write_path(n_records, bulk_write_threshold) == "collections":
        return math.ceil(n_records / batch_size)
    return math.ceil(n_records / BULK_RECORDS_PER_JOB) * (4 + polls)


def estimate_campaign_sync_calls(
    current_members: int,
    adds: int,
    removes: int,
    *,
    bulk_write_threshold: int = 2_000,
    page_size: int = 2_000,
) -> int:
    """The API calls :func:`sync_campaign_members` makes for a membership change.

    One query of the campaign's current members (pages of ``page_size``), then the creates and
    the deletes on the path :func:`choose_write_path` picks for each (describe excluded).

    Args:
        current_members: members the campaign has now.
        adds: members to add.
        removes: members to remove.
        bulk_write_threshold: ``salesforce.bulk_write_threshold``.
        page_size: records per query page (2,000 unless the org says otherwise).

    Returns:
        The number of API calls.
    """
    reads = max(1, math.ceil(current_members / page_size))
    return (
        reads
        + estimate_write_calls(adds, bulk_write_threshold=bulk_write_threshold)
        + estimate_write_calls(removes, bulk_write_threshold=bulk_write_threshold)
    )


_NUMBER_TYPES = frozenset({"double", "int", "percent", "currency"})
_TEXT_TYPES = frozenset({"string", "textarea", "picklist", "email", "phone", "url"})


def check_field_value(found: FieldDescription, value: Any) -> str | None:
    """What Salesforce would say about writing ``value`` to a field, judged from describe.

    Checks what a write would be rejected for, with Salesforce's own error codes: a field the
    user may not edit, a value outside a restricted picklist, a text over the field's length, a
    number with more integer digits than ``precision - scale`` (after rounding to ``scale``, as
    Salesforce does), a value of the wrong type.

    Args:
        found: the field's describe.
        value: the value to write (None clears the field).

    Returns:
        ``"CODE: message"``, or None when the value is acceptable.
    """
    if not found.updateable:
        return (
            f"INVALID_FIELD_FOR_INSERT_UPDATE: {found.name} is not editable by the integration user"
        )
    if value is None:
        return None
    if found.type in _NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"INVALID_TYPE: {found.name} takes a number, not {value!r}"
        if found.precision:
            scale = found.scale or 0
            digits = len(str(int(abs(round(float(value), scale)))))
            if digits > found.precision - scale:
                return (
                    f"NUMBER_OUTSIDE_VALID_RANGE: {value} has more than "
                    f"{found.precision - scale} integer digits for {found.name}"
                )
        return None
    if found.type == "boolean":
        return None if isinstance(value, bool) else f"INVALID_TYPE: {found.name} takes true/false"
    if found.type in _TEXT_TYPES:
        text = value if isinstance(value, str) else json.dumps(value)
        restricted = found.type == "picklist" and found.restricted_picklist
        if restricted and text not in found.picklist_values:
            return (
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: "
                f"{found.name}: '{text[:40]}' is not one of its values"
            )
        if found.length and len(text) > found.length:
            return (
                f"STRING_TOO_LONG: {found.name}: {len(text)} characters, max length {found.length}"
            )
    return None


def _encode(value: Any) -> Any:
    """JSON-encode a value the way the REST API expects it."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _csv_value(value: Any) -> str:
    """A value as Bulk API 2.0 CSV text (``#N/A`` sets null)."""
    if value is None:
        return BULK_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


@dataclass
class _Outcome:
    success: bool
    error: str | None = None
    code: str | None = None
    id: str | None = None

    @property
    def transient(self) -> bool:
        return not self.success and self.code is not None and is_transient_record_error(self.code)


def _collection_error(result: dict[str, Any]) -> _Outcome:
    errors = result.get("errors") or []
    first = errors[0] if errors else {}
    code = str(first.get("statusCode") or "UNKNOWN")
    return _Outcome(False, f"{code}: {first.get('message', '')}".strip(), code)


def _answer_lost(exc: requests.RequestException) -> bool:
    """Whether a request failed after it was sent, so that it may have been applied."""
    rule = classify_exception(exc)
    return rule is not None and rule.action is Action.RETRY and not rule.safe_to_resend


@contextmanager
def _lost_answer_raised(applies: bool) -> Iterator[None]:
    """Turn a transport failure after the request went out into :class:`_LostAnswer`."""
    try:
        yield
    except requests.RequestException as exc:
        if applies and _answer_lost(exc):
            raise _LostAnswer from exc
        raise


def _same_value(sent: Any, current: Any) -> bool:
    """Whether a value read back is the one sent (numbers come back as floats)."""
    if isinstance(sent, int | float) and isinstance(current, int | float):
        return not isinstance(sent, bool) and float(sent) == float(current)
    return sent == current


def _read_back(
    client: SalesforceClient, name: str, records: Sequence[dict[str, Any]]
) -> list[_Outcome]:
    """Outcomes of an update whose answer was lost, from the records as Salesforce holds them.

    A record that holds every value sent was written (sending it again would write it twice);
    any other gets ``LOST_ANSWER``, a transient code, and goes out again in the retry rounds.
    """
    fields = sorted({k for r in records for k in r if k != "Id"})
    current = read_records_by_id(client, name, [str(r["Id"]) for r in records], fields)
    outcomes = []
    for record in records:
        now = current.get(str(record["Id"]))
        if now is not None and all(
            _same_value(_encode(v), now.get(k)) for k, v in record.items() if k != "Id"
        ):
            outcomes.append(_Outcome(True, id=str(record["Id"])))
        else:
            outcomes.append(
                _Outcome(
                    False,
                    "LOST_ANSWER: the answer was lost and the record does not hold the values",
                    "LOST_ANSWER",
                )
            )
    written = sum(o.success for o in outcomes)
    log.warning(
        "%s: the answer to an update of %d records was lost; read back: %d written, %d to send "
        "again",
        name,
        len(records),
        written,
        len(records) - written,
    )
    return outcomes


def _collections_request(
    client: SalesforceClient,
    name: str,
    records: Sequence[dict[str, Any]],
    operation: WriteOperation,
    external_id_field: str | None,
) -> list[_Outcome]:
    """One sObject Collections request (at most 200 records, ``allOrNone=false``).

    An update whose answer is lost (the connection dropped after the request went out) is
    settled by reading the records back, the path a crash mid-request takes, rather than by
    sending it again.
    """
    what = f"{operation} of {len(records)} {name} records"
    try:
        return _collections_call(client, name, records, operation, external_id_field, what)
    except _LostAnswer:
        return _read_back(client, name, records)


class _LostAnswer(Exception):
    """Internal: an update went out and its answer was lost.

    Not a ``RequestException``, so that ``translate_errors`` lets it through to the read-back.
    """


def _collections_call(
    client: SalesforceClient,
    name: str,
    records: Sequence[dict[str, Any]],
    operation: WriteOperation,
    external_id_field: str | None,
    what: str,
) -> list[_Outcome]:
    """Send one sObject Collections request and read its per-record results."""
    with translate_errors(what), _lost_answer_raised(operation == "update"):
        if operation == "delete":
            ids = ",".join(str(r["Id"]) for r in records)
            results = client.sf.restful(
                "composite/sobjects",
                method="DELETE",
                params={"ids": ids, "allOrNone": "false"},
            )
        else:
            body = {
                "allOrNone": False,
                "records": [
                    {
                        "attributes": {"type": name},
                        **{k: _encode(v) for k, v in r.items() if k != "Id"},
                        **({"id": r["Id"]} if operation == "update" else {}),
                    }
                    for r in records
                ],
            }
            if operation == "update":
                # https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html
                results = client.sf.restful("composite/sobjects", method="PATCH", json=body)
            elif operation == "create":
                results = client.sf.restful("composite/sobjects", method="POST", json=body)
            else:
                results = client.sf.restful(
                    f"composite/sobjects/{name}/{external_id_field}", method="PATCH", json=body
                )
    outcomes = []
    for result in results or []:
        if result.get("success"):
            outcomes.append(_Outcome(True, id=result.get("id")))
        else:
            outcomes.append(_collection_error(result))
    if len(outcomes) != len(records):
        raise RequestError(f"{what}: Salesforce answered {len(outcomes)} results")
    return outcomes


_BULK_ERROR = re.compile(r"^([A-Z_]+):(.*?)(?::[^:]*--)?$", re.DOTALL)


def _bulk_error(text: str) -> _Outcome:
    """Read ``sf__Error`` (``CODE:message:fields--``) into an outcome."""
    match = _BULK_ERROR.match(text.strip())
    if match is None:
        return _Outcome(False, text.strip() or "UNKNOWN", "UNKNOWN")
    code, message = match.group(1), match.group(2).strip()
    return _Outcome(False, f"{code}: {message}", code)


def _bulk_ingest(
    client: SalesforceClient,
    name: str,
    records: Sequence[dict[str, Any]],
    operation: WriteOperation,
    external_id_field: str | None,
) -> list[_Outcome]:
    """Bulk API 2.0 ingest in as many jobs as the upload limit needs; outcomes in input order.

    Records go to one job until its CSV would pass :data:`BULK_MAX_UPLOAD_BYTES` or
    :data:`BULK_RECORDS_PER_JOB`, then to the next; the jobs run one after another.
    """
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns:
                columns.append(key)
    if operation in ("update", "delete") and "Id" in columns:
        columns.remove("Id")
        columns.insert(0, "Id")
    rows = [[_csv_value(r[c]) if c in r else "" for c in columns] for r in records]
    # csv.writer calls write() once per row, so this collects one CSV line per record.
    lines: list[str] = []
    csv.writer(SimpleNamespace(write=lines.append), lineterminator="\n").writerows([columns, *rows])
    header = lines.pop(0)
    outcomes: list[_Outcome] = []
    start = 0
    while start < len(records):
        end, size = start, len(header.encode("utf-8"))
        while end < len(records) and end - start < BULK_RECORDS_PER_JOB:
            line_size = len(lines[end].encode("utf-8"))
            if end > start and size + line_size > BULK_MAX_UPLOAD_BYTES:
                break
            size += line_size
            end += 1
        payload = (header + "".join(lines[start:end])).encode("utf-8")
        outcomes.extend(
            _bulk_ingest_job(
                client,
                name,
                columns,
                rows[start:end],
                payload,
                operation,
                external_id_field,
            )
        )
        start = end
    return outcomes


def _bulk_ingest_job(
    client: SalesforceClient,
    name: str,
    columns: list[str],
    rows: list[list[str]],
    payload: bytes,
    operation: WriteOperation,
    external_id_field: str | None,
) -> list[_Outcome]:
    """One Bulk API 2.0 ingest job for a CSV payload; per-row outcomes in row order.

    Calls: create, upload (201), close, polls until ``JobComplete``, then the successful and
    (only when some failed) the failed results, and the unprocessed records only when some
    were not processed.
    """
    bulk_operation = "insert" if operation == "create" else operation
    body: dict[str, Any] = {
        "object": name,
        "operation": bulk_operation,
        "contentType": "CSV",
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    }
    if operation == "upsert":
        body["externalIdFieldName"] = external_id_field
    what = f"bulk {bulk_operation} of {len(rows)} {name} records"
    info = bulk_call(client, "POST", bulk_url(client, "ingest"), what=what, json=body).json()
    job_id = str(info["id"])
    try:
        upload = bulk_call(
            client,
            "PUT",
            bulk_url(client, "ingest", job_id, "batches"),
            what=what,
            content_type="text/csv; charset=UTF-8",
            data=payload,
        )
        if upload.status_code != 201:
            raise RequestError(f"{what}: the upload answered HTTP {upload.status_code}, not 201")
        bulk_call(
            client,
            "PATCH",
            bulk_url(client, "ingest", job_id),
            what=what,
            json={"state": "UploadComplete"},
        )
        done = wait_for_job(client, "ingest", job_id)
    except BaseException:
        # As simple-salesforce does: a job that cannot finish is aborted, never left open.
        with suppress(LeadscoreError):
            bulk_call(
                client,
                "PATCH",
                bulk_url(client, "ingest", job_id),
                what=what,
                json={"state": "Aborted"},
            )
        raise
    failed_count = int(done.get("numberRecordsFailed") or 0)
    processed = int(done.get("numberRecordsProcessed") or 0)

    # Result rows come in any order and echo the uploaded columns: match them back to the input
    # by the record's key (Id, or the upsert key, case-insensitive) or, for inserts, by all values.
    key_column = {"update": "Id", "delete": "Id", "upsert": external_id_field}.get(operation)

    def key_of(values: dict[str, str]) -> tuple[str, ...]:
        if key_column == "Id":
            return (values.get("Id", "")[:15],)  # 15- and 18-character forms are one record
        if key_column:
            return (values.get(key_column, "").lower(),)
        return tuple(values.get(c, "") for c in columns)

    waiting: dict[tuple[str, ...], deque[int]] = defaultdict(deque)
    for index, row in enumerate(rows):
        waiting[key_of(dict(zip(columns, row, strict=True)))].append(index)
    outcomes: list[_Outcome | None] = [None] * len(rows)

    def results(kind: str) -> Iterator[dict[str, str]]:
        text = bulk_call(
            client,
            "GET",
            bulk_url(client, "ingest", job_id, kind),
            what=f"{what} ({kind})",
            accept="text/csv",
        ).text
        yield from csv.DictReader(io.StringIO(text))

    def claim(row: dict[str, str]) -> int | None:
        queue = waiting.get(key_of(row))
        return queue.popleft() if queue else None

    if processed - failed_count > 0:
        for row in results("successfulResults"):
            index = claim(row)
            if index is not None:
                outcomes[index] = _Outcome(True, id=row.get("sf__Id") or None)
    if failed_count > 0:
        for row in results("failedResults"):
            index = claim(row)
            if index is not None:
                outcomes[index] = _bulk_error(row.get("sf__Error", ""))
    if processed < len(rows):
        for row in results("unprocessedRecords"):
            index = claim(row)
            if index is not None:
                outcomes[index] = _Outcome(
                    False, "UNPROCESSED: the bulk job did not process the record", "UNPROCESSED"
                )
    return [
        outcome
        if outcome is not None
        else _Outcome(False, "UNCONFIRMED: missing from the bulk job's results", "UNCONFIRMED")
        for outcome in outcomes
    ]


BUSY_ERRORS = frozenset({"UNABLE_TO_LOCK_ROW", "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"})
"""Per-record codes of a busy org: triggers and flows on the object hit row locks or their Apex
CPU limit at this batch size (the whole call fails); smaller calls get through."""


CLEAN_CALLS_TO_GROW = 4


def _is_busy(outcome: _Outcome) -> bool:
    return not outcome.success and outcome.code in BUSY_ERRORS


def _settle(
    indexes: Sequence[int], outcomes: Sequence[_Outcome], pending: list[int]
) -> list[tuple[int, _Outcome]]:
    """Final outcomes of a call; transient failures go to ``pending`` for the retry rounds."""
    final = []
    for index, outcome in zip(indexes, outcomes, strict=True):
        if outcome.transient:
            pending.append(index)
        else:
            final.append((index, outcome))
    return final


def _adaptive_collections(
    client: SalesforceClient,
    name: str,
    records: Sequence[dict[str, Any]],
    operation: WriteOperation,
    external_id_field: str | None,
    announce: Callable[[Sequence[int]], None],
    pending: list[int],
    order: Iterable[int],
) -> Iterator[list[tuple[int, _Outcome]]]:
    """SObject Collections calls of ``write_batch_size`` records, halved while the org is busy.

    When at least half of a call's records fail with a busy code (:data:`BUSY_ERRORS`), those
    records go back to the front of the queue and the batch size halves, down to one record;
    every :data:`CLEAN_CALLS_TO_GROW` clean calls in a row double it again, up to the configured
    size (growing after every clean call would hit the limit every other call). At one record a
    busy error is the record's own: ``UNABLE_TO_LOCK_ROW`` waits for the retry rounds, the rest
    is final.
    """
    ceiling = client.settings.write_batch_size
    size = ceiling
    clean = 0
    queue = deque(order)
    while queue:
        indexes = [queue.popleft() for _ in range(min(size, len(queue)))]
        announce(indexes)
        outcomes = _collections_request(
            client, name, [records[i] for i in indexes], operation, external_id_field
        )
        busy = [
            index for index, outcome in zip(indexes, outcomes, strict=True) if _is_busy(outcome)
        ]
        if size > 1 and busy and 2 * len(busy) >= len(indexes):
            size, clean = max(1, size // 2), 0
            log.info(
                "%s: %d of %d records busy; write calls of %d now",
                name,
                len(busy),
                len(indexes),
                size,
            )
            queue.extendleft(reversed(busy))
            again = set(busy)
            yield [
                (index, outcome)
                for index, outcome in zip(indexes, outcomes, strict=True)
                if index not in again
            ]
            continue
        clean += 1
        if size < ceiling and clean >= CLEAN_CALLS_TO_GROW:
            size, clean = min(ceiling, size * 2), 0
        yield _settle(indexes, outcomes, pending)


def _write(
    client: SalesforceClient,
    name: str,
    records: Sequence[dict[str, Any]],
    operation: WriteOperation,
    external_id_field: str | None,
    before_send: Callable[[Sequence[dict[str, Any]]], None] | None = None,
) -> Iterator[list[tuple[int, _Outcome]]]:
    """Write records on the chosen path; yield (input index, final outcome) batches.

    Successes and permanent failures are yielded as soon as they are known. Transient failures
    (``UNABLE_TO_LOCK_ROW``, unprocessed bulk rows) are held back and retried after the first
    pass, with a backoff before each round: in batches of 25, then one by one (a bulk job again
    when there are still more than ``bulk_write_threshold``). Every record is yielded exactly
    once, with its final outcome. ``before_send`` sees every request's records just before it
    goes out (the caller's write-ahead record).
    """
    settings = client.settings

    def announce(indexes: Sequence[int]) -> None:
        if before_send is not None:
            before_send([records[i] for i in indexes])

    # First pass: one path for the whole set, in the chunks that path takes.
    pending: list[int] = []
    if choose_write_path(len(records), settings.bulk_write_threshold) == "bulk":
        busy: list[int] = []
        for start in range(0, len(records), BULK_RECORDS_PER_JOB):
            indexes = list(range(start, min(start + BULK_RECORDS_PER_JOB, len(records))))
            announce(indexes)
            outcomes = _bulk_ingest(
                client, name, [records[i] for i in indexes], operation, external_id_field
            )
            # Bulk API runs triggers on 200-record chunks it cannot make smaller: records that
            # failed because the org was busy go again through Collections, halving as needed.
            again = {i for i, o in zip(indexes, outcomes, strict=True) if _is_busy(o)}
            busy += sorted(again)
            yield _settle(
                [i for i in indexes if i not in again],
                [o for i, o in zip(indexes, outcomes, strict=True) if i not in again],
                pending,
            )
        if busy:
            yield from _adaptive_collections(
                client, name, records, operation, external_id_field, announce, pending, busy
            )
    else:
        yield from _adaptive_collections(
            client,
            name,
            records,
            operation,
            external_id_field,
            announce,
            pending,
            range(len(records)),
        )
    last: dict[int, _Outcome] = {}
    for round_number, size in enumerate(settings.record_retry_batch_sizes, start=1):
        if not pending:
            return
        client.sleep(
            min(
                settings.record_retry_backoff_seconds * 2 ** (round_number - 1),
                settings.record_retry_max_backoff_seconds,
            )
        )
        log.info("retrying %d %s records after transient errors", len(pending), name)
        if choose_write_path(len(pending), settings.bulk_write_threshold) == "bulk":
            announce(pending)
            retried = list(
                zip(
                    pending,
                    _bulk_ingest(
                        client, name, [records[i] for i in pending], operation, external_id_field
                    ),
                    strict=True,
                )
            )
        else:
            retried = []
            for start in range(0, len(pending), size):
                part = pending[start : start + size]
                announce(part)
                outcomes = _collections_request(
                    client, name, [records[i] for i in part], operation, external_id_field
                )
                retried.extend(zip(part, outcomes, strict=True))
        pending = []
        final = []
        for index, outcome in retried:
            if outcome.transient:
                pending.append(index)
                last[index] = outcome
            else:
                final.append((index, outcome))
        if final:
            yield final
    if pending:
        # Still transient after every round: reported as failed with the error; the write-back
        # ledger sends them again on the next run.
        yield [(index, last[index]) for index in pending]


def write_records(
    client: SalesforceClient,
    sobject: str,
    records: Sequence[dict[str, Any]],
    *,
    operation: Literal["update", "upsert"] = "update",
    external_id_field: str | None = None,
    before_send: Callable[[Sequence[dict[str, Any]]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Update (or upsert) records: sObject Collections or Bulk API 2.0 ingest, by size.

    The path is chosen by ``salesforce.bulk_write_threshold`` (:func:`choose_write_path`).

    Args:
        client: connected client.
        sobject: object API name.
        records: dicts with ``Id`` (update) or the external id field (upsert) and the fields to
            set (describe spelling); ids must be unique.
        operation: ``update``, or ``upsert`` by ``external_id_field``.
        external_id_field: the upsert key (an external id or idLookup field, or ``Id``).
        before_send: called with the records of each request just before it goes out (the caller
            records the attempt, so that a crash mid-request can be reconciled by reading back).

    Yields:
        Batches of final per-record outcomes ``{"id", "success", "error"}`` (error is
        ``"CODE: message"`` or None), where ``id`` is the record's ``Id`` (update) or key value
        (upsert). Every record appears exactly once; transient failures come in later batches,
        after their retries. The caller records each batch before asking for the next.

    Raises:
        LeadscoreError: a request failed after retries; records not yet yielded were not
            confirmed (and may or may not have been written).
    """
    name = describe_object(client, sobject).name
    key = "Id" if operation == "update" else (external_id_field or "Id")
    if operation == "upsert":
        quote_identifier(key)
    for batch in _write(client, name, records, operation, external_id_field, before_send):
        yield [
            {
                "id": str(records[index].get(key)),
                "success": outcome.success,
                "error": outcome.error,
            }
            for index, outcome in batch
        ]


def sync_campaign_members(
    client: SalesforceClient, campaign_id: str, member_ids: Iterable[str]
) -> list[dict[str, Any]]:
    """Make a Campaign's members equal a set of lead and contact ids.

    The existing memberships are queried first; missing ones are created (``DUPLICATE_VALUE``
    means "already a member", a success) and extra ones deleted, through the same write paths as
    :func:`write_records`.

    Args:
        client: connected client.
        campaign_id: the Campaign (``701...``).
        member_ids: lead (``00Q``) and contact (``003``) ids; 15- or 18-character.

    Returns:
        One outcome per change: ``{"id", "action", "success", "error"}`` where ``id`` is the lead
        or contact id and ``action`` is ``add`` or ``remove``.

    Raises:
        ConfigError: the campaign id or a member id is malformed.
    """
    if not _ID.match(campaign_id) or not campaign_id.startswith("701"):
        raise ConfigError(
            f"'{campaign_id}' is not a Campaign id", hint="Campaign ids start with 701"
        )
    campaign = _id18(campaign_id)
    wanted: dict[str, str] = {}
    for raw in member_ids:
        if not _ID.match(raw) or raw[:3] not in ("00Q", "003"):
            raise ConfigError(
                f"'{raw}' is not a lead (00Q...) or contact (003...) id",
                hint="campaign members are leads or contacts",
            )
        member = _id18(raw)
        wanted[member] = "LeadId" if member.startswith("00Q") else "ContactId"
    describe_object(client, "CampaignMember")
    soql = format_soql(
        "SELECT Id, LeadId, ContactId FROM CampaignMember WHERE CampaignId = {}", campaign
    )
    current: dict[str, str] = {}  # lead or contact id -> member id
    extra: list[tuple[str, str]] = []  # (member id, lead or contact id)
    with translate_errors(f"campaign members of {campaign}"):
        for record in client.sf.query_all_iter(soql):
            ids = [i for i in (record.get("LeadId"), record.get("ContactId")) if i]
            if any(i in wanted for i in ids):
                for i in ids:
                    current[i] = record["Id"]
            else:
                extra.append((record["Id"], ids[0] if ids else record["Id"]))
    to_add = [member for member in wanted if member not in current]
    outcomes: list[dict[str, Any]] = []
    creates = [{"CampaignId": campaign, wanted[m]: m} for m in to_add]
    for batch in _write(client, "CampaignMember", creates, "create", None):
        for index, outcome in batch:
            # A concurrent or earlier add: the lead or contact is a member, which is the goal.
            success = outcome.success or outcome.code == "DUPLICATE_VALUE"
            outcomes.append(
                {
                    "id": to_add[index],
                    "action": "add",
                    "success": success,
                    "error": None if success else outcome.error,
                }
            )
    deletes = [{"Id": member} for member, _ in extra]
    for batch in _write(client, "CampaignMember", deletes, "delete", None):
        for index, outcome in batch:
            success = outcome.success or outcome.code == "ENTITY_IS_DELETED"
            outcomes.append(
                {
                    "id": extra[index][1],
                    "action": "remove",
                    "success": success,
                    "error": None if success else outcome.error,
                }
            )
    return outcomes
