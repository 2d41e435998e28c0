"""Segment, both directions: Profile API reads and Tracking API writes.

- **Reads** (``ProfileClient``): traits, external ids and events of one profile at a time
  through the Profile API (https://www.twilio.com/docs/segment/unify/profile-api), with cursor
  paging, within the API's rate limit (a token bucket on every attempt, retries included) and with
  backoff on 429 and 5xx through the shared session. The Profile API has no list endpoint and
  keeps only 14 days of events, so history at scale comes from warehouse / Profiles Sync exports
  instead (:func:`connector.files.import_segment_export`); the Profile API enriches known people.
- **Writes** (``TrackingClient``): ``/v1/batch`` of identify and track messages
  (https://www.twilio.com/docs/segment/connections/sources/catalog/libraries/server/http-api),
  packed up to 500 KB per request and 2,500 messages, each message at most 32 KB. Message ids are
  deterministic, so a batch that is sent again after an ambiguous failure is de-duplicated by
  Segment; that is why POSTs may be resent here (``HttpSettings(resend_non_idempotent=True)``).

The write key and the access token live only in the sessions' auth objects: they are never logged
and never part of an exception message. Records leave this module as plain dicts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlparse

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connector.clock import parse_utc_or_none
from connector.errors import (
    ConfigError,
    Kind,
    LeadscoreError,
    RequestError,
    TransientError,
    classify_exception,
    classify_status,
    response_error,
)
from connector.http import CallCounter, HttpSettings, TokenBucket, make_session
from connector.store import utc_now

log = logging.getLogger("leadscore.segment")

MAX_MESSAGE_BYTES = 32 * 1024
"""Segment rejects a message over 32 KB (the client library's ``MAX_MSG_SIZE = 32 << 10``)."""
MAX_REQUEST_BYTES = 500 * 1024
"""Segment rejects a ``/v1/batch`` request over 500 KB."""
MAX_BATCH_MESSAGES = 2500
"""Segment drops the events of a batch beyond 2,500 (with a 200), so never send more."""
LIBRARY = {"name": "leadscore", "version": "0.1.0"}

# Segment's default identifiers (https://www.twilio.com/docs/segment/unify/identity-resolution/
# externalids); configured external-id mappings add their own types.
DEFAULT_ID_TYPES = frozenset(
    {
        "user_id",
        "anonymous_id",
        "email",
        "phone",
        "ga_client_id",
        "android.id",
        "android.idfa",
        "android.push_token",
        "ios.id",
        "ios.idfa",
        "ios.push_token",
        "group_id",
        "segment_id",
    }
)
ProfileResource = Literal["traits", "external_ids", "events"]


def _https_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValueError("must be an https:// URL")
    return value.rstrip("/")


class ExportSettings(BaseModel):
    """A warehouse / Profiles Sync export imported on every pull (``[[segment.exports]]``).

    Attributes:
        path: a file or a glob (``exports/tracks-*.jsonl.gz``), relative to the config file.
        kind: what the files hold: ``tracks``, ``identifies`` or ``id_graph``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    kind: Literal["tracks", "identifies", "id_graph"]


class IdentitySettings(BaseModel):
    """How CDP profiles are joined to CRM records (``[segment.identity]``).

    Attributes:
        email: match a profile's emails to the CRM ``Email`` field (trimmed, lower-cased).
        external_ids: Segment identity type or trait name -> CRM field holding the same value, e.g.
            ``{ salesforce_id = "Id" }`` when a Salesforce Id is stored on the profile.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: bool = True
    external_ids: dict[str, str] = Field(default_factory=dict)

    @field_validator("external_ids")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, crm_field in value.items():
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"'{name}' is not a Segment identity type or trait name")
            if not crm_field.replace("_", "").isalnum():
                raise ValueError(f"{name}: '{crm_field}' is not a CRM field name")
        return value


