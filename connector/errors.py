"""The one error table: what a failed call means and what leadscore does about it.

Every HTTP failure, from Salesforce or Segment, and every per-record write error is classified here
and nowhere
else. A reviewer can read the whole policy on one screen: ``HTTP_ERRORS`` for calls,
    ``RECORD_ERRORS`` for the
per-record results of sObject Collections and Bulk API 2.0.

Sources: Salesforce REST status codes
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm), and the
contract in ``docs/api-contracts.md`` sections 1.7 and 4.
"""

from __future__ import annotations

import enum
import json
import ssl
from dataclasses import dataclass
from typing import Any

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError


class Action(enum.Enum):
    """What the caller does with a failed call."""

    RETRY = "retry"  # transient: back off (honouring Retry-After) and send again
    REFRESH = "refresh"  # the session expired: get a new token, then send again once
    STOP = "stop"  # the API allowance is used up: end the run cleanly, resume after the window
    FAIL = "fail"  # the request or the setup is wrong: retrying cannot help


class Kind(enum.Enum):
    """Who has to act."""

    TRANSIENT = "transient"  # nobody: it heals by itself
    CONFIG = "config"  # the operator: credentials, permissions, URLs, field mappings
    REQUEST = "request"  # a developer: leadscore sent something malformed
    BUDGET = "budget"  # the operator: raise the cap or wait for the daily window
    GONE = "gone"  # nobody can: the record was deleted or merged away; stop writing to it


@dataclass(frozen=True)
class Rule:
    """One row of the error table.

    Attributes:
        status: HTTP status it matches, or None for any status.
        code: Salesforce ``errorCode`` (or a transport error name) it matches, or None for any.
        action: what to do.
        kind: who has to act.
        meaning: one human sentence, used in messages.
        safe_to_resend: True when the server certainly did not process the request, so even a
            non-idempotent POST may be sent again.
    """

    status: int | None
    code: str | None
    action: Action
    kind: Kind
    meaning: str
    safe_to_resend: bool = False


R, Rf, S, F = Action.RETRY, Action.REFRESH, Action.STOP, Action.FAIL
T, C, Q, B = Kind.TRANSIENT, Kind.CONFIG, Kind.REQUEST, Kind.BUDGET

# First match wins: specific (status, code) rows come before catch-all rows.
HTTP_ERRORS: tuple[Rule, ...] = (
    # transport errors (no status)
    Rule(None, "ConnectionError", R, T, "the server could not be reached", safe_to_resend=True),
    Rule(None, "ConnectTimeout", R, T, "the connection timed out", safe_to_resend=True),
    Rule(None, "ReadTimeout", R, T, "the server did not answer in time"),
    Rule(None, "ChunkedEncodingError", R, T, "the connection dropped mid-response"),
    # The request went out and the connection closed before an answer: it may have been applied.
    Rule(None, "ConnectionLost", R, T, "the connection dropped before the answer"),
    Rule(None, "SSLError", F, C, "TLS verification failed"),
    # An SSL-level failure that is not about the certificate: the peer closed the connection
    # mid-request (an upload the server refused to read on, a proxy's cut), a TLS record cut short.
    Rule(None, "SSLConnectionClosed", R, T, "the connection was closed mid-request"),
    # Salesforce
    Rule(401, "INVALID_SESSION_ID", Rf, C, "the session expired or is invalid"),
    Rule(
        403,
        "REQUEST_LIMIT_EXCEEDED:TotalRequests",
        S,
        B,
        "the org's daily API allowance is used up",
    ),
    Rule(403, "REQUEST_LIMIT_EXCEEDED", R, T, "too many concurrent requests", safe_to_resend=True),
    Rule(403, "INSUFFICIENT_ACCESS", F, C, "the integration user lacks a permission"),
    Rule(403, "API_DISABLED_FOR_ORG", F, C, "the API is not enabled for this org or user"),
    Rule(403, "INSUFFICIENT_ACCESS_OR_READONLY", F, C, "the integration user may not edit this"),
    Rule(503, "SERVER_UNAVAILABLE", R, T, "the server is unavailable", safe_to_resend=True),
    # generic HTTP
    Rule(400, None, F, Q, "the request was rejected as malformed"),
    Rule(401, None, F, C, "authentication failed"),
    Rule(403, None, F, C, "the request was refused"),
    Rule(404, None, F, Q, "the resource does not exist"),
    Rule(409, None, F, Q, "the bulk job is not in a state that allows this"),
    Rule(408, None, R, T, "the server timed out waiting for the request", safe_to_resend=True),
    Rule(429, None, R, T, "rate limited", safe_to_resend=True),
    Rule(500, None, R, T, "the server failed"),
    Rule(501, None, F, Q, "the server does not implement this"),
    Rule(502, None, R, T, "a gateway failed"),
    Rule(503, None, R, T, "the server is unavailable", safe_to_resend=True),
    Rule(504, None, R, T, "a gateway timed out"),
    Rule(505, None, F, Q, "HTTP version not supported"),
    Rule(None, None, F, Q, "unexpected response"),
)

