"""Reading the database in tests (and writing what a test pretends already happened), and
running a pass with the app's clock in step."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, text
from sqlmodel import Session, col, func, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.store.models import Message, Treatment


def rows(engine: Any, treatment: str | None = None) -> list[Message]:
    """Every message (or one treatment's, by the booking system's id), in send order."""
    query = select(Message)
    if treatment is not None:
        query = query.join(Treatment, col(Treatment.id) == col(Message.treatment_id)).where(
            Treatment.external_id == treatment
        )
    with Session(engine) as session:
        return list(session.exec(query.order_by(col(Message.send_at), col(Message.id))).all())


def row(engine: Any, step: str, occurrence: int = 0) -> Message:
    return next(m for m in rows(engine) if m.step == step and m.occurrence == occurrence)


def statuses(engine: Any, treatment: str | None = None) -> set[str]:
    """The statuses of every message (or of one treatment's)."""
    return {m.status for m in rows(engine, treatment)}


def count(engine: Any, model: Any) -> int:
    """How many rows a table has."""
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def status_counts(url: str) -> Counter[str]:
    """How many messages have each status, in the database at `url` (another process's)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        found = connection.execute(text("SELECT status, count(*) FROM message GROUP BY status"))
        counts = Counter({status: number for status, number in found})
    engine.dispose()
    return counts


def set_status(engine: Any, treatment: str, step: str, status: str) -> None:
    """Pretend the dispatcher already handled `step` (e.g. `queued`: it went out)."""
    with Session(engine) as session:
        message = session.exec(
            select(Message)
            .join(Treatment, col(Treatment.id) == col(Message.treatment_id))
            .where(Treatment.external_id == treatment, Message.step == step)
        ).first()
        assert message is not None
        message.status = status
        session.add(message)
        session.commit()


def run_pass(dispatcher: Dispatcher, clock: Any, at: datetime) -> PassReport:
    """A dispatch pass at `at`, with the app's clock moved there too."""
    clock.now = at
    return dispatcher.run_pass(at)