class SegmentSettings(BaseModel):
    """The ``[segment]`` section.

    Secrets (``write_key``, ``profile_api_token``) come from the environment or secrets.toml.

    Attributes:
        tracking_url: Tracking API host (https://api.segment.io; EU workspaces use their regional
            host, e.g. https://events.eu1.segmentapis.com).
        profile_api_url: Profile API host (https://profiles.segment.com; EU:
            https://profiles.euw1.segment.com).
        space_id: the Unify space the access token belongs to (Profile API reads).
        ca_bundle: PEM file of CAs to trust (the sandbox's ``ca.pem``); empty for the system store.
        timeout_seconds: per-request timeout.
        max_attempts: attempts per request for transient failures (429, 5xx, connection errors).
        requests_per_second: Profile API rate limit per space (Segment's default is 100).
        concurrency: Profile API requests in flight at once (all within the rate limit).
        page_size: Profile API ``limit`` per page (1-100).
        read: what the Profile API reads per profile.
        max_profiles_per_run: Profile API lookups per pull; the newest CRM records go first and the
            rest follow on later runs.
        refresh_hours: a profile read more recently than this is not read again.
        max_message_bytes: largest message sent (Segment's limit is 32 KB).
        max_request_bytes: largest ``/v1/batch`` request (Segment's limit is 500 KB).
        max_batch_messages: most messages per batch (Segment's limit is 2,500).
        exports: warehouse / Profiles Sync export files imported on every pull.
        identity: how profiles are joined to CRM records.
        write_key: Tracking API write key (secret).
        profile_api_token: Profile API access token (secret).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_url: str = "https://api.segment.io"
    profile_api_url: str = "https://profiles.segment.com"
    space_id: str | None = None
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_attempts: int = Field(5, ge=1, le=20)
    requests_per_second: float = Field(100.0, gt=0, le=10_000)
    concurrency: int = Field(4, ge=1, le=64)
    page_size: int = Field(100, ge=1, le=100)
    read: list[ProfileResource] = Field(
        default_factory=lambda: ["traits", "external_ids", "events"]
    )
    max_profiles_per_run: int = Field(1000, ge=0)
    refresh_hours: float = Field(24.0, ge=0)
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=1024, le=MAX_MESSAGE_BYTES)
    max_request_bytes: int = Field(MAX_REQUEST_BYTES, ge=4096, le=MAX_REQUEST_BYTES)
    max_batch_messages: int = Field(MAX_BATCH_MESSAGES, ge=1, le=MAX_BATCH_MESSAGES)
    exports: list[ExportSettings] = Field(default_factory=list)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    write_key: SecretStr | None = None
    profile_api_token: SecretStr | None = None

    @field_validator("tracking_url", "profile_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _https_url(value)

    @field_validator("space_id")
    @classmethod
    def _check_space(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", value):
            raise ValueError("must be a Segment space id such as spa_9aXyQ4bLmN2cRt7e")
        return value or None

    def id_types(self) -> frozenset[str]:
        """Identity types leadscore accepts: Segment's defaults plus the configured mappings."""
        return DEFAULT_ID_TYPES | frozenset(self.identity.external_ids)


def _http_settings(settings: SegmentSettings, *, resend: bool) -> HttpSettings:
    return HttpSettings(
        timeout_seconds=settings.timeout_seconds,
        max_attempts=settings.max_attempts,
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        resend_non_idempotent=resend,
    )


def _transport_error(exc: requests.RequestException, what: str) -> LeadscoreError:
    """A one-line error for a transport failure (never the request's headers or body)."""
    rule = classify_exception(exc)
    meaning = rule.meaning if rule else type(exc).__name__
    if rule is not None and rule.kind is Kind.CONFIG:
        return ConfigError(f"{what}: {meaning}", hint="check segment.ca_bundle and the URL")
    return TransientError(f"{what}: {meaning}", hint="the next run tries again")


# -- Profile API -----------------------------------------------------------------------------------


