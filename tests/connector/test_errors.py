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
