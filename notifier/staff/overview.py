"""The overview's figures: messages per day by status, delivery rate by channel, what
each plan step leads to (opt-outs, replies), and the queue's health."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, false, func
from sqlmodel import Session, col, select

from notifier.store import tally
from notifier.store.models import WENT_OUT, ConsentChange, Message, MessageKind, Status
from notifier.store.tally import MessageCount, ReplyCount

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


@dataclass(frozen=True)
class Figures:
    """The charts' figures over the last `DAYS` local days, today included."""

    days: dict[date, dict[str, int]]  # messages by the local day of their send time, by status
    channels: list[ChannelRate]
    steps: list[StepRates]


def figures(session: Session, now: datetime, zone: ZoneInfo, days: int = DAYS) -> Figures:
    """Read from the tallies (`notifier.store.tally`), so the cost follows the number of
    quarter hours and kinds of message, not the number of messages."""
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(today + timedelta(days=1), time(), zone)
    messages = tally.messages(session, start, end)
    return Figures(
        days=per_day(messages, zone, first, days),
        channels=by_channel(messages),
        steps=by_step(messages, tally.replies(session, start, end), _stops(session, start, end)),
    )


def per_day(
    messages: Iterable[MessageCount], zone: ZoneInfo, first: date, days: int
) -> dict[date, dict[str, int]]:
    """Messages by the day (in `zone`) of their send time, by status; every day from
    `first` present, quiet ones empty."""
    counts: dict[date, dict[str, int]] = {first + timedelta(days=n): {} for n in range(days)}
    for count in messages:
        statuses = counts.get(count.quarter.astimezone(zone).date())
        if statuses is not None:
            statuses[count.status] = statuses.get(count.status, 0) + count.n
    return counts


def by_channel(messages: Iterable[MessageCount]) -> list[ChannelRate]:
    delivered: Counter[str] = Counter()
    attempted: Counter[str] = Counter()
    for count in messages:
        if count.status in ATTEMPTED:
            attempted[count.channel] += count.n
            if count.status in DELIVERED:
                delivered[count.channel] += count.n
    return [ChannelRate(c, delivered[c], attempted[c]) for c in sorted(attempted)]


def by_step(
    messages: Iterable[MessageCount], replies: Iterable[ReplyCount], stops: Mapping[str, int]
) -> list[StepRates]:
    """For each plan step: its messages that went out, and the patient opt-outs and
    replies that followed it (each counted against the last message the patient had
    been sent, stored with it when it arrived: `after_step`)."""
    sent: Counter[str] = Counter()
    for count in messages:
        if count.kind == MessageKind.PLAN and count.status in WENT_OUT:
            sent[count.step] += count.n
    answered: Counter[str] = Counter()
    for reply in replies:
        answered[reply.step] += reply.n
    steps = sorted({*sent, *stops, *answered}, key=_natural)
    return [StepRates(s, sent[s], stops.get(s, 0), answered[s]) for s in steps]


def _stops(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """Patient opt-outs in [start, end) by the step they followed: a few per hundred
    patients, read from their own index."""
    rows = session.exec(
        select(ConsentChange.after_step, func.count())
        .where(
            col(ConsentChange.consented).is_(false()),
            col(ConsentChange.source).in_(PATIENT_STOPS),
            col(ConsentChange.at) >= start,
            col(ConsentChange.at) < end,
            col(ConsentChange.after_step).is_not(None),
        )
        .group_by(col(ConsentChange.after_step))
    ).all()
    return {step: n for step, n in rows if step}


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