@dataclass
class ProfileRead:
    """What the Profile API returned for one lookup.

    Attributes:
        lookup: the identifier read, ``type:value`` (e.g. ``email:jane@acme.com``).
        found: False when the API answered 404 (no such profile).
        traits: trait name -> value.
        external_ids: ``{type, id, created_at}`` dicts of known identity types.
        events: ``{message_id, event, user_id, anonymous_id, ts, properties}`` dicts (track events).
        unknown_id_types: identities skipped because their type is not a known one.
        error: the one-line error when the read failed (transient; retried on the next run).
    """

    lookup: str
    found: bool = False
    traits: dict[str, Any] = field(default_factory=dict)
    external_ids: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    unknown_id_types: Counter[str] = field(default_factory=Counter)
    error: str | None = None


class ProfileClient:
    """Profile API reads for one space, within its rate limit.

    Args:
        settings: the ``[segment]`` section (needs ``space_id`` and ``profile_api_token``).
        counter: call counter shared within a run.
        sleep: how to wait between attempts and for rate-limit tokens (tests pass a fast one).

    Raises:
        ConfigError: the space id or the token is missing.
    """

    def __init__(
        self,
        settings: SegmentSettings,
        *,
        counter: CallCounter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.space_id:
            raise ConfigError(
                "segment.space_id is not set",
                hint="set it to the Unify space whose profiles leadscore reads",
            )
        if settings.profile_api_token is None:
            raise ConfigError(
                "segment.profile_api_token is not set",
                hint="put it in secrets.toml or set LEADSCORE_SEGMENT__PROFILE_API_TOKEN",
            )
        self.settings = settings
        self.counter = counter if counter is not None else CallCounter()
        self.bucket = TokenBucket(settings.requests_per_second, 1.0, sleep=sleep)
        # https://www.twilio.com/docs/segment/unify/profile-api#authentication: the token is the
        # basic-auth user name, with an empty password.
        self.session = make_session(
            _http_settings(settings, resend=False),
            counter=self.counter,
            auth=requests.auth.HTTPBasicAuth(settings.profile_api_token.get_secret_value(), ""),
            sleep=sleep,
            rate_limit=self.bucket,
            pool_size=max(10, settings.concurrency),
        )
        self.base = (
            f"{settings.profile_api_url}/v1/spaces/{quote(settings.space_id, safe='')}"
            "/collections/users/profiles"
        )
        self.known_id_types = settings.id_types()

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def _url(self, identifier: str, resource: str) -> str:
        id_type, _, value = identifier.partition(":")
        # Values are URL-encoded (a '+' in an email must become %2B, api-contracts 2.3).
        return f"{self.base}/{quote(id_type, safe='')}:{quote(value, safe='')}/{resource}"

    def _get(self, url: str, params: dict[str, Any], what: str) -> dict[str, Any] | None:
        try:
            response = self.session.get(url, params=params)
        except requests.RequestException as exc:
            raise _transport_error(exc, f"Segment Profile API: {what}") from None
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            code, message = response_error(response)
            rule = classify_status(response.status_code, code, message)
            text = f"Segment Profile API: {what}: HTTP {response.status_code} {code or ''}".rstrip()
            if response.status_code in (401, 403):
                raise ConfigError(
                    f"{text}: the access token was rejected",
                    hint="check segment.profile_api_token and segment.space_id",
                )
            if rule.kind is Kind.TRANSIENT:
                raise TransientError(f"{text}: {rule.meaning}", hint="the next run tries again")
            raise RequestError(f"{text}: {message or rule.meaning}")
        body = response.json()
        if not isinstance(body, dict):
            raise RequestError(f"Segment Profile API: {what}: unexpected answer")
        return body

    def read_pages(
        self, identifier: str, resource: ProfileResource, params: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]] | None:
        """Read every page of one profile resource, following ``cursor.next``.

        Args:
            identifier: ``type:value``.
            resource: ``traits``, ``external_ids`` or ``events``.
            params: extra query parameters.

        Returns:
            An iterator of page bodies, or None when the profile does not exist.

        Raises:
            RequestError: the API repeated a cursor (a paging loop).
        """
        url = self._url(identifier, resource)
        query: dict[str, Any] = {"limit": self.settings.page_size, **(params or {})}
        first = self._get(url, query, f"{resource} of {identifier.partition(':')[0]}")
        if first is None:
            return None

        def pages() -> Iterator[dict[str, Any]]:
            body: dict[str, Any] | None = first
            seen: set[str] = set()
            while body is not None:
                yield body
                cursor = body.get("cursor") or {}
                token = cursor.get("next")
                if not cursor.get("has_more") or not token:
                    return
                if token in seen:
                    raise RequestError(
                        f"Segment Profile API repeated the cursor of {resource}: paging loop"
                    )
                seen.add(token)
                body = self._get(url, {**query, "next": token}, f"{resource} page")

        return pages()

    def read_profile(self, identifier: str) -> ProfileRead:
        """Read the configured resources of one profile.

        Args:
            identifier: ``type:value``, e.g. ``email:jane@acme.com``.

        Returns:
            What was read. Transient failures are returned in ``error`` (the next run tries
            again); configuration failures (a rejected token) raise.

        Raises:
            ConfigError: the token or space was rejected.
        """
        read = ProfileRead(identifier)
        try:
            for resource in self.settings.read:
                params: dict[str, Any] = {}
                if resource == "traits":
                    params["verbose"] = "true"
                pages = self.read_pages(identifier, resource, params)
                if pages is None:
                    return read  # 404: no profile by this identifier
                read.found = True
                for page in pages:
                    self._collect(read, resource, page)
        except (TransientError, RequestError) as exc:
            read.error = str(exc)
        return read

    def _collect(self, read: ProfileRead, resource: str, page: dict[str, Any]) -> None:
        if resource == "traits":
            for name, value in (page.get("traits") or {}).items():
                # verbose=true wraps each value as {value, source_id, updated_at}
                if isinstance(value, dict) and "value" in value and "updated_at" in value:
                    read.traits[name] = value["value"]
                else:
                    read.traits[name] = value
        elif resource == "external_ids":
            for item in page.get("data") or []:
                id_type, value = item.get("type"), item.get("id")
                if not isinstance(id_type, str) or not isinstance(value, str):
                    continue
                if id_type not in self.known_id_types:
                    read.unknown_id_types[id_type] += 1
                    continue
                read.external_ids.append(
                    {
                        "type": id_type,
                        "id": value,
                        "created_at": parse_utc_or_none(item.get("created_at")),
                    }
                )
        else:
            for item in page.get("data") or []:
                ts = parse_utc_or_none(item.get("timestamp"))
                if item.get("type") != "track" or ts is None or not item.get("event"):
                    continue
                ids = {e.get("type"): e.get("id") for e in item.get("external_ids") or []}
                read.events.append(
                    {
                        "message_id": str(item.get("message_id") or ""),
                        "event": str(item["event"]),
                        "user_id": ids.get("user_id"),
                        "anonymous_id": ids.get("anonymous_id"),
                        "ts": ts,
                        "properties": json.dumps(item.get("properties") or {}),
                    }
                )


