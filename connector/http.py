"""The one HTTP session factory.

Timeouts, TLS, the retry policy, token refresh, API-call accounting and the API budget live here.

Every call leadscore makes - simple-salesforce's, Bulk API 2.0 downloads, Segment's - goes through a
session made by :func:`make_session`. simple-salesforce accepts our session
(``Salesforce(session=...)``) and calls ``session.request`` for everything, so retries and token
refresh apply to it without touching its internals.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import tenacity

from connector.clock import parse_http_date_or_none
from connector.errors import (
    IDEMPOTENT_METHODS,
    Action,
    BudgetExceeded,
    classify_exception,
    classify_status,
    response_error,
)

log = logging.getLogger("leadscore.http")

_API_USAGE = re.compile(r"(?:^|[^-])api-usage=(\d+)/(\d+)")


@dataclass(frozen=True)
class HttpSettings:
    """Transport settings shared by every connector.

    Attributes:
        timeout_seconds: connect and read timeout per request.
        max_attempts: attempts per request, the first one included.
        backoff_seconds: base of the exponential backoff (with full jitter).
        max_backoff_seconds: longest single wait, also the cap on ``Retry-After``.
        ca_bundle: PEM file of CAs to trust instead of the system store (the sandbox's CA); None for
            the default.
        resend_non_idempotent: resend POSTs after an ambiguous failure (only where the API
            de-duplicates, e.g. Segment ``messageId``).
    """

    timeout_seconds: float = 60.0
    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 60.0
    ca_bundle: str | None = None
    resend_non_idempotent: bool = False


@dataclass
class CallCounter:
    """Counts calls per category and remembers the org's API usage (shared within one run).

    Attributes:
        by_category: attempts sent, by category (``api`` counts against the daily allowance;
            ``auth`` and ``uncounted`` do not).
        org_usage: (used, max) of the daily allowance from the last ``Sforce-Limit-Info`` header.
        server_time: the newest ``Date`` header answered (naive UTC, the server's clock): a
            time every change the server committed before it answered is visible at.
    """

    by_category: Counter[str] = field(default_factory=Counter)
    org_usage: tuple[int, int] | None = None
    server_time: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def api_calls(self) -> int:
        """Calls that count against the remote API allowance."""
        return self.by_category["api"]

    def record(self, category: str, response: requests.Response | None) -> None:
        """Count one sent request and read its usage header.

        Args:
            category: ``api`` or ``auth``.
            response: the response, or None when the transport failed.
        """
        with self._lock:
            self.by_category[category] += 1
            if response is not None:
                # https://developer.salesforce.com/docs/atlas.en-
                # us.api_rest.meta/api_rest/headers_api_usage.htm
                match = _API_USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
                if match:
                    self.org_usage = (int(match.group(1)), int(match.group(2)))
                answered = parse_http_date_or_none(response.headers.get("Date"))
                if answered is not None and (
                    self.server_time is None or answered > self.server_time
                ):
                    self.server_time = answered


@dataclass(frozen=True)
class Budget:
    """A cap on API calls that stops a run cleanly before it is exceeded.

    Attributes:
        max_calls_per_run: absolute cap for one run, or None.
        max_share_of_daily_limit: stop when the org's usage reaches this share of its daily
            allowance, or None.
        setting: config key named in the message (e.g. ``salesforce.budget``).
        read_usage: reads the org's usage without spending a counted call (Salesforce:
            ``/limits``) into the counter; called before the first counted call of a run, so
            that a run starting at the share stops before it spends anything.
    """

    max_calls_per_run: int | None = None
    max_share_of_daily_limit: float | None = None
    setting: str = "budget"
    read_usage: Callable[[CallCounter], None] | None = field(default=None, compare=False)

    def check(self, counter: CallCounter) -> None:
        """Raise before a call that would exceed the budget.

        Args:
            counter: calls made so far.

        Raises:
            BudgetExceeded: the next call would exceed the cap.
        """
        if self.max_calls_per_run is not None and counter.api_calls >= self.max_calls_per_run:
            raise BudgetExceeded(
                f"stopped before exceeding the API budget: {counter.api_calls} calls made this run "
                f"({self.setting}.max_calls_per_run = {self.max_calls_per_run})",
                hint="raise the cap, or let the next run resume where this one stopped",
            )
        if (
            self.max_share_of_daily_limit is not None
            and counter.org_usage is None
            and self.read_usage is not None
        ):
            self.read_usage(counter)
        if self.max_share_of_daily_limit is not None and counter.org_usage:
            used, total = counter.org_usage
            if total and used >= self.max_share_of_daily_limit * total:
                raise BudgetExceeded(
                    f"stopped before exceeding the API budget: the org has used {used} of {total} "
                    f"daily API calls ({self.setting}.max_share_of_daily_limit = "
                    f"{self.max_share_of_daily_limit})",
                    hint="raise the share, or let the next run resume after the 24-hour window",
                )


class TokenAuth(requests.auth.AuthBase):
    """Bearer-token auth whose token can be refreshed in place.

    requests applies a session's ``auth`` after the caller's headers, so the current token wins over
    the one simple-salesforce copied into its own headers when it was built: a refresh reaches every
    later call, including Bulk API 2.0 polls and result downloads.
    """

    def __init__(self, fetch_token: Callable[[], str]) -> None:
        self._fetch_token = fetch_token
        self._lock = threading.Lock()
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The current token, fetched on first use."""
        with self._lock:
            if self._token is None:
                self._token = self._fetch_token()
            return self._token

    def refresh(self, stale: str | None = None) -> None:
        """Fetch a new token, unless another thread already replaced ``stale``.

        Args:
            stale: the token that was rejected.
        """
        with self._lock:
            if stale is None or self._token == stale:
                self._token = self._fetch_token()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Set the current bearer token on an outgoing request."""
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class TokenBucket:
    """A thread-safe token bucket: at most ``rate`` requests per second, bursts up to ``capacity``.

    Applied to every attempt a session sends (retries included), so the client stays within an
    API's published rate limit instead of provoking 429s (e.g. the Segment Profile API: 100
    requests per second per space).
    """

    def __init__(
        self,
        rate: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        # Sleeping outside the lock: the token is already reserved (the balance went negative), so
        # later callers queue up behind this one at 1/rate intervals.
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Back off after the server answered 429: hold every caller back and halve the rate.

        The bucket goes ``seconds`` into debt, so concurrent callers sharing it wait too instead of
        each provoking its own 429; and the rate halves (down to one per second) for the rest of
        its life, so a configured rate above what the server allows converges within a few 429s.

        Args:
            seconds: how long nobody may send (the server's Retry-After).
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self.rate = max(1.0, self.rate / 2)
            self._tokens = min(self._tokens, -seconds * self.rate)


class _RateLimitedAdapter(requests.adapters.HTTPAdapter):
    """Transport adapter that takes a token from a bucket before every request it sends."""

    def __init__(self, bucket: TokenBucket, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Wait for a token, then send; a 429 holds back every caller of the bucket."""
        self.bucket.acquire()
        response = super().send(request, **kwargs)
        if response.status_code == 429:
            self.bucket.pause(retry_after_seconds(response) or 1.0 / self.bucket.rate)
        return response


