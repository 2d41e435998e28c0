"""Bulk API 1.0 for the sandbox: ``/services/async/{version}/job...``, jobs and batches.

Shapes follow the Bulk API 1.0 guide
(https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/) and the two
clients that drive it (``shared/docs/api-contracts-realorg.md`` section 6): tap-salesforce's BULK
mode (CSV jobs: a JSON job body, XML ``batchInfo``/``result-list`` answers, CSV results, PK
chunking) and simple-salesforce's ``sf.bulk.<Object>`` handler (JSON jobs: JSON everywhere).

- Auth is the ``X-SFDC-Session`` header (an OAuth access token or session id); a bad one is a 400
  ``InvalidSessionId``.
- A job (``POST job``, JSON or XML ``jobInfo``) has an operation (``insert``, ``update``,
  ``upsert``, ``delete``, ``hardDelete``, ``query``, ``queryAll``), an object and a content type
  (``CSV`` or ``JSON``; ``simple-salesforce`` sends ``concurrencyMode`` as 0/1). Job-level answers
  use the request's format (JSON when the request is JSON, as tap reads ``json()['id']`` of a CSV
  job); batch-level answers use the job's (XML for CSV jobs, JSON for JSON jobs).
- A batch (``POST job/{id}/batch``) is the SOQL text of a query job, or CSV or JSON records of an
  ingest job (at most 10,000). It is processed as it arrives: the answer says ``Queued``, the first
  status request sees ``Completed`` (or ``Failed``, with ``stateMessage``), so clients finish
  on their first poll. Writes go through the org's per-record write path (validation,
  ``write_log``, injected faults), 200 per transaction.
- ``Sforce-Enable-PKChunking: true[; chunkSize=N]`` on a query job splits each query batch into
  batches of ``WHERE Id >= a AND Id < b`` ranges of at most ``chunkSize`` records of the object
  (default 100,000, at most 250,000); the original batch is ``NotProcessed``.
- Query results: ``GET .../batch/{id}/result`` lists result ids (``752...``), ``GET
  .../result/{rid}`` serves CSV (header row, every value quoted, datetimes ``...000Z``, nulls
  empty; ``Records not found for this query`` when empty) or a JSON array of records with
  ``attributes``, where datetimes and dates are epoch milliseconds, as real orgs send them
  (simple-salesforce issue #290).
- Ingest results: CSV ``"Id","Success","Created","Error"`` or JSON
  ``[{"success", "created", "id", "errors": [{"statusCode", "message", "fields"}]}]``, in batch
  order.
- Errors are ``{"exceptionCode", "exceptionMessage"}`` (``Content-Type: application/json``, no
  charset, as tap's ``job_exists`` compares it) for JSON requests and jobs, else the XML
  ``<error>`` with the same two elements.
"""

from __future__ import annotations

import bisect
import calendar
import csv
import io
import itertools
import json
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from connector.sandbox.bulk_api import (
    CSV_TYPE,
    FETCH_CHUNK,
    NULL_VALUE,
    _Job,
    apply_writes,
    check_header,
    error_text,
    writes_for_rows,
)
from connector.sandbox.ids import make_id
from connector.sandbox.salesforce_api import ApiRequest, ApiResponse, SalesforceApi
from connector.sandbox.schema import ObjectDef
from connector.sandbox.soql import CompiledQuery, SoqlError, compile_query
from connector.sandbox.versions import SUPPORTED_VERSIONS

NAMESPACE = "http://www.force.com/2009/06/asyncapi/dataload"
JSON_ERROR_TYPE = "application/json"  # exactly: tap compares the header to this string
XML_TYPE = "application/xml"
JSON_TYPE = "application/json"
OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete", "query", "queryAll")
QUERY_OPERATIONS = ("query", "queryAll")
CONTENT_TYPES = ("CSV", "JSON")
MAX_BATCH_RECORDS = 10_000
DEFAULT_CHUNK_SIZE = 100_000
MAX_CHUNK_SIZE = 250_000
EMPTY_CSV_RESULT = b"Records not found for this query"
_JOB_COUNTERS = (
    "numberBatchesQueued",
    "numberBatchesInProgress",
    "numberBatchesCompleted",
    "numberBatchesFailed",
    "numberBatchesTotal",
)


