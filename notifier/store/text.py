"""Which text a database column can hold."""

from __future__ import annotations

import re

# NUL, which PostgreSQL refuses in text, and lone surrogates, which no UTF-8 database
# encodes (JSON's "\ud800" escapes make them).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """True when every database this service runs on can hold `text` in a text column."""
    return _UNSTORABLE.search(text) is None
