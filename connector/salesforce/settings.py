"""The ``[salesforce]`` settings and the API's fixed limits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

log = logging.getLogger("leadscore.salesforce")


API_VERSION = "59.0"
COLLECTION_SIZE = 200  # sObject Collections accept at most 200 records per request
BULK_RECORDS_PER_JOB = 1_000_000
# One ingest job's CSV upload is at most 150 MB after base64 encoding; like simple-salesforce
# (MAX_INGEST_JOB_FILE_SIZE) we cut at 100 MB of raw CSV and start another job.
# https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_bulkapi.htm
BULK_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
BULK_NULL = "#N/A"  # how Bulk API 2.0 CSV sets a field to null; an empty value leaves it unchanged
MAX_POLL_SECONDS = 30.0
LARGE_RUN_CALLS = 50  # runs planned above this many calls check /limits first
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AuthFlow = Literal["client_credentials", "jwt", "refresh_token", "password", "soap"]
WriteOperation = Literal["update", "upsert", "create", "delete"]


class StreamSettings(BaseModel):
    """One Salesforce object pulled into the store.

    Attributes:
        fields: fields to pull (validated against describe; ``Id`` and the cursor field are always
            added).
        cursor_field: the field incremental pulls are ordered and filtered by.
        full_read_days: re-read the whole object this often (days), for fields whose changes
            do not move ``SystemModstamp`` (formulas, roll-up summaries); None: never.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: list[str] = Field(min_length=1)
    cursor_field: str = "SystemModstamp"
    full_read_days: float | None = Field(None, gt=0, le=365)


_API_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,39}$"


