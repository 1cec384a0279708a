"""The signature of the booking webhook, and of the events sent back to the booking
system: `t=<unix seconds>,v1=<hex HMAC-SHA256>` in `X-Aftercare-Signature`.

The HMAC covers "<t>.<raw body>" with the shared secret (BOOKING_WEBHOOK_SECRET one
way, EVENTS_WEBHOOK_SECRET the other). Several `v1` values may be given (a secret
being rotated); one must match.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime

TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value a booking system sends for `body` at `timestamp`."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify(header: str | None, secret: str, body: bytes, now: datetime) -> bool:
    """True when the header is well formed, recent, and signs exactly `body`."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and re.fullmatch(r"[0-9]{1,12}", value):
            timestamp = int(value)
        elif name == "v1" and re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
            candidates.append(value.strip().lower())
    if timestamp is None or abs(now.timestamp() - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = _digest(secret, body, timestamp)
    return any(hmac.compare_digest(expected, c) for c in candidates)


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