# Per-record results of sObject Collections and Bulk API 2.0. Transient ones are retried (smaller
# batches, then
# one by one); the rest are recorded with their message and not retried until the data or the setup
# changes.
RECORD_ERRORS: dict[str, Kind] = {
    "UNABLE_TO_LOCK_ROW": Kind.TRANSIENT,
    "SERVER_UNAVAILABLE": Kind.TRANSIENT,
    "REQUEST_RUNNING_TOO_LONG": Kind.TRANSIENT,
    "ALL_OR_NONE_OPERATION_ROLLED_BACK": Kind.TRANSIENT,
    "UNPROCESSED": Kind.TRANSIENT,  # leadscore's code for rows a bulk job left unprocessed
    # leadscore's code for a record a write with a lost answer turned out not to hold (read back)
    "LOST_ANSWER": Kind.TRANSIENT,
    # The record is not there any more: deleted (in the recycle bin), merged into another record
    # (the loser is deleted), or an id that does not exist. The write-back ledger records these as
    # ``gone`` and never retries them on its own.
    "ENTITY_IS_DELETED": Kind.GONE,
    "INVALID_CROSS_REFERENCE_KEY": Kind.GONE,
    "NOT_FOUND": Kind.GONE,
    # everything else (INVALID_FIELD, STRING_TOO_LONG, INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST,
    # NUMBER_OUTSIDE_VALID_RANGE, ENTITY_IS_DELETED, MALFORMED_ID, ...) is permanent
}

# Pub/Sub API (gRPC) failures, by gRPC status name or by the ``error-code`` trailer Salesforce
# sends (contract: shared/docs/api-contracts-realorg.md section 4.2; the trailer codes are those of
# Salesforce's Pub/Sub API error documentation). A retried failure resubscribes after the last
# replay id handed to the caller, with the session's backoff.
REPLAY_ID_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
GRPC_ERRORS: tuple[Rule, ...] = (
    Rule(None, REPLAY_ID_INVALID, F, T, "the stored replay id is outside the retention window"),
    Rule(None, "UNAUTHENTICATED", Rf, C, "the session expired or is invalid"),
    Rule(None, "UNAVAILABLE", R, T, "the Pub/Sub API could not be reached"),
    Rule(None, "DEADLINE_EXCEEDED", R, T, "the Pub/Sub API did not answer in time"),
    Rule(None, "RESOURCE_EXHAUSTED", R, T, "the Pub/Sub API limited the subscription"),
    Rule(None, "INTERNAL", R, T, "the Pub/Sub API failed"),
    Rule(None, "ABORTED", R, T, "the Pub/Sub API aborted the call"),
    Rule(None, "UNKNOWN", R, T, "the Pub/Sub API failed"),
    Rule(None, "PERMISSION_DENIED", F, C, "the integration user may not subscribe to the topic"),
    Rule(None, "NOT_FOUND", F, C, "the topic or schema does not exist (is CDC enabled for it?)"),
    Rule(None, "INVALID_ARGUMENT", F, Q, "the Pub/Sub API rejected the request"),
    Rule(None, None, F, Q, "unexpected Pub/Sub API failure"),
)


