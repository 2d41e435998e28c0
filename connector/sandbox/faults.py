"""Fault injection: every sandbox request and record write passes through one FaultPlan.

The base :class:`FaultPlan` injects nothing. :class:`InjectedFaults` is the switchable plan the
tests and benchmarks use: a rate or a schedule of

- ``unavailable``: 503 ``SERVER_UNAVAILABLE`` (the request is not processed);
- ``request_limit``: 403 ``REQUEST_LIMIT_EXCEEDED`` for too many concurrent requests (transient;
  the daily allowance is enforced by the sandbox itself);
- ``expired_session``: 401 ``INVALID_SESSION_ID`` (the client must log in again);
- ``slow``: the answer is delayed by ``seconds``, then served normally;
- ``drop``: the request is served (and applied) normally, but the connection is closed after
  ``after_bytes`` bytes of the body;
- ``lost_answer``: the request is served (and applied) normally, but the connection is closed
  before any byte of the answer (the client cannot tell whether it was applied);

plus ``UNABLE_TO_LOCK_ROW`` per record write (sObject Collections and Bulk API 2.0 ingest alike),
and busy-org batches: a write call of more records than ``busy_batch_size`` fails every record
with ``CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY`` (a trigger hitting the Apex CPU limit) or
``UNABLE_TO_LOCK_ROW``, as triggers and flows on Lead do at 200 records per call.

Decisions are drawn from one seeded random generator under a lock, so a run with the same
requests in the same order injects the same faults.

```python
sandbox.faults = InjectedFaults(
    [FaultRule("unavailable", rate=0.05), FaultRule("drop", at=(3,), methods=("GET",))],
    lock_rate=0.02,
    seed=1,
)
```
"""

from __future__ import annotations

import json
import random
import threading
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RequestInfo:
    """What a fault plan may inspect about an incoming request.

    Attributes:
        method: HTTP method.
        path: URL path without the query string.
        category: Request category (``auth``, ``query``, ``composite``, ``bulk``, ...).
    """

    method: str
    path: str
    category: str


@dataclass(frozen=True)
class Fault:
    """A canned HTTP answer that replaces the real one (the request is not processed).

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
class Slow:
    """Delay the answer by ``seconds``, then serve the request normally.

    Attributes:
        seconds: The delay.
    """

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Serve the request normally, but close the connection after ``after_bytes`` body bytes.

    Attributes:
        after_bytes: Body bytes sent before the connection is dropped (the headers announce the
            full length, so the client sees an incomplete body).
    """

    after_bytes: int = 0


LOST_ANSWER = Drop(-1)
"""Serve the request, then close the connection before the status line (no answer at all)."""


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

    The base plan injects nothing. ``on_request`` is called with no sandbox lock held (it may
    call ``Sandbox.expire_sessions``); ``on_record_write`` is called with the database lock held,
    so it must be quick and must not call back into the sandbox.
    """

    def on_request(self, request: RequestInfo) -> Fault | Slow | Drop | None:
        """Return a fault to answer ``request`` with, or None to serve it normally.

        Args:
            request: The incoming request.

        Returns:
            A :class:`Fault` (answer instead), :class:`Slow` (serve late), :class:`Drop` (serve,
            then cut the connection), or None.
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

    def on_write_batch(self, sobject: str, size: int) -> RecordFault | None:
        """Return a failure for every record of a write call, or None to apply it.

        Called once per API write call (sObject Collections, single records, Bulk API chunks)
        with the database lock not yet taken.

        Args:
            sobject: Object API name of the batch's first record.
            size: Records in the call.

        Returns:
            The failure each record reports, or None.
        """
        del sobject, size
        return None


BUSY_ERRORS = {
    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY": (
        "LeadTrigger: execution of AfterUpdate caused by: System.LimitException: "
        "Apex CPU time limit exceeded"
    ),
    "UNABLE_TO_LOCK_ROW": "unable to obtain exclusive access to this record or 200 records",
}

