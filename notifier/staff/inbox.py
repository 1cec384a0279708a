"""The staff inbox: replies still needing attention, urgent first, then newest first,
each with its patient and the message it answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, not_
from sqlmodel import Session, col, select

from notifier.store.models import WENT_OUT, Message, MessageKind, Patient, Reply, ReplyMedia

PAGE_SIZE = 50


@dataclass(frozen=True)
class InboxItem:
    reply: Reply
    patient: Patient | None  # None: a number no patient has
    answers: Message | None  # the last plan message sent to the patient before the reply


def unhandled_count(session: Session) -> int:
    return session.exec(select(func.count()).where(not_(col(Reply.handled)))).one()


def unhandled(session: Session, page: int = 1) -> list[InboxItem]:
    """One page (from 1) of the replies needing attention, in the order staff read them."""
    rows = session.exec(
        select(Reply, Patient)
        .join(Patient, col(Patient.id) == Reply.patient_id, isouter=True)
        .where(not_(col(Reply.handled)))
        .order_by(col(Reply.urgent).desc(), col(Reply.received_at).desc(), col(Reply.id).desc())
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    ).all()
    return [InboxItem(reply, patient, answered(session, reply)) for reply, patient in rows]


def answered(session: Session, reply: Reply) -> Message | None:
    """The message a reply answers: the last one of the plan that went out to the
    patient before the reply arrived."""
    if reply.patient_id is None:
        return None
    return session.exec(
        select(Message)
        .where(
            Message.patient_id == reply.patient_id,
            Message.kind == MessageKind.PLAN,
            col(Message.status).in_(WENT_OUT),
            col(Message.send_at) <= reply.received_at,
        )
        .order_by(col(Message.send_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()


def find_reply(session: Session, reply_id: int) -> Reply | None:
    return session.get(Reply, reply_id)


def media_of(session: Session, replies: Sequence[Reply]) -> dict[int, list[ReplyMedia]]:
    """The files each reply carried (by reply id), in the order the patient sent them."""
    ids = [r.id for r in replies if r.id is not None]
    found: dict[int, list[ReplyMedia]] = {}
    if not ids:
        return found
    for item in session.exec(
        select(ReplyMedia)
        .where(col(ReplyMedia.reply_id).in_(ids))
        .order_by(col(ReplyMedia.reply_id), col(ReplyMedia.position))
    ).all():
        found.setdefault(item.reply_id, []).append(item)
    return found
