"""Request handlers of the Segment stand-in: the Tracking API and the Profile API.

Transport-free like ``salesforce_api.py``: :meth:`SegmentApi.handle` takes an ``ApiRequest`` and
returns an ``ApiResponse``; ``server.py`` adds HTTP and TLS. Shapes follow
``shared/docs/api-contracts.md`` section 2 (what Segment returns and what
segment-analytics-python 2.4.0 expects):

- Tracking: ``POST /v1/batch``, ``/v1/identify``, ``/v1/track``; basic auth with the write key (or
  ``writeKey`` in the body); 400 for invalid JSON, a message over 32 KB, a request over 500 KB, a
  message without ``userId``/``anonymousId`` or a track without ``event`` (the whole request is
  rejected and nothing is applied); a batch over 2,500 messages is answered 200 and the excess is
  dropped, as Segment does. Messages are de-duplicated on ``messageId``. Identify merges traits
  into the profile, track adds an event, so what was written can be read back.
- Profiles: ``GET /v1/spaces/{space}/collections/users/profiles/{type}:{value}/traits|events|
  external_ids|metadata`` with basic auth on the access token, ``limit``/``next`` cursors,
  ``include``, the 404 body, and a per-space token bucket (100 requests per second by default)
  answered with 429 ``rate_limit_error`` and a ``Retry-After`` of the seconds until the next token.

Errors use the bodies the clients parse: Tracking ``{"code", "message"}`` (the library reads those
keys), Profile API ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from connector.sandbox.database import Database
from connector.sandbox.faults import FaultPlan, RequestInfo
from connector.sandbox.profiles import iso_time
from connector.sandbox.salesforce_api import ApiRequest, ApiResponse, RequestRecord

JSON_TYPE = "application/json"
MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
EVENTS_HISTORY_DAYS = 14
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
ID_TYPES = ("user_id", "anonymous_id", "email", "segment_id")
_PROFILES_PREFIX = "/v1/spaces/"


@dataclass(frozen=True)
class SegmentCredentials:
    """The workspace's write key and the Unify space's access token.

    Attributes:
        write_key: Tracking API write key.
        access_token: Profile API access token.
        space_id: the space the token reads.
    """

    write_key: str
    access_token: str
    space_id: str


@dataclass
class SegmentOptions:
    """Behaviour of the Segment stand-in (may be changed while it serves).

    Attributes:
        profile_rate_limit: Profile API requests per second per space (a token bucket holding one
            second's worth).
        tracking_429_rate: share of Tracking API requests answered 429 (seeded, deterministic).
        retry_after_seconds: ``Retry-After`` sent with those 429s.
        lost_response_rate: share of Tracking API requests that are applied and then answered
            503, as when a gateway times out after Segment accepted the batch: the client cannot
            tell, sends it again, and only ``messageId`` de-duplication prevents a double write.
        seed: seed of the random draws.
    """

    profile_rate_limit: float = 100.0
    tracking_429_rate: float = 0.0
    retry_after_seconds: float = 0.0
    lost_response_rate: float = 0.0
    seed: int = 0


class _Error(Exception):
    """A whole-request failure, rendered in the API's error shape."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _norm(id_type: str, value: str) -> str:
    """How identities are looked up: emails trimmed and case-insensitive, the rest exact."""
    return value.strip().lower() if id_type == "email" else value


def _parse_time(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # Segment timestamps without an offset are UTC
    return parsed.timestamp()


def _basic_user(headers: Any) -> str | None:
    """The user name of a basic-auth header (the key or token; the password is empty)."""
    value = headers.get("Authorization") or ""
    if not value.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


class _Bucket:
    """A token bucket (thread-safe) that answers how long until the next token."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.tokens: float | None = None
        self.updated = 0.0

    def take(self, rate: float) -> float:
        """Take a token; return 0 when granted, else the seconds until one is available."""
        with self.lock:
            now = self.clock()
            capacity = max(1.0, rate)
            if self.tokens is None:
                self.tokens = capacity
            self.tokens = min(capacity, self.tokens + (now - self.updated) * rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / rate


class SegmentApi:
    """The Segment Tracking and Profile APIs over the sandbox database.

    Args:
        db: the sandbox database (``seg_*`` tables).
        credentials: write key, access token and space.
        options: rate limit and fault settings.
        history_end: the Profile API's "now" for its 14 days of events (the sandbox's ``as_of``).
        faults: the fault plan every request passes through (categories ``tracking`` and
            ``profiles``).
        clock: monotonic time source (rate limiting).
    """

    def __init__(
        self,
        db: Database,
        credentials: SegmentCredentials,
        options: SegmentOptions,
        history_end: Callable[[], float],
        *,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.credentials = credentials
        self.options = options
        self.history_end = history_end
        self.faults = faults or FaultPlan()
        self.request_log: list[RequestRecord] = []
        self.rate_limited = 0
        """Profile API requests answered 429 so far."""
        self.dropped = 0
        """Messages dropped because a batch held more than 2,500."""
        self._bucket = _Bucket(clock)
        self._random = random.Random(options.seed)
        self._lock = threading.Lock()

    @staticmethod
    def handles(path: str) -> bool:
        """Tell whether a path belongs to the Segment APIs."""
        return path.startswith("/v1/")

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Serve one request (never raises).

        Args:
            request: the request.

        Returns:
            The response.
        """
        profiles = request.path.startswith(_PROFILES_PREFIX)
        category = "profiles" if profiles else "tracking"
        fault = self.faults.on_request(RequestInfo(request.method, request.path, category))
        if fault is not None:
            response = ApiResponse(
                fault.status, fault.body, fault.content_type, dict(fault.headers), category
            )
        else:
            try:
                response = self._profiles(request) if profiles else self._tracking(request)
            except _Error as error:
                body = (
                    {"error": {"code": error.code, "message": error.message}}
                    if profiles
                    else {"code": error.code, "message": error.message}
                )
                response = ApiResponse(error.status, _json(body), JSON_TYPE, dict(error.headers))
            except Exception as error:  # a sandbox bug still answers like Segment
                response = ApiResponse(
                    500,
                    _json({"code": "internal", "message": f"{type(error).__name__}: {error}"}),
                    JSON_TYPE,
                )
        response.category = category
        response.headers.setdefault("Request-Id", uuid.uuid4().hex)
        with self._lock:
            self.request_log.append(
                RequestRecord(request.method, request.path, response.status, category)
            )
        return response

    # -- Tracking API ------------------------------------------------------------------------------

    def _tracking(self, request: ApiRequest) -> ApiResponse:
        kind = request.path.removeprefix("/v1/").rstrip("/")
        if kind not in ("batch", "identify", "track"):
            raise _Error(404, "not_found", f"no such endpoint: {request.path}")
        if request.method != "POST":
            raise _Error(405, "method_not_allowed", "use POST")
        limit = MAX_REQUEST_BYTES if kind == "batch" else MAX_MESSAGE_BYTES
        if len(request.body) > limit:
            raise _Error(
                400,
                "batch_too_large" if kind == "batch" else "message_too_large",
                f"request body is {len(request.body)} bytes; the limit is {limit}",
            )
        try:
            payload = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise _Error(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise _Error(400, "invalid_json", "the body must be a JSON object")
        key = _basic_user(request.headers) or payload.get("writeKey")
        if key != self.credentials.write_key:
            raise _Error(401, "unauthorized", "invalid write key")
        with self._lock:
            throttled = self._random.random() < self.options.tracking_429_rate
        if throttled:
            raise _Error(
                429,
                "rate_limited",
                "too many requests",
                {"Retry-After": f"{self.options.retry_after_seconds:g}"},
            )
        if kind == "batch":
            messages = payload.get("batch")
            if not isinstance(messages, list):
                raise _Error(400, "invalid_batch", "'batch' must be a list of messages")
            shared = {k: payload[k] for k in ("context", "integrations") if k in payload}
            messages = [{**shared, **m} if isinstance(m, dict) else m for m in messages]
        else:
            messages = [{**payload, "type": kind}]
        if len(messages) > MAX_BATCH_MESSAGES:
            # Segment answers 200 and drops the events beyond the limit (api-contracts 2.1).
            with self._lock:
                self.dropped += len(messages) - MAX_BATCH_MESSAGES
            messages = messages[:MAX_BATCH_MESSAGES]
        for index, message in enumerate(messages):
            self._validate(index, message)
        applied = self._apply(messages)
        with self._lock:
            lost = self._random.random() < self.options.lost_response_rate
        if lost:
            raise _Error(503, "service_unavailable", "upstream timed out")
        return ApiResponse(200, _json({"success": True, "applied": applied}), JSON_TYPE)

    @staticmethod
    def _validate(index: int, message: Any) -> None:
        where = f"message {index}"
        if not isinstance(message, dict):
            raise _Error(400, "invalid_message", f"{where} is not an object")
        size = len(_json(message))
        if size > MAX_MESSAGE_BYTES:
            raise _Error(400, "message_too_large", f"{where} is {size} bytes; the limit is 32768")
        if message.get("type") not in MESSAGE_TYPES:
            raise _Error(400, "invalid_type", f"{where} has no valid 'type'")
        if not message.get("userId") and not message.get("anonymousId"):
            raise _Error(400, "no_user_anon_id", f"{where} needs a userId or an anonymousId")
        if message["type"] == "track" and not message.get("event"):
            raise _Error(400, "missing_event", f"{where} is a track without 'event'")

    def _apply(self, messages: list[dict[str, Any]]) -> int:
        """Apply accepted messages in one transaction; repeats of a messageId are not applied."""
        applied = 0
        received = time.time()
        with self.db.transaction() as conn:
            for message in messages:
                message_id = str(message.get("messageId") or uuid.uuid4())
                seen = conn.execute(
                    "UPDATE seg_received SET repeats = repeats + 1 WHERE message_id = ?",
                    [message_id],
                ).rowcount
                if seen:
                    continue
                conn.execute(
                    "INSERT INTO seg_received (message_id, type, received_at) VALUES (?, ?, ?)",
                    [message_id, message["type"], received],
                )
                at = _parse_time(message.get("timestamp")) or received
                if message["type"] == "identify":
                    self._identify(conn, message, message_id, at)
                elif message["type"] == "track":
                    self._track(conn, message, message_id, at)
                applied += 1
        return applied

    def _profile_for(self, conn: sqlite3.Connection, ids: list[tuple[str, str]], at: float) -> str:
        """The profile that owns the first known identity, or a new one; adds the others to it.

        An identity already owned by another profile stays there (real Segment would merge the
        two profiles; the sandbox keeps them apart).
        """
        profile = None
        for id_type, value in ids:
            row = conn.execute(
                "SELECT profile_id FROM seg_identity WHERE id_type = ? AND norm = ?",
                [id_type, _norm(id_type, value)],
            ).fetchall()
            if row:
                profile = row[0][0]
                break
        if profile is None:
            profile = f"use_api_{uuid.uuid4().hex[:20]}"
            conn.execute("INSERT INTO seg_profile VALUES (?, NULL, 'api', ?, ?)", [profile, at, at])
        for id_type, value in ids:
            conn.execute(
                "INSERT OR IGNORE INTO seg_identity VALUES (?, ?, ?, ?, ?, NULL)",
                [id_type, _norm(id_type, value), value, profile, at],
            )
        conn.execute(
            "UPDATE seg_profile SET updated_at = max(updated_at, ?) WHERE profile_id = ?",
            [at, profile],
        )
        return profile

    @staticmethod
    def _ids(
        message: dict[str, Any], traits: dict[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        ids = []
        if message.get("userId"):
            ids.append(("user_id", str(message["userId"])))
        if message.get("anonymousId"):
            ids.append(("anonymous_id", str(message["anonymousId"])))
        email = (traits or {}).get("email")
        if isinstance(email, str) and email.strip():
            ids.append(("email", email))
        return ids

    def _identify(
        self, conn: sqlite3.Connection, message: dict[str, Any], message_id: str, at: float
    ) -> None:
        traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
        assert isinstance(traits, dict)
        profile = self._profile_for(conn, self._ids(message, traits), at)
        for name, value in traits.items():
            conn.execute(
                "INSERT OR REPLACE INTO seg_trait VALUES (?, ?, ?, ?)",
                [profile, str(name), json.dumps(value), at],
            )
        conn.execute(
            "INSERT INTO seg_identify (message_id, profile_id, user_id, anonymous_id, ts, traits) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                message_id,
                profile,
                message.get("userId"),
                message.get("anonymousId"),
                at,
                json.dumps(traits),
            ],
        )

    def _track(
        self, conn: sqlite3.Connection, message: dict[str, Any], message_id: str, at: float
    ) -> None:
        profile = self._profile_for(conn, self._ids(message), at)
        properties = message.get("properties")
        conn.execute(
            "INSERT INTO seg_event (message_id, profile_id, event, user_id, anonymous_id, ts, "
            "properties) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                message_id,
                profile,
                str(message["event"]),
                message.get("userId"),
                message.get("anonymousId"),
                at,
                json.dumps(properties if isinstance(properties, dict) else {}),
            ],
        )

    # -- Profile API -------------------------------------------------------------------------------

    def _profiles(self, request: ApiRequest) -> ApiResponse:
        if _basic_user(request.headers) != self.credentials.access_token:
            raise _Error(401, "authentication_error", "invalid or missing access token")
        if request.method != "GET":
            raise _Error(405, "invalid_request_error", "use GET")
        wait = self._bucket.take(self.options.profile_rate_limit)
        if wait > 0:
            with self._lock:
                self.rate_limited += 1
            # Sub-second Retry-After (an extension: the header is defined in whole seconds), so
            # that a client backing off as told does not wait a whole second at 100 requests/s.
            raise _Error(
                429,
                "rate_limit_error",
                "rate limit exceeded",
                {"Retry-After": f"{math.ceil(wait * 1000) / 1000:.3f}"},
            )
        parts = request.path.removeprefix(_PROFILES_PREFIX).split("/")
        # {space}/collections/users/profiles/{identifier}/{resource}
        if len(parts) != 6 or parts[1:4] != ["collections", "users", "profiles"]:
            raise _Error(404, "not_found", "no such resource")
        space, identifier, resource = parts[0], unquote(parts[4]), parts[5]
        if space != self.credentials.space_id:
            raise _Error(404, "not_found", "Space was not found.")
        id_type, sep, value = identifier.partition(":")
        if not sep or id_type not in ID_TYPES or not value:
            raise _Error(400, "validation_error", "the identifier must look like <type>:<value>")
        profile = self._lookup(id_type, value)
        if profile is None:
            raise _Error(404, "not_found", "Profile was not found.")
        query = {k: v[-1] for k, v in request.query.items()}
        handlers = {
            "traits": self._traits,
            "external_ids": self._external_ids,
            "events": self._events,
            "metadata": self._metadata,
        }
        if resource not in handlers:
            raise _Error(404, "not_found", "no such resource")
        body = handlers[resource](profile, query, request.path)
        return ApiResponse(200, _json(body), JSON_TYPE)

    def _lookup(self, id_type: str, value: str) -> str | None:
        if id_type == "segment_id":
            rows = self.db.fetch_all(
                "SELECT profile_id FROM seg_profile WHERE profile_id = ?", [value]
            )
        else:
            rows = self.db.fetch_all(
                "SELECT profile_id FROM seg_identity WHERE id_type = ? AND norm = ?",
                [id_type, _norm(id_type, value)],
            )
        return rows[0][0] if rows else None

    @staticmethod
    def _limit(query: dict[str, str], default: int, maximum: int) -> int:
        try:
            limit = int(query.get("limit", default))
        except ValueError:
            raise _Error(400, "validation_error", "limit must be a number") from None
        if not 1 <= limit <= maximum:
            raise _Error(400, "validation_error", f"limit must be between 1 and {maximum}")
        return limit

    @staticmethod
    def _offset(query: dict[str, str]) -> int:
        token = query.get("next")
        if not token:
            return 0
        try:
            return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _Error(400, "validation_error", "invalid cursor") from None

    @staticmethod
    def _cursor(path: str, offset: int, limit: int, total: int) -> dict[str, Any]:
        more = offset + limit < total
        token = (
            base64.urlsafe_b64encode(json.dumps({"offset": offset + limit}).encode()).decode()
            if more
            else ""
        )
        return {"url": path, "has_more": more, "next": token, "limit": limit}

    @staticmethod
    def _names(query: dict[str, str], key: str) -> set[str] | None:
        value = query.get(key)
        return {v.strip() for v in value.split(",") if v.strip()} if value else None

    def _traits(self, profile: str, query: dict[str, str], path: str) -> dict[str, Any]:
        limit = self._limit(query, 10, 200)
        offset = self._offset(query)
        include = self._names(query, "include")
        rows = [
            r
            for r in self.db.fetch_all(
                "SELECT name, value, updated_at FROM seg_trait WHERE profile_id = ? ORDER BY name",
                [profile],
            )
            if include is None or r[0] in include
        ]
        verbose = query.get("verbose") == "true"
        page = rows[offset : offset + limit]
        traits = {
            name: (
                {"value": json.loads(value), "source_id": "sandbox", "updated_at": iso_time(at)}
                if verbose
                else json.loads(value)
            )
            for name, value, at in page
        }
        return {"traits": traits, "cursor": self._cursor(path, offset, limit, len(rows))}

    def _external_ids(self, profile: str, query: dict[str, str], path: str) -> dict[str, Any]:
        limit = self._limit(query, 10, 100)
        offset = self._offset(query)
        include = self._names(query, "include")
        rows = [
            r
            for r in self.db.fetch_all(
                "SELECT id_type, id_value, created_at, message_id FROM seg_identity "
                "WHERE profile_id = ? ORDER BY created_at, id_type, id_value",
                [profile],
            )
            if include is None or r[0] in include
        ]
        data = [
            {
                "id": value,
                "type": id_type,
                "source_id": "sandbox",
                "collection": "users",
                "created_at": iso_time(at),
                "encoding": "none",
                "first_message_id": message_id,
            }
            for id_type, value, at, message_id in rows[offset : offset + limit]
        ]
        return {"data": data, "cursor": self._cursor(path, offset, limit, len(rows))}

    def _events(self, profile: str, query: dict[str, str], path: str) -> dict[str, Any]:
        limit = self._limit(query, 10, 100)
        offset = self._offset(query)
        oldest = self.history_end() - EVENTS_HISTORY_DAYS * 86_400
        start = max(oldest, _parse_time(query.get("start")) or oldest)
        end = _parse_time(query.get("end"))
        include, exclude = self._names(query, "include"), self._names(query, "exclude")
        order = "ASC" if query.get("sort") == "asc" else "DESC"
        rows = [
            r
            for r in self.db.fetch_all(
                "SELECT message_id, event, user_id, anonymous_id, ts, properties FROM seg_event "
                f"WHERE profile_id = ? AND ts >= ? ORDER BY ts {order}, seq {order}",
                [profile, start],
            )
            if (end is None or r[4] < end)
            and (include is None or r[1] in include)
            and (exclude is None or r[1] not in exclude)
        ]
        data = []
        for message_id, event, user_id, anonymous_id, ts, properties in rows[
            offset : offset + limit
        ]:
            ids = [{"id": user_id, "type": "user_id"}] if user_id else []
            ids += [{"id": anonymous_id, "type": "anonymous_id"}] if anonymous_id else []
            data.append(
                {
                    "type": "track",
                    "event": event,
                    "message_id": message_id,
                    "source_id": "sandbox",
                    "timestamp": iso_time(ts),
                    "properties": json.loads(properties),
                    "context": {},
                    "external_ids": ids,
                    "related": {"users": profile},
                }
            )
        return {"data": data, "cursor": self._cursor(path, offset, limit, len(rows))}

    def _metadata(self, profile: str, query: dict[str, str], path: str) -> dict[str, Any]:
        del query, path
        created, updated = self.db.fetch_all(
            "SELECT created_at, updated_at FROM seg_profile WHERE profile_id = ?", [profile]
        )[0]
        first_last = self.db.fetch_all(
            "SELECT min(message_id), max(message_id) FROM seg_event WHERE profile_id = ?",
            [profile],
        )[0]
        return {
            "metadata": {
                "created_at": iso_time(created),
                "updated_at": iso_time(updated),
                "expires_at": None,
                "first_message_id": first_last[0],
                "first_source_id": "sandbox",
                "last_message_id": first_last[1],
                "last_source_id": "sandbox",
            }
        }
