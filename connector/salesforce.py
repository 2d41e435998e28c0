"""Salesforce, both directions: OAuth, describe, incremental reads and sObject Collections writes.

simple-salesforce does the REST work; everything specific to it (``OrderedDict`` records with
``attributes``, its exception classes, its ``__getattr__`` object access) stays inside this module.
Records leave it as plain dicts keyed by the describe spelling of each field, with datetimes as
naive UTC ``datetime`` and dates as ``date``.

The connector gets the OAuth token itself from the configured login URL and hands ``instance_url`` +
token to simple-salesforce in direct mode with our session, so the same path serves real orgs and
the sandbox (``docs/api-contracts.md`` section 1.1). Direct mode never re-logs in; our session does
it on ``INVALID_SESSION_ID`` (see :class:`connector.http.TokenAuth`).
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError
from simple_salesforce.format import format_soql

from connector.errors import (
    ConfigError,
    LeadscoreError,
    RequestError,
    classify_exception,
    classify_status,
    error_for,
    response_error,
)
from connector.http import Budget, CallCounter, HttpSettings, TokenAuth, make_session
from connector.store import quote_identifier

log = logging.getLogger("leadscore.salesforce")

COLLECTION_SIZE = 200  # sObject Collections accept at most 200 records per request
API_VERSION = "59.0"


class StreamSettings(BaseModel):
    """One Salesforce object pulled into the store.

    Attributes:
        fields: fields to pull (validated against describe; ``Id`` and the cursor field are always
            added).
        cursor_field: the field incremental pulls are ordered and filtered by.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: list[str] = Field(min_length=1)
    cursor_field: str = "SystemModstamp"


class SalesforceSettings(BaseModel):
    """The ``[salesforce]`` section.

    Secrets (client id and secret) come from the environment or secrets.toml.

    Attributes:
        login_url: where tokens are requested: https://login.salesforce.com,
            https://test.salesforce.com, a My Domain URL, or the sandbox's URL.
        auth: the OAuth flow.
        api_version: REST API version.
        ca_bundle: PEM file of CAs to trust (the sandbox's ``ca.pem``); empty for the system store.
        timeout_seconds: per-request timeout.
        max_attempts: attempts per request for transient failures.
        page_size: records per query page (``Sforce-Query-Options: batchSize``), 200-2000.
        overlap_seconds: incremental pulls re-read this many seconds before the cursor, because a
            record's SystemModstamp can be earlier than the moment its transaction became visible.
        max_calls_per_run: stop a run cleanly before it makes more API calls than this.
        max_share_of_daily_limit: stop a run cleanly before the org has used this share of its daily
            allowance.
        streams: objects to pull, by API name.
        client_id: connected app consumer key (secret).
        client_secret: connected app consumer secret (secret).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    login_url: str = "https://login.salesforce.com"
    auth: Literal["client_credentials"] = "client_credentials"
    api_version: str = Field(API_VERSION, pattern=r"^\d{2,3}\.0$")
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(60.0, gt=0, le=600)
    max_attempts: int = Field(5, ge=1, le=20)
    page_size: int = Field(2000, ge=200, le=2000)
    overlap_seconds: int = Field(5, ge=0, le=3600)
    max_calls_per_run: int | None = Field(None, ge=1)
    max_share_of_daily_limit: float | None = Field(0.8, gt=0, le=1)
    streams: dict[str, StreamSettings]
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None

    @field_validator("login_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError("must be an https:// URL, e.g. https://login.salesforce.com")
        return value.rstrip("/")


@dataclass(frozen=True)
class FieldDescription:
    """One field of an object's describe, trimmed to what leadscore uses."""

    name: str
    type: str
    updateable: bool
    createable: bool
    nillable: bool
    length: int
    precision: int | None
    scale: int | None
    custom: bool
    external_id: bool
    picklist_values: tuple[str, ...]


@dataclass(frozen=True)
class ObjectDescription:
    """An object's describe: name and fields by lower-case name."""

    name: str
    fields: dict[str, FieldDescription]

    def field(self, name: str) -> FieldDescription | None:
        """Look a field up case-insensitively, as Salesforce does."""
        return self.fields.get(name.lower())


# Salesforce field type -> DuckDB column type in the raw tables.
DB_TYPES: dict[str, str] = {
    "boolean": "BOOLEAN",
    "int": "BIGINT",
    "double": "DOUBLE",
    "currency": "DOUBLE",
    "percent": "DOUBLE",
    "date": "DATE",
    "datetime": "TIMESTAMP",
}


