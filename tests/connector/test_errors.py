"""The paging guard of connector/errors.py and the timestamp parser of connector/clock.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from connector.clock import parse_utc, parse_utc_or_none, to_naive_utc
from connector.errors import RequestError, check_next_page


def test_a_repeated_next_page_token_stops_the_read():
    followed: set[str] = set()
    check_next_page(followed, "/services/data/v59.0/query/01gA-2000", "query on Lead")
    check_next_page(followed, "/services/data/v59.0/query/01gA-4000", "query on Lead")
    with pytest.raises(RequestError, match=r"query on Lead: .*same next-page token twice"):
        check_next_page(followed, "/services/data/v59.0/query/01gA-2000", "query on Lead")


@pytest.mark.parametrize(
    "text",
    ["2024-05-20T20:49:32.000+0000", "2024-05-20T20:49:32.000Z", "2024-05-20T22:49:32+02:00"],
)
def test_api_timestamps_are_read_as_naive_utc(text):
    assert parse_utc(text) == datetime(2024, 5, 20, 20, 49, 32)


def test_an_unreadable_timestamp_is_an_error_or_none_never_now():
    with pytest.raises(ValueError):
        parse_utc("None")
    assert parse_utc_or_none("yesterday") is None
    assert parse_utc_or_none(None) is None
    aware = datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert to_naive_utc(aware) == datetime(2024, 1, 1, 0) == to_naive_utc(datetime(2024, 1, 1, 0))
    assert to_naive_utc(datetime(2024, 1, 1, tzinfo=UTC)).tzinfo is None


def _tls_server(tmp_path, *, read_bytes: int):
    """A real TLS server over a socket that reads ``read_bytes`` of a request, then hangs up."""
    import socket
    import threading

    from connector.sandbox.tls import ensure_tls_files, make_server_context

    files = ensure_tls_files(tmp_path)
    context = make_server_context(files)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(read_bytes)
                # a hard close (RST) while the client is still writing its body
                tls.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        except OSError:
            pass
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"https://localhost:{listener.getsockname()[1]}", files


def test_a_connection_closed_mid_upload_is_not_a_certificate_error(tmp_path):
    import requests

    from connector.errors import Action, classify_exception, is_certificate_error

    url, files = _tls_server(tmp_path, read_bytes=4096)
    with pytest.raises(requests.RequestException) as raised:
        requests.put(url, data=b"x" * (32 * 1024 * 1024), verify=str(files.ca_cert), timeout=30)
    rule = classify_exception(raised.value)
    assert rule is not None and rule.action is Action.RETRY
    assert rule.meaning != "TLS verification failed"
    assert not is_certificate_error(raised.value)


def test_an_untrusted_certificate_is_still_a_certificate_error(tmp_path):
    import requests

    from connector.errors import classify_exception

    url, _ = _tls_server(tmp_path, read_bytes=1)
    with pytest.raises(requests.exceptions.SSLError) as raised:
        requests.get(url, timeout=30)  # the system CAs do not trust the sandbox's CA
    rule = classify_exception(raised.value)
    assert rule is not None and rule.meaning == "TLS verification failed"