class _Retryable(Exception):
    """Internal: one attempt failed in a way the policy retries."""

    def __init__(
        self,
        response: requests.Response | None = None,
        exc: BaseException | None = None,
        delay: float | None = None,
    ) -> None:
        super().__init__("retryable failure")
        self.response = response
        self.exc = exc
        self.delay = delay


def retry_after_seconds(response: requests.Response) -> float | None:
    """Read ``Retry-After`` (seconds or an HTTP date).

    Args:
        response: the response.

    Returns:
        Seconds to wait, or None when the header is absent or unreadable.
    """
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Session(requests.Session):
    """A ``requests.Session`` with leadscore's transport policy (see :func:`make_session`)."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        counter: CallCounter | None = None,
        budget: Budget | None = None,
        is_auth_url: Callable[[str], bool] = lambda url: False,
        sleep: Callable[[float], None] = time.sleep,
        is_uncounted_url: Callable[[str], bool] = lambda url: False,
    ) -> None:
        super().__init__()
        self._is_uncounted_url = is_uncounted_url
        self.settings = settings
        self.counter = counter if counter is not None else CallCounter()
        self.budget = budget
        self._is_auth_url = is_auth_url
        self._sleep = sleep

    def request(  # type: ignore[override]
        self, method: str, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send a request with timeouts, TLS settings, retries, token refresh and accounting.

        Args:
            method: HTTP method.
            url: absolute URL.
            *args: passed to ``requests.Session.request``.
            **kwargs: passed to ``requests.Session.request``.

        Returns:
            The final response. Error responses that are not retried (or outlasted the retries) are
            returned as they are, so that callers such as simple-salesforce raise their usual typed
            exceptions.

        Raises:
            BudgetExceeded: the call would exceed the API budget.
            requests.RequestException: a transport error that retries did not outlast.
        """
        url = url.decode() if isinstance(url, bytes) else url
        kwargs.setdefault("timeout", self.settings.timeout_seconds)
        # requests ignores session.verify when REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE are set and the
        # call passes no
        # verify= (simple-salesforce passes none), so the configured bundle is passed per call to
        # make it win.
        kwargs.setdefault("verify", self.settings.ca_bundle or True)
        method = method.upper()
        category = (
            "auth"
            if self._is_auth_url(url)
            else "uncounted"
            if self._is_uncounted_url(url)
            else "api"
        )
        resendable = method in IDEMPOTENT_METHODS or self.settings.resend_non_idempotent
        refreshed = False

        def attempt() -> requests.Response:
            nonlocal refreshed
            if self.budget is not None and category == "api":
                self.budget.check(self.counter)
            sent_token = self.auth.token if isinstance(self.auth, TokenAuth) else None
            started = time.monotonic()
            try:
                response = super(Session, self).request(method, url, *args, **kwargs)
            except requests.RequestException as exc:
                self.counter.record(category, None)
                rule = classify_exception(exc)
                log.debug("%s %s failed: %s", method, _path(url), type(exc).__name__)
                if rule and rule.action is Action.RETRY and (resendable or rule.safe_to_resend):
                    raise _Retryable(exc=exc) from exc
                raise
            self.counter.record(category, response)
            log.debug(
                "%s %s -> %s in %.0f ms",
                method,
                _path(url),
                response.status_code,
                1000 * (time.monotonic() - started),
            )
            if response.status_code < 300:
                return response
            code, message = response_error(response)
            rule = classify_status(response.status_code, code, message)
            if rule.action is Action.REFRESH and isinstance(self.auth, TokenAuth) and not refreshed:
                refreshed = True
                self.auth.refresh(sent_token)
                raise _Retryable(response=response, delay=0.0)
            if rule.action is Action.RETRY and (resendable or rule.safe_to_resend):
                raise _Retryable(response=response, delay=retry_after_seconds(response))
            return response

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as final:
            if final.response is not None:
                return final.response
            assert final.exc is not None
            raise final.exc from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Backoff: ``Retry-After`` when the server sent one, else exponential with full jitter."""
        failure = state.outcome.exception() if state.outcome else None
        cap = self.settings.max_backoff_seconds
        if isinstance(failure, _Retryable) and failure.delay is not None:
            return min(failure.delay, cap)
        return backoff_seconds(self.settings, state.attempt_number)


def backoff_seconds(settings: HttpSettings, attempt_number: int) -> float:
    """The policy's wait after a failed attempt: exponential with full jitter, capped.

    The HTTP session and the Pub/Sub subscriber (reconnects) both wait this long.

    Args:
        settings: the transport settings (``backoff_seconds``, ``max_backoff_seconds``).
        attempt_number: 1 after the first failure, 2 after the second, ...

    Returns:
        Seconds to wait.
    """
    jitter = tenacity.wait_random_exponential(
        multiplier=settings.backoff_seconds, max=settings.max_backoff_seconds
    )
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = attempt_number
    return float(jitter(state))


_PERSONAL_SEGMENT = re.compile(r"(/profiles/[^/:]+:)[^/]+|[^/]*(?:@|%40)[^/]*")


def _path(url: str) -> str:
    """The path of a URL for a log line, without what must not be logged.

    No query string (SOQL and ids are noise in logs), and no personal identifier: a Profile API
    path names the person (``profiles/email:...``).
    """
    path = requests.utils.urlparse(url).path
    return _PERSONAL_SEGMENT.sub(lambda m: (m.group(1) or "") + "***", path)


def make_session(
    settings: HttpSettings,
    *,
    counter: CallCounter | None = None,
    budget: Budget | None = None,
    auth: requests.auth.AuthBase | None = None,
    is_auth_url: Callable[[str], bool] = lambda url: False,
    sleep: Callable[[float], None] = time.sleep,
    rate_limit: TokenBucket | None = None,
    pool_size: int = 10,
    is_uncounted_url: Callable[[str], bool] = lambda url: False,
) -> Session:
    """Build the session every connector uses.

    Args:
        settings: timeouts, TLS and retry policy.
        counter: shared call counter (one per run), or a new one.
        budget: API budget checked before every ``api`` call.
        auth: auth applied to every request (e.g. :class:`TokenAuth`).
        is_auth_url: tells login requests apart; they do not count against the API allowance.
        sleep: how to wait between attempts (tests pass a no-op).
        rate_limit: a token bucket every attempt waits on (the API's requests-per-second limit).
        pool_size: connections kept per host (raise it for concurrent callers).
        is_uncounted_url: tells apart API requests the allowance does not count (Salesforce's
            ``/limits``): no budget check, counted as ``uncounted``.

    Returns:
        A configured :class:`Session`.
    """
    session = Session(
        settings,
        counter=counter,
        budget=budget,
        is_auth_url=is_auth_url,
        sleep=sleep,
        is_uncounted_url=is_uncounted_url,
    )
    if rate_limit is not None or pool_size != 10:
        adapter: requests.adapters.HTTPAdapter = (
            _RateLimitedAdapter(rate_limit, pool_connections=pool_size, pool_maxsize=pool_size)
            if rate_limit is not None
            else requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    session.auth = auth
    session.headers["User-Agent"] = "leadscore/0.1 (+https://github.com/leadscore/leadscore)"
    return session
