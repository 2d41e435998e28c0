"""The one clock and the one parser of timestamps: naive UTC everywhere inside leadscore.

The store keeps naive UTC datetimes, so every time that enters (an API's ISO 8601 text, a file's
modification time, a config value with an offset) is converted here, and nothing falls back to
the local clock when a timestamp cannot be read: the caller decides what a missing time means.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any


def utc_now() -> datetime:
    """The current time as a naive UTC datetime, the store's convention."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(value: datetime) -> datetime:
    """A datetime as naive UTC (naive input is taken to be UTC already).

    Args:
        value: an aware or naive datetime.

    Returns:
        The same instant, naive UTC.
    """
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def from_epoch_millis(millis: float) -> datetime:
    """An epoch-millisecond time (change events' datetimes and commit times) as naive UTC.

    Args:
        millis: milliseconds since 1970-01-01T00:00:00Z.

    Returns:
        The instant, naive UTC.
    """
    return datetime(1970, 1, 1) + timedelta(milliseconds=millis)


def from_epoch_days(days: int) -> date:
    """An epoch-day date (change events' date fields) as a date.

    Args:
        days: days since 1970-01-01.

    Returns:
        The date.
    """
    return date(1970, 1, 1) + timedelta(days=days)


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 date-time as naive UTC.

    Accepts what the APIs send: ``2024-05-20T20:49:32.000+0000`` (Salesforce: no colon in the
    offset), ``...Z`` (Segment, Bulk API job info) and ``...+00:00``; a value without an offset is
    UTC.

    Args:
        text: the timestamp.

    Returns:
        The instant, naive UTC.

    Raises:
        ValueError: the text is not an ISO 8601 date-time.
    """
    return to_naive_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def parse_utc_or_none(value: Any) -> datetime | None:
    """Parse an optional timestamp from a JSON answer: None when absent or unreadable.

    Args:
        value: the JSON value.

    Returns:
        The instant (naive UTC), or None.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_utc(value)
    except ValueError:
        return None


def parse_http_date_or_none(value: str | None) -> datetime | None:
    """Parse an HTTP ``Date`` header (``Sat, 05 Dec 2026 07:21:56 GMT``) as naive UTC.

    Args:
        value: the header, or None.

    Returns:
        The instant (naive UTC), or None when absent or unreadable.
    """
    if not value:
        return None
    try:
        return to_naive_utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None
