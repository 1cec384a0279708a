"""The overview's tallies against the rows they count, computed here in Python from
the messages and replies themselves, independently of the triggers' SQL."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, inspect
from sqlmodel import Session, select

from notifier.store import tally
from notifier.store.models import Message, Reply

FAR = (datetime.fromisoformat("1970-01-01T00:00Z"), datetime.fromisoformat("2200-01-01T00:00Z"))


def quarter(at: datetime) -> datetime:
    return at.replace(minute=at.minute // 15 * 15, second=0, microsecond=0)


def message_truth(session: Session) -> Counter[tuple[Any, ...]]:
    counts: Counter[tuple[Any, ...]] = Counter()
    for m in session.exec(select(Message)):
        counts[(quarter(m.send_at), str(m.kind), str(m.status), str(m.channel), m.step)] += 1
    return counts


def reply_truth(session: Session) -> Counter[tuple[Any, ...]]:
    counts: Counter[tuple[Any, ...]] = Counter()
    for r in session.exec(select(Reply)):
        if r.patient_id is not None and r.after_step is not None:
            counts[(quarter(r.received_at), r.after_step)] += 1
    return counts


def message_tallies(session: Session) -> Counter[tuple[Any, ...]]:
    return Counter(
        {
            (c.quarter, c.kind, c.status, c.channel, c.step): c.n
            for c in tally.messages(session, *FAR)
        }
    )


def reply_tallies(session: Session) -> Counter[tuple[Any, ...]]:
    return Counter({(c.quarter, c.step): c.n for c in tally.replies(session, *FAR)})


def assert_tallies_match(engine: Any) -> None:
    with Session(engine) as session:
        assert message_tallies(session) == message_truth(session)
        assert reply_tallies(session) == reply_truth(session)


def check_database(url: str) -> None:
    """After a test: the tallies still count exactly what its database holds (a database
    a test took below the tallies' migration, or broke on purpose, is left alone)."""
    engine = create_engine(url)
    try:
        tables = inspect(engine).get_table_names()
        if {"message", "reply", "messagetallychange", "replytallychange"} <= set(tables):
            assert_tallies_match(engine)
    finally:
        engine.dispose()
