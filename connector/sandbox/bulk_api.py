"""Bulk API 2.0 for the sandbox: ingest and query jobs, as simple-salesforce 1.12.10 drives them.

Request and response shapes follow ``shared/docs/api-contracts.md`` section 1.6 and
``simple_salesforce/bulk2.py``:

- ingest: ``POST jobs/ingest`` (200, state ``Open``, ``contentUrl``), ``PUT .../batches`` with
  the CSV (**201**, empty body), ``PATCH`` ``{"state": "UploadComplete"}`` (or ``Aborted``),
  ``GET`` job info until ``JobComplete``, then ``successfulResults`` (``sf__Id, sf__Created``),
  ``failedResults`` (``sf__Id, sf__Error``) and ``unprocessedrecords`` (any letter case) as CSV;
- query: ``POST jobs/query`` (state ``UploadComplete``), ``GET`` job info until ``JobComplete``,
  then ``GET .../results?maxRecords=N[&locator=L]`` answering CSV with the
  ``Sforce-NumberOfRecords`` header and ``Sforce-Locator`` (``null`` on the last page).

Rows of an ingest job are applied when the upload is marked complete, through the same
per-record write path as sObject Collections (validation, ``write_log``, the fault plan's
``UNABLE_TO_LOCK_ROW``), 200 rows per transaction as Salesforce does. A job reports
``JobComplete`` from the ``polls_to_complete``-th job-info request on. CSV values: empty means
"not set" and ``#N/A`` means null on ingest; query results quote every value, with datetimes as
``2024-05-20T20:49:32.000Z``, booleans as ``true``/``false`` and nulls as empty values.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import io
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# salesforce_api imports this module lazily (in SalesforceApi.__init__), so no import cycle.
from connector.sandbox.ids import make_id
from connector.sandbox.salesforce_api import (
    JSON_TYPE,
    ApiError,
    ApiRequest,
    ApiResponse,
    SalesforceApi,
    _Write,
)
from connector.sandbox.schema import FieldDef, ObjectDef
from connector.sandbox.soql import CompiledQuery, SoqlError, compile_query, format_datetime

CSV_TYPE = "text/csv;charset=UTF-8"
DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
DEFAULT_MAX_RECORDS = 50_000
ROWS_PER_TRANSACTION = 200  # Salesforce processes ingest data in chunks of 200 records
RECORDS_PER_BATCH = 10_000  # internal batches, counted against DailyBulkApiBatches
FETCH_CHUNK = 2_000  # rowids per SQLite statement (stays under the bound-variable limit)
NULL_VALUE = "#N/A"
RESULT_TYPES = {
    "successfulresults": "successful",
    "failedresults": "failed",
    "unprocessedrecords": "unprocessed",
}


@functools.lru_cache(maxsize=65536)
def _bulk_datetime(epoch_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch_seconds))


def _csv_formatter(definition: FieldDef) -> Any:
    """How a stored value is written into a query result CSV."""
    if definition.type == "datetime":
        return lambda value: "" if value is None else _bulk_datetime(int(value))
    if definition.type == "boolean":
        return lambda value: "" if value is None else ("true" if value else "false")
    return lambda value: "" if value is None else str(value)


@dataclass
class _Job:
    """One Bulk API 2.0 job."""

    id: str
    kind: str  # "ingest" or "query"
    operation: str
    obj: ObjectDef
    api_version: str
    created: float
    delimiter: str = "COMMA"
    line_ending: str = "LF"
    external_id_field: str | None = None
    query: str = ""
    state: str = "Open"
    polls_left: int = 1
    error_message: str | None = None
    # ingest
    uploads: list[bytes] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)
    failed: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    processing_ms: int = 0
    # query
    compiled: CompiledQuery | None = None
    rowids: np.ndarray | None = None

    @property
    def processed(self) -> int:
        if self.kind == "query":
            # A query job counts its records once it has run: 0 while UploadComplete or
            # InProgress (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_get_one_job.htm).
            if self.rowids is None or self.state != "JobComplete":
                return 0
            return len(self.rowids)
        return len(self.successful) + len(self.failed)


class BulkApi:
    """The ``/services/data/vXX.X/jobs/...`` resources of one sandbox org.

    Args:
        api: The REST surface (schema, database, write path, fault plan).
        polls_to_complete: Job-info requests after which a started job reports ``JobComplete``.

    Attributes:
        query_jobs_used: Query jobs created (``DailyBulkV2QueryJobs``).
        batches_used: Internal batches of 10,000 records processed (``DailyBulkApiBatches``).
    """

    MAX_QUERY_JOBS = 10_000
    MAX_BATCHES = 15_000

    def __init__(self, api: SalesforceApi, *, polls_to_complete: int = 1) -> None:
        self.api = api
        self.polls_to_complete = max(1, polls_to_complete)
        self.query_jobs_used = 0
        self.batches_used = 0
        self._jobs: dict[str, _Job] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    # Routing ---------------------------------------------------------------------------------

    def handle(self, request: ApiRequest, version: str, rest: list[str]) -> ApiResponse:
        """Serve ``jobs/ingest...`` and ``jobs/query...``.

        Args:
            request: The request.
            version: API version of the URL.
            rest: Path segments after ``jobs``.

        Returns:
            The response.
        """
        kind = rest[0]
        if kind not in ("ingest", "query"):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        method = request.method
        if len(rest) == 1:
            if method == "POST":
                return self._create(request, version, kind)
            self.api._require_method(request, "GET", "POST")
            return self._list(kind)
        job = self._job(kind, rest[1])
        if len(rest) == 2:
            if method == "GET":
                return self._info(job, poll=True)
            if method == "PATCH":
                return self._set_state(request, job)
            if method == "DELETE":
                with self._lock:
                    self._jobs.pop(job.id, None)
                return self._answer(204, b"")
            self.api._require_method(request, "GET", "PATCH", "DELETE")
        if len(rest) == 3 and kind == "ingest" and rest[2] == "batches":
            self.api._require_method(request, "PUT")
            return self._upload(request, job)
        if len(rest) == 3 and kind == "ingest" and rest[2].lower() in RESULT_TYPES:
            self.api._require_method(request, "GET")
            return self._ingest_results(job, RESULT_TYPES[rest[2].lower()])
        if len(rest) == 3 and kind == "query" and rest[2] == "results":
            self.api._require_method(request, "GET")
            return self._query_results(request, version, job)
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")

    def _job(self, kind: str, job_id: str) -> _Job:

        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.kind != kind:
            raise ApiError(404, "NOT_FOUND", f"Job with id {job_id} was not found")
        return job

    def _answer(self, status: int, payload: Any, content_type: str | None = None) -> ApiResponse:

        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return ApiResponse(status, body, content_type or JSON_TYPE)

    # Job lifecycle ---------------------------------------------------------------------------

    def _create(self, request: ApiRequest, version: str, kind: str) -> ApiResponse:

        body = self.api._parse_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        delimiter = str(body.get("columnDelimiter") or "COMMA")
        line_ending = str(body.get("lineEnding") or "LF")
        if delimiter not in DELIMITERS or line_ending not in LINE_ENDINGS:
            raise ApiError(400, "INVALIDJOB", "Invalid columnDelimiter or lineEnding")
        if str(body.get("contentType") or "CSV") != "CSV":
            raise ApiError(400, "INVALIDJOB", "Only contentType CSV is supported")
        operation = str(body.get("operation") or "")
        with self._lock:
            job_id = make_id("750", next(self._numbers))
        if kind == "query":
            if operation not in ("query", "queryAll"):
                raise ApiError(400, "INVALIDJOB", f"Invalid operation for a query job: {operation}")
            source = str(body.get("query") or "")
            try:
                compiled = compile_query(
                    source, include_deleted=operation == "queryAll", objects=self.api.objects
                )
            except SoqlError as error:
                raise ApiError(400, error.error_code, error.message) from error
            if compiled.count_only:
                raise ApiError(400, "API_ERROR", "Aggregate queries are not supported")
            with self.api.db.lock:
                cursor = self.api.db.connection.execute(compiled.ids_sql, compiled.params)
                rowids = np.fromiter((row[0] for row in cursor), dtype=np.int64)
            job = _Job(
                job_id,
                kind,
                operation,
                compiled.sobject,
                version,
                time.time(),
                delimiter,
                line_ending,
                query=source,
                state="UploadComplete",
                polls_left=self.polls_to_complete,
                compiled=compiled,
                rowids=rowids,
            )
            with self._lock:
                self.query_jobs_used += 1
        else:
            if operation not in INGEST_OPERATIONS:
                raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
            obj = self.api.get_object(str(body.get("object") or ""))
            if obj is None:
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"Entity '{body.get('object')}' is not supported by the Bulk API.",
                )
            external = body.get("externalIdFieldName")
            if operation == "upsert":
                definition = obj.field(str(external or ""))
                if definition is None or not (definition.external_id or definition.id_lookup):
                    raise ApiError(
                        400,
                        "INVALIDJOB",
                        f"External ID field '{external}' is not valid for {obj.name}",
                    )
                external = definition.name
            job = _Job(
                job_id,
                kind,
                operation,
                obj,
                version,
                time.time(),
                delimiter,
                line_ending,
                external_id_field=external if operation == "upsert" else None,
                polls_left=self.polls_to_complete,
            )
        with self._lock:
            self._jobs[job_id] = job
        return self._info(job, poll=False)

    def _list(self, kind: str) -> ApiResponse:
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.kind == kind]
        records = [self._info_body(job) for job in jobs]
        return self._answer(200, {"done": True, "records": records, "nextRecordsUrl": None})

    def _info_body(self, job: _Job) -> dict[str, Any]:
        created = format_datetime(int(job.created))
        body: dict[str, Any] = {
            "id": job.id,
            "operation": job.operation,
            "object": job.obj.name,
            "createdById": self.api.credentials.user_id,
            "createdDate": created,
            "systemModstamp": created,
            "state": job.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(job.api_version),
            "jobType": "V2Query" if job.kind == "query" else "V2Ingest",
            "lineEnding": job.line_ending,
            "columnDelimiter": job.delimiter,
            "numberRecordsProcessed": job.processed,
            "retries": 0,
            "totalProcessingTime": job.processing_ms,
        }
        if job.kind == "ingest":
            body["numberRecordsFailed"] = len(job.failed)
            body["apiActiveProcessingTime"] = job.processing_ms
            body["apexProcessingTime"] = 0
            body["contentUrl"] = f"services/data/v{job.api_version}/jobs/ingest/{job.id}/batches"
            if job.external_id_field:
                body["externalIdFieldName"] = job.external_id_field
        else:
            body["query"] = job.query
        if job.error_message:
            body["errorMessage"] = job.error_message
        return body

    def _info(self, job: _Job, *, poll: bool) -> ApiResponse:
        with self._lock:
            if poll and job.state in ("UploadComplete", "InProgress"):
                if job.kind == "ingest" and job.state == "UploadComplete":
                    job.state = "InProgress"
                job.polls_left -= 1
                if job.polls_left <= 0:
                    job.state = "JobComplete"
            body = self._info_body(job)
        return self._answer(200, body)

    def _set_state(self, request: ApiRequest, job: _Job) -> ApiResponse:

        body = self.api._parse_body(request)
        state = body.get("state") if isinstance(body, dict) else None
        if state == "Aborted":
            with self._lock:
                if job.state in ("JobComplete", "Failed"):
                    raise ApiError(409, "INVALIDJOBSTATE", f"Job {job.id} is already {job.state}")
                if job.kind == "ingest" and job.state == "Open":
                    job.unprocessed = self._rows(job)[1]
                job.state = "Aborted"
            return self._info(job, poll=False)
        if state == "UploadComplete" and job.kind == "ingest":
            if job.state != "Open":
                raise ApiError(409, "INVALIDJOBSTATE", f"Job {job.id} is not Open")
            self._process(job)
            return self._info(job, poll=False)
        raise ApiError(400, "INVALIDJOBSTATE", f"Cannot set the state of job {job.id} to {state}")

    # Ingest ----------------------------------------------------------------------------------

    def _upload(self, request: ApiRequest, job: _Job) -> ApiResponse:

        if job.state != "Open":
            raise ApiError(409, "INVALIDJOBSTATE", f"Job {job.id} is not Open")
        content_type = request.headers.get("Content-Type", "")
        if not content_type.lower().startswith("text/csv"):
            raise ApiError(400, "INVALIDJOB", "Job data must be uploaded as text/csv")
        with self._lock:
            job.uploads.append(request.body)
        return self._answer(201, b"")

    def _rows(self, job: _Job) -> tuple[list[str], list[list[str]]]:
        """The uploaded CSV as (header, rows); several uploads share the first header."""
        header: list[str] = []
        rows: list[list[str]] = []
        for upload in job.uploads:
            reader = csv.reader(
                io.StringIO(upload.decode("utf-8-sig")),
                delimiter=DELIMITERS[job.delimiter],
                lineterminator=LINE_ENDINGS[job.line_ending],
            )
            part = list(reader)
            if not part:
                continue
            if not header:
                header = part[0]
            rows.extend(row for row in part[1:] if row)
        return header, rows

    def _process(self, job: _Job) -> None:
        """Apply an ingest job's rows (when its upload is marked complete)."""
        started = time.perf_counter()
        header, rows = self._rows(job)
        job.header = header
        problem = check_header(job.obj, job.operation, job.external_id_field, header)
        if problem is not None:
            job.state, job.error_message, job.unprocessed = "Failed", problem, rows
            return
        writes = writes_for_rows(job.obj, job.operation, job.external_id_field, header, rows)
        for write, result, row in zip(writes, apply_writes(self.api, writes), rows, strict=True):
            if result["success"]:
                created = "true" if result.get("created", write.op == "create") else "false"
                job.successful.append([result["id"], created, *row])
            else:
                job.failed.append([write.record_id or "", error_text(result), *row])
        with self._lock:
            self.batches_used += max(1, -(-len(rows) // RECORDS_PER_BATCH))
            job.state = "UploadComplete"
            job.processing_ms = int(1000 * (time.perf_counter() - started))

    def _ingest_results(self, job: _Job, which: str) -> ApiResponse:
        if which == "successful":
            header, rows = ["sf__Id", "sf__Created", *job.header], job.successful
        elif which == "failed":
            header, rows = ["sf__Id", "sf__Error", *job.header], job.failed
        else:
            header = job.header or self._rows(job)[0]
            rows = job.unprocessed
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        writer.writerows(rows)
        return self._answer(200, buffer.getvalue().encode(), CSV_TYPE)

    # Query -----------------------------------------------------------------------------------

    def _query_results(self, request: ApiRequest, version: str, job: _Job) -> ApiResponse:

        if version != job.api_version:
            raise ApiError(
                409, "INVALIDJOBSTATE", "Results must be read with the job's API version"
            )
        if job.state != "JobComplete":
            raise ApiError(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete: {job.state}")
        assert job.rowids is not None and job.compiled is not None
        raw_max = (request.query.get("maxRecords") or [str(DEFAULT_MAX_RECORDS)])[0]
        if not raw_max.isdigit() or int(raw_max) < 1:
            raise ApiError(400, "INVALIDPARAMETER", f"Invalid maxRecords: {raw_max}")
        max_records = int(raw_max)
        locator = (request.query.get("locator") or [""])[0]
        offset = 0
        if locator and locator != "null":
            try:
                offset = int(base64.b64decode(locator + "=" * (-len(locator) % 4)).decode())
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from None
            if not 0 <= offset <= len(job.rowids):
                raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}")
        chunk = job.rowids[offset : offset + max_records]
        end = offset + len(chunk)
        payload = self._csv_page(job, chunk)
        next_locator = (
            base64.b64encode(str(end).encode()).decode().rstrip("=")
            if end < len(job.rowids)
            else "null"
        )
        response = self._answer(200, payload, CSV_TYPE)
        response.headers["Sforce-Locator"] = next_locator
        response.headers["Sforce-NumberOfRecords"] = str(len(chunk))
        return response

    def _csv_page(self, job: _Job, rowids: np.ndarray) -> bytes:
        compiled = job.compiled
        assert compiled is not None
        targets = {rel.name: rel.target for rel in compiled.relationships}
        header: list[str] = []
        formatters = []
        for column in compiled.columns:
            if column.relationship is None:
                definition = compiled.sobject.field(column.field_name)
                header.append(column.field_name)
            else:
                definition = targets[column.relationship].field(column.field_name)
                header.append(f"{column.relationship}.{column.field_name}")
            assert definition is not None
            formatters.append(_csv_formatter(definition))
        buffer = io.StringIO()
        writer = csv.writer(
            buffer,
            delimiter=DELIMITERS[job.delimiter],
            lineterminator=LINE_ENDINGS[job.line_ending],
            quoting=csv.QUOTE_ALL,
        )
        writer.writerow(header)
        width = len(formatters)
        pairs = list(enumerate(formatters, start=2))
        ids = rowids.tolist()
        for start in range(0, len(ids), FETCH_CHUNK):
            part = ids[start : start + FETCH_CHUNK]
            with self.api.db.lock:
                rows = self.api.db.connection.execute(compiled.page_sql(len(part)), part)
                by_rowid = {row[0]: row for row in rows.fetchall()}
            writer.writerows(
                [fmt(row[i]) for i, fmt in pairs]
                for row in (by_rowid.get(rowid) for rowid in part)
                if row is not None and len(row) >= width + 2
            )
        return buffer.getvalue().encode()


# Ingest rows, shared with Bulk API 1.0 (bulk_v1.py) ------------------------------------------


def check_header(
    obj: ObjectDef, operation: str, external_id_field: str | None, header: list[str]
) -> str | None:
    """Check an ingest CSV header; return the job's or batch's failure message, or None.

    Args:
        obj: The job's object.
        operation: ``insert``, ``update``, ``upsert``, ``delete`` or ``hardDelete``.
        external_id_field: The upsert key.
        header: Column names of the data.

    Returns:
        ``"InvalidBatch : ..."``, or None when the header fits the operation.
    """
    if not header:
        return "InvalidBatch : No data was uploaded"
    for name in header:
        if obj.field(name) is None:
            return f"InvalidBatch : Field name not found : {name}"
    lowered = [name.lower() for name in header]
    if operation in ("update", "delete", "hardDelete") and "id" not in lowered:
        return "InvalidBatch : Field name not found : Id"
    if operation in ("delete", "hardDelete") and lowered != ["id"]:
        return "InvalidBatch : The 'delete' batch must contain only 'Id'"
    if operation == "upsert" and (external_id_field or "").lower() not in lowered:
        return f"InvalidBatch : Field name not found : {external_id_field}"
    return None


def writes_for_rows(
    obj: ObjectDef,
    operation: str,
    external_id_field: str | None,
    header: list[str],
    rows: list[list[str]],
) -> list[_Write]:
    """Turn ingest rows (text values, checked header) into record writes, in row order.

    An empty value leaves a field unchanged and ``#N/A`` sets it to null, as Bulk API data does.

    Args:
        obj: The job's object.
        operation: The job's operation.
        external_id_field: The upsert key.
        header: Column names (checked with :func:`check_header`).
        rows: Data rows.

    Returns:
        One write per row.
    """
    names = [obj.field(name).name for name in header]  # type: ignore[union-attr]
    writes: list[_Write] = []
    for row in rows:
        values: dict[str, Any] = {}
        for name, raw in zip(names, row, strict=False):
            if raw == "":
                continue
            values[name] = None if raw == NULL_VALUE else raw
        record_id = values.pop("Id", None)
        if operation in ("update", "delete", "hardDelete"):
            op = "update" if operation == "update" else "delete"
            writes.append(_Write(op, obj, values, record_id or ""))
        elif operation == "upsert":
            values["__external__"] = external_id_field
            if external_id_field == "Id" and record_id:
                values["Id"] = record_id
            writes.append(_Write("upsert", obj, values))
        else:
            if record_id:
                values["Id"] = record_id  # rejected by the create path: Id on insert
            writes.append(_Write("create", obj, values))
    return writes


def apply_writes(api: SalesforceApi, writes: list[_Write]) -> list[dict[str, Any]]:
    """Apply writes 200 per transaction, as Salesforce processes bulk data.

    Args:
        api: The org.
        writes: From :func:`writes_for_rows`.

    Returns:
        One result ``{id, success, errors[, created]}`` per write, in order.
    """
    results: list[dict[str, Any]] = []
    for start in range(0, len(writes), ROWS_PER_TRANSACTION):
        chunk = writes[start : start + ROWS_PER_TRANSACTION]
        results.extend(api._apply_writes(chunk, all_or_none=False, per_record_parse_errors=True))
    return results


def error_text(result: dict[str, Any]) -> str:
    """Render a failed result's first error as bulk results do: ``CODE:message:fields--``.

    Args:
        result: A failed write result.

    Returns:
        The error text.
    """
    error = result["errors"][0]
    fields = ",".join(error.get("fields") or [])
    return f"{error['statusCode']}:{error['message']}:{fields}--"