FAULT_KINDS = ("unavailable", "request_limit", "expired_session", "slow", "drop", "lost_answer")


def _error_body(code: str, message: str) -> bytes:
    return json.dumps([{"message": message, "errorCode": code}]).encode()


_CANNED: dict[str, Fault] = {
    "unavailable": Fault(
        503, _error_body("SERVER_UNAVAILABLE", "Server is temporarily unavailable.")
    ),
    "request_limit": Fault(
        403, _error_body("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")
    ),
    "expired_session": Fault(401, _error_body("INVALID_SESSION_ID", "Session expired or invalid")),
}


@dataclass(frozen=True)
class FaultRule:
    """When to inject one kind of request fault.

    A request matches when its method, category and path pass the filters; matching requests
    are numbered from 1. The rule fires for the numbers in ``at``, for every number above
    ``after``, and otherwise with probability ``rate``.

    Attributes:
        kind: One of ``FAULT_KINDS``.
        rate: Probability per matching request.
        at: Matching request numbers that fail (a schedule).
        after: Every matching request after this many fails (a lasting outage).
        methods: Only these HTTP methods (None: any).
        categories: Only these request categories (None: any); login requests (``auth``) never
            match unless listed.
        path_contains: Only paths containing this text.
        seconds: Delay of a ``slow`` fault.
        after_bytes: Body bytes sent before a ``drop`` fault closes the connection.
    """

    kind: str
    rate: float = 0.0
    at: tuple[int, ...] = ()
    after: int | None = None
    methods: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    path_contains: str | None = None
    seconds: float = 1.0
    after_bytes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")

    def matches(self, request: RequestInfo) -> bool:
        """Tell whether the rule applies to a request (before counting it)."""
        if self.methods is not None and request.method not in self.methods:
            return False
        if self.categories is None:
            if request.category == "auth":
                return False
        elif request.category not in self.categories:
            return False
        return self.path_contains is None or self.path_contains in request.path

    def fault(self) -> Fault | Slow | Drop:
        """The fault this rule injects."""
        if self.kind == "slow":
            return Slow(self.seconds)
        if self.kind == "drop":
            return Drop(self.after_bytes)
        if self.kind == "lost_answer":
            return LOST_ANSWER
        return _CANNED[self.kind]