def classify_grpc(status: str, error_code: str | None = None) -> Rule:
    """Find the rule for a failed Pub/Sub API call.

    Args:
        status: the gRPC status name (``UNAVAILABLE``).
        error_code: the ``error-code`` trailer, if the server sent one.

    Returns:
        The first matching rule of ``GRPC_ERRORS`` (the trailer code wins over the status).
    """
    for rule in GRPC_ERRORS:
        if rule.code is None or rule.code in (error_code, status):
            return rule
    raise AssertionError("GRPC_ERRORS ends with a catch-all row")


# PATCH is not idempotent (RFC 5789): sent twice, an update is applied twice (a second
# SystemModstamp bump, a second write for triggers and flows). Its lost answers are read back.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def classify_status(status: int, code: str | None = None, message: str = "") -> Rule:
    """Find the rule for an HTTP status and an optional API error code.

    Args:
        status: HTTP status code.
        code: the API's error code (Salesforce ``errorCode``), if any.
        message: the API's message; distinguishes the daily limit from the concurrency limit.

    Returns:
        The first matching rule of ``HTTP_ERRORS``.
    """
    if code == "REQUEST_LIMIT_EXCEEDED" and "TotalRequests" in message:
        code = "REQUEST_LIMIT_EXCEEDED:TotalRequests"
    for rule in HTTP_ERRORS:
        if rule.status is None and rule.code is not None:
            continue  # transport rows never match a response
        if rule.status not in (None, status):
            continue
        if rule.code is not None and rule.code != code:
            continue
        return rule
    raise AssertionError("HTTP_ERRORS ends with a catch-all row")


def classify_exception(exc: BaseException) -> Rule | None:
    """Find the rule for a transport exception raised by requests.

    Args:
        exc: the exception.

    Returns:
        The matching rule, or None when the exception is not a transport error.
    """
    # Order matters: SSLError and ConnectTimeout are subclasses of ConnectionError.
    if isinstance(exc, requests.exceptions.SSLError) and not is_certificate_error(exc):
        return next(rule for rule in HTTP_ERRORS if rule.code == "SSLConnectionClosed")
    for exc_type, name in (
        (requests.exceptions.SSLError, "SSLError"),
        (requests.exceptions.ConnectTimeout, "ConnectTimeout"),
        (requests.exceptions.ReadTimeout, "ReadTimeout"),
        (requests.exceptions.ChunkedEncodingError, "ChunkedEncodingError"),
        (requests.exceptions.ConnectionError, "ConnectionError"),
    ):
        if isinstance(exc, exc_type):
            if name == "ConnectionError" and not _never_connected(exc):
                name = "ConnectionLost"
            return next(rule for rule in HTTP_ERRORS if rule.code == name)
    return None


def _never_connected(exc: BaseException) -> bool:
    """Whether a requests ``ConnectionError`` failed before the request reached the server.

    urllib3 reports a failed connect (refused, unresolvable host) as ``MaxRetryError`` around a
    ``NewConnectionError``; a connection that closed after the request was sent ("Connection
    aborted", ``RemoteDisconnected``, a reset) arrives as the ``ProtocolError`` or ``OSError``
    itself. Only the first is safe to send again: the second may have been applied.
    """
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)


_CERTIFICATE_SIGNS = (
    "certificate verify failed",
    "certificate_verify_failed",
    "self signed certificate",
    "self-signed certificate",
    "hostname mismatch",
    "doesn't match",
    "unable to get local issuer",
    "certificate has expired",
    "no such file",  # a ca_bundle path that does not exist
    "could not find a suitable tls ca certificate bundle",
)


