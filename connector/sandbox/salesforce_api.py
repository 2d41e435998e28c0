"""Request handlers of the Salesforce stand-in: login, REST query, describe, records, collections.

The handlers are transport-free: :meth:`SalesforceApi.handle` takes an :class:`ApiRequest` and
returns an :class:`ApiResponse`; ``server.py`` adds HTTP and TLS. Shapes follow
``shared/docs/api-contracts.md`` sections 1 and 3 (what Salesforce returns and what
simple-salesforce 1.12.10 expects): error bodies are JSON arrays, every ``/services/data``
response carries ``Sforce-Limit-Info``, datetimes are served as ``...000+0000``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
import math
import re
import secrets
import sqlite3
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connector.sandbox.change_events import ChangeEventLog, origin_for
from connector.sandbox.database import Database
from connector.sandbox.faults import Drop, FaultPlan, RequestInfo, Slow
from connector.sandbox.ids import BASE62, SEQUENCE_DIGITS, make_id, normalize_id
from connector.sandbox.oauth import RefreshTokens
from connector.sandbox.org_rules import OrgFeatures, OrgRules
from connector.sandbox.schema import (
    API_VERSION,
    ID_TYPES,
    RESPONDED_STATUSES,
    TEXT_TYPES,
    FieldDef,
    ObjectDef,
    copy_schema,
)
from connector.sandbox.security import SETUP_OBJECTS, Security
from connector.sandbox.soql import CompiledQuery, SoqlError, compile_query, converter_for
from connector.sandbox.versions import SUPPORTED_VERSIONS, version_list

JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "text/xml;charset=UTF-8"
MIN_BATCH_SIZE = 200
MAX_BATCH_SIZE = 2000
MAX_COLLECTION_RECORDS = 200
CURSOR_IDLE_SECONDS = 15 * 60  # query locators expire after 15 idle minutes
MAX_CURSOR_ROWS = 20_000_000  # total rowids kept across open cursors (~160 MB)
LOGIN_HOSTS = ("https://login.salesforce.com", "https://test.salesforce.com")
_VERSION_RE = re.compile(r"v(\d+\.\d)")
_LOCATOR_RE = re.compile(r"(01g[0-9A-Za-z]{15})-(\d+)")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PARTNER_NS = "{urn:partner.soap.sforce.com}"


@dataclass(frozen=True)
class ApiRequest:
    """A transport-independent HTTP request.

    Attributes:
        method: HTTP method, upper case.
        path: URL path without the query string.
        query: Parsed query string (``parse_qs``).
        headers: Request headers; lookups must be case-insensitive.
        body: Raw request body.
    """

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class ApiResponse:
    """A transport-independent HTTP response.

    Attributes:
        status: HTTP status.
        body: Response body.
        content_type: Content-Type header.
        headers: Extra headers.
        category: Request category for the request log.
        truncate_at: Fault injection: send only this many body bytes, then drop the connection.
    """

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    category: str = "other"
    truncate_at: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One served request, as kept in ``Sandbox.request_log``.

    Attributes:
        method: HTTP method.
        path: URL path without the query string.
        status: HTTP status returned.
        category: ``auth``, ``versions``, ``resources``, ``describe``, ``query``, ``sobject``,
            ``composite``, ``limits`` or ``other``.
    """

    method: str
    path: str
    status: int
    category: str


@dataclass(frozen=True)
class Credentials:
    """The org's one integration user and connected app.

    Attributes:
        org_id: Organization id (``00D...``).
        user_id: Id of the integration user sessions act as.
        username: Login username.
        password: Login password.
        security_token: Security token appended to the password for SOAP login.
        client_id: Connected app consumer key.
        client_secret: Connected app consumer secret.
    """

    org_id: str
    user_id: str
    username: str
    password: str
    security_token: str
    client_id: str
    client_secret: str


