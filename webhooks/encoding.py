"""How values are spelled on the way in and out: a request's text and numbers must be
storable, and every timestamp the service returns is ISO 8601 UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

from notifier.store.text import storable

STORABLE_INT = 2**31 - 1  # the largest value of an INTEGER column (PostgreSQL's is 32-bit)


def refuse_unstorable_url() -> None:
    """A request guard: 400 for a path or query string no database could store.

    No URL of the service needs such a character, and refused here it cannot reach a
    query deep inside a handler, where the database would turn it into a 500."""
    texts = [request.path, *(t for pair in request.args.items(multi=True) for t in pair)]
    if not all(storable(text) for text in texts):
        raise BadRequest("the URL contains a character no text can hold (NUL or a lone surrogate)")


class StorableInt(IntegerConverter):
    """`<int:...>` in a route: a number larger than an INTEGER column holds matches no
    route (404), rather than reaching a query that PostgreSQL refuses with a 500."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, *args, **kwargs)
        self.max = STORABLE_INT if self.max is None else min(self.max, STORABLE_INT)


def iso_utc(moment: datetime | None) -> str | None:
    """'2027-03-01T07:00:00Z' for an aware datetime, None for None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
