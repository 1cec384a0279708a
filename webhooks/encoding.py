"""How answers spell things: every timestamp the service returns is ISO 8601 UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime | None) -> str | None:
    """'2027-03-01T07:00:00Z' for an aware datetime, None for None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