def read_profiles(
    client: ProfileClient, lookups: Sequence[str], *, on_read: Callable[[], None] = lambda: None
) -> Iterator[list[ProfileRead]]:
    """Read many profiles concurrently (within the client's rate limit), in chunks.

    Args:
        client: the Profile API client.
        lookups: identifiers to read.
        on_read: called after each profile (progress).

    Yields:
        Reads in chunks of up to 100, in the order of ``lookups``.
    """
    chunk = 100

    def one(identifier: str) -> ProfileRead:
        read = client.read_profile(identifier)
        on_read()
        return read

    with ThreadPoolExecutor(max_workers=client.settings.concurrency) as pool:
        for start in range(0, len(lookups), chunk):
            yield list(pool.map(one, lookups[start : start + chunk]))


# -- Tracking API ----------------------------------------------------------------------------------


def message_id(*parts: Any) -> str:
    """A deterministic ``messageId``: the same write gets the same id, so Segment de-duplicates it.

    Args:
        *parts: what identifies the write, e.g. (entity id, prediction, model version, value).

    Returns:
        ``ls-`` + 40 hex characters (Segment requires fewer than 100 characters).
    """
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "ls-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _timestamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _recipient(user_id: str | None, anonymous_id: str | None) -> dict[str, str]:
    """``{"userId": ...}``, or ``{"anonymousId": ...}`` for a profile without a user id."""
    if user_id:
        return {"userId": user_id}
    if anonymous_id:
        return {"anonymousId": anonymous_id}
    raise ValueError("a Segment message needs a userId or an anonymousId")


