"""The session factory's policy, against a scripted local HTTP server over a real socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from connector.errors import Action, BudgetExceeded, Kind, classify_status
from connector.http import Budget, CallCounter, HttpSettings, TokenAuth, make_session


class Script:
    """Responses to serve in order; the last one repeats."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, str], object]] = []
        self.seen: list[tuple[str, str, str | None]] = []

    def next(self) -> tuple[int, dict[str, str], object]:
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            script.seen.append((self.command, self.path, self.headers.get("Authorization")))
            status, headers, body = script.next()
            payload = json.dumps(body).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def _session(**kwargs: object):
    waits: list[float] = []
    settings = HttpSettings(max_attempts=4, backoff_seconds=0.01, max_backoff_seconds=30)
    session = make_session(settings, sleep=waits.append, **kwargs)  # type: ignore[arg-type]
    return session, waits


def test_transient_5xx_is_retried_until_success(server):
    url, script = server
    script.responses = [
        (503, {}, [{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}]),
        (200, {}, {"ok": 1}),
    ]
    session, waits = _session()
    response = session.get(url + "/x")
    assert response.status_code == 200
    assert len(script.seen) == 2
    assert len(waits) == 1
    assert session.counter.api_calls == 2  # every attempt counts against the allowance


def test_retry_after_is_honoured(server):
    url, script = server
    script.responses = [(429, {"Retry-After": "7"}, {}), (200, {}, {})]
    session, waits = _session()
    assert session.get(url).status_code == 200
    assert waits == [7.0]


def test_retries_give_up_and_return_the_last_response(server):
    url, script = server
    script.responses = [(502, {}, {})]
    session, _ = _session()
    assert session.get(url).status_code == 502
    assert len(script.seen) == 4


def test_client_errors_are_not_retried(server):
    url, script = server
    script.responses = [(400, {}, [{"errorCode": "MALFORMED_QUERY", "message": "bad"}])]
    session, waits = _session()
    assert session.get(url).status_code == 400
    assert len(script.seen) == 1 and waits == []


def test_post_is_not_resent_after_an_ambiguous_500(server):
    url, script = server
    script.responses = [(500, {}, {})]
    session, _ = _session()
    assert session.post(url, json={}).status_code == 500
    assert len(script.seen) == 1  # the server may have processed it: no blind resend


def test_post_is_resent_after_503_because_it_was_not_processed(server):
    url, script = server
    script.responses = [(503, {}, {}), (201, {}, {})]
    session, _ = _session()
    assert session.post(url, json={}).status_code == 201


def test_daily_limit_stops_without_retrying(server):
    url, script = server
    body = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    script.responses = [(403, {}, body)]
    session, waits = _session()
    assert session.get(url).status_code == 403
    assert len(script.seen) == 1 and waits == []
    rule = classify_status(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    assert rule.action is Action.STOP and rule.kind is Kind.BUDGET


def test_expired_session_refreshes_the_token_once_and_resends(server):
    url, script = server
    script.responses = [
        (401, {}, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]),
        (200, {}, {}),
    ]
    tokens = iter(["first", "second"])
    session, waits = _session(auth=TokenAuth(lambda: next(tokens)))
    assert session.get(url).status_code == 200
    assert [auth for _, _, auth in script.seen] == ["Bearer first", "Bearer second"]
    assert waits == [0.0]


def test_budget_stops_before_the_capped_call(server):
    url, script = server
    script.responses = [(200, {"Sforce-Limit-Info": "api-usage=10/1000"}, {})]
    counter = CallCounter()
    session, _ = _session(counter=counter, budget=Budget(max_calls_per_run=2))
    session.get(url)
    session.get(url)
    with pytest.raises(BudgetExceeded, match="max_calls_per_run = 2"):
        session.get(url)
    assert len(script.seen) == 2
    assert counter.org_usage == (10, 1000)


def test_budget_share_of_daily_allowance(server):
    url, script = server
    script.responses = [(200, {"Sforce-Limit-Info": "api-usage=801/1000"}, {})]
    session, _ = _session(budget=Budget(max_share_of_daily_limit=0.8))
    session.get(url)
    with pytest.raises(BudgetExceeded, match="801 of 1000"):
        session.get(url)


def test_connection_errors_are_retried_then_raised():
    session, waits = _session()
    with pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:9/unreachable")
    assert len(waits) == 3
