"""Moments on the clinic's wall clock, and how the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DUBAI = ZoneInfo("Asia/Dubai")


def dubai(
    month: int, day: int, hour: int, minute: int = 0, second: int = 0, *, year: int = 2027
) -> datetime:
    """A wall-clock time in Dubai, as the UTC moment the database stores."""
    return datetime(year, month, day, hour, minute, second, tzinfo=DUBAI).astimezone(UTC)


def iso(moment: datetime) -> str:
    """A moment as the API writes it: UTC, ISO 8601, ending in Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