class InjectedFaults(FaultPlan):
    """A switchable fault plan: request faults by rule, ``UNABLE_TO_LOCK_ROW`` per record.

    Args:
        rules: Request fault rules; the first that fires wins.
        lock_rate: Probability that a record write fails with ``UNABLE_TO_LOCK_ROW``.
        lock_at: Record-write numbers (from 1, over the whole run) that fail that way.
        lock_objects: Only writes to these objects (None: any).
        seed: Seed of the random draws.
        reject_records: Record ids whose every write fails permanently with
            ``FIELD_CUSTOM_VALIDATION_EXCEPTION`` (a validation rule), e.g. until the plan is
            replaced ("the cause is fixed"). 15- or 18-character ids.
        busy_batch_size: Write calls of more records than this fail every record with
            ``busy_error`` (None: batches of any size pass).
        busy_error: ``CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY`` or ``UNABLE_TO_LOCK_ROW``.
        busy_objects: Only batches of these objects (None: any).

    Attributes:
        injected: Faults injected so far, by kind (``unable_to_lock_row`` for records).
    """

    def __init__(
        self,
        rules: Iterable[FaultRule] = (),
        *,
        lock_rate: float = 0.0,
        lock_at: Iterable[int] = (),
        lock_objects: Iterable[str] | None = None,
        seed: int = 0,
        reject_records: Iterable[str] = (),
        busy_batch_size: int | None = None,
        busy_error: str = "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
        busy_objects: Iterable[str] | None = None,
    ) -> None:
        if busy_error not in BUSY_ERRORS:
            raise ValueError(f"busy_error must be one of {tuple(BUSY_ERRORS)}")
        self.busy_batch_size = busy_batch_size
        self.busy_error = busy_error
        self.busy_objects = None if busy_objects is None else frozenset(busy_objects)
        self.batch_sizes: list[int] = []
        self.rules = tuple(rules)
        self.lock_rate = lock_rate
        self.lock_at = frozenset(lock_at)
        self.lock_objects = None if lock_objects is None else frozenset(lock_objects)
        self.reject_records = frozenset(r[:15] for r in reject_records)
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._seen = [0] * len(self.rules)
        self._record_writes = 0

    def on_request(self, request: RequestInfo) -> Fault | Slow | Drop | None:
        """Inject the first rule that fires for this request (see :class:`FaultRule`)."""
        with self._lock:
            for index, rule in enumerate(self.rules):
                if not rule.matches(request):
                    continue
                self._seen[index] += 1
                number = self._seen[index]
                fires = (
                    number in rule.at
                    or (rule.after is not None and number > rule.after)
                    or (rule.rate > 0 and self._random.random() < rule.rate)
                )
                if fires:
                    self.injected[rule.kind] += 1
                    return rule.fault()
        return None

    def on_write_batch(self, sobject: str, size: int) -> RecordFault | None:
        """Fail every record of a batch larger than ``busy_batch_size`` (a busy org)."""
        with self._lock:
            self.batch_sizes.append(size)
            if self.busy_batch_size is None or size <= self.busy_batch_size:
                return None
            if self.busy_objects is not None and sobject not in self.busy_objects:
                return None
            self.injected["busy_batch"] += 1
        return RecordFault(self.busy_error, BUSY_ERRORS[self.busy_error])

    def on_record_write(self, sobject: str, record_id: str | None) -> RecordFault | None:
        """Fail a write: rejected records always, ``UNABLE_TO_LOCK_ROW`` by schedule or rate."""
        if record_id is not None and record_id[:15] in self.reject_records:
            with self._lock:
                self.injected["rejected_record"] += 1
            return RecordFault(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Scores cannot be set on this record"
            )
        if self.lock_objects is not None and sobject not in self.lock_objects:
            return None
        with self._lock:
            self._record_writes += 1
            fires = self._record_writes in self.lock_at or (
                self.lock_rate > 0 and self._random.random() < self.lock_rate
            )
            if not fires:
                return None
            self.injected["unable_to_lock_row"] += 1
        return RecordFault(
            "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records"
        )


_PLAN_KEYS = frozenset(
    {"rules", "lock_rate", "lock_at", "lock_objects", "seed", "reject_records"}
    | {"busy_batch_size", "busy_error", "busy_objects"}
)
_RULE_TUPLES = ("at", "methods", "categories")


def load_fault_plan(path: Path) -> InjectedFaults:
    """Read fault rules from a TOML or JSON file (by its suffix) into an :class:`InjectedFaults`.

    The file holds :class:`InjectedFaults`'s keyword arguments, with ``rules`` a list of
    :class:`FaultRule` fields, e.g. in TOML::

        seed = 1
        lock_rate = 0.02
        [[rules]]
        kind = "lost_answer"
        rate = 0.05
        methods = ["PATCH"]
        categories = ["composite"]

    Args:
        path: the file (``.json``, or TOML for any other suffix).

    Returns:
        The plan.

    Raises:
        ValueError: the file cannot be read or names an unknown key, kind or value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if Path(path).suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read fault rules from {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of fault settings")
    unknown = sorted(set(data) - _PLAN_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}")
    rules = []
    for number, rule in enumerate(data.pop("rules", []) or [], start=1):
        if not isinstance(rule, dict):
            raise ValueError(f"{path}: rule {number} is not a table")
        fields = {
            k: tuple(v) if k in _RULE_TUPLES and v is not None else v for k, v in rule.items()
        }
        try:
            rules.append(FaultRule(**fields))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: rule {number}: {exc}") from None
    try:
        return InjectedFaults(rules, **data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
