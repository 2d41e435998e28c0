"""Salesforce, both directions: login, describe, incremental reads, writes, campaigns, field setup.

simple-salesforce does the REST work; everything specific to it (``OrderedDict`` records with
``attributes``, its exception classes, its ``__getattr__`` object access) stays inside this module.
Records leave it as plain dicts keyed by the describe spelling of each field, with datetimes as
naive UTC ``datetime`` and dates as ``date``; Bulk API 2.0 pages leave it as CSV files.

Login. Five flows (``[salesforce] auth``) against the configured login URL: OAuth 2.0 client
credentials, JWT bearer (RS256, private key file), refresh token (a connected app authorized once
in a browser), OAuth username-password, and SOAP partner login. The connector gets the session
itself and hands ``instance_url`` + token to simple-salesforce in direct mode with our session,
so the same path serves real orgs and the local stand-in ``connector/sandbox``
(``docs/api-contracts.md`` section 1.1). Direct mode never re-logs in; our session does, for
every flow, on ``INVALID_SESSION_ID`` (:class:`connector.http.TokenAuth`) - including Bulk API
2.0 polls and result downloads, which simple-salesforce never refreshes.

Reads. REST ``query``/``queryAll`` ordered by ``(SystemModstamp, Id)`` for small change sets;
Bulk API 2.0 query jobs for large ones (:func:`read_bulk`), downloaded page by page
(``Sforce-Locator``) into temporary CSV files that the store loads directly.

Writes. sObject Collections (200 records per request) for small sets, Bulk API 2.0 ingest for
large ones, chosen by ``bulk_write_threshold`` (:func:`choose_write_path`,
:func:`estimate_write_calls`). Transient per-record errors (``UNABLE_TO_LOCK_ROW``...) are
retried in smaller batches, then one by one; permanent ones are reported with their message.

The package follows the API's seams: ``settings``, ``session`` (login), ``describe`` (and field
setup), ``rest`` (reads), ``bulk`` (Bulk API 2.0 query jobs), ``writes`` (Collections and Bulk
ingest, campaign members) and ``stream`` (one pulled object: REST or Bulk, checkpoints, deletes).
"""

from connector.salesforce.bulk import (
    BulkJob,
    BulkPage,
    bulk_cursor,
    read_bulk,
    start_bulk_query,
)
from connector.salesforce.describe import (
    DB_TYPES,
    OUTPUT_FIELD_TYPES,
    FieldDescription,
    FieldSpec,
    ObjectDescription,
    create_custom_field,
    db_type,
    describe_object,
    field_label,
    field_metadata,
    resolve_fields,
    suggest_field,
)
from connector.salesforce.rest import (
    check_allowance,
    count_records,
    id18,
    read_campaigns,
    read_limits,
    read_records,
    read_records_by_id,
    read_records_in,
    since_with_overlap,
)
from connector.salesforce.session import (
    SalesforceClient,
)
from connector.salesforce.settings import (
    API_VERSION,
    BULK_MAX_UPLOAD_BYTES,
    BULK_NULL,
    BULK_RECORDS_PER_JOB,
    COLLECTION_SIZE,
    JWT_GRANT,
    LARGE_RUN_CALLS,
    MAX_POLL_SECONDS,
    AuthFlow,
    SalesforceSettings,
    StreamSettings,
    WriteOperation,
)
from connector.salesforce.stream import SalesforceStream, StreamResult
from connector.salesforce.writes import (
    check_field_value,
    choose_write_path,
    estimate_campaign_sync_calls,
    estimate_write_calls,
    sync_campaign_members,
    write_records,
)

__all__ = [
    "API_VERSION",
    "BULK_MAX_UPLOAD_BYTES",
    "BULK_NULL",
    "BULK_RECORDS_PER_JOB",
    "COLLECTION_SIZE",
    "DB_TYPES",
    "JWT_GRANT",
    "LARGE_RUN_CALLS",
    "MAX_POLL_SECONDS",
    "OUTPUT_FIELD_TYPES",
    "AuthFlow",
    "BulkJob",
    "BulkPage",
    "FieldDescription",
    "FieldSpec",
    "ObjectDescription",
    "SalesforceClient",
    "SalesforceSettings",
    "SalesforceStream",
    "StreamResult",
    "StreamSettings",
    "WriteOperation",
    "bulk_cursor",
    "check_allowance",
    "check_field_value",
    "choose_write_path",
    "count_records",
    "create_custom_field",
    "db_type",
    "describe_object",
    "estimate_campaign_sync_calls",
    "estimate_write_calls",
    "field_label",
    "field_metadata",
    "id18",
    "read_bulk",
    "read_campaigns",
    "read_limits",
    "read_records",
    "read_records_by_id",
    "read_records_in",
    "resolve_fields",
    "since_with_overlap",
    "start_bulk_query",
    "suggest_field",
    "sync_campaign_members",
    "write_records",
]
