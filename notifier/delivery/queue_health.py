"""The state of the outbox at a glance, for an operator watching a queue (`aftercare queue`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from notifier.store.models import Message, Status


@dataclass(frozen=True)
class QueueState:
    by_status: dict[str, int]
    overdue: int  # scheduled and due for longer than a minute
    oldest_due: datetime | None  # the oldest scheduled send time that has passed
    stuck: int  # claimed, lease run out: a worker died or Twilio was unclear
    failed_last_day: int

    def lines(self, now: datetime) -> list[str]:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(self.by_status.items())) or "empty"
        late = f"{(now - self.oldest_due).total_seconds():.0f}s" if self.oldest_due else "-"
        return [
            f"messages: {counts}",
            f"overdue (due > 1 min ago, not claimed): {self.overdue}; oldest due {late} ago",
            f"stuck (claimed, lease run out): {self.stuck}",
            f"failed in the last 24 h: {self.failed_last_day}",
        ]

    @property
    def healthy(self) -> bool:
        return self.overdue == 0 and self.stuck == 0


def queue_state(engine: Engine, now: datetime) -> QueueState:
    """Counts that tell a working queue from a stuck or failing one."""
    with Session(engine) as session:
        by_status = dict(
            session.exec(select(Message.status, func.count()).group_by(col(Message.status))).all()
        )
        oldest = session.exec(
            select(func.min(Message.send_at)).where(
                Message.status == Status.SCHEDULED, col(Message.send_at) <= now
            )
        ).one()
        stuck = session.exec(
            select(func.count()).where(
                Message.status == Status.SENDING, col(Message.lease_until) <= now
            )
        ).one()
        failed = session.exec(
            select(func.count()).where(
                Message.status == Status.FAILED, col(Message.updated_at) >= now - timedelta(days=1)
            )
        ).one()
        late = session.exec(
            select(func.count()).where(
                Message.status == Status.SCHEDULED,
                col(Message.send_at) <= now - timedelta(minutes=1),
            )
        ).one()
    return QueueState(
        by_status=by_status, overdue=late, oldest_due=oldest, stuck=stuck, failed_last_day=failed
    )
