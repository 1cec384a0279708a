"""Data retention (`RETENTION_DAYS`): the texts of finished aftercare go after a while.

A treatment is past retention when none of its messages is pending (scheduled, held
or being sent) and the last change to any of them (sent, a delivery status,
cancelled, expired: `updated_at`) is older than the cutoff. A yearly check-up is
pending while its treatment is active, so it keeps the treatment current. Past
retention, every message body of the treatment is erased, here and at Twilio (a
`Redaction` each, as erasure leaves them).

Replies belong to patients, not treatments: a reply received before the cutoff goes
once its patient has no current treatment; one stored against no patient (from a
number no patient had) goes once it was received before the cutoff. Its text and
number go.

What remains is what erasure leaves: steps, times, statuses and SIDs, when replies
came and who handled them, the consent log. Patients stay: their name and number are
the booking system's to remove (`patient.erased`).

The worker sweeps both tables in order of last change, a short transaction per
batch, and remembers how far it got: its first run reads everything older than the
cutoff, each later one only what fell past the cutoff since (a treatment that becomes
current again changes a message, which moves that message ahead of the sweep).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from sqlalchemy import ColumnElement, Engine, or_
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, delete, select, update

from notifier.consent.erasure import TwilioCopy, queue_redactions
from notifier.store.db import retrying
from notifier.store.models import Message, Reply, ReplyMedia, Status

log = logging.getLogger(__name__)

# A message in any of these is still to go out: its treatment is current, however old.
LIVE = (Status.SCHEDULED, Status.HELD, Status.SENDING)
BATCH = 200  # rows a sweep reads per transaction
INTERVAL = timedelta(hours=1)

Position = tuple[datetime, int]  # (time, id) of the last row a sweep has read


class Sweep(Protocol):
    """One batch of a sweep (`erase_old_treatments`, `erase_old_replies`)."""

    def __call__(
        self,
        session: Session,
        cutoff: datetime,
        now: datetime,
        limit: int,
        after: Position | None,
    ) -> Batch: ...


@dataclass
class Erased:
    """What retention erased."""

    treatments: int = 0
    messages: int = 0
    replies: int = 0
    redactions: int = 0  # messages and replies Twilio is asked to redact

    def absorb(self, other: Erased) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Batch:
    """One transaction of a sweep: what it erased, how many rows it read, and where the
    next batch starts."""

    read: int
    position: Position | None
    erased: Erased = field(default_factory=Erased)


def erase_old_treatments(
    session: Session, cutoff: datetime, now: datetime, limit: int, after: Position | None
) -> Batch:
    """Read the next `limit` kept message bodies by last change (after `after`, changed
    before `cutoff`); erase the texts of their treatments that are past retention."""
    rows = session.exec(
        select(Message.updated_at, Message.id, Message.treatment_id)
        .where(
            col(Message.body).is_not(None),
            col(Message.updated_at) < cutoff,
            *_after(col(Message.updated_at), col(Message.id), after),
        )
        .order_by(col(Message.updated_at), col(Message.id))
        .limit(limit)
    ).all()
    if not rows:
        return Batch(0, after)
    seen = {treatment for _, _, treatment in rows}
    current = session.exec(
        select(Message.treatment_id)
        .where(col(Message.treatment_id).in_(seen), _current(cutoff))
        .distinct()
    ).all()
    old = seen - set(current)
    erased = _erase_treatments(session, old, cutoff, now) if old else Erased()
    return Batch(len(rows), _position(*rows[-1][:2]), erased)


def erase_old_replies(
    session: Session, cutoff: datetime, now: datetime, limit: int, after: Position | None
) -> Batch:
    """Read the next `limit` kept replies by arrival (after `after`, received before
    `cutoff`); erase those of no patient, or of a patient with no current treatment."""
    rows = session.exec(
        select(Reply.received_at, Reply.id, Reply.patient_id)
        .where(
            col(Reply.body).is_not(None),
            col(Reply.received_at) < cutoff,
            *_after(col(Reply.received_at), col(Reply.id), after),
        )
        .order_by(col(Reply.received_at), col(Reply.id))
        .limit(limit)
    ).all()
    if not rows:
        return Batch(0, after)
    current = _current_patients(session, {p for _, _, p in rows if p is not None}, cutoff)
    ids = [reply for _, reply, patient in rows if patient not in current]
    erased = _erase_replies(session, col(Reply.id).in_(ids), cutoff, now) if ids else Erased()
    return Batch(len(rows), _position(*rows[-1][:2]), erased)


class Retention:
    """The worker's retention job: each run erases what has gone past retention, a batch
    per transaction, and remembers how far each sweep got."""

    def __init__(
        self,
        engine: Engine,
        days: int,
        *,
        batch: int = BATCH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stopping: Callable[[], bool] = lambda: False,  # checked between batches
    ) -> None:
        self.engine = engine
        self.keep = timedelta(days=days)
        self.batch = batch
        self.clock = clock
        self.stopping = stopping
        self.messages_after: Position | None = None
        self.replies_after: Position | None = None

    def __call__(self) -> None:
        erased = self.run(self.clock())
        if erased:
            log.info("retention: erased %s", erased.summary())

    def run(self, now: datetime) -> Erased:
        cutoff, erased = now - self.keep, Erased()
        self.messages_after = self._sweep(
            erase_old_treatments, self.messages_after, cutoff, now, erased
        )
        self.replies_after = self._sweep(erase_old_replies, self.replies_after, cutoff, now, erased)
        return erased

    def _sweep(
        self,
        sweep: Sweep,
        after: Position | None,
        cutoff: datetime,
        now: datetime,
        erased: Erased,
    ) -> Position | None:
        """Batch after batch until one reads less than a full batch (or the worker stops);
        returns the position reached. A batch that collides with a concurrent writer
        (another worker's sweep, an erasure) is run once more on what it committed."""
        while not self.stopping():
            work = partial(sweep, cutoff=cutoff, now=now, limit=self.batch, after=after)
            batch = retrying(self.engine, work)
            erased.absorb(batch.erased)
            after = batch.position
            if batch.read < self.batch:
                break
        return after


def _erase_treatments(
    session: Session, treatments: set[int], cutoff: datetime, now: datetime
) -> Erased:
    """Erase every message body of these treatments, and the replies of their patients
    who have no current treatment left; queue their redactions at Twilio."""
    gone = session.exec(
        update(Message)
        .where(
            col(Message.treatment_id).in_(treatments),
            col(Message.body).is_not(None),
            # Row by row again: a treatment re-planned meanwhile keeps its new messages.
            col(Message.status).not_in(LIVE),
            col(Message.updated_at) < cutoff,
        )
        .values(body=None)
        .returning(col(Message.sid), col(Message.patient_id))
    ).all()
    copies = [TwilioCopy(sid, False, patient) for sid, patient in gone if sid]
    patients = {patient for _, patient in gone}
    done = patients - _current_patients(session, patients, cutoff)
    replies = Erased()
    if done:
        replies = _erase_replies(session, col(Reply.patient_id).in_(done), cutoff, now)
    return Erased(
        treatments=len(treatments),
        messages=len(gone),
        replies=replies.replies,
        redactions=queue_redactions(session, copies, now) + replies.redactions,
    )


def _erase_replies(
    session: Session, which: ColumnElement[bool], cutoff: datetime, now: datetime
) -> Erased:
    """Erase the text and number of these replies received before `cutoff`."""
    gone = session.exec(
        update(Reply)
        .where(which, col(Reply.body).is_not(None), col(Reply.received_at) < cutoff)
        .values(body=None, from_phone=None, signs=None)
        .returning(col(Reply.id), col(Reply.sid), col(Reply.patient_id))
    ).all()
    session.exec(delete(ReplyMedia).where(col(ReplyMedia.reply_id).in_([r for r, _, _ in gone])))
    copies = [TwilioCopy(sid, True, patient) for _, sid, patient in gone]
    return Erased(replies=len(gone), redactions=queue_redactions(session, copies, now))


def _current(cutoff: datetime) -> ColumnElement[bool]:
    """A message that keeps its treatment (and patient) current."""
    return or_(col(Message.status).in_(LIVE), col(Message.updated_at) >= cutoff)


def _current_patients(session: Session, patients: Iterable[int], cutoff: datetime) -> set[int]:
    """Those of `patients` who have a current treatment."""
    return set(
        session.exec(
            select(Message.patient_id)
            .where(col(Message.patient_id).in_(list(patients)), _current(cutoff))
            .distinct()
        ).all()
    )


def _position(at: datetime, row_id: int | None) -> Position:
    assert row_id is not None  # read from the table
    return at, row_id


def _after(
    at: Mapped[datetime], row_id: Mapped[int | None], after: Position | None
) -> tuple[ColumnElement[bool], ...]:
    """Rows past `after` in (time, id) order: `at >= when` bounds the index range."""
    if after is None:
        return ()
    when, last = after
    return (at >= when, or_(at > when, row_id > last))
