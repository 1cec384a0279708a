"""Reading the outbox in tests, and running a pass with the app's clock in step."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.store.models import Message


def rows(engine: Any) -> list[Message]:
    """Every message, in send order."""
    with Session(engine) as session:
        return list(
            session.exec(select(Message).order_by(col(Message.send_at), col(Message.id))).all()
        )


def row(engine: Any, step: str, occurrence: int = 0) -> Message:
    return next(m for m in rows(engine) if m.step == step and m.occurrence == occurrence)


def run_pass(dispatcher: Dispatcher, clock: Any, at: datetime) -> PassReport:
    """A dispatch pass at `at`, with the app's clock moved there too."""
    clock.now = at
    return dispatcher.run_pass(at)