class ApiError(Exception):
    """A whole-request failure answered with ``[{"message", "errorCode", "fields"}]``."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def response(self, category: str) -> ApiResponse:
        """Render the error as a Salesforce error array."""
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return ApiResponse(self.status, _json([entry]), category=category)


class RecordError(Exception):
    """A per-record failure reported in a result's ``errors`` list."""

    def __init__(self, status_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.fields = fields or []

    def as_dict(self) -> dict[str, Any]:
        """Render the error as ``{statusCode, message, fields}``."""
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class _Cursor:
    """Rowids of one query's matches, fixed at query time; pages slice them (no OFFSET scans)."""

    compiled: CompiledQuery
    rowids: np.ndarray
    batch_size: int
    include_deleted: bool
    last_used: float


@dataclass
class _Write:
    """One record write in a batch: operation, object and field values from the request."""

    op: str
    obj: ObjectDef | None
    values: dict[str, Any]
    record_id: str | None = None
    type_error: RecordError | None = None


class SalesforceApi:
    """The Salesforce REST, OAuth and SOAP login surface over the sandbox database.

    Args:
        db: The sandbox database.
        credentials: The org's integration user and connected app.
        jwt_certificate: PEM certificate registered with the connected app (verifies RS256
            assertions of the JWT bearer flow).
        base_url: Function returning the sandbox's ``https://127.0.0.1:PORT`` URL.
        page_size: Cap on records per query page.
        token_ttl_seconds: Lifetime of issued access tokens.
        daily_api_limit: ``DailyApiRequests`` allowance.
        faults: The fault plan every request and record write passes through.
        clock: Time source (seconds since the epoch).
        edit_converted_leads: Whether the integration user may edit converted leads.
        bulk_polls_to_complete: Bulk API 2.0 jobs report ``JobComplete`` from this job-info poll
            on (1: the first poll after the upload or the query already sees it).
        new_field_access: Whether fields created through the Tooling API are visible and
            editable to the integration user at once.
        field_security: ``granted`` or ``enforced`` (``connector/sandbox/security.py``).
        setup_rights: Whether the integration user may manage and assign permission sets.
        seed: Seed of the sales users' passwords.
        org_features: Validation and duplicate rules, record types, currencies and formula
            fields (``connector/sandbox/org_rules.py``).
    """

    def __init__(
        self,
        db: Database,
        credentials: Credentials,
        jwt_certificate: bytes,
        base_url: Callable[[], str],
        *,
        page_size: int = MAX_BATCH_SIZE,
        token_ttl_seconds: int = 7200,
        daily_api_limit: int = 100_000,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.time,
        edit_converted_leads: bool = True,
        bulk_polls_to_complete: int = 1,
        new_field_access: bool = True,
        field_security: str = "granted",
        setup_rights: bool = True,
        seed: int = 42,
        org_features: OrgFeatures | None = None,
    ) -> None:
        self.db = db
        # This org's own schema: the Tooling API adds fields to it, tests remove or lock fields.
        # Requests see it through the calling user's field-level security (``objects``).
        self.org_objects: dict[str, ObjectDef] = copy_schema()
        self.rules = OrgRules(db.lock, db.connection, self.org_objects, org_features)
        self.security = Security(
            db.lock,
            db.connection,
            self.org_objects,
            credentials.user_id,
            seed=seed,
            field_security=field_security,
            setup_rights=setup_rights,
            next_id=lambda conn, name: self._next_id(conn, self.org_objects[name.lower()]),
        )
        self._org_prefixes = {obj.key_prefix: obj for obj in self.org_objects.values()}
        # The "View and Edit Converted Leads" user permission: without it, converted leads are
        # read-only (https://help.salesforce.com/s/articleView?id=sf.leads_edit_converted.htm).
        self.edit_converted_leads = edit_converted_leads
        self.credentials = credentials
        public_key = x509.load_pem_x509_certificate(jwt_certificate).public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError("the connected app certificate must carry an RSA key")
        self._jwt_key = public_key
        self.base_url = base_url
        self.page_size = max(1, page_size)
        self.token_ttl_seconds = token_ttl_seconds
        self.daily_api_limit = daily_api_limit
        self.faults = faults or FaultPlan()
        self.clock = clock
        self.request_log: list[RequestRecord] = []
        self._state_lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._api_used = 0
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._cursor_numbers = itertools.count(1)
        self._sequences: dict[str, int] = {}
        # Imported here: both modules call back into this class.
        from connector.sandbox.bulk_api import BulkApi
        from connector.sandbox.metadata_api import MetadataApi
        from connector.sandbox.tooling_api import ToolingApi
        from connector.sandbox.ui_api import UiApi

        self.bulk = BulkApi(self, polls_to_complete=bulk_polls_to_complete)
        self.tooling = ToolingApi(self, grant_access=new_field_access)
        self.metadata = MetadataApi(self)
        self.ui = UiApi(self)
        self.refresh_tokens = RefreshTokens()
        from connector.sandbox.bulk_v1 import BulkV1Api

        self.bulk_v1 = BulkV1Api(self)
        # Change Data Capture (connector/sandbox/change_events.py): set by the Sandbox when its
        # Pub/Sub API is on; None captures nothing.
        self.change_events: ChangeEventLog | None = None
        self._call = threading.local()

    @property
    def objects(self) -> dict[str, ObjectDef]:
        """The schema as the calling user sees it (the whole org outside requests)."""
        view = self.security.view()
        return self.org_objects if view is None else view.objects

    @property
    def key_prefixes(self) -> dict[str, ObjectDef]:
        """The calling user's objects by key prefix."""
        view = self.security.view()
        return self._org_prefixes if view is None else view.key_prefixes

    def set_field(self, sobject: str, field_name: str, **changes: Any) -> None:
        """Change or remove a field of this org's schema (tests model misconfigured orgs).

        Args:
            sobject: Object API name.
            field_name: Field API name.
            **changes: FieldDef attributes to change (``updateable=False``), or ``remove=True``
                to drop the field from describe and SOQL (its column stays, unused).

        Raises:
            ValueError: Unknown object or field.
        """
        obj = self.get_object(sobject)
        definition = obj.field(field_name) if obj is not None else None
        if obj is None or definition is None:
            raise ValueError(f"unknown field {sobject}.{field_name}")
        with self.db.lock:
            if changes.pop("remove", False):
                del obj.fields[definition.name.lower()]
            else:
                obj.fields[definition.name.lower()] = dataclasses.replace(definition, **changes)

    def get_object(self, name: str) -> ObjectDef | None:
        """Look an sObject type of this org up case-insensitively.

        Args:
            name: Object API name in any letter case.

        Returns:
            The object, or None when the org has no such object.
        """
        return self.objects.get(name.lower())

    # -------------------------------------------------------------------------------------------
    # Entry point

    @property
    def api_used(self) -> int:
        """Number of ``/services/data`` requests counted against the daily allowance."""
        return self._api_used

    def expire_sessions(self) -> None:
        """Invalidate every issued access token."""
        with self._state_lock:
            self._tokens.clear()

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Serve one request (never raises; errors become Salesforce error responses).

        Args:
            request: The request.

        Returns:
            The response.
        """
        category = _categorize(request)
        self._call.origin = origin_for(request.path)
        fault = self.faults.on_request(RequestInfo(request.method, request.path, category))
        truncate_at: int | None = None
        if isinstance(fault, Slow):
            time.sleep(fault.seconds)  # then serve normally: the client may have timed out
            fault = None
        elif isinstance(fault, Drop):
            truncate_at = fault.after_bytes  # served (and applied) normally, then cut off
            fault = None
        if fault is not None:
            response = ApiResponse(
                fault.status, fault.body, fault.content_type, dict(fault.headers), category
            )
        else:
            try:
                response = self._dispatch(request)
            except ApiError as error:
                response = error.response(category)
            except Exception as error:  # a sandbox bug must still answer like Salesforce
                response = ApiError(
                    500,
                    "UNKNOWN_EXCEPTION",
                    f"An unexpected error occurred in the sandbox: {type(error).__name__}: {error}",
                ).response(category)
            response.category = category
        response.truncate_at = truncate_at
        if request.path.startswith("/services/data"):
            response.headers.setdefault(
                "Sforce-Limit-Info", f"api-usage={self._api_used}/{self.daily_api_limit}"
            )
        with self._state_lock:
            self.request_log.append(
                RequestRecord(request.method, request.path, response.status, category)
            )
        return response

    def _dispatch(self, request: ApiRequest) -> ApiResponse:
        path = request.path
        if path == "/services/oauth2/token":
            self._require_method(request, "POST")
            return self._oauth_token(request)
        if path.startswith("/services/Soap/u/"):
            self._require_method(request, "POST")
            return self._soap_login(request)
        if path.startswith("/services/Soap/m/"):
            return self.metadata.handle(request)
        if path.rstrip("/") == "/services/data":
            # The version list is public in real orgs: no session needed, nothing counted.
            self._require_method(request, "GET")
            return self._versions()
        if path.startswith("/services/data/"):
            return self._data(request)
        if path.startswith("/services/async/"):
            return self.bulk_v1.handle(request)
        raise _not_found()

    @staticmethod
    def _require_method(request: ApiRequest, *allowed: str) -> None:
        if request.method not in allowed:
            raise ApiError(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{request.method}' not allowed. Allowed are {','.join(allowed)}",
            )

    # -------------------------------------------------------------------------------------------
    # Login: OAuth 2.0 token endpoint and SOAP partner login

    def _issue_token(self, user_id: str | None = None) -> str:
        token = f"{self.credentials.org_id}!AQ{secrets.token_urlsafe(72)}"
        with self._state_lock:
            now = self.clock()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_ttl_seconds
            users = self.security.token_users
            for stale in [t for t in users if t not in self._tokens]:
                del users[stale]
            # The token acts as this user (contract section 1.3).
            users[token] = user_id or self.credentials.user_id
        return token

    def token_is_valid(self, token: str) -> bool:
        """Whether an access token was issued by this org and has not expired (Pub/Sub API).

        Args:
            token: The access token.

        Returns:
            True when valid.
        """
        return self._token_is_valid(token)

    def _token_is_valid(self, token: str) -> bool:
        with self._state_lock:
            expiry = self._tokens.get(token)
            return expiry is not None and expiry > self.clock()

    def _oauth_token(self, request: ApiRequest) -> ApiResponse:
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type", "")
        rotated: str | None = None
        user_id: str | None = None
        if grant == "password":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            password = form.get("password", "")
            # OAuth accepts the password alone or with the security token appended.
            valid_passwords = (
                self.credentials.password,
                self.credentials.password + self.credentials.security_token,
            )
            user_id = self.security.password_user(form.get("username", ""), password)
            if user_id is None and (
                form.get("username") != self.credentials.username or password not in valid_passwords
            ):
                return _oauth_error("invalid_grant", "authentication failure")
        elif grant == "client_credentials":
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            authorization = request.headers.get("Authorization", "")
            if authorization.startswith("Basic "):
                try:
                    decoded = base64.b64decode(authorization[6:], validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    return _oauth_error("invalid_client", "invalid client credentials")
                client_id, _, client_secret = decoded.partition(":")
            self._check_client(client_id, client_secret)
        elif grant == "refresh_token":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            redeemed = self.refresh_tokens.redeem(form.get("refresh_token", ""))
            if redeemed is None:
                return _oauth_error("invalid_grant", "expired access/refresh token")
            # The token acts as the user who authorized the connected app (while active).
            user_id = self.security.user_by_username(redeemed[0])
            if user_id is None:
                return _oauth_error("invalid_grant", "inactive user")
            rotated = redeemed[1]
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            failure = self._check_jwt(form.get("assertion", ""))
            if failure is not None:
                return failure
            user_id = self.security.user_by_username(_jwt_subject(form.get("assertion", "")))
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        # Client credentials act as the connected app's run-as (integration) user.
        user_id = user_id or self.credentials.user_id
        token = self._issue_token(user_id)
        issued_at = str(int(self.clock() * 1000))
        identity = f"{self.base_url()}/id/{self.credentials.org_id}/{user_id}"
        # Real orgs sign id + issued_at with the consumer secret (HMAC-SHA256, base64).
        signature = base64.b64encode(
            hmac.new(
                self.credentials.client_secret.encode(),
                (identity + issued_at).encode(),
                hashlib.sha256,
            ).digest()
        ).decode()
        body = {
            "access_token": token,
            "instance_url": self.base_url(),
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }
        if grant == "client_credentials":
            body["scope"] = "api"
        elif grant == "refresh_token":
            body["scope"] = "api refresh_token"
            if rotated is not None:
                body["refresh_token"] = rotated
        return ApiResponse(200, _json(body))

    def _check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if client_id != self.credentials.client_id:
            raise _OAuthFailure("invalid_client_id", "client identifier invalid")
        if client_secret != self.credentials.client_secret:
            raise _OAuthFailure("invalid_client", "invalid client credentials")

    def _check_jwt(self, assertion: str) -> ApiResponse | None:
        """Verify an RS256 JWT bearer assertion; return an error response or None."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return _oauth_error("invalid_grant", "invalid assertion")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (binascii.Error, ValueError):
            return _oauth_error("invalid_grant", "invalid assertion")
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            return _oauth_error("invalid_grant", "invalid assertion")
        try:
            self._jwt_key.verify(
                signature,
                f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return _oauth_error("invalid_grant", "invalid assertion")
        if not isinstance(claims, dict):
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.credentials.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if self.security.user_by_username(str(claims.get("sub") or "")) is None:
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("aud") not in (self.base_url(), *LOGIN_HOSTS):
            return _oauth_error("invalid_grant", "audience is invalid")
        try:
            # simple-salesforce sends exp as a string of seconds; accept both forms.
            expires = float(claims.get("exp"))
        except (TypeError, ValueError):
            return _oauth_error("invalid_grant", "invalid assertion")
        if not math.isfinite(expires) or expires <= self.clock():
            return _oauth_error("invalid_grant", "expired authorization code")
        return None

    def _soap_login(self, request: ApiRequest) -> ApiResponse:
        version = request.path.split("/")[4] if request.path.count("/") >= 4 else API_VERSION
        try:
            # Local test server: expat >= 2.4.1 already refuses entity-expansion attacks.
            root = ElementTree.fromstring(request.body)  # noqa: S314
        except ElementTree.ParseError:
            return _soap_fault("INVALID_LOGIN", "Invalid request: could not parse the envelope.")
        login = root.find(f".//{_PARTNER_NS}login")
        if login is None:
            return _soap_fault("INVALID_OPERATION", "Only the login operation is supported.")
        username = (login.findtext(f"{_PARTNER_NS}username") or "").strip()
        password = login.findtext(f"{_PARTNER_NS}password") or ""
        expected = self.credentials.password + self.credentials.security_token
        if username != self.credentials.username or password != expected:
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        token = self._issue_token()
        org = self.credentials.org_id
        base = self.base_url()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>{base}/services/Soap/m/{version}/{org}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>{base}/services/Soap/u/{version}/{org}</serverUrl>"
            f"<sessionId>{escape(token)}</sessionId>"
            f"<userId>{self.credentials.user_id}</userId>"
            f"<userInfo><organizationId>{org}</organizationId>"
            f"<userName>{escape(self.credentials.username)}</userName></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return ApiResponse(200, body.encode(), XML_TYPE)

    # -------------------------------------------------------------------------------------------
    # /services/data

    @staticmethod
    def _versions() -> ApiResponse:
        return ApiResponse(200, _json(version_list()))

    def _authenticate(self, request: ApiRequest) -> None:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not self._token_is_valid(token.strip()):
            raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        self.security.act_as(token.strip())
        self.rules.read_headers(request.headers)

    def _count_call(self) -> None:
        with self._state_lock:
            if self._api_used >= self.daily_api_limit:
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self._api_used += 1

    def _data(self, request: ApiRequest) -> ApiResponse:
        segments = request.path.split("/")[3:]  # after "", "services", "data"
        match = _VERSION_RE.fullmatch(segments[0])
        if match is None or match.group(1) not in SUPPORTED_VERSIONS:
            raise _not_found()
        version = match.group(1)
        self._authenticate(request)
        rest = [segment for segment in segments[1:] if segment]
        if rest != ["limits"]:
            # Reading the allowance does not spend it, so a client can stop before the cap.
            self._count_call()
        if not rest:
            self._require_method(request, "GET")
            return self._resources(version)
        head = rest[0]
        if head == "sobjects":
            return self._sobjects(request, version, rest[1:])
        if head in ("query", "queryAll"):
            self._require_method(request, "GET")
            include_deleted = head == "queryAll"
            if len(rest) == 1:
                return self._query(request, version, include_deleted)
            if len(rest) == 2:
                return self._query_more(request, version, rest[1])
            raise _not_found()
        if head == "composite" and rest[1:] == ["batch"]:
            from connector.sandbox.composite_batch import handle_batch  # imports this module

            return handle_batch(self, request, version)
        if head == "composite" and len(rest) >= 2 and rest[1] == "sobjects":
            return self._collections(request, version, rest[2:])
        if head == "limits" and len(rest) == 1:
            self._require_method(request, "GET")
            return self._limits()
        if head == "jobs" and len(rest) >= 2:
            return self.bulk.handle(request, version, rest[1:])
        if head == "tooling" and len(rest) >= 2:
            return self.tooling.handle(request, version, rest[1:])
        if head == "ui-api" and len(rest) >= 2:
            return self.ui.handle(request, version, rest[1:])
        raise _not_found()

    def _resources(self, version: str) -> ApiResponse:
        base = f"/services/data/v{version}"
        names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs", "tooling")
        return ApiResponse(200, _json({name: f"{base}/{name}" for name in names}))

    def _limits(self) -> ApiResponse:
        limit = self.daily_api_limit
        body = {
            "DailyApiRequests": {"Max": limit, "Remaining": max(0, limit - self._api_used)},
            "DailyBulkV2QueryJobs": {
                "Max": self.bulk.MAX_QUERY_JOBS,
                "Remaining": max(0, self.bulk.MAX_QUERY_JOBS - self.bulk.query_jobs_used),
            },
            "DailyBulkApiBatches": {
                "Max": self.bulk.MAX_BATCHES,
                "Remaining": max(0, self.bulk.MAX_BATCHES - self.bulk.batches_used),
            },
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
        }
        return ApiResponse(200, _json(body))

    # Describe and single records -------------------------------------------------------------

    def _sobjects(self, request: ApiRequest, version: str, rest: list[str]) -> ApiResponse:
        if not rest:
            self._require_method(request, "GET")
            body = {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION_RECORDS,
                "sobjects": [obj.describe_global_entry(version) for obj in self.objects.values()],
            }
            return ApiResponse(200, _json(body))
        obj = self.get_object(rest[0])
        if obj is None:
            raise _not_found()
        if len(rest) == 1:
            if request.method == "POST":
                return self._create_one(request, obj)
            self._require_method(request, "GET", "POST")
            body = {"objectDescribe": obj.describe_global_entry(version), "recentItems": []}
            return ApiResponse(200, _json(body))
        if len(rest) == 2 and rest[1] == "describe":
            self._require_method(request, "GET")
            return ApiResponse(200, _json(obj.describe(version)))
        if len(rest) == 2:
            if request.method == "GET":
                return self._get_record(request, version, obj, rest[1])
            if request.method == "PATCH":
                return self._update_one(request, obj, rest[1])
            if request.method == "DELETE":
                return self._delete_one(obj, rest[1])
            self._require_method(request, "GET", "PATCH", "DELETE")
        if len(rest) == 3:
            return self._by_external_id(request, version, obj, rest[1], rest[2])
        raise _not_found()

    def _fetch_records(
        self,
        version: str,
        obj: ObjectDef,
        where: str,
        params: list[Any],
        fields: list[FieldDef],
    ) -> list[dict[str, Any]]:
        columns = ", ".join(f'"{definition.name}"' for definition in fields)
        rows = self.db.fetch_all(f'SELECT "Id", {columns} FROM "{obj.table}" WHERE {where}', params)
        converters = [converter_for(definition) for definition in fields]
        records = []
        for row in rows:
            record: dict[str, Any] = {
                "attributes": {
                    "type": obj.name,
                    "url": f"/services/data/v{version}/sobjects/{obj.name}/{row[0]}",
                }
            }
            for definition, convert, value in zip(fields, converters, row[1:], strict=True):
                record[definition.name] = convert(value)
            records.append(record)
        return records

    def _requested_fields(self, request: ApiRequest, obj: ObjectDef) -> list[FieldDef]:
        names = request.query.get("fields")
        if not names:
            return list(obj.fields.values())
        fields = []
        for name in ",".join(names).split(","):
            definition = obj.field(name.strip())
            if definition is None:
                raise ApiError(
                    400, "INVALID_FIELD", f"No such column '{name.strip()}' on entity '{obj.name}'"
                )
            fields.append(definition)
        return fields

    def _get_record(
        self, request: ApiRequest, version: str, obj: ObjectDef, raw_id: str
    ) -> ApiResponse:
        record_id = normalize_id(raw_id)
        if record_id is None or not record_id.startswith(obj.key_prefix):
            raise _not_found()
        fields = self._requested_fields(request, obj)
        records = self._fetch_records(version, obj, '"Id" = ?', [record_id], fields)
        if not records:
            raise _not_found()
        if obj.has_is_deleted and self._is_deleted(obj, record_id):
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return ApiResponse(200, _json(records[0]))

    def _is_deleted(self, obj: ObjectDef, record_id: str) -> bool:
        rows = self.db.fetch_all(
            f'SELECT "IsDeleted" FROM "{obj.table}" WHERE "Id" = ?', [record_id]
        )
        return bool(rows and rows[0][0])

    def _parse_body(self, request: ApiRequest) -> Any:
        try:
            return json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}") from error

    def _record_body(self, request: ApiRequest) -> dict[str, Any]:
        body = self._parse_body(request)
        if not isinstance(body, dict):
            raise ApiError(
                400,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of SObject from a non-object JSON value",
            )
        return {key: value for key, value in body.items() if key != "attributes"}

    def _single(self, write: _Write) -> dict[str, Any]:
        results = self._apply_writes([write], all_or_none=True)
        result = results[0]
        if not result["success"]:
            error = result["errors"][0]
            code = error["statusCode"]
            record_level = code in ("INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID") and (
                error["fields"] in ([], ["Id"])
            )
            if record_level:
                # A single-record URL naming a missing record is a 404, not a record error.
                raise _not_found()
            status = 404 if code in ("ENTITY_IS_DELETED", "NOT_FOUND") else 400
            raise ApiError(status, code, error["message"], error["fields"])
        return result

    def _create_one(self, request: ApiRequest, obj: ObjectDef) -> ApiResponse:
        result = self._single(_Write("create", obj, self._record_body(request)))
        return ApiResponse(201, _json(result))

    def _update_one(self, request: ApiRequest, obj: ObjectDef, raw_id: str) -> ApiResponse:
        body = self._record_body(request)
        self._single(_Write("update", obj, body, raw_id))
        return ApiResponse(204)

    def _delete_one(self, obj: ObjectDef, raw_id: str) -> ApiResponse:
        record_id = normalize_id(raw_id)
        if record_id is None or not record_id.startswith(obj.key_prefix):
            raise _not_found()
        self._single(_Write("delete", obj, {}, raw_id))
        return ApiResponse(204)

    def _by_external_id(
        self, request: ApiRequest, version: str, obj: ObjectDef, field_name: str, value: str
    ) -> ApiResponse:
        definition = self._external_id_field(obj, field_name)
        if request.method == "GET":
            where, params = self._match_clause(definition, value)
            records = self._fetch_records(
                version, obj, where + self._live(obj), params, list(obj.fields.values())
            )
            if not records:
                raise _not_found()
            if len(records) > 1:
                urls = [record["attributes"]["url"] for record in records]
                return ApiResponse(300, _json(urls))
            return ApiResponse(200, _json(records[0]))
        self._require_method(request, "GET", "PATCH")
        body = self._record_body(request)
        body[definition.name] = value
        result = self._single(_Write("upsert", obj, body))
        status = 201 if result.get("created") else 200
        return ApiResponse(
            status, _json({key: result[key] for key in ("id", "success", "errors", "created")})
        )

    # Query -----------------------------------------------------------------------------------

    def _batch_size(self, request: ApiRequest, default: int | None = None) -> int:
        """Page size: ``Sforce-Query-Options: batchSize=N`` clamped to 200..2000, then to the cap.

        https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
        """
        size = default if default is not None else MAX_BATCH_SIZE
        options = request.headers.get("Sforce-Query-Options", "")
        for option in options.split(","):
            key, _, value = option.strip().partition("=")
            if key.strip().lower() == "batchsize" and value.strip().isdigit():
                size = min(MAX_BATCH_SIZE, max(MIN_BATCH_SIZE, int(value.strip())))
        return min(size, self.page_size)

    def _query(self, request: ApiRequest, version: str, include_deleted: bool) -> ApiResponse:
        source = (request.query.get("q") or [""])[0]
        if not source.strip():
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            compiled = compile_query(source, include_deleted=include_deleted, objects=self.objects)
        except SoqlError as error:
            raise ApiError(400, error.error_code, error.message) from error
        batch_size = self._batch_size(request)
        with self.db.lock:
            conn = self.db.connection
            if compiled.count_only:
                total = conn.execute(compiled.count_sql, compiled.params).fetchone()[0]
                return ApiResponse(200, _json({"totalSize": total, "done": True, "records": []}))
            cursor = conn.execute(compiled.ids_sql, compiled.params)
            rowids = np.fromiter((row[0] for row in cursor), dtype=np.int64)
            state = _Cursor(compiled, rowids, batch_size, include_deleted, time.monotonic())
            return self._page(state, version, 0, None)

    def _query_more(self, request: ApiRequest, version: str, locator_text: str) -> ApiResponse:
        match = _LOCATOR_RE.fullmatch(locator_text)
        with self._state_lock:
            self._expire_cursors()
            state = self._cursors.get(match.group(1)) if match else None
            if state is not None:
                self._cursors.move_to_end(match.group(1))  # type: ignore[union-attr]
        if state is None or match is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        offset = int(match.group(2))
        if offset > len(state.rowids):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        state.last_used = time.monotonic()
        if "Sforce-Query-Options" in request.headers:
            state.batch_size = self._batch_size(request, state.batch_size)
        with self.db.lock:
            return self._page(state, version, offset, match.group(1))

    def _page(self, state: _Cursor, version: str, offset: int, locator: str | None) -> ApiResponse:
        """Serve records [offset, offset + batch) of a cursor (caller holds the db lock)."""
        total = len(state.rowids)
        chunk = state.rowids[offset : offset + state.batch_size].tolist()
        records: list[dict[str, Any]] = []
        if chunk:
            rows = self.db.connection.execute(state.compiled.page_sql(len(chunk)), chunk)
            by_rowid = state.compiled.shape(rows.fetchall(), version)
            records = [by_rowid[rowid] for rowid in chunk if rowid in by_rowid]
        end = offset + len(chunk)
        body: dict[str, Any] = {"totalSize": total, "done": end >= total}
        if end < total:
            if locator is None:
                locator = self._register_cursor(state)
            endpoint = "queryAll" if state.include_deleted else "query"
            body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{locator}-{end}"
        body["records"] = records
        return ApiResponse(200, _json(body))

    def _register_cursor(self, state: _Cursor) -> str:
        with self._state_lock:
            locator = make_id("01g", next(self._cursor_numbers))
            self._cursors[locator] = state
            self._expire_cursors()
        return locator

    def _expire_cursors(self) -> None:
        """Drop idle cursors and, past the memory budget, the least recently used ones."""
        now = time.monotonic()
        for locator in [
            key for key, c in self._cursors.items() if now - c.last_used > CURSOR_IDLE_SECONDS
        ]:
            del self._cursors[locator]
        while len(self._cursors) > 1 and (
            sum(len(c.rowids) for c in self._cursors.values()) > MAX_CURSOR_ROWS
        ):
            self._cursors.popitem(last=False)

    # Collections -----------------------------------------------------------------------------

    def _collections(self, request: ApiRequest, version: str, rest: list[str]) -> ApiResponse:
        method = request.method
        if method == "DELETE" and not rest:
            raw_ids = ",".join(request.query.get("ids", [])).split(",")
            raw_ids = [value.strip() for value in raw_ids if value.strip()]
            if not raw_ids:
                raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
            self._check_count(len(raw_ids))
            all_or_none = (request.query.get("allOrNone") or ["false"])[0].lower() == "true"
            writes = [_Write("delete", None, {}, raw) for raw in raw_ids]
            return ApiResponse(200, _json(self._apply_writes(writes, all_or_none)))
        if method == "GET" and len(rest) == 1:
            return self._retrieve(request, version, rest[0])
        body = self._parse_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must contain records")
        records = body["records"]
        self._check_count(len(records))
        all_or_none = body.get("allOrNone", False) is True
        if method == "POST" and not rest:
            writes = [self._collection_write("create", record, None) for record in records]
        elif method == "PATCH" and not rest:
            writes = [self._collection_write("update", record, None) for record in records]
        elif method == "PATCH" and len(rest) == 2:
            obj = self.get_object(rest[0])
            if obj is None:
                raise _not_found()
            definition = self._external_id_field(obj, rest[1])
            writes = [self._collection_write("upsert", record, obj) for record in records]
            for write in writes:
                write.values["__external__"] = definition.name
        else:
            self._require_method(request, "GET", "POST", "PATCH", "DELETE")
            raise _not_found()
        return ApiResponse(200, _json(self._apply_writes(writes, all_or_none)))

    @staticmethod
    def _check_count(count: int) -> None:
        if count > MAX_COLLECTION_RECORDS:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )

    def _collection_write(self, op: str, record: Any, path_obj: ObjectDef | None) -> _Write:
        if not isinstance(record, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
        attributes = record.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        values = {key: value for key, value in record.items() if key != "attributes"}
        obj = self.get_object(type_name) if isinstance(type_name, str) else None
        write = _Write(op, obj, values)
        if path_obj is not None:
            if obj is not None and obj is not path_obj:
                write.type_error = RecordError(
                    "INVALID_TYPE", f"Record type {obj.name} does not match {path_obj.name}"
                )
            write.obj = path_obj
        elif obj is None:
            write.type_error = RecordError(
                "INVALID_TYPE",
                f"sObject type '{type_name}' is not supported."
                if type_name
                else "Must send a concrete entity type.",
            )
        if op == "update":
            raw = values.pop("id", None) or values.pop("Id", None)
            write.record_id = raw if isinstance(raw, str) else None
            values.pop("Id", None)
        return write

    def _retrieve(self, request: ApiRequest, version: str, name: str) -> ApiResponse:
        obj = self.get_object(name)
        if obj is None:
            raise _not_found()
        raw_ids = [value for value in ",".join(request.query.get("ids", [])).split(",") if value]
        self._check_count(len(raw_ids))
        fields = self._requested_fields(request, obj)
        ids = [normalize_id(value) for value in raw_ids]
        found = {
            record["attributes"]["url"].rsplit("/", 1)[1]: record
            for record in self._fetch_records(
                version,
                obj,
                f'"Id" IN ({",".join("?" * len(ids))})' if ids else "0",
                [value for value in ids if value],
                fields,
            )
        }
        return ApiResponse(200, _json([found.get(value or "") for value in ids]))

    # Writes ----------------------------------------------------------------------------------

    def update_records_as_user(self, sobject: str, rows: list[dict[str, Any]]) -> None:
        """Apply edits the way a user would in the UI (no write_log entries).

        Args:
            sobject: Object API name.
            rows: Records with ``Id`` plus the fields to set.

        Raises:
            ValueError: When the object is unknown or any record fails (nothing is applied).
        """

        def writes(obj: ObjectDef) -> list[_Write]:
            out = []
            for row in rows:
                values = dict(row)
                record_id = values.pop("Id", None) or values.pop("id", None)
                out.append(_Write("update", obj, values, record_id))
            return out

        self._write_as_user(sobject, "update_records", writes)

    def create_records_as_user(self, sobject: str, rows: list[dict[str, Any]]) -> list[str]:
        """Create records the way a user would in the UI (no write_log entries).

        Args:
            sobject: Object API name.
            rows: The records' fields.

        Returns:
            The new records' ids, in order.

        Raises:
            ValueError: When the object is unknown or any record fails (nothing is applied).
        """
        results = self._write_as_user(
            sobject, "create_records", lambda obj: [_Write("create", obj, dict(r)) for r in rows]
        )
        return [str(result["id"]) for result in results]

    def delete_records_as_user(self, sobject: str, ids: list[str]) -> None:
        """Delete records the way a user would in the UI: to the recycle bin (no write_log).

        Args:
            sobject: Object API name.
            ids: The records' ids.

        Raises:
            ValueError: When the object is unknown or any record fails (nothing is applied).
        """
        self._write_as_user(
            sobject, "delete_records", lambda obj: [_Write("delete", obj, {}, i) for i in ids]
        )

    def _write_as_user(
        self, sobject: str, action: str, writes: Callable[[ObjectDef], list[_Write]]
    ) -> list[dict[str, Any]]:
        """Apply a user's UI writes all or none, outside ``write_log``; the per-record results."""
        obj = self.get_object(sobject)
        if obj is None:
            raise ValueError(f"unknown sObject {sobject!r}")
        results = self._apply_writes(writes(obj), all_or_none=True, log=False)
        failures = [result["errors"] for result in results if not result["success"]]
        if failures:
            raise ValueError(f"{action} failed: {failures}")
        return results

    def empty_recycle_bin(self, sobject: str) -> int:
        """Purge an object's deleted records for good, as Salesforce does after 15 days.

        Purged records are gone from ``queryAll`` too: only a full read of the live ids shows
        that they no longer exist.

        Args:
            sobject: Object API name.

        Returns:
            The number of records purged.

        Raises:
            ValueError: When the object is unknown or has no recycle bin.
        """
        obj = self.get_object(sobject)
        if obj is None or not obj.has_is_deleted:
            raise ValueError(f"{sobject!r} is not an object with a recycle bin")
        with self.db.transaction() as conn:
            return conn.execute(f'DELETE FROM "{obj.table}" WHERE "IsDeleted" = 1').rowcount

    def _apply_writes(
        self,
        writes: list[_Write],
        all_or_none: bool,
        *,
        log: bool = True,
        per_record_parse_errors: bool = False,
    ) -> list[dict[str, Any]]:
        """Apply writes in one transaction, record by record (a savepoint each).

        A failing record never aborts the others unless ``all_or_none``; then nothing is
        committed and the records that passed report ``ALL_OR_NONE_OPERATION_ROLLED_BACK``.
        With ``per_record_parse_errors`` (Bulk API CSV rows), a value that cannot be read is that
        record's error instead of failing the whole request.
        """
        now = int(self.clock())
        results: list[dict[str, Any]] = []
        # Triggers run once per batch: a busy org fails every record of a too-large batch.
        sobject = next((w.obj.name for w in writes if w.obj is not None), "")
        busy = self.faults.on_write_batch(sobject, len(writes)) if log and writes else None
        if busy is not None:
            error = RecordError(busy.status_code, busy.message).as_dict()
            return [{"success": False, "errors": [error]} for _ in writes]
        events = self.change_events
        with self.db.lock:
            conn = self.db.connection
            conn.execute("BEGIN IMMEDIATE")
            if events is not None:
                # UI edits (log=False) are not API calls: an empty changeOrigin.
                events.begin(getattr(self._call, "origin", "") if log else "")
            committed = False
            try:
                for write in writes:
                    conn.execute("SAVEPOINT record")
                    try:
                        try:
                            results.append(self._apply_one(conn, write, now, log))
                        except ApiError as error:
                            if not per_record_parse_errors:
                                raise
                            raise RecordError(error.error_code, error.message) from error
                        conn.execute("RELEASE record")
                    except RecordError as error:
                        conn.execute("ROLLBACK TO record")
                        conn.execute("RELEASE record")
                        results.append({"success": False, "errors": [error.as_dict()]})
                failed = any(not result["success"] for result in results)
                if all_or_none and failed:
                    conn.execute("ROLLBACK")
                    rolled_back = RecordError(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request "
                        "was using AllOrNone header",
                    ).as_dict()
                    return [
                        result
                        if not result["success"]
                        else {"success": False, "errors": [rolled_back]}
                        for result in results
                    ]
                conn.execute("COMMIT")
                committed = True
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                if events is not None:
                    events.end(committed)
        return results

    def _apply_one(
        self, conn: sqlite3.Connection, write: _Write, now: int, log: bool
    ) -> dict[str, Any]:
        if write.type_error is not None:
            raise write.type_error
        if write.op == "delete":
            return self._delete(conn, write, now, log)
        obj = write.obj
        assert obj is not None
        values = dict(write.values)
        if write.op == "upsert":
            external = values.pop("__external__", "Id")
            definition = obj.field(external)
            assert definition is not None
            key = values.get(definition.name)
            if key is None:
                key = next((v for k, v in values.items() if k.lower() == external.lower()), None)
            matches: list[tuple[Any, ...]] = []
            if key is not None and key != "":
                where, params = self._match_clause(definition, str(key))
                matches = conn.execute(
                    f'SELECT "Id" FROM "{obj.table}" WHERE {where}{self._live(obj)}', params
                ).fetchall()
            if len(matches) > 1:
                raise RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{definition.label}: more than one record found for external id field: "
                    f"{[row[0] for row in matches]}",
                    [definition.name],
                )
            values.pop("Id", None)
            values.pop("id", None)
            if matches:
                result = self._update(conn, obj, matches[0][0], values, now, log)
                result["created"] = False
                return result
            if definition.name == "Id":
                raise RecordError(
                    "NOT_FOUND",
                    "Provided external ID field does not exist or is not accessible: Id",
                )
            result = self._create(conn, obj, values, now, log)
            result["created"] = True
            return result
        if write.op == "create":
            if "id" in {key.lower() for key in values}:
                raise RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            return self._create(conn, obj, values, now, log)
        if not write.record_id:
            raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call")
        return self._update(conn, obj, write.record_id, values, now, log)

    def _locate(
        self, conn: sqlite3.Connection, obj: ObjectDef | None, raw_id: str
    ) -> tuple[ObjectDef, str, dict[str, Any]]:
        """Find a record by id for update/delete, raising the per-record errors Salesforce uses."""
        record_id = normalize_id(raw_id) if isinstance(raw_id, str) else None
        if record_id is None:
            raise RecordError("MALFORMED_ID", f"malformed id {raw_id}")
        target = self.key_prefixes.get(record_id[:3])
        if obj is not None and target is not obj:
            raise RecordError(
                "MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {raw_id}", ["Id"]
            )
        if target is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        cursor = conn.execute(f'SELECT * FROM "{target.table}" WHERE "Id" = ?', [record_id])
        row = cursor.fetchone()
        if row is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        current = {
            description[0]: value
            for description, value in zip(cursor.description, row, strict=True)
        }
        if target.has_is_deleted and current.get("IsDeleted"):
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        return target, record_id, current

    def _update(
        self,
        conn: sqlite3.Connection,
        obj: ObjectDef,
        raw_id: str,
        values: dict[str, Any],
        now: int,
        log: bool,
    ) -> dict[str, Any]:
        obj, record_id, current = self._locate(conn, obj, raw_id)
        if obj.name == "Lead" and current.get("IsConverted") and not self.edit_converted_leads:
            # Converted leads are read-only (error seen on every write to one).
            raise RecordError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        changes = self._validate(conn, obj, values, "update")
        fault = self.faults.on_record_write(obj.name, record_id)
        if fault is not None:
            raise RecordError(fault.status_code, fault.message)
        merged = {**current, **changes}
        self.security.check_write(conn, obj, merged, current)
        self.rules.check_write(obj, changes, current)
        derived = _derived_fields(obj, merged, changes, current, now)
        assignments = {**changes, **derived, "LastModifiedDate": now, "SystemModstamp": now}
        columns = ", ".join(f'"{name}" = ?' for name in assignments)
        conn.execute(
            f'UPDATE "{obj.table}" SET {columns} WHERE "Id" = ?', [*assignments.values(), record_id]
        )
        self.security.after_write(conn, obj, record_id)
        if log:
            self._log(conn, obj, record_id, changes, now)
        self._capture(obj, record_id, "UPDATE", assignments, now)
        return {"id": record_id, "success": True, "errors": []}

    def _create(
        self, conn: sqlite3.Connection, obj: ObjectDef, values: dict[str, Any], now: int, log: bool
    ) -> dict[str, Any]:
        if obj.name == "User":
            raise RecordError("INSUFFICIENT_ACCESS", "insufficient access rights on object id")
        changes = self._validate(conn, obj, values, "create")
        row: dict[str, Any] = {}
        for definition in obj.fields.values():
            if definition.default is not None:
                row[definition.name] = (
                    int(definition.default)
                    if isinstance(definition.default, bool)
                    else definition.default
                )
        if obj.field("OwnerId") is not None:
            row["OwnerId"] = self.credentials.user_id
        row.update(changes)
        missing = [
            definition.name
            for definition in obj.fields.values()
            if definition.required and row.get(definition.name) in (None, "")
        ]
        if obj.name == "CampaignMember" and not (row.get("LeadId") or row.get("ContactId")):
            missing.append("LeadId")
        if missing:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        if obj.name == "CampaignMember":
            self._check_new_member(conn, row)
        self.security.check_write(conn, obj, row, {})
        self.rules.check_write(obj, changes, {})
        fault = self.faults.on_record_write(obj.name, None)
        if fault is not None:
            raise RecordError(fault.status_code, fault.message)
        row.update(_derived_fields(obj, row, changes, {}, now))
        record_id = self._next_id(conn, obj)
        row.update(
            {"Id": record_id, "CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now}
        )
        if obj.has_is_deleted:
            row["IsDeleted"] = 0
        columns = ", ".join(f'"{name}"' for name in row)
        conn.execute(
            f'INSERT INTO "{obj.table}" ({columns}) VALUES ({", ".join("?" * len(row))})',
            list(row.values()),
        )
        if log:
            self._log(conn, obj, record_id, changes, now)
        self._capture(obj, record_id, "CREATE", row, now)
        return {"id": record_id, "success": True, "errors": []}

    def _capture(
        self, obj: ObjectDef, record_id: str, change_type: str, values: dict[str, Any], now: int
    ) -> None:
        """Record the write's change event in its transaction (when CDC is on)."""
        if self.change_events is not None:
            user = self.security.acting_user or self.credentials.user_id
            self.change_events.capture(obj, record_id, change_type, values, now, user)

    def _delete(
        self, conn: sqlite3.Connection, write: _Write, now: int, log: bool
    ) -> dict[str, Any]:
        obj, record_id, _ = self._locate(conn, write.obj, write.record_id or "")
        if obj.name in SETUP_OBJECTS:  # no recycle bin: removed for good
            self.security.delete(conn, obj, record_id)
            return {"id": record_id, "success": True, "errors": []}
        if not obj.has_is_deleted:
            raise RecordError("INSUFFICIENT_ACCESS", "insufficient access rights on object id")
        fault = self.faults.on_record_write(obj.name, record_id)
        if fault is not None:
            raise RecordError(fault.status_code, fault.message)
        conn.execute(
            f'UPDATE "{obj.table}" SET "IsDeleted" = 1, "LastModifiedDate" = ?, '
            f'"SystemModstamp" = ? WHERE "Id" = ?',
            [now, now, record_id],
        )
        if log:
            self._log(conn, obj, record_id, {"IsDeleted": 1}, now)
        self._capture(obj, record_id, "DELETE", {}, now)
        return {"id": record_id, "success": True, "errors": []}

    def _check_new_member(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        for column in ("LeadId", "ContactId"):
            if row.get(column):
                duplicate = conn.execute(
                    f'SELECT 1 FROM "CampaignMember" WHERE "CampaignId" = ? AND "{column}" = ? '
                    'AND "IsDeleted" = 0 LIMIT 1',
                    [row["CampaignId"], row[column]],
                ).fetchone()
                if duplicate:
                    raise RecordError("DUPLICATE_VALUE", "Already a campaign member.")

    def _next_id(self, conn: sqlite3.Connection, obj: ObjectDef) -> str:
        sequence = self._sequences.get(obj.name)
        if sequence is None:
            top = conn.execute(f'SELECT MAX("Id") FROM "{obj.table}"').fetchone()[0]
            sequence = 0
            if top:
                for char in top[6 : 6 + SEQUENCE_DIGITS]:
                    sequence = sequence * 62 + BASE62.index(char)
        sequence += 1
        self._sequences[obj.name] = sequence
        return make_id(obj.key_prefix, sequence)

    @staticmethod
    def _log(
        conn: sqlite3.Connection, obj: ObjectDef, record_id: str, changes: dict[str, Any], now: int
    ) -> None:
        conn.executemany(
            "INSERT INTO write_log (object, record_id, field, value, at) VALUES (?, ?, ?, ?, ?)",
            [
                (obj.name, record_id, name, json.dumps(value), now)
                for name, value in changes.items()
            ],
        )

    def _validate(
        self, conn: sqlite3.Connection, obj: ObjectDef, values: dict[str, Any], op: str
    ) -> dict[str, Any]:
        """Check field names, permissions and values; return stored values by field name."""
        resolved: list[tuple[FieldDef, Any]] = []
        locked: list[str] = []
        for key, value in values.items():
            definition = obj.field(key)
            if definition is None:
                raise RecordError(
                    "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [key]
                )
            allowed = definition.createable if op == "create" else definition.updateable
            if not allowed:
                locked.append(definition.name)
                continue
            resolved.append((definition, value))
        if locked:
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(locked)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                locked,
            )
        changes: dict[str, Any] = {}
        for definition, value in resolved:
            changes[definition.name] = self._coerce(conn, definition, value)
        return changes

    def _coerce(self, conn: sqlite3.Connection, definition: FieldDef, value: Any) -> Any:
        """Convert one JSON value to its stored form or raise the Salesforce error for it."""
        label = definition.label
        kind = definition.type
        if value is None:
            if not definition.nillable:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{definition.name}]",
                    [definition.name],
                )
            if definition.restricted:
                raise RecordError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{label}: bad value for restricted picklist field: null",
                    [definition.name],
                )
            return None
        if kind in TEXT_TYPES:
            if isinstance(value, dict | list):
                raise _deserialize_error(definition, value)
            text = _json_scalar_text(value)
            if definition.length and len(text) > definition.length:
                raise RecordError(
                    "STRING_TOO_LONG",
                    f"{label}: data value too large: {text[:60]} (max length={definition.length})",
                    [definition.name],
                )
            if kind == "email" and text and not _EMAIL_RE.fullmatch(text):
                raise RecordError(
                    "INVALID_EMAIL_ADDRESS",
                    f"{label}: invalid email address: {text}",
                    [definition.name],
                )
            if definition.restricted and text not in definition.picklist:
                raise RecordError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{label}: bad value for restricted picklist field: {text}",
                    [definition.name],
                )
            return text
        if kind in ID_TYPES:
            if not isinstance(value, str):
                raise _deserialize_error(definition, value)
            if value == "":
                return None
            record_id = normalize_id(value)
            target = self.key_prefixes.get(record_id[:3]) if record_id else None
            if record_id is None or target is None or target.name not in definition.reference_to:
                raise RecordError(
                    "MALFORMED_ID",
                    f"{label}: id value of incorrect type: {value}",
                    [definition.name],
                )
            exists = conn.execute(
                f'SELECT 1 FROM "{target.table}" WHERE "Id" = ?'
                + (' AND "IsDeleted" = 0' if target.has_is_deleted else ""),
                [record_id],
            ).fetchone()
            if exists is None:
                raise RecordError(
                    "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [definition.name]
                )
            return record_id
        if kind == "boolean":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return int(value.lower() == "true")
            raise _deserialize_error(definition, value)
        if kind in ("int", "double", "currency", "percent"):
            number = _to_number(value)
            if number is None:
                raise _deserialize_error(definition, value)
            if kind == "int":
                if number != int(number):
                    raise _deserialize_error(definition, value)
                integer = int(number)
                if definition.digits and len(str(abs(integer))) > definition.digits:
                    raise _out_of_range(definition, value)
                return integer
            # Salesforce rounds to the field's scale, then checks the integer digits
            # against precision - scale.
            rounded = round(number, definition.scale)
            if definition.precision:
                limit = 10 ** (definition.precision - definition.scale)
                if abs(rounded) >= limit:
                    raise _out_of_range(definition, value)
            return float(rounded)
        if kind == "date":
            if not isinstance(value, str):
                raise _deserialize_error(definition, value)
            try:
                return dt.date.fromisoformat(value[:10]).isoformat()
            except ValueError as error:
                raise _deserialize_error(definition, value) from error
        if kind == "datetime":
            if not isinstance(value, str):
                raise _deserialize_error(definition, value)
            moment = _parse_datetime(value)
            if moment is None:
                raise _deserialize_error(definition, value)
            return moment
        return value

    def _external_id_field(self, obj: ObjectDef, name: str) -> FieldDef:
        definition = obj.field(name)
        if definition is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {name}",
            )
        if not (definition.external_id or definition.id_lookup):
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Field {definition.name} is not an External ID or indexed field for {obj.name}",
            )
        return definition

    @staticmethod
    def _match_clause(definition: FieldDef, value: str) -> tuple[str, list[Any]]:
        if definition.type in ID_TYPES:
            return f'"{definition.name}" = ?', [normalize_id(value) or value]
        return f'"{definition.name}" = ? COLLATE NOCASE', [value]

    @staticmethod
    def _live(obj: ObjectDef) -> str:
        return ' AND "IsDeleted" = 0' if obj.has_is_deleted else ""


