"""Fault injection hook: every sandbox request and record write passes through one FaultPlan.

The plan is empty for now. Later issues subclass or configure it to inject 503
``SERVER_UNAVAILABLE``, slow responses, dropped connections and per-record ``UNABLE_TO_LOCK_ROW``
without touching the request handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestInfo:
    """What a fault plan may inspect about an incoming request.

    Attributes:
        method: HTTP method.
        path: URL path without the query string.
        category: Request category (``auth``, ``query``, ``composite``, ...).
    """

    method: str
    path: str
    category: str


@dataclass(frozen=True)
class Fault:
    """A canned HTTP answer that replaces the real one.

    Attributes:
        status: HTTP status code.
        body: Response body (bytes; JSON for REST faults).
        headers: Extra response headers (``Retry-After`` ...).
        content_type: Content-Type of the body.
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json;charset=UTF-8"


@dataclass(frozen=True)
class RecordFault:
    """A per-record failure to report instead of applying a write.

    Attributes:
        status_code: Salesforce ``statusCode`` (``UNABLE_TO_LOCK_ROW``).
        message: Error message.
    """

    status_code: str
    message: str


class FaultPlan:
    """Decides, request by request and record by record, whether to inject a fault.

    The base plan injects nothing. Both hooks are called with the sandbox's locks *not* held for
    requests and held for records, so implementations must be quick and must not call back into
    the sandbox.
    """

    def on_request(self, request: RequestInfo) -> Fault | None:
        """Return a fault to answer ``request`` with, or None to serve it normally.

        Args:
            request: The incoming request.

        Returns:
            The fault to send, or None.
        """
        del request
        return None

    def on_record_write(self, sobject: str, record_id: str | None) -> RecordFault | None:
        """Return a per-record failure for a write, or None to apply it.

        Args:
            sobject: Object API name.
            record_id: Id of the record being written (None for creates).

        Returns:
            The failure to report, or None.
        """
        del sobject, record_id
        return None