def identify_message(
    user_id: str | None,
    traits: dict[str, Any],
    *,
    timestamp: datetime,
    message_id: str,
    anonymous_id: str | None = None,
) -> dict[str, Any]:
    """An identify call that sets traits on a profile.

    Args:
        user_id: the profile's ``userId``, or None to address it by ``anonymous_id``.
        traits: traits to set.
        timestamp: when the values were computed (fixed, so a resent message is byte-identical).
        message_id: from :func:`message_id`.
        anonymous_id: the profile's ``anonymousId``, used when it has no user id.

    Returns:
        The message.
    """
    return {
        "type": "identify",
        **_recipient(user_id, anonymous_id),
        "traits": traits,
        "timestamp": _timestamp(timestamp),
        "messageId": message_id,
        "context": {"library": LIBRARY},
    }


def track_message(
    user_id: str | None,
    event: str,
    properties: dict[str, Any],
    *,
    timestamp: datetime,
    message_id: str,
    anonymous_id: str | None = None,
) -> dict[str, Any]:
    """A track call (e.g. ``Audience Entered``).

    Args:
        user_id: the profile's ``userId``, or None to address it by ``anonymous_id``.
        event: event name.
        properties: event properties.
        timestamp: when it happened.
        message_id: from :func:`message_id`.
        anonymous_id: the profile's ``anonymousId``, used when it has no user id.

    Returns:
        The message.
    """
    return {
        "type": "track",
        **_recipient(user_id, anonymous_id),
        "event": event,
        "properties": properties,
        "timestamp": _timestamp(timestamp),
        "messageId": message_id,
        "context": {"library": LIBRARY},
    }