class _OAuthFailure(ApiError):
    """An OAuth error raised from a helper; rendered as an OAuth JSON error (not an array)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(400, error, description)
        self.error = error
        self.description = description

    def response(self, category: str) -> ApiResponse:
        """Render as ``{"error", "error_description"}``."""
        response = _oauth_error(self.error, self.description)
        response.category = category
        return response


def _oauth_error(error: str, description: str) -> ApiResponse:
    return ApiResponse(400, _json({"error": error, "error_description": description}))


def _soap_fault(code: str, message: str) -> ApiResponse:
    # The client reads sf:exceptionCode / sf:exceptionMessage by their prefixed tag names.
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return ApiResponse(500, body.encode(), XML_TYPE)


def _categorize(request: ApiRequest) -> str:
    path = request.path
    if path == "/services/oauth2/token" or path.startswith("/services/Soap/u/"):
        return "auth"
    if path.startswith("/services/async/"):
        return "bulk"  # Bulk API 1.0
    if path.startswith("/services/Soap/m/"):
        return "metadata"
    if not path.startswith("/services/data"):
        return "other"
    segments = [segment for segment in path.split("/")[3:] if segment]
    if not segments:
        return "versions"
    if len(segments) == 1:
        return "resources"
    head = segments[1]
    if head in ("query", "queryAll"):
        return "query"
    if head == "composite":
        return "composite"
    if head == "limits":
        return "limits"
    if head == "jobs":
        return "bulk"
    if head == "tooling":
        return "tooling"
    if head == "sobjects":
        if (
            len(segments) <= 2
            or segments[-1] == "describe"
            or (len(segments) == 3 and request.method == "GET")
        ):
            return "describe"
        return "sobject"
    return "other"


def _jwt_subject(assertion: str) -> str:
    """The ``sub`` claim of a verified JWT bearer assertion."""
    claims = json.loads(_b64url_decode(assertion.split(".")[1]))
    return str(claims.get("sub") or "")


def _json_scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _parse_datetime(value: str) -> int | None:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def _deserialize_error(definition: FieldDef, value: Any) -> ApiError:
    # A value that cannot be deserialised fails the whole request, as in real orgs.
    kind = type(value).__name__
    return ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {definition.type} from {kind} value {value!r} for field "
        f"{definition.name}",
    )


def _out_of_range(definition: FieldDef, value: Any) -> RecordError:
    return RecordError(
        "NUMBER_OUTSIDE_VALID_RANGE",
        f"{definition.label}: value outside of valid range on numeric field: {value}",
        [definition.name],
    )


def _derived_fields(
    obj: ObjectDef,
    merged: dict[str, Any],
    changes: dict[str, Any],
    current: dict[str, Any],
    now: int,
) -> dict[str, Any]:
    """Fields Salesforce computes from others: Name, HasResponded, IsClosed/IsWon."""
    derived: dict[str, Any] = {}
    if obj.field("FirstName") is not None and (
        "FirstName" in changes or "LastName" in changes or not current
    ):
        derived["Name"] = " ".join(
            part for part in (merged.get("FirstName"), merged.get("LastName")) if part
        )
    if obj.name == "CampaignMember":
        responded = merged.get("Status") in RESPONDED_STATUSES or bool(current.get("HasResponded"))
        derived["HasResponded"] = int(responded)
        if responded and not current.get("FirstRespondedDate"):
            derived["FirstRespondedDate"] = time.strftime("%Y-%m-%d", time.gmtime(now))
    if obj.name == "Opportunity" and "StageName" in changes:
        derived["IsClosed"] = int(changes["StageName"] in ("Closed Won", "Closed Lost"))
        derived["IsWon"] = int(changes["StageName"] == "Closed Won")
    if obj.name == "Task" and "Status" in changes:
        derived["IsClosed"] = int(changes["Status"] == "Completed")
    return derived
