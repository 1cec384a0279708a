"""How long to wait before trying again: exponential backoff with equal jitter."""

from __future__ import annotations

import random
from datetime import timedelta

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)


def retry_delay(
    attempts: int,
    rng: random.Random,
    base: timedelta = RETRY_BASE,
    cap: timedelta = RETRY_CAP,
) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at 1 h (by default), each between half and all of
    it at random, so retries that failed together do not come back together."""
    delay: timedelta = min(cap, base * 2 ** min(max(attempts - 1, 0), 30))  # 2**30 > any cap
    half: timedelta = delay / 2
    return half + half * rng.random()