class SetupSettings(BaseModel):
    """What ``leadscore setup`` makes in the org besides the fields (``[salesforce.setup]``).

    Attributes:
        permission_sets: Create and assign the two permission sets below.
        integration_permission_set: API name of the set granting edit on the output fields,
            assigned to the integration user.
        sales_permission_set: API name of the set granting read on them, for sales.
        sales_users: Usernames the sales set is assigned to.
        list_view: Create the Lead list view of the top tiers.
        list_view_name: Its API name (``Object.`` is added).
        list_view_label: Its label.
        list_view_tiers: Tiers it shows (default: the best two of the prediction).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    permission_sets: bool = True
    integration_permission_set: str = Field("Leadscore_Integration", pattern=_API_NAME)
    sales_permission_set: str = Field("Leadscore_Sales", pattern=_API_NAME)
    sales_users: list[str] = Field(default_factory=list)
    list_view: bool = True
    list_view_name: str = Field("Hot_leads_leadscore", pattern=_API_NAME)
    list_view_label: str = Field("Hot leads (leadscore)", min_length=1, max_length=40)
    list_view_tiers: list[str] | None = None


class SalesforceSettings(BaseModel):
    """The ``[salesforce]`` section.

    Secrets (``client_id``, ``client_secret``, ``refresh_token``, ``password``,
    ``security_token``) come from the environment or secrets.toml.

    Attributes:
        login_url: where sessions are requested: https://login.salesforce.com,
            https://test.salesforce.com, a My Domain URL, or the local stand-in's URL.
        auth: the login flow: ``client_credentials`` (client_id + client_secret), ``jwt``
            (client_id + username + private_key_file), ``refresh_token`` (client_id +
            client_secret + refresh_token), ``password`` (OAuth username-password:
            client_id + client_secret + username + password [+ security_token]) or ``soap``
            (partner login: username + password + security_token).
        username: the integration user's username (``jwt``, ``password``, ``soap``).
        private_key_file: PEM RSA key whose certificate is registered with the connected app
            (``jwt``).
        jwt_audience: the JWT ``aud`` claim; default https://test.salesforce.com for sandbox
            orgs (test.salesforce.com or ``*.sandbox.my.salesforce.com``), else
            https://login.salesforce.com.
        api_version: REST API version.
        ca_bundle: PEM file of CAs to trust (the stand-in's ``ca.pem``); empty for the system store.
        timeout_seconds: per-request timeout.
        max_attempts: attempts per request for transient failures.
        record_retry_batch_sizes: records that failed transiently (``UNABLE_TO_LOCK_ROW``...)
            are sent again in batches of these sizes, one round each: first smaller batches,
            then one record per request.
        record_retry_backoff_seconds: wait before the first such round; it doubles every round.
        record_retry_max_backoff_seconds: the longest wait before a round.
        page_size: records per REST query page (``Sforce-Query-Options: batchSize``), 200-2000.
        overlap_seconds: incremental pulls re-read this many seconds before the cursor, because a
            record's SystemModstamp can be earlier than the moment its transaction became visible.
        bulk_first_sync: read a stream's first sync with a Bulk API 2.0 query job, whatever its
            size (no ``COUNT()`` needed).
        bulk_read_threshold: an incremental read of more rows than this (``SELECT COUNT()``)
            uses a Bulk API 2.0 query job instead of REST query pages.
        bulk_page_size: records per Bulk API 2.0 result page (``maxRecords``).
        recycle_bin_days: how long deleted records stay in the org's recycle bin (visible to
            ``queryAll``); a stream last pulled longer ago than this gets a deletion sweep.
        bulk_write_threshold: a write of more records than this uses Bulk API 2.0 ingest instead
            of sObject Collections.
        bulk_poll_seconds: first wait before polling a bulk job; later waits grow to 30 s.
        bulk_timeout_seconds: give up waiting for a bulk job after this long (the next run
            resumes a query job where it stopped).
        max_calls_per_run: stop a run cleanly before it makes more API calls than this.
        currency: the org's corporate currency (ISO code), shown with amounts (currency fields,
            order values) in the score reasons reps read.
        max_share_of_daily_limit: stop a run cleanly before the org has used this share of its daily
            allowance.
        streams: objects to pull, by API name.
        client_id: connected app consumer key (secret).
        client_secret: connected app consumer secret (secret).
        refresh_token: an OAuth refresh token of the integration user for the connected app
            (secret; ``refresh_token`` flow).
        password: the integration user's password (secret).
        security_token: the integration user's security token (secret; appended to the password).
        setup: what ``leadscore setup`` makes besides the fields (``[salesforce.setup]``).
        sales_user: a rep's username; ``doctor`` checks what they can read.
        duplicate_rule_allow_save: writes send ``Sforce-Duplicate-Rule-Header: allowSave=true``,
            so active duplicate rules do not block score updates of records they flag.
        pubsub_endpoint: ``host:port`` of the Pub/Sub API (change events, ``fresh.trigger =
            "cdc"``): api.pubsub.salesforce.com:7443, or the stand-in's Pub/Sub port.
        write_batch_size: records per sObject Collections call (at most 200); halved on
            ``UNABLE_TO_LOCK_ROW`` / ``CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY`` (triggers at their
            CPU limit), down to one record, and grown back after successful calls.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    login_url: str = "https://login.salesforce.com"
    auth: AuthFlow = "client_credentials"
    username: str | None = None
    private_key_file: Path | None = None
    jwt_audience: str | None = None
    api_version: str = Field(API_VERSION, pattern=r"^\d{2,3}\.0$")
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(60.0, gt=0, le=600)
    max_attempts: int = Field(5, ge=1, le=20)
    record_retry_batch_sizes: tuple[int, ...] = Field((25, 1, 1), max_length=10)
    record_retry_backoff_seconds: float = Field(0.5, ge=0, le=60)
    record_retry_max_backoff_seconds: float = Field(8.0, ge=0, le=600)
    page_size: int = Field(2000, ge=200, le=2000)
    overlap_seconds: int = Field(5, ge=0, le=3600)
    bulk_first_sync: bool = True
    bulk_read_threshold: int = Field(10_000, ge=0)
    bulk_page_size: int = Field(50_000, ge=1, le=1_000_000)
    recycle_bin_days: int = Field(15, ge=1, le=365)
    bulk_write_threshold: int = Field(2_000, ge=0)
    bulk_poll_seconds: float = Field(2.0, ge=0, le=60)
    bulk_timeout_seconds: float = Field(3600.0, gt=0)
    max_calls_per_run: int | None = Field(None, ge=1)
    max_share_of_daily_limit: float | None = Field(0.8, gt=0, le=1)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    streams: dict[str, StreamSettings]
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    setup: SetupSettings = Field(default_factory=lambda: SetupSettings())
    sales_user: str | None = None
    duplicate_rule_allow_save: bool = False
    write_batch_size: int = Field(COLLECTION_SIZE, ge=1, le=COLLECTION_SIZE)
    pubsub_endpoint: str = Field(
        "api.pubsub.salesforce.com:7443", pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$"
    )

    @field_validator("login_url", "jwt_audience")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError("must be an https:// URL, e.g. https://login.salesforce.com")
        return value.rstrip("/")