def encode_message(message: dict[str, Any]) -> bytes:
    """The exact bytes a message takes in a batch (compact JSON, UTF-8)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


_BATCH_HEAD = b'{"batch":['
_BATCH_TAIL = b'],"sentAt":"0000-00-00T00:00:00.000Z"}'


def pack_batches(sizes: Sequence[int], max_request_bytes: int, max_messages: int) -> list[range]:
    """Group encoded messages into as few requests as the size and count limits allow.

    Messages keep their order; each request holds ``{"batch":[m1,m2,...],"sentAt":"..."}``, so its
    size is the messages, one comma between each two, and the fixed envelope.

    Args:
        sizes: encoded size of each message (each must fit alone).
        max_request_bytes: request size limit.
        max_messages: messages-per-request limit.

    Returns:
        Index ranges, one per request.
    """
    envelope = len(_BATCH_HEAD) + len(_BATCH_TAIL)
    batches: list[range] = []
    start, used = 0, envelope
    for index, size in enumerate(sizes):
        extra = size + (1 if index > start else 0)
        if index > start and (used + extra > max_request_bytes or index - start >= max_messages):
            batches.append(range(start, index))
            start, used, extra = index, envelope, size
        used += extra
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches


def estimate_batch_requests(messages: Sequence[dict[str, Any]], settings: SegmentSettings) -> int:
    """The ``/v1/batch`` requests :meth:`TrackingClient.send` makes for these messages.

    The same packing as the send (oversize messages are never sent), so a plan prices a push
    exactly when no batch fails.

    Args:
        messages: identify / track messages.
        settings: the ``[segment]`` section (its size and count limits).

    Returns:
        The number of requests.
    """
    sizes = [len(encode_message(m)) for m in messages]
    sendable = [size for size in sizes if size <= settings.max_message_bytes]
    return len(pack_batches(sendable, settings.max_request_bytes, settings.max_batch_messages))


@dataclass(frozen=True)
class MessageOutcome:
    """What Segment said about one message.

    Attributes:
        success: True when the batch holding it was accepted (HTTP 200).
        error: ``CODE: message`` when it was not.
    """

    success: bool
    error: str | None = None


class TrackingClient:
    """Tracking API ``/v1/batch`` writes.

    Args:
        settings: the ``[segment]`` section (needs ``write_key``).
        counter: call counter shared within a run.
        sleep: how to wait between attempts.

    Raises:
        ConfigError: the write key is missing.
    """

    def __init__(
        self,
        settings: SegmentSettings,
        *,
        counter: CallCounter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if settings.write_key is None:
            raise ConfigError(
                "segment.write_key is not set",
                hint="put it in secrets.toml or set LEADSCORE_SEGMENT__WRITE_KEY",
            )
        self.settings = settings
        self.counter = counter if counter is not None else CallCounter()
        # Basic auth with the write key as user name and an empty password (api-contracts 2.1).
        # Resending a POST is safe: every message carries a deterministic messageId.
        self.session = make_session(
            _http_settings(settings, resend=True),
            counter=self.counter,
            auth=requests.auth.HTTPBasicAuth(settings.write_key.get_secret_value(), ""),
            sleep=sleep,
        )
        self.url = f"{settings.tracking_url}/v1/batch"
        self.requests = 0

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def post_batch(self, encoded: Sequence[bytes], sent_at: str) -> MessageOutcome:
        """Send one batch.

        Args:
            encoded: encoded messages (already within the limits).
            sent_at: the ``sentAt`` value (fixed per run, so resends are byte-identical).

        Returns:
            The outcome shared by every message of the batch.

        Raises:
            ConfigError: the write key was rejected.
        """
        body = _BATCH_HEAD + b",".join(encoded) + b'],"sentAt":"' + sent_at.encode() + b'"}'
        self.requests += 1
        try:
            response = self.session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            )
        except requests.RequestException as exc:
            error = _transport_error(exc, "Segment Tracking API")
            if isinstance(error, ConfigError):
                raise error from None
            return MessageOutcome(False, f"TRANSPORT: {error.message}")
        if response.status_code < 300:
            return MessageOutcome(True)
        code, message = response_error(response)
        if response.status_code in (401, 403):
            raise ConfigError(
                f"Segment Tracking API: HTTP {response.status_code}: the write key was rejected",
                hint="check segment.write_key and segment.tracking_url",
            )
        return MessageOutcome(
            False, f"{code or f'HTTP_{response.status_code}'}: {message}".strip()[:300]
        )

    def send(
        self, messages: Sequence[dict[str, Any]], *, sent_at: datetime | None = None
    ) -> Iterator[tuple[list[int], list[MessageOutcome]]]:
        """Send messages in as few batches as the limits allow; yield each batch's outcomes.

        Oversize messages are not sent: they fail with ``MESSAGE_TOO_LARGE`` (Segment would reject
        the whole request). After three batches in a row fail transiently the rest are not sent
        (they stay unconfirmed and are sent by the next run).

        Args:
            messages: identify / track messages.
            sent_at: ``sentAt`` of every batch (default: now).

        Yields:
            ``(indexes into messages, outcome per index)`` per batch, oversize messages included.
        """
        stamp = _timestamp(sent_at or utc_now())
        encoded = [encode_message(m) for m in messages]
        limit = self.settings.max_message_bytes
        too_large = [i for i, e in enumerate(encoded) if len(e) > limit]
        for i in too_large:
            outcome = MessageOutcome(
                False, f"MESSAGE_TOO_LARGE: {len(encoded[i]):,} bytes > {limit:,}"
            )
            yield [i], [outcome]
        sendable = [i for i, e in enumerate(encoded) if len(e) <= limit]
        batches = pack_batches(
            [len(encoded[i]) for i in sendable],
            self.settings.max_request_bytes,
            self.settings.max_batch_messages,
        )
        failures_in_a_row = 0
        for batch in batches:
            if failures_in_a_row >= 3:
                return
            indexes = [sendable[j] for j in batch]
            outcome = self.post_batch([encoded[i] for i in indexes], stamp)
            failures_in_a_row = 0 if outcome.success else failures_in_a_row + 1
            yield indexes, [outcome] * len(indexes)