def is_certificate_error(exc: BaseException) -> bool:
    """Tell whether an SSL failure is about trust (certificate, host name, CA bundle).

    Everything else at the SSL level (EOF in violation of protocol, a connection reset while a
    request body was being written, a bad record) is the connection closing, not a certificate.

    Args:
        exc: the exception (requests wraps urllib3's, which wraps the ``ssl`` module's).

    Returns:
        True when the certificate or its verification failed.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        text = str(current).lower()
        if any(sign in text for sign in _CERTIFICATE_SIGNS):
            return True
        pending += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return False


def is_transient_record_error(code: str) -> bool:
    """Tell whether a per-record write error heals by itself (and is worth retrying).

    Args:
        code: the Salesforce ``statusCode`` of a per-record error.

    Returns:
        True for transient codes such as ``UNABLE_TO_LOCK_ROW``.
    """
    return RECORD_ERRORS.get(code) is Kind.TRANSIENT


def is_gone_record_error(code: str) -> bool:
    """Tell whether a per-record write error means the record no longer exists.

    Args:
        code: the Salesforce ``statusCode`` of a per-record error (or the code part of
            ``"CODE: message"``).

    Returns:
        True for ``ENTITY_IS_DELETED``, a missing id and the like.
    """
    return RECORD_ERRORS.get(code) is Kind.GONE


def response_error(response: requests.Response) -> tuple[str | None, str]:
    """Extract (error code, message) from a Salesforce, Segment or OAuth error response.

    Args:
        response: the failed response.

    Returns:
        The API error code (or None) and a short message; never the request's secrets.
    """
    try:
        body: Any = response.json()
    except (ValueError, json.JSONDecodeError):
        text = response.text.strip().replace("\n", " ")
        return None, text[:200]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # Salesforce: always a JSON array of {message, errorCode}
    if isinstance(body, dict):
        if isinstance(
            body.get("error"), dict
        ):  # Segment Profile API: {"error": {"code", "message"}}
            body = body["error"]
        code = body.get("errorCode") or body.get("code") or body.get("error")
        message = body.get("message") or body.get("error_description") or ""
        return (str(code) if code else None), str(message)[:300]
    return None, str(body)[:200]


class LeadscoreError(Exception):
    """An expected failure, shown to the user as one line: what, where, what to do.

    Attributes:
        exit_code: process exit status for the CLI.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(LeadscoreError):
    """The setup is wrong: config file, credentials, URLs, permissions, field mappings."""

    exit_code = 2


class TransientError(LeadscoreError):
    """A failure that heals by itself but outlasted the retries; the next run tries again."""


class RequestError(LeadscoreError):
    """The remote system rejected a request leadscore built; retrying cannot help."""


class BudgetExceeded(LeadscoreError):
    """The run stopped before exceeding the API allowance; nothing is lost, the next run resumes."""

    exit_code = 3


class Busy(LeadscoreError):
    """Another run holds the store's lock; nothing was done, the run can be retried later."""

    exit_code = 5


class Interrupted(LeadscoreError):
    """A run stopped on request (SIGTERM/SIGINT) at a checkpoint; committed work is kept."""

    exit_code = 130


class ReplayIdExpired(TransientError):
    """A stored change-event replay id is no longer retained: catch up by polling, then resume."""


ERROR_CLASSES: dict[Kind, type[LeadscoreError]] = {
    Kind.TRANSIENT: TransientError,
    Kind.CONFIG: ConfigError,
    Kind.REQUEST: RequestError,
    Kind.BUDGET: BudgetExceeded,
}


def error_for(rule: Rule, message: str, *, hint: str | None = None) -> LeadscoreError:
    """Build the user-facing exception for a classified failure.

    Args:
        rule: the classification.
        message: what failed and where.
        hint: what to do about it.

    Returns:
        An instance of the exception class for the rule's kind.
    """
    return ERROR_CLASSES[rule.kind](message, hint=hint)


def check_next_page(seen: set[str], token: str, what: str) -> None:
    """Refuse a paging token (``nextRecordsUrl``, ``Sforce-Locator``) that was already followed.

    A server that hands out the same next-page token twice would otherwise make a read loop
    forever, storing the same page again and again.

    Args:
        seen: the tokens followed so far in this read (the token is added).
        token: the next page's token.
        what: what is being read, for the message.

    Raises:
        RequestError: the token was followed before.
    """
    if token in seen:
        raise RequestError(
            f"{what}: Salesforce returned the same next-page token twice ({token[:80]}); "
            "stopped instead of reading the same page again",
            hint="committed pages are kept; if it persists, report it to Salesforce support",
        )
    seen.add(token)
