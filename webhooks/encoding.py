"""How text is spelled on the way in and out: a request's text must be storable, and
every timestamp the service returns is ISO 8601 UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import request
from werkzeug.exceptions import BadRequest

# NUL, which PostgreSQL refuses in text, and lone surrogates, which no UTF-8 database
# encodes (JSON's "\ud800" escapes make them).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """True when every database this service runs on can hold `text` in a text column."""
    return _UNSTORABLE.search(text) is None


def refuse_unstorable_url() -> None:
    """A request guard: 400 for a path or query string no database could store.

    No URL of the service needs such a character, and refused here it cannot reach a
    query deep inside a handler, where the database would turn it into a 500."""
    texts = [request.path, *(t for pair in request.args.items(multi=True) for t in pair)]
    if not all(storable(text) for text in texts):
        raise BadRequest("the URL contains a character no text can hold (NUL or a lone surrogate)")


def iso_utc(moment: datetime | None) -> str | None:
    """'2027-03-01T07:00:00Z' for an aware datetime, None for None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
