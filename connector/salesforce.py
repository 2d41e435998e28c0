"""Salesforce, both directions: login, describe, incremental reads, writes, campaigns, field setup.

simple-salesforce does the REST work; everything specific to it (``OrderedDict`` records with
``attributes``, its exception classes, its ``__getattr__`` object access) stays inside this module.
Records leave it as plain dicts keyed by the describe spelling of each field, with datetimes as
naive UTC ``datetime`` and dates as ``date``; Bulk API 2.0 pages leave it as CSV files.

Login. Five flows (``[salesforce] auth``) against the configured login URL: OAuth 2.0 client
credentials, JWT bearer (RS256, private key file), refresh token (a connected app authorized once
in a browser), OAuth username-password, and SOAP partner login. The connector gets the session
itself and hands ``instance_url`` + token to simple-salesforce in direct mode with our session,
so the same path serves real orgs and the sandbox (``docs/api-contracts.md`` section 1.1).
Direct mode never re-logs in; our session does, for every flow, on ``INVALID_SESSION_ID``
(:class:`connector.http.TokenAuth`) - including Bulk API 2.0 polls and result downloads, which
simple-salesforce never refreshes.

Reads. REST ``query``/``queryAll`` ordered by ``(SystemModstamp, Id)`` for small change sets;
Bulk API 2.0 query jobs for large ones (:func:`read_bulk`), downloaded page by page
(``Sforce-Locator``) into temporary CSV files that the store loads directly.

Writes. sObject Collections (200 records per request) for small sets, Bulk API 2.0 ingest for
large ones, chosen by ``bulk_write_threshold`` (:func:`choose_write_path`,
:func:`estimate_write_calls`). Transient per-record errors (``UNABLE_TO_LOCK_ROW``...) are
retried in smaller batches, then one by one; permanent ones are reported with their message.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal
from urllib.parse import urlparse

import jwt
import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError
from simple_salesforce.format import format_soql
from simple_salesforce.login import soap_login
from simple_salesforce.util import call_salesforce

from connector.errors import (
    BudgetExceeded,
    ConfigError,
    LeadscoreError,
    RequestError,
    TransientError,
    classify_exception,
    classify_status,
    error_for,
    is_transient_record_error,
    response_error,
)
from connector.http import Budget, CallCounter, HttpSettings, TokenAuth, make_session
from connector.store import quote_identifier

log = logging.getLogger("leadscore.salesforce")

API_VERSION = "59.0"
COLLECTION_SIZE = 200  # sObject Collections accept at most 200 records per request
# Transient per-record failures are sent again in batches of these sizes, one round each, with a
# backoff before every round: first smaller batches, then one record per request.
RETRY_BATCH_SIZES = (25, 1, 1)
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


# -- settings ---------------------------------------------------------------------------------


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

    Secrets (``client_id``, ``client_secret``, ``refresh_token``, ``password``,
    ``security_token``) come from the environment or secrets.toml.

    Attributes:
        login_url: where sessions are requested: https://login.salesforce.com,
            https://test.salesforce.com, a My Domain URL, or the sandbox's URL.
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
        ca_bundle: PEM file of CAs to trust (the sandbox's ``ca.pem``); empty for the system store.
        timeout_seconds: per-request timeout.
        max_attempts: attempts per request for transient failures.
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
        max_share_of_daily_limit: stop a run cleanly before the org has used this share of its daily
            allowance.
        streams: objects to pull, by API name.
        client_id: connected app consumer key (secret).
        client_secret: connected app consumer secret (secret).
        refresh_token: an OAuth refresh token of the integration user for the connected app
            (secret; ``refresh_token`` flow).
        password: the integration user's password (secret).
        security_token: the integration user's security token (secret; appended to the password).
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
    streams: dict[str, StreamSettings]
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None

    @field_validator("login_url", "jwt_audience")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError("must be an https:// URL, e.g. https://login.salesforce.com")
        return value.rstrip("/")


# -- describe ---------------------------------------------------------------------------------


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
    restricted_picklist: bool = False


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


# -- client and login -------------------------------------------------------------------------

# Per flow: the settings it needs (secrets named by their env variable in messages).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "client_credentials": ("client_id", "client_secret"),
    "jwt": ("client_id", "username", "private_key_file"),
    "refresh_token": ("client_id", "client_secret", "refresh_token"),
    "password": ("client_id", "client_secret", "username", "password"),
    "soap": ("username", "password"),
}
_SECRETS = frozenset({"client_id", "client_secret", "refresh_token", "password", "security_token"})


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
            sleep: how to wait between retries and bulk polls (tests pass a no-op).
        """
        self.settings = settings
        self.counter = counter if counter is not None else CallCounter()
        self.sleep = sleep
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
        self._rotated_refresh_token: str | None = None
        self.budget = Budget(
            settings.max_calls_per_run, settings.max_share_of_daily_limit, setting="salesforce"
        )
        self.session = make_session(
            http, counter=self.counter, budget=self.budget, auth=self._auth, sleep=sleep
        )
        self._sf: Salesforce | None = None
        self._describes: dict[str, ObjectDescription] = {}
        self._limits: dict[str, dict[str, int]] | None = None
        self.logins = 0
        """Sessions obtained so far (the first login plus refreshes)."""

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

    def forget_describes(self) -> None:
        """Drop cached describes (after fields were created or changed)."""
        self._describes.clear()

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.session.close()
        self._login_session.close()

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The login flows. Each returns (access token, instance URL).

    def _fetch_token(self) -> str:
        s = self.settings
        self._require_credentials()
        flows: dict[str, Callable[[], tuple[str, str]]] = {
            "client_credentials": self._login_client_credentials,
            "jwt": self._login_jwt,
            "refresh_token": self._login_refresh_token,
            "password": self._login_password,
            "soap": self._login_soap,
        }
        token, instance = flows[s.auth]()
        self.instance_url = instance.rstrip("/")
        self.logins += 1
        log.info("logged in to %s (%s)", self.instance_url, s.auth)
        return token

    def _require_credentials(self) -> None:
        s = self.settings
        missing = [name for name in _REQUIRED[s.auth] if getattr(s, name) in (None, "")]
        if not missing:
            return
        secrets = [f"LEADSCORE_SALESFORCE__{name.upper()}" for name in missing if name in _SECRETS]
        plain = [f"salesforce.{name}" for name in missing if name not in _SECRETS]
        hints = []
        if secrets:
            hints.append(f"set {' and '.join(secrets)}, or put them in secrets.toml")
        if plain:
            hints.append(f"set {', '.join(plain)} in the config file")
        raise ConfigError(
            f'Salesforce credentials are missing for auth = "{s.auth}": '
            + " and ".join(f"salesforce.{name}" for name in missing),
            hint="; ".join(hints),
        )

    @staticmethod
    def _secret(value: SecretStr | None) -> str:
        return value.get_secret_value() if value is not None else ""

    def _login_client_credentials(self) -> tuple[str, str]:
        """OAuth 2.0 client credentials.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
        """
        s = self.settings
        return self._oauth(
            {"grant_type": "client_credentials"},
            auth=(self._secret(s.client_id), self._secret(s.client_secret)),
            hint="check the connected app's client id and secret and that the client-credentials "
            "flow is enabled for it",
        )

    def _login_jwt(self) -> tuple[str, str]:
        """OAuth 2.0 JWT bearer: an RS256 assertion signed with the connected app's key.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
        """
        s = self.settings
        assert s.private_key_file is not None
        try:
            key = Path(s.private_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"salesforce.private_key_file: cannot read {s.private_key_file} "
                f"({exc.strerror or type(exc).__name__})",
                hint="point it at the PEM private key of the connected app's certificate",
            ) from None
        claims = {
            "iss": self._secret(s.client_id),
            "sub": s.username,
            "aud": s.jwt_audience or _jwt_audience(s.login_url),
            # Salesforce accepts assertions that expire within 3 minutes.
            "exp": int(time.time()) + 180,
        }
        try:
            assertion = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            raise ConfigError(
                f"salesforce.private_key_file: {s.private_key_file} is not an RSA private key "
                "in PEM format",
                hint="export the key of the certificate registered with the connected app",
            ) from None
        return self._oauth(
            {"grant_type": JWT_GRANT, "assertion": assertion},
            hint="check salesforce.username, the connected app's client id, that its "
            "certificate matches salesforce.private_key_file and that the user is pre-authorized",
        )

    def _login_refresh_token(self) -> tuple[str, str]:
        """OAuth 2.0 refresh token flow: the integration user authorized the app once.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm
        With refresh token rotation on, every answer carries a new token and the old one stops
        working; leadscore keeps the new one for this run's later logins but cannot rewrite
        secrets.toml, so the connected app must have rotation off.
        """
        s = self.settings
        if self._rotated_refresh_token is None:
            self._rotated_refresh_token = self._secret(s.refresh_token)
        body: dict[str, Any] = {}
        token, instance = self._oauth(
            {
                "grant_type": "refresh_token",
                "client_id": self._secret(s.client_id),
                "client_secret": self._secret(s.client_secret),
                "refresh_token": self._rotated_refresh_token,
            },
            hint="check the connected app's client id and secret and that the refresh token "
            "was issued to that app and not revoked (Setup > Connected Apps OAuth Usage)",
            answer=body,
        )
        renewed = body.get("refresh_token")
        if isinstance(renewed, str) and renewed and renewed != self._rotated_refresh_token:
            self._rotated_refresh_token = renewed
            log.warning(
                "the connected app rotates refresh tokens: the configured one no longer works; "
                "turn rotation off for leadscore's connected app and authorize it again"
            )
        return token, instance

    def _login_password(self) -> tuple[str, str]:
        """OAuth 2.0 username-password (the security token is appended when set).

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_username_password_flow.htm
        """
        s = self.settings
        return self._oauth(
            {
                "grant_type": "password",
                "client_id": self._secret(s.client_id),
                "client_secret": self._secret(s.client_secret),
                "username": s.username,
                "password": self._secret(s.password) + self._secret(s.security_token),
            },
            hint="check salesforce.username, password, security token and the connected app's "
            "client id and secret",
        )

    def _oauth(
        self,
        data: dict[str, Any],
        *,
        hint: str,
        auth: tuple[str, str] | None = None,
        answer: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        s = self.settings
        url = f"{s.login_url}/services/oauth2/token"
        with _translate_errors(
            f"Salesforce login at {s.login_url}", setting="salesforce.login_url"
        ):
            response = self._login_session.post(
                url, data=data, auth=auth, headers={"Accept": "application/json"}
            )
        if response.status_code != 200:
            code, message = response_error(response)
            if response.status_code in (400, 401, 403):
                raise ConfigError(
                    f"Salesforce login at {s.login_url} was rejected: "
                    f"{code or response.status_code}" + (f" ({message})" if message else ""),
                    hint=hint,
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
            if answer is not None:
                answer.update(body)
            return str(body["access_token"]), str(body["instance_url"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{url} did not answer like a Salesforce OAuth token endpoint",
                hint="check salesforce.login_url",
            ) from None

    def _login_soap(self) -> tuple[str, str]:
        """SOAP partner ``login`` with username and password + security token.

        https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login.htm
        """
        s = self.settings
        password = self._secret(s.password) + self._secret(s.security_token)
        body = (
            '<?xml version="1.0" encoding="utf-8" ?>'
            '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:urn="urn:partner.soap.sforce.com">'
            "<env:Header><urn:CallOptions><urn:client>leadscore</urn:client>"
            "</urn:CallOptions></env:Header><env:Body>"
            '<n1:login xmlns:n1="urn:partner.soap.sforce.com">'
            f"<n1:username>{escape(s.username or '')}</n1:username>"
            f"<n1:password>{escape(password)}</n1:password>"
            "</n1:login></env:Body></env:Envelope>"
        )
        url = f"{s.login_url}/services/Soap/u/{s.api_version}"
        headers = {"content-type": "text/xml", "charset": "UTF-8", "SOAPAction": "login"}
        try:
            with _translate_errors(
                f"Salesforce login at {s.login_url}", setting="salesforce.login_url"
            ):
                # simple-salesforce's own parser of the partner login answer.
                token, instance = soap_login(url, body, headers, None, self._login_session)
        except SalesforceAuthenticationFailed as exc:
            if isinstance(exc.code, int) and exc.code >= 500:
                raise TransientError(
                    f"Salesforce login at {s.login_url} failed: HTTP {exc.code}",
                    hint="check salesforce.login_url; the next run retries",
                ) from None
            raise ConfigError(
                f"Salesforce login at {s.login_url} was rejected: {exc.code} "
                f"({exc.auth_message.strip()[:200]})",
                hint="check salesforce.username, the password and the security token",
            ) from None
        return token, f"https://{instance}"


def _jwt_audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects: the sandbox or the production login host."""
    host = urlparse(login_url).hostname or ""
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return "https://test.salesforce.com"
    return "https://login.salesforce.com"


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
    except SalesforceAuthenticationFailed:
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


# -- describe and field validation ------------------------------------------------------------


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
            restricted_picklist=bool(f.get("restrictedPicklist")),
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
            raise ConfigError(
                f"{setting}: field '{name}' does not exist on {description.name}",
                hint=suggest_field(description, name),
            )
        if found.name not in resolved:
            resolved.append(found.name)
    return resolved


def suggest_field(description: ObjectDescription, name: str) -> str:
    """A hint for a field name describe does not know: the closest name, if any.

    Args:
        description: the object's describe.
        name: the unknown name.

    Returns:
        ``did you mean 'X'?`` or a generic hint.
    """
    names = [f.name for f in description.fields.values()]
    close = difflib.get_close_matches(name, names, n=1)
    return f"did you mean '{close[0]}'?" if close else "check the field's API name in Setup"


# -- reads ------------------------------------------------------------------------------------


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


def _selection_soql(
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
    soql = _selection_soql(description, [], cursor_field, since, select="COUNT()", ordered=False)
    with _translate_errors(f"count on {description.name}"):
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
    soql = _selection_soql(description, fields, cursor_field, since)
    convert = list(zip(fields, _converters(description, fields), strict=True))
    page_size = client.settings.page_size
    headers = {"Sforce-Query-Options": f"batchSize={page_size}"}
    page: list[dict[str, Any]] = []
    with _translate_errors(f"query on {description.name}"):
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
            result = client.sf.query_more(
                result["nextRecordsUrl"], identifier_is_url=True, headers=headers
            )


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


def _bulk_url(client: SalesforceClient, kind: str, *parts: str) -> str:
    return client.sf.bulk2_url + "/".join((kind, *parts))


def _bulk_call(
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
    with _translate_errors(what):
        return call_salesforce(url, method, client.session, headers, **kwargs)


def _job_created(info: dict[str, Any]) -> datetime:
    raw = info.get("createdDate")
    try:
        return _parse_datetime(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC).replace(tzinfo=None)


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
    soql = _selection_soql(description, fields, cursor_field, since, ordered=False)
    body = {
        "operation": "queryAll" if include_deleted else "query",
        "query": soql,
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    }
    response = _bulk_call(
        client,
        "POST",
        _bulk_url(client, "query"),
        what=f"bulk query job on {description.name}",
        json=body,
    )
    info = response.json()
    log.info("bulk query job %s on %s", info["id"], description.name)
    return BulkJob(id=str(info["id"]), created=_job_created(info))


def _wait_for_job(client: SalesforceClient, kind: str, job_id: str) -> dict[str, Any]:
    """Poll a job until it ends; the wait grows from ``bulk_poll_seconds`` to 30 s."""
    settings = client.settings
    waited = 0.0
    delay = settings.bulk_poll_seconds
    while True:
        client.sleep(delay)
        waited += delay
        info = _bulk_call(
            client, "GET", _bulk_url(client, kind, job_id), what=f"bulk job {job_id}"
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
    info = _wait_for_job(client, "query", job.id)
    if on_total is not None:
        on_total(int(info.get("numberRecordsProcessed") or 0))
    url = _bulk_url(client, "query", job.id, "results")
    while True:
        params: dict[str, Any] = {"maxRecords": client.settings.bulk_page_size}
        if locator:
            params["locator"] = locator
        response = _bulk_call(
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


# -- writes -----------------------------------------------------------------------------------


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
    n_records: int, *, bulk_write_threshold: int = 2_000, polls: int = 1
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

    Returns:
        The number of API calls.
    """
    if n_records <= 0:
        return 0
    if choose_write_path(n_records, bulk_write_threshold) == "collections":
        return math.ceil(n_records / COLLECTION_SIZE)
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


def _collections_request(
    client: SalesforceClient,
    name: str,
    records: Sequence[dict[str, Any]],
    operation: WriteOperation,
    external_id_field: str | None,
) -> list[_Outcome]:
    """One sObject Collections request (at most 200 records, ``allOrNone=false``)."""
    what = f"{operation} of {len(records)} {name} records"
    with _translate_errors(what):
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
    info = _bulk_call(client, "POST", _bulk_url(client, "ingest"), what=what, json=body).json()
    job_id = str(info["id"])
    try:
        upload = _bulk_call(
            client,
            "PUT",
            _bulk_url(client, "ingest", job_id, "batches"),
            what=what,
            content_type="text/csv; charset=UTF-8",
            data=payload,
        )
        if upload.status_code != 201:
            raise RequestError(f"{what}: the upload answered HTTP {upload.status_code}, not 201")
        _bulk_call(
            client,
            "PATCH",
            _bulk_url(client, "ingest", job_id),
            what=what,
            json={"state": "UploadComplete"},
        )
        done = _wait_for_job(client, "ingest", job_id)
    except BaseException:
        # As simple-salesforce does: a job that cannot finish is aborted, never left open.
        with suppress(LeadscoreError):
            _bulk_call(
                client,
                "PATCH",
                _bulk_url(client, "ingest", job_id),
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
        text = _bulk_call(
            client,
            "GET",
            _bulk_url(client, "ingest", job_id, kind),
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
    if choose_write_path(len(records), settings.bulk_write_threshold) == "bulk":
        chunk, send = BULK_RECORDS_PER_JOB, _bulk_ingest
    else:
        chunk, send = COLLECTION_SIZE, _collections_request
    pending: list[int] = []
    for start in range(0, len(records), chunk):
        indexes = list(range(start, min(start + chunk, len(records))))
        announce(indexes)
        outcomes = send(client, name, [records[i] for i in indexes], operation, external_id_field)
        final = []
        for index, outcome in zip(indexes, outcomes, strict=True):
            if outcome.transient:
                pending.append(index)
            else:
                final.append((index, outcome))
        yield final
    last: dict[int, _Outcome] = {}
    for round_number, size in enumerate(RETRY_BATCH_SIZES, start=1):
        if not pending:
            return
        client.sleep(min(0.5 * 2 ** (round_number - 1), 8.0))
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


# -- campaign members -------------------------------------------------------------------------


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
    with _translate_errors(f"campaign members of {campaign}"):
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
    with _translate_errors("campaign lookup"):
        records = list(client.sf.query_all_iter(soql))
    return {
        by_id18.get(_id18(r["Id"]), r["Id"]): {"Name": r.get("Name"), "IsActive": r.get("IsActive")}
        for r in records
    }


# -- limits and budget ------------------------------------------------------------------------


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
    """Read the org's limits (``/limits``) and remember them for :func:`check_allowance`.

    Args:
        client: connected client.

    Returns:
        Limits by name, e.g. ``{"DailyApiRequests": {"Max": 15000, "Remaining": 14982}}``.
    """
    with _translate_errors("limits"):
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


# -- field setup ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """The Salesforce field that holds one kind of output.

    Attributes:
        metadata_type: Tooling API ``Metadata.type`` used to create it.
        describe_types: describe types an existing field may have to hold the output.
        options: further ``Metadata`` (precision, scale, length).
        picklist: the values come from the prediction's tiers (a picklist of tier names).
    """

    metadata_type: str
    describe_types: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    picklist: bool = False


# Output kind -> the field that holds it. `leadscore setup` creates missing ones from this table;
# `leadscore doctor` checks existing ones against it.
OUTPUT_FIELD_TYPES: dict[str, FieldSpec] = {
    "score": FieldSpec("Number", ("double", "int", "percent"), {"precision": 3, "scale": 0}),
    "tier": FieldSpec("Picklist", ("picklist", "string"), picklist=True),
    "probability": FieldSpec("Number", ("double", "percent"), {"precision": 5, "scale": 4}),
    "reasons": FieldSpec("Text", ("string", "textarea"), {"length": 255}),
    "percentile": FieldSpec("Number", ("double", "int", "percent"), {"precision": 3, "scale": 0}),
    "predicted_class": FieldSpec("Text", ("string", "picklist"), {"length": 64}),
    "class_probabilities": FieldSpec("Text", ("string", "textarea"), {"length": 255}),
    "predicted_value": FieldSpec(
        "Number", ("double", "currency", "int"), {"precision": 18, "scale": 2}
    ),
    "score_change": FieldSpec("Number", ("double", "int"), {"precision": 4, "scale": 0}),
    "trend": FieldSpec("Text", ("string", "picklist"), {"length": 16}),
    "model_version": FieldSpec("Text", ("string",), {"length": 64}),
    "scored_at": FieldSpec("DateTime", ("datetime",)),
}


def field_label(name: str) -> str:
    """A UI label from a field API name (``Lead_Score__c`` -> ``Lead Score``)."""
    return name.removesuffix("__c").replace("_", " ").strip()


def field_metadata(kind: str, name: str, *, picklist: Sequence[str] = ()) -> dict[str, Any]:
    """The Tooling API ``Metadata`` of the field that holds an output kind.

    Args:
        kind: output kind (a key of ``OUTPUT_FIELD_TYPES``).
        name: field API name (for the label).
        picklist: values of a picklist field (tier names).

    Returns:
        The ``Metadata`` object.
    """
    spec = OUTPUT_FIELD_TYPES[kind]
    metadata: dict[str, Any] = {
        "label": field_label(name),
        "type": spec.metadata_type,
        **spec.options,
    }
    if spec.picklist:
        metadata["valueSet"] = {
            "restricted": True,
            "valueSetDefinition": {
                "sorted": False,
                "value": [{"fullName": v, "label": v, "default": False} for v in picklist],
            },
        }
    return metadata


def create_custom_field(
    client: SalesforceClient, sobject: str, name: str, metadata: dict[str, Any]
) -> str:
    """Create a custom field through the Tooling API (``POST tooling/sobjects/CustomField``).

    https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_customfield.htm
    Real orgs also need field-level security granted before the integration user sees the
    field: re-check describe afterwards rather than assume it is usable.

    Args:
        client: connected client.
        sobject: object API name.
        name: field API name ending in ``__c``.
        metadata: the field's ``Metadata`` (:func:`field_metadata`).

    Returns:
        The new field's id (``00N...``).

    Raises:
        ConfigError: the name is not a custom field name, or Salesforce refused (e.g. the user
            may not customize the application).
    """
    quote_identifier(sobject)
    quote_identifier(name)
    if not name.endswith("__c"):
        raise ConfigError(
            f"{sobject}.{name}: only custom fields (ending in __c) can be created",
            hint="name the output field like Lead_Score__c, or create it by hand",
        )
    body = {"FullName": f"{sobject}.{name}", "Metadata": metadata}
    try:
        with _translate_errors(f"creating {sobject}.{name}"):
            result = client.sf.toolingexecute("sobjects/CustomField", method="POST", data=body)
    except RequestError as exc:
        raise ConfigError(
            exc.message,
            hint="the integration user needs the Customize Application permission, or create "
            "the field by hand in Setup",
        ) from None
    return str(result.get("id", "")) if isinstance(result, dict) else ""


def since_with_overlap(cursor: datetime | None, overlap_seconds: int) -> datetime | None:
    """The lower bound of an incremental read: the cursor minus the overlap window.

    Args:
        cursor: last committed cursor value, or None.
        overlap_seconds: seconds to re-read before it.

    Returns:
        The bound, or None for a full read.
    """
    return None if cursor is None else cursor - timedelta(seconds=overlap_seconds)