def db_type(sf_type: str) -> str:
    """The DuckDB type a Salesforce field type is stored as.

    Args:
        sf_type: describe ``type`` (``string``, ``picklist``, ``datetime``...).

    Returns:
        A DuckDB type name; text for everything without a better mapping.
    """
    return DB_TYPES.get(sf_type, "VARCHAR")


class SalesforceClient:
    """A connected org: our session (retries, TLS, token refresh, accounting) and the client."""

    def __init__(
        self,
        settings: SalesforceSettings,
        *,
        counter: CallCounter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Prepare a client; the first call (or :meth:`connect`) logs in.

        Args:
            settings: the ``[salesforce]`` section.
            counter: call counter shared with the run; a new one when omitted.
            sleep: how to wait between retries (tests pass a no-op).
        """
        self.settings = settings
        self.counter = counter if counter is not None else CallCounter()
        http = HttpSettings(
            timeout_seconds=settings.timeout_seconds,
            max_attempts=settings.max_attempts,
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        )
        self._login_session = make_session(
            http, counter=self.counter, is_auth_url=lambda url: True, sleep=sleep
        )
        self.instance_url: str | None = None
        self._auth = TokenAuth(self._fetch_token)
        budget = Budget(
            settings.max_calls_per_run, settings.max_share_of_daily_limit, setting="salesforce"
        )
        self.session = make_session(
            http, counter=self.counter, budget=budget, auth=self._auth, sleep=sleep
        )
        self._sf: Salesforce | None = None
        self._describes: dict[str, ObjectDescription] = {}

    def connect(self) -> SalesforceClient:
        """Log in now, so that bad credentials or URLs fail before any work starts.

        Returns:
            The client.

        Raises:
            ConfigError: the login was rejected or the login URL is wrong.
            TransientError: Salesforce could not be reached.
        """
        _ = self.sf
        return self

    @property
    def sf(self) -> Salesforce:
        """The simple-salesforce client in direct mode (built on first use)."""
        if self._sf is None:
            token = self._auth.token
            assert self.instance_url is not None
            self._sf = Salesforce(
                instance_url=self.instance_url,
                session_id=token,
                session=self.session,
                version=self.settings.api_version,
            )
        return self._sf

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.session.close()
        self._login_session.close()

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch_token(self) -> str:
        """OAuth 2.0 client-credentials flow against the configured login URL.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
        """
        s = self.settings
        if s.client_id is None or s.client_secret is None:
            raise ConfigError(
                "Salesforce credentials are missing: "
                "salesforce.client_id and salesforce.client_secret",
                hint="set LEADSCORE_SALESFORCE__CLIENT_ID and LEADSCORE_SALESFORCE__CLIENT_SECRET, "
                "or put them in secrets.toml",
            )
        url = f"{s.login_url}/services/oauth2/token"
        with _translate_errors(
            f"Salesforce login at {s.login_url}", setting="salesforce.login_url"
        ):
            response = self._login_session.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(s.client_id.get_secret_value(), s.client_secret.get_secret_value()),
                headers={"Accept": "application/json"},
            )
        if response.status_code != 200:
            code, message = response_error(response)
            if response.status_code in (400, 401, 403):
                raise ConfigError(
                    f"Salesforce login at {s.login_url} was rejected: "
                    f"{code or response.status_code}" + (f" ({message})" if message else ""),
                    hint="check the connected app's client id and secret and that the "
                    "client-credentials flow "
                    "is enabled for it",
                )
            rule = classify_status(response.status_code, code, message)
            raise error_for(
                rule,
                f"Salesforce login at {s.login_url} failed: "
                f"HTTP {response.status_code} {code or ''}".strip(),
                hint="check salesforce.login_url",
            )
        try:
            body = response.json()
            token, instance = body["access_token"], body["instance_url"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{url} did not answer like a Salesforce OAuth token endpoint",
                hint="check salesforce.login_url",
            ) from None
        self.instance_url = instance.rstrip("/")
        log.info("logged in to %s", self.instance_url)
        return str(token)


@contextmanager
def _translate_errors(what: str, *, setting: str = "salesforce") -> Iterator[None]:
    """Turn simple-salesforce and requests exceptions into one-line leadscore errors.

    Args:
        what: what was being done, for the message (e.g. "query on Lead").
        setting: config key to name for transport and TLS failures.

    Yields:
        Nothing; wraps the block.
    """
    try:
        yield
    except LeadscoreError:
        raise
    except SalesforceError as exc:
        content: Any = exc.content
        if isinstance(content, list) and content and isinstance(content[0], dict):
            content = content[0]
        code = content.get("errorCode") if isinstance(content, dict) else None
        message = content.get("message", "") if isinstance(content, dict) else str(content)[:200]
        rule = classify_status(exc.status, code, message)
        raise error_for(
            rule,
            f"{what} failed: {code or exc.status}: {message}".rstrip(": "),
            hint=rule.meaning,
        ) from None
    except requests.RequestException as exc:
        rule = classify_exception(exc)
        host = (
            urlparse(exc.request.url).netloc if exc.request is not None and exc.request.url else ""
        )
        if rule is not None and rule.code == "SSLError":
            raise ConfigError(
                f"{what}: TLS verification of {host} failed",
                hint="set salesforce.ca_bundle to the CA that signed its certificate, "
                f"or check {setting}",
            ) from None
        reason = type(exc).__name__
        if rule is None:
            raise RequestError(f"{what} failed: {reason}") from None
        raise error_for(
            rule,
            f"{what}: {rule.meaning} ({host}, {reason})",
            hint=f"check {setting} and the network; the next run retries",
        ) from None


def describe_object(client: SalesforceClient, sobject: str) -> ObjectDescription:
    """Describe an object (cached per client).

    Args:
        client: connected client.
        sobject: API name, e.g. ``Lead``.

    Returns:
        Its fields.

    Raises:
        ConfigError: the object does not exist or is not accessible.
    """
    key = sobject.lower()
    if key in client._describes:
        return client._describes[key]
    quote_identifier(sobject)  # object names reach URLs and SOQL: plain identifiers only
    try:
        with _translate_errors(f"describe of {sobject}"):
            raw = client.sf.restful(f"sobjects/{sobject}/describe")
    except RequestError as exc:
        if "NOT_FOUND" in exc.message:
            raise ConfigError(
                f"Salesforce object '{sobject}' does not exist "
                "or is not visible to the integration user",
                hint="check the object's API name in the config",
            ) from None
        raise
    fields = {}
    for f in raw["fields"]:
        fields[f["name"].lower()] = FieldDescription(
            name=f["name"],
            type=f["type"],
            updateable=bool(f.get("updateable")),
            createable=bool(f.get("createable")),
            nillable=bool(f.get("nillable", True)),
            length=int(f.get("length") or 0),
            precision=f.get("precision"),
            scale=f.get("scale"),
            custom=bool(f.get("custom")),
            external_id=bool(f.get("externalId")),
            picklist_values=tuple(
                v["value"] for v in f.get("picklistValues") or () if v.get("active", True)
            ),
        )
    description = ObjectDescription(name=raw["name"], fields=fields)
    client._describes[key] = description
    return description


def resolve_fields(
    description: ObjectDescription, requested: Sequence[str], *, setting: str
) -> list[str]:
    """Validate configured field names against describe and return their describe spelling.

    Args:
        description: the object's describe.
        requested: field names from config.
        setting: the config key they came from, for the error message.

    Returns:
        The fields in describe spelling, de-duplicated, in the requested order.

    Raises:
        ConfigError: a field does not exist; the message suggests the closest name.
    """
    resolved: list[str] = []
    for name in requested:
        found = description.field(name)
        if found is None:
            names = [f.name for f in description.fields.values()]
            close = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(
                f"{setting}: field '{name}' does not exist on {description.name}",
                hint=f"did you mean '{close[0]}'?"
                if close
                else "check the field's API name in Setup",
            )
        if found.name not in resolved:
            resolved.append(found.name)
    return resolved


def _parse_datetime(value: str) -> datetime:
    # Salesforce sends '2024-05-20T20:49:32.000+0000' (no colon in the offset); fromisoformat reads
    # it (3.11+).
    return datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None)


def _converters(
    description: ObjectDescription, fields: Sequence[str]
) -> list[Callable[[Any], Any] | None]:
    out: list[Callable[[Any], Any] | None] = []
    for name in fields:
        kind = description.fields[name.lower()].type
        if kind == "datetime":
            out.append(_parse_datetime)
        elif kind == "date":
            out.append(date.fromisoformat)
        else:
            out.append(None)
    return out


def read_records(
    client: SalesforceClient,
    sobject: str,
    fields: Sequence[str],
    *,
    cursor_field: str = "SystemModstamp",
    since: datetime | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Read records changed since a cursor value, in pages, ordered by (cursor, Id).

    The SOQL is built by ``format_soql`` from field names already validated against describe and
    from escaped values, never by formatting user input.

    Args:
        client: connected client.
        sobject: object API name.
        fields: validated fields (describe spelling), including ``Id`` and ``cursor_field``.
        cursor_field: the datetime field to filter and order by.
        since: read records with ``cursor_field >= since`` (inclusive: boundary rows are
            de-duplicated by the store); None reads everything.
        on_total: called once with the query's ``totalSize``.

    Yields:
        Pages of plain dicts with typed values.
    """
    description = describe_object(client, sobject)
    select = ", ".join(fields)
    if since is None:
        soql = format_soql(
            "SELECT {:literal} FROM {:literal} ORDER BY {:literal}, Id",
            select,
            description.name,
            cursor_field,
        )
    else:
        soql = format_soql(
            "SELECT {:literal} FROM {:literal} WHERE {:literal} >= {} ORDER BY {:literal}, Id",
            select,
            description.name,
            cursor_field,
            since.replace(tzinfo=UTC),
            cursor_field,
        )
    convert = list(zip(fields, _converters(description, fields), strict=True))
    page_size = client.settings.page_size
    headers = {"Sforce-Query-Options": f"batchSize={page_size}"}
    page: list[dict[str, Any]] = []
    with _translate_errors(f"query on {description.name}"):
        # Ask for the first page ourselves to learn totalSize; query_more pages follow
        # nextRecordsUrl.
        result = client.sf.query(soql, headers=headers)
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
            result = client.sf.query_more(
                result["nextRecordsUrl"], identifier_is_url=True, headers=headers
            )


def _encode(value: Any) -> Any:
    """JSON-encode a value the way the REST API expects it."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    if isinstance(value, date):
        return value.isoformat()
    return value


def write_records(
    client: SalesforceClient,
    sobject: str,
    records: Sequence[dict[str, Any]],
    *,
    before_send: Callable[[Sequence[dict[str, Any]]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Update records with sObject Collections, 200 per request, ``allOrNone=false``.

    https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html

    Args:
        client: connected client.
        sobject: object API name.
        records: dicts with ``Id`` and the fields to set (describe spelling).
        before_send: called with each chunk just before its request goes out (the caller records
            the attempt, so a crash mid-request can be reconciled).

    Yields:
        Per request, the per-record outcomes in input order: ``{"id", "success", "error"}`` where
        error is ``"CODE: message"`` or None. The caller records each batch before the next request
        is sent.

    Raises:
        LeadscoreError: the request itself failed (after retries); the records of that batch were
            not written.
    """
    name = describe_object(client, sobject).name
    for start in range(0, len(records), COLLECTION_SIZE):
        chunk = records[start : start + COLLECTION_SIZE]
        body = {
            "allOrNone": False,
            "records": [
                {
                    "attributes": {"type": name},
                    **{k: _encode(v) for k, v in r.items() if k != "Id"},
                    "id": r["Id"],
                }
                for r in chunk
            ],
        }
        if before_send is not None:
            before_send(chunk)
        with _translate_errors(f"update of {len(chunk)} {name} records"):
            results = client.sf.restful("composite/sobjects", method="PATCH", json=body)
        outcomes = []
        for record, result in zip(chunk, results, strict=True):
            errors = result.get("errors") or []
            error = None
            if not result.get("success"):
                first = errors[0] if errors else {}
                error = f"{first.get('statusCode', 'UNKNOWN')}: {first.get('message', '')}".strip()
            outcomes.append(
                {"id": record["Id"], "success": bool(result.get("success")), "error": error}
            )
        yield outcomes


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
        with _translate_errors(f"read of {len(chunk)} {name} records"):
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
    """Read the org's limits (``/limits``).

    Args:
        client: connected client.

    Returns:
        Limits by name, e.g. ``{"DailyApiRequests": {"Max": 15000, "Remaining": 14982}}``.
    """
    with _translate_errors("limits"):
        return dict(client.sf.limits())


def since_with_overlap(cursor: datetime | None, overlap_seconds: int) -> datetime | None:
    """The lower bound of an incremental read: the cursor minus the overlap window.

    Args:
        cursor: last committed cursor value, or None.
        overlap_seconds: seconds to re-read before it.

    Returns:
        The bound, or None for a full read.
    """
    return None if cursor is None else cursor - timedelta(seconds=overlap_seconds)
