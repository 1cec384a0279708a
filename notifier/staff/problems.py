"""Delivery problems of the last days: failed, undelivered and expired messages,
grouped by cause, each cause with what staff can do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from notifier.staff.causes import Cause, explain
from notifier.store.models import Message, Patient, Status

DAYS = 14
PROBLEM_STATUSES = (Status.FAILED, Status.UNDELIVERED, Status.EXPIRED)
EXAMPLES = 5


@dataclass(frozen=True)
class Problem:
    cause: Cause
    error_code: int | None
    status: str
    count: int
    latest: list[tuple[Message, Patient]]  # the newest few, for staff to follow up


def problems(session: Session, now: datetime, days: int = DAYS) -> list[Problem]:
    """Most frequent cause first."""
    since = now - timedelta(days=days)
    recent = (
        col(Message.status).in_(PROBLEM_STATUSES),
        col(Message.updated_at) >= since,
    )
    groups = session.exec(
        select(Message.error_code, Message.status, func.count())
        .where(*recent)
        .group_by(col(Message.error_code), col(Message.status))
    ).all()
    found = []
    for code, status, count in sorted(groups, key=lambda g: (-g[2], g[0] or 0, g[1])):
        same_cause = (
            col(Message.error_code).is_(None) if code is None else Message.error_code == code
        )
        latest = session.exec(
            select(Message, Patient)
            .join(Patient, col(Patient.id) == Message.patient_id)
            .where(*recent, same_cause, Message.status == status)
            .order_by(col(Message.updated_at).desc(), col(Message.id).desc())
            .limit(EXAMPLES)
        ).all()
        first = latest[0][0] if latest else None
        cause = explain(code, status, first.error_message if first else None)
        found.append(Problem(cause, code, status, count, [(m, p) for m, p in latest]))
    return found
