"""The overview's figures: messages per day by status, delivery rate by channel, what
each plan step leads to (opt-outs, replies), and the queue's health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, false, func
from sqlmodel import Session, col, select

from notifier.store.models import (
    WENT_OUT,
    ConsentChange,
    Message,
    MessageKind,
    Reply,
    Status,
)

DAYS = 30
DELIVERED = (Status.DELIVERED, Status.READ)
# What reached the carrier or failed trying: the denominator of a delivery rate.
ATTEMPTED = (*WENT_OUT, Status.FAILED)
PATIENT_STOPS = ("keyword", "twilio_21610")  # opt-outs the patient made, not staff's
OVERDUE_AFTER = timedelta(minutes=1)


@dataclass(frozen=True)
class ChannelRate:
    channel: str
    delivered: int
    attempted: int

    @property
    def rate(self) -> float:
        return self.delivered / self.attempted if self.attempted else 0.0


@dataclass(frozen=True)
class StepRates:
    step: str
    sent: int
    opt_outs: int
    replies: int

    @property
    def opt_out_rate(self) -> float:
        return self.opt_outs / self.sent if self.sent else 0.0

    @property
    def reply_rate(self) -> float:
        return self.replies / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Queue:
    due: int  # scheduled and due now
    overdue: int  # of those, due for more than a minute: the worker is behind or stopped
    next_hour: int  # scheduled within the next hour
    sending: int  # claimed by a worker
    stuck: int  # claimed, and the lease ran out: a worker died mid-send

    @property
    def healthy(self) -> bool:
        return self.overdue == 0 and self.stuck == 0


def per_day(
    session: Session, now: datetime, zone: ZoneInfo, days: int = DAYS
) -> dict[date, dict[str, int]]:
    """Messages whose send time fell on each of the last `days` days (in `zone`), by
    status; every day present, quiet ones empty."""
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), zone)
    day = _local_day(session, zone, now)
    rows = session.exec(
        select(day, Message.status, func.count())
        .where(col(Message.send_at) >= start, col(Message.send_at) <= now)
        .group_by(day, col(Message.status))
    ).all()
    counts: dict[date, dict[str, int]] = {first + timedelta(days=n): {} for n in range(days)}
    for when, status, count in rows:
        key = when if isinstance(when, date) else date.fromisoformat(str(when))
        if key in counts:
            counts[key][status] = counts[key].get(status, 0) + count
    return counts


def _local_day(session: Session, zone: ZoneInfo, now: datetime) -> ColumnElement[Any]:
    """The calendar day of a send time in `zone`. SQLite has no time zones: there the
    zone's offset now stands in (a day's edge is off by an hour across a DST change)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone(zone.key, col(Message.send_at)))
    offset = now.astimezone(zone).utcoffset() or timedelta(0)
    return func.date(col(Message.send_at), f"{int(offset.total_seconds() // 60):+d} minutes")


def by_channel(session: Session, now: datetime, days: int = DAYS) -> list[ChannelRate]:
    delivered = func.count().filter(col(Message.status).in_(DELIVERED))
    rows = session.exec(
        select(Message.channel, delivered, func.count())
        .where(
            col(Message.status).in_(ATTEMPTED),
            col(Message.send_at) >= now - timedelta(days=days),
            col(Message.send_at) <= now,
        )
        .group_by(col(Message.channel))
        .order_by(col(Message.channel))
    ).all()
    return [ChannelRate(channel, got, total) for channel, got, total in rows]


def by_step(session: Session, now: datetime, days: int = DAYS) -> list[StepRates]:
    """For each plan step: messages that went out in the last `days`, and the patient
    opt-outs and replies that followed it (each counted against the last message the
    patient had been sent, stored with it when it arrived: `after_step`)."""
    since = now - timedelta(days=days)
    sent = dict(
        session.exec(
            select(Message.step, func.count())
            .where(
                Message.kind == MessageKind.PLAN,
                col(Message.status).in_(WENT_OUT),
                col(Message.send_at) >= since,
                col(Message.send_at) <= now,
            )
            .group_by(col(Message.step))
        ).all()
    )
    stops = dict(
        session.exec(
            select(ConsentChange.after_step, func.count())
            .where(
                col(ConsentChange.consented).is_(false()),
                col(ConsentChange.source).in_(PATIENT_STOPS),
                col(ConsentChange.at) >= since,
                col(ConsentChange.after_step).is_not(None),
            )
            .group_by(col(ConsentChange.after_step))
        ).all()
    )
    replies = dict(
        session.exec(
            select(Reply.after_step, func.count())
            .where(col(Reply.received_at) >= since, col(Reply.after_step).is_not(None))
            .group_by(col(Reply.after_step))
        ).all()
    )
    steps = sorted({*sent, *(s for s in stops if s), *(s for s in replies if s)}, key=_natural)
    return [StepRates(s, sent.get(s, 0), stops.get(s, 0), replies.get(s, 0)) for s in steps]


def _natural(step: str) -> tuple[str, int, str]:
    """day_2 before day_10."""
    head, _, tail = step.rpartition("_")
    return (head, int(tail), "") if tail.isdigit() else (step, 0, "")


def queue(session: Session, now: datetime) -> Queue:
    def count(*where: ColumnElement[bool]) -> int:
        return session.exec(select(func.count()).select_from(Message).where(*where)).one()

    scheduled = col(Message.status) == Status.SCHEDULED
    sending = col(Message.status) == Status.SENDING
    return Queue(
        due=count(scheduled, col(Message.send_at) <= now),
        overdue=count(scheduled, col(Message.send_at) <= now - OVERDUE_AFTER),
        next_hour=count(
            scheduled, col(Message.send_at) > now, col(Message.send_at) <= now + timedelta(hours=1)
        ),
        sending=count(sending),
        stuck=count(sending, col(Message.lease_until) <= now),
    )