class BulkV1Error(Exception):
    """A request-level Bulk API 1.0 failure (``exceptionCode``, ``exceptionMessage``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Batch:
    """One batch of a job, processed when it arrives."""

    id: str
    job_id: str
    created: float
    request: bytes
    state: str = "Queued"
    state_message: str | None = None
    processed: int = 0
    failed: int = 0
    processing_ms: int = 0
    polled: bool = False  # the add answer says Queued; every later look sees the outcome
    # query batches
    compiled: CompiledQuery | None = None
    rowids: np.ndarray | None = None
    result_id: str | None = None
    # ingest batches: one (id, success, created, error) per record, in order
    results: list[tuple[str, bool, bool, str]] = field(default_factory=list)


@dataclass
class _V1Job:
    """One Bulk API 1.0 job."""

    id: str
    operation: str
    obj: ObjectDef
    content_type: str
    concurrency_mode: str
    api_version: str
    created: float
    external_id_field: str | None = None
    chunk_size: int | None = None
    state: str = "Open"
    batches: list[_Batch] = field(default_factory=list)


def _xml_datetime(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def _json_datetime(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(epoch))


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value), quote=False)


def _xml_element(tag: str, pairs: list[tuple[str, Any]]) -> str:
    inner = "".join(f"<{key}>{_xml_text(value)}</{key}>" for key, value in pairs)
    return f"<{tag}>{inner}</{tag}>"


def _xml_document(tag: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{tag} xmlns="{NAMESPACE}">{inner}</{tag}>'.encode()
    )


def _parse_chunking(header: str) -> int | None:
    """Read ``Sforce-Enable-PKChunking`` (``true``, ``chunkSize=N``, ``false``...); None: off."""
    enabled = False
    size = DEFAULT_CHUNK_SIZE
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        key = key.strip().lower()
        if key == "true":
            enabled = True
        elif key == "chunksize":
            enabled = True
            if not value.strip().isdigit() or not 1 <= int(value.strip()) <= MAX_CHUNK_SIZE:
                raise BulkV1Error(
                    400,
                    "InvalidJob",
                    f"Invalid chunkSize: {value.strip()}; it must be 1 to {MAX_CHUNK_SIZE}",
                )
            size = int(value.strip())
    return size if enabled else None


class BulkV1Api:
    """The ``/services/async/{version}/...`` resources of one sandbox org.

    Args:
        api: The REST surface (sessions, schema, database, write path).
    """

    def __init__(self, api: SalesforceApi) -> None:
        self.api = api
        self._jobs: dict[str, _V1Job] = {}
        self._batches: dict[str, _Batch] = {}
        self._job_numbers = itertools.count(1_000_000)  # apart from Bulk 2.0's 750 ids
        self._batch_numbers = itertools.count(1)
        self._result_numbers = itertools.count(1)
        self._lock = threading.Lock()

    # Routing ---------------------------------------------------------------------------------

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Serve one ``/services/async/...`` request (never raises).

        Args:
            request: The request.

        Returns:
            The response.
        """
        job: _V1Job | None = None
        try:
            segments = [segment for segment in request.path.split("/")[3:] if segment]
            if not segments or segments[0] not in SUPPORTED_VERSIONS or segments[1:2] != ["job"]:
                raise BulkV1Error(404, "InvalidUrl", f"Invalid URL: {request.path}")
            self._authenticate(request)
            version, rest = segments[0], segments[2:]
            if not rest:
                self._require(request, "POST")
                return self._create_job(request, version)
            job = self._job(rest[0])
            if len(rest) == 1:
                if request.method == "POST":
                    return self._update_job(request, job)
                self._require(request, "GET", "POST")
                return self._job_answer(request, job, 200)
            if rest[1] != "batch" or len(rest) > 5:
                raise BulkV1Error(404, "InvalidUrl", f"Invalid URL: {request.path}")
            if len(rest) == 2:
                if request.method == "POST":
                    return self._add_batch(request, job)
                self._require(request, "GET", "POST")
                return self._batch_list(job)
            batch = self._batch(job, rest[2])
            if len(rest) == 3:
                self._require(request, "GET")
                return self._batch_answer(job, batch, 200)
            self._require(request, "GET")
            if rest[3] == "request" and len(rest) == 4:
                return ApiResponse(200, batch.request, self._batch_content_type(job))
            if rest[3] == "result" and len(rest) == 4:
                return self._result_list(job, batch)
            if rest[3] == "result" and len(rest) == 5:
                return self._result(job, batch, rest[4])
            raise BulkV1Error(404, "InvalidUrl", f"Invalid URL: {request.path}")
        except BulkV1Error as error:
            return self._error(request, job, error)

    def _authenticate(self, request: ApiRequest) -> None:
        token = request.headers.get("X-SFDC-Session", "").strip()
        if not token:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            token = value.strip() if scheme.lower() in ("bearer", "oauth") else ""
        if not token or not self.api._token_is_valid(token):
            raise BulkV1Error(400, "InvalidSessionId", "Invalid session id")
        # Field-level security and object access apply as for REST: the token's user.
        self.api.security.act_as(token)

    @staticmethod
    def _require(request: ApiRequest, *methods: str) -> None:
        if request.method not in methods:
            raise BulkV1Error(
                405, "InvalidUrl", f"HTTP method {request.method} is not allowed here"
            )

    def _job(self, job_id: str) -> _V1Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise BulkV1Error(400, "InvalidJob", f"Invalid job id: {job_id}")
        return job

    def _batch(self, job: _V1Job, batch_id: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or batch.job_id != job.id:
            raise BulkV1Error(400, "InvalidBatch", f"Invalid batch id: {batch_id}")
        return batch

    # Formats ---------------------------------------------------------------------------------

    @staticmethod
    def _request_format(request: ApiRequest) -> str | None:
        content_type = request.headers.get("Content-Type", "").lower()
        if "json" in content_type:
            return "JSON"
        if "xml" in content_type:
            return "XML"
        return None

    def _job_format(self, request: ApiRequest, job: _V1Job) -> str:
        return self._request_format(request) or ("JSON" if job.content_type == "JSON" else "XML")

    @staticmethod
    def _batch_content_type(job: _V1Job) -> str:
        return JSON_TYPE if job.content_type == "JSON" else CSV_TYPE

    def _error(self, request: ApiRequest, job: _V1Job | None, error: BulkV1Error) -> ApiResponse:
        chosen = self._request_format(request)
        if chosen is None:
            chosen = "JSON" if job is not None and job.content_type == "JSON" else "XML"
        if chosen == "JSON":
            body = {"exceptionCode": error.code, "exceptionMessage": error.message}
            return ApiResponse(error.status, json.dumps(body).encode(), JSON_ERROR_TYPE)
        inner = (
            f"<exceptionCode>{escape(error.code)}</exceptionCode>"
            f"<exceptionMessage>{escape(error.message)}</exceptionMessage>"
        )
        return ApiResponse(error.status, _xml_document("error", inner), XML_TYPE)

    # Jobs ------------------------------------------------------------------------------------

    def _parse_job_body(self, request: ApiRequest) -> dict[str, Any]:
        if self._request_format(request) == "XML" or request.body.lstrip().startswith(b"<"):
            try:
                # Local test server: expat >= 2.4.1 already refuses entity-expansion attacks.
                root = ElementTree.fromstring(request.body)  # noqa: S314
            except ElementTree.ParseError as error:
                raise BulkV1Error(
                    400, "InvalidXML", f"Unable to parse the jobInfo: {error}"
                ) from None
            return {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in root}
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            raise BulkV1Error(400, "ClientInputError", "Unable to parse the JSON jobInfo") from None
        if not isinstance(body, dict):
            raise BulkV1Error(400, "ClientInputError", "The jobInfo must be a JSON object")
        return body

    def _create_job(self, request: ApiRequest, version: str) -> ApiResponse:
        body = self._parse_job_body(request)
        operation = str(body.get("operation") or "")
        if operation not in OPERATIONS:
            raise BulkV1Error(400, "InvalidJob", f"Invalid operation: {operation}")
        obj = self.api.get_object(str(body.get("object") or ""))
        if obj is None:
            raise BulkV1Error(400, "InvalidJob", f"Unable to find object: {body.get('object')}")
        content_type = str(body.get("contentType") or "CSV")
        if content_type not in CONTENT_TYPES:
            raise BulkV1Error(
                400,
                "InvalidJob",
                f"contentType {content_type} is not supported by the sandbox (CSV or JSON)",
            )
        mode = str(body.get("concurrencyMode", "Parallel"))
        # simple-salesforce sends 0 (parallel) or 1 (serial).
        concurrency = "Serial" if mode in ("Serial", "1") else "Parallel"
        external: str | None = None
        if operation == "upsert":
            definition = obj.field(str(body.get("externalIdFieldName") or ""))
            if definition is None or not (definition.external_id or definition.id_lookup):
                raise BulkV1Error(
                    400,
                    "InvalidJob",
                    f"External ID field '{body.get('externalIdFieldName')}' is not valid for "
                    f"{obj.name}",
                )
            external = definition.name
        chunking = request.headers.get("Sforce-Enable-PKChunking", "")
        chunk_size = _parse_chunking(chunking) if chunking else None
        if chunk_size is not None and operation not in QUERY_OPERATIONS:
            raise BulkV1Error(400, "InvalidJob", "PK chunking is only supported for query jobs")
        with self._lock:
            job = _V1Job(
                make_id("750", next(self._job_numbers)),
                operation,
                obj,
                content_type,
                concurrency,
                version,
                time.time(),
                external_id_field=external,
                chunk_size=chunk_size,
            )
            self._jobs[job.id] = job
        return self._job_answer(request, job, 201)

    def _update_job(self, request: ApiRequest, job: _V1Job) -> ApiResponse:
        state = str(self._parse_job_body(request).get("state") or "")
        if state not in ("Closed", "Aborted"):
            raise BulkV1Error(400, "InvalidJobState", f"Invalid state for a job update: {state}")
        with self._lock:
            if job.state != "Open" and state != job.state:
                raise BulkV1Error(
                    400, "InvalidJobState", f"Job {job.id} is {job.state}; it cannot be {state}"
                )
            job.state = state
        return self._job_answer(request, job, 200)

    def _job_info(self, job: _V1Job, as_json: bool) -> list[tuple[str, Any]]:
        with self._lock:
            states = [self._visible_state(batch) for batch in job.batches]
            processed = sum(batch.processed for batch in job.batches)
            failed = sum(batch.failed for batch in job.batches)
            total_ms = sum(batch.processing_ms for batch in job.batches)
        created = _json_datetime(job.created) if as_json else _xml_datetime(job.created)
        pairs: list[tuple[str, Any]] = [
            ("id", job.id),
            ("operation", job.operation),
            ("object", job.obj.name),
        ]
        if job.external_id_field:
            pairs.append(("externalIdFieldName", job.external_id_field))
        pairs += [
            ("createdById", self.api.credentials.user_id),
            ("createdDate", created),
            ("systemModstamp", created),
            ("state", job.state),
            ("concurrencyMode", job.concurrency_mode),
            ("contentType", job.content_type),
            ("numberBatchesQueued", states.count("Queued")),
            ("numberBatchesInProgress", states.count("InProgress")),
            ("numberBatchesCompleted", states.count("Completed")),
            ("numberBatchesFailed", states.count("Failed")),
            ("numberBatchesTotal", len(states)),
            ("numberRecordsProcessed", processed),
            ("numberRetries", 0),
            ("apiVersion", float(job.api_version) if as_json else job.api_version),
            ("numberRecordsFailed", failed),
            ("totalProcessingTime", total_ms),
            ("apiActiveProcessingTime", total_ms),
            ("apexProcessingTime", 0),
        ]
        return pairs

    def _job_answer(self, request: ApiRequest, job: _V1Job, status: int) -> ApiResponse:
        if self._job_format(request, job) == "JSON":
            return ApiResponse(status, json.dumps(dict(self._job_info(job, True))).encode())
        inner = "".join(
            f"<{key}>{_xml_text(value)}</{key}>" for key, value in self._job_info(job, False)
        )
        return ApiResponse(status, _xml_document("jobInfo", inner), XML_TYPE)

    # Batches ---------------------------------------------------------------------------------

    @staticmethod
    def _visible_state(batch: _Batch) -> str:
        return batch.state if batch.polled else "Queued"

    def _batch_info(self, batch: _Batch, as_json: bool) -> list[tuple[str, Any]]:
        created = _json_datetime(batch.created) if as_json else _xml_datetime(batch.created)
        state = self._visible_state(batch)
        pairs: list[tuple[str, Any]] = [
            ("id", batch.id),
            ("jobId", batch.job_id),
            ("state", state),
        ]
        if batch.state_message and state == batch.state:
            pairs.append(("stateMessage", batch.state_message))
        done = state != "Queued"
        pairs += [
            ("createdDate", created),
            ("systemModstamp", created),
            ("numberRecordsProcessed", batch.processed if done else 0),
            ("numberRecordsFailed", batch.failed if done else 0),
            ("totalProcessingTime", batch.processing_ms if done else 0),
            ("apiActiveProcessingTime", batch.processing_ms if done else 0),
            ("apexProcessingTime", 0),
        ]
        return pairs

    def _batch_answer(self, job: _V1Job, batch: _Batch, status: int) -> ApiResponse:
        if status == 200:
            batch.polled = True
        as_json = job.content_type == "JSON"
        if as_json:
            return ApiResponse(status, json.dumps(dict(self._batch_info(batch, True))).encode())
        inner = "".join(
            f"<{key}>{_xml_text(value)}</{key}>" for key, value in self._batch_info(batch, False)
        )
        return ApiResponse(status, _xml_document("batchInfo", inner), XML_TYPE)

    def _batch_list(self, job: _V1Job) -> ApiResponse:
        with self._lock:
            batches = list(job.batches)
        for batch in batches:
            batch.polled = True
        if job.content_type == "JSON":
            payload = {"batchInfo": [dict(self._batch_info(batch, True)) for batch in batches]}
            return ApiResponse(200, json.dumps(payload).encode())
        inner = "".join(
            _xml_element("batchInfo", self._batch_info(batch, False)) for batch in batches
        )
        return ApiResponse(200, _xml_document("batchInfoList", inner), XML_TYPE)

    def _new_batch(self, job: _V1Job, body: bytes) -> _Batch:
        with self._lock:
            batch = _Batch(make_id("751", next(self._batch_numbers)), job.id, time.time(), body)
            self._batches[batch.id] = batch
            job.batches.append(batch)
            self.api.bulk.batches_used += 1  # DailyBulkApiBatches is shared with Bulk 2.0
        return batch

    def _add_batch(self, request: ApiRequest, job: _V1Job) -> ApiResponse:
        if job.state != "Open":
            raise BulkV1Error(400, "InvalidJobState", f"Job {job.id} is {job.state}, not Open")
        batch = self._new_batch(job, request.body)
        started = time.perf_counter()
        if job.operation in QUERY_OPERATIONS:
            self._run_query(job, batch)
        else:
            self._run_ingest(job, batch)
        batch.processing_ms = int(1000 * (time.perf_counter() - started))
        return self._batch_answer(job, batch, 201)

    # Query batches ---------------------------------------------------------------------------

    def _compile(self, job: _V1Job, batch: _Batch) -> CompiledQuery | None:
        source = batch.request.decode("utf-8", errors="replace")
        try:
            compiled = compile_query(
                source, include_deleted=job.operation == "queryAll", objects=self.api.objects
            )
        except SoqlError as error:
            batch.state = "Failed"
            batch.state_message = f"InvalidBatch : Failed to process query: {error.error_code}: "
            batch.state_message += error.message
            return None
        if compiled.count_only or compiled.sobject is not job.obj:
            batch.state = "Failed"
            batch.state_message = (
                "InvalidBatch : Failed to process query: the query must select fields of "
                f"{job.obj.name}, the job's object"
            )
            return None
        return compiled

    def _matching_rowids(self, compiled: CompiledQuery) -> np.ndarray:
        with self.api.db.lock:
            cursor = self.api.db.connection.execute(compiled.ids_sql, compiled.params)
            return np.fromiter((row[0] for row in cursor), dtype=np.int64)

    def _complete_query(self, batch: _Batch, compiled: CompiledQuery, rowids: np.ndarray) -> None:
        batch.compiled, batch.rowids = compiled, rowids
        batch.processed = len(rowids)
        with self._lock:
            batch.result_id = make_id("752", next(self._result_numbers))
        batch.state = "Completed"

    def _run_query(self, job: _V1Job, batch: _Batch) -> None:
        compiled = self._compile(job, batch)
        if compiled is None:
            return
        rowids = self._matching_rowids(compiled)
        if job.chunk_size is None:
            self._complete_query(batch, compiled, rowids)
            return
        # PK chunking: the original batch is not processed; one batch per Id range does it.
        batch.state = "NotProcessed"
        table = f'"{job.obj.table}"'
        live = (
            ""
            if job.operation == "queryAll" or not job.obj.has_is_deleted
            else (' WHERE "IsDeleted" = 0')
        )
        with self.api.db.lock:
            conn = self.api.db.connection
            all_ids = [
                row[0] for row in conn.execute(f'SELECT "Id" FROM {table}{live} ORDER BY "Id"')
            ]
            id_of: dict[int, str] = {}
            for start in range(0, len(rowids), FETCH_CHUNK):
                part = rowids[start : start + FETCH_CHUNK].tolist()
                marks = ",".join("?" * len(part))
                id_of.update(
                    conn.execute(f'SELECT rowid, "Id" FROM {table} WHERE rowid IN ({marks})', part)
                )
        bounds = all_ids[:: job.chunk_size] or [""]
        chunks: list[list[int]] = [[] for _ in bounds]
        for rowid in rowids.tolist():
            chunks[max(0, bisect.bisect_right(bounds, id_of[rowid]) - 1)].append(rowid)
        for members in chunks:
            chunk = self._new_batch(job, batch.request)
            self._complete_query(chunk, compiled, np.array(members, dtype=np.int64))

    def _result_list(self, job: _V1Job, batch: _Batch) -> ApiResponse:
        if batch.state == "Failed" or batch.state == "NotProcessed":
            raise BulkV1Error(
                400, "InvalidBatch", f"Batch {batch.id} is {batch.state}: it has no results"
            )
        if job.operation in QUERY_OPERATIONS:
            if job.content_type == "JSON":
                return ApiResponse(200, json.dumps([batch.result_id]).encode())
            inner = f"<result>{batch.result_id}</result>"
            return ApiResponse(200, _xml_document("result-list", inner), XML_TYPE)
        if job.content_type == "JSON":
            payload = [
                {
                    "success": success,
                    "created": created,
                    "id": record_id or None,
                    "errors": [] if success else [_error_entry(error)],
                }
                for record_id, success, created, error in batch.results
            ]
            return ApiResponse(200, json.dumps(payload).encode())
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(["Id", "Success", "Created", "Error"])
        writer.writerows(
            [record_id, str(success).lower(), str(created).lower(), error]
            for record_id, success, created, error in batch.results
        )
        return ApiResponse(200, buffer.getvalue().encode(), CSV_TYPE)

    def _result(self, job: _V1Job, batch: _Batch, result_id: str) -> ApiResponse:
        if job.operation not in QUERY_OPERATIONS or result_id != batch.result_id:
            raise BulkV1Error(400, "InvalidBatch", f"Invalid result id: {result_id}")
        assert batch.compiled is not None and batch.rowids is not None
        if job.content_type == "JSON":
            return ApiResponse(200, json.dumps(self._json_records(job, batch)).encode())
        if len(batch.rowids) == 0:
            return ApiResponse(200, EMPTY_CSV_RESULT, CSV_TYPE)
        page_job = _Job(batch.id, "query", job.operation, job.obj, job.api_version, batch.created)
        page_job.compiled = batch.compiled
        return ApiResponse(200, self.api.bulk._csv_page(page_job, batch.rowids), CSV_TYPE)

    def _json_records(self, job: _V1Job, batch: _Batch) -> list[dict[str, Any]]:
        """Records as REST shapes them, but datetimes and dates in epoch milliseconds."""
        compiled = batch.compiled
        assert compiled is not None and batch.rowids is not None
        targets = {rel.name: rel.target for rel in compiled.relationships}
        temporal: list[tuple[str | None, str, str]] = []
        for column in compiled.columns:
            owner = (
                compiled.sobject if column.relationship is None else targets[column.relationship]
            )
            definition = owner.field(column.field_name)
            if definition is not None and definition.type in ("datetime", "date"):
                temporal.append((column.relationship, definition.name, definition.type))
        records: list[dict[str, Any]] = []
        ids = batch.rowids.tolist()
        for start in range(0, len(ids), FETCH_CHUNK):
            part = ids[start : start + FETCH_CHUNK]
            with self.api.db.lock:
                rows = self.api.db.connection.execute(compiled.page_sql(len(part)), part)
                by_rowid = compiled.shape(rows.fetchall(), job.api_version)
            for rowid in part:
                record = by_rowid.get(rowid)
                if record is None:
                    continue
                for relationship, name, kind in temporal:
                    holder = record if relationship is None else record.get(relationship)
                    if isinstance(holder, dict) and holder.get(name) is not None:
                        holder[name] = _epoch_millis(holder[name], kind)
                records.append(record)
        return records

    # Ingest batches --------------------------------------------------------------------------

    def _ingest_rows(self, job: _V1Job, body: bytes) -> tuple[list[str], list[list[str]]]:
        if job.content_type == "CSV":
            parsed = [row for row in csv.reader(io.StringIO(body.decode("utf-8-sig"))) if row]
            return (parsed[0], parsed[1:]) if parsed else ([], [])
        try:
            records = json.loads(body or b"null")
        except ValueError:
            raise BulkV1Error(400, "InvalidBatch", "Unable to parse the JSON batch") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BulkV1Error(400, "InvalidBatch", "A JSON batch must be an array of records")
        header: list[str] = []
        for record in records:
            header.extend(key for key in record if key != "attributes" and key not in header)
        rows = [[_json_cell(record, name) for name in header] for record in records]
        return header, rows

    def _run_ingest(self, job: _V1Job, batch: _Batch) -> None:
        try:
            header, rows = self._ingest_rows(job, batch.request)
        except BulkV1Error as error:
            batch.state, batch.state_message = "Failed", f"{error.code} : {error.message}"
            return
        problem = check_header(job.obj, job.operation, job.external_id_field, header)
        if problem is None and len(rows) > MAX_BATCH_RECORDS:
            problem = f"InvalidBatch : Records in a batch exceed {MAX_BATCH_RECORDS}"
        if problem is not None:
            batch.state, batch.state_message = "Failed", problem
            return
        writes = writes_for_rows(job.obj, job.operation, job.external_id_field, header, rows)
        for write, result in zip(writes, apply_writes(self.api, writes), strict=True):
            if result["success"]:
                created = bool(result.get("created", write.op == "create"))
                batch.results.append((result["id"], True, created, ""))
            else:
                batch.results.append((write.record_id or "", False, False, error_text(result)))
        batch.processed = len(batch.results)
        batch.failed = sum(1 for entry in batch.results if not entry[1])
        batch.state = "Completed"


def _json_cell(record: dict[str, Any], name: str) -> str:
    """A JSON record value as bulk CSV text: absent is empty (unchanged), null is ``#N/A``."""
    if name not in record:
        return ""
    value = record[name]
    if value is None:
        return NULL_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error_entry(text: str) -> dict[str, Any]:
    """Split ``CODE:message:fields--`` back into a JSON result error."""
    code, _, rest = text.partition(":")
    message, _, fields = rest.removesuffix("--").rpartition(":")
    return {
        "statusCode": code,
        "message": message,
        "fields": [name for name in fields.split(",") if name],
    }


def _epoch_millis(value: str, kind: str) -> int:
    """``2024-05-20T20:49:32.000+0000`` or ``2024-05-20`` as epoch milliseconds (UTC)."""
    if kind == "date":
        return calendar.timegm(time.strptime(value, "%Y-%m-%d")) * 1000
    return calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")) * 1000
