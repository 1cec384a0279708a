"""Slowing down password guessing: per account name and per address.

The first `FREE_FAILURES` failed sign-ins of a key cost nothing; each one after that
blocks the key for twice as long as the one before, from 2 s up to 15 minutes:
`wait = min(2 ** (failures - FREE_FAILURES + 1), MAX_WAIT)` seconds. An hour
without failures forgets them; a successful sign-in clears its account's count.
Kept in the database, so every web process sees the same counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from notifier.store.models import LoginThrottle

FREE_FAILURES = 5
MAX_WAIT = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=1)


def keys(name: str, address: str | None) -> list[str]:
    """The keys one attempt counts against: its account name and where it came from."""
    return [f"account:{name[:100].lower()}", f"address:{address or 'unknown'}"[:128]]


def wait(failures: int) -> timedelta:
    if failures < FREE_FAILURES:
        return timedelta(0)
    return min(timedelta(seconds=2 ** (failures - FREE_FAILURES + 1)), MAX_WAIT)


def blocked_until(session: Session, names: list[str], now: datetime) -> datetime | None:
    """When the next attempt may be made, if that is still to come."""
    rows = session.exec(select(LoginThrottle).where(col(LoginThrottle.key).in_(names))).all()
    ends = [r.blocked_until for r in rows if r.blocked_until is not None and r.blocked_until > now]
    return max(ends, default=None)


def record_failure(session: Session, names: list[str], now: datetime) -> None:
    for name in names:
        row = session.get(LoginThrottle, name)
        if row is None:
            row = LoginThrottle(key=name, failures=0, last_failure_at=now)
        elif now - row.last_failure_at > FORGET_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        pause = wait(row.failures)
        row.blocked_until = now + pause if pause else None
        session.add(row)


def clear(session: Session, name: str) -> None:
    row = session.get(LoginThrottle, name)
    if row is not None:
        session.delete(row)
