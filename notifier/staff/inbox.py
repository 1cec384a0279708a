"""The staff inbox: replies still needing attention, urgent first, then newest first,
each with its patient and the message it answers."""

from __future__ import annotations

from bisect import bisect_right
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
    answers = answered(session, [reply for reply, _ in rows])
    return [InboxItem(reply, patient, answers.get(reply.id or 0)) for reply, patient in rows]


def answered(session: Session, replies: Sequence[Reply]) -> dict[int, Message]:
    """The message each reply answers (by reply id): the last one of the plan that went
    out to the patient before the reply arrived. One read for the whole page."""
    known = [r for r in replies if r.patient_id is not None and r.id is not None]
    if not known:
        return {}
    sent: dict[int, list[Message]] = {}
    for message in session.exec(
        select(Message)
        .where(
            col(Message.patient_id).in_({r.patient_id for r in known}),
            Message.kind == MessageKind.PLAN,
            col(Message.status).in_(WENT_OUT),
            col(Message.send_at) <= max(r.received_at for r in known),
        )
        .order_by(col(Message.send_at), col(Message.id))
    ):
        sent.setdefault(message.patient_id, []).append(message)
    found: dict[int, Message] = {}
    for reply in known:
        theirs = sent.get(reply.patient_id or 0, [])
        before = bisect_right([m.send_at for m in theirs], reply.received_at)
        if before:
            found[reply.id or 0] = theirs[before - 1]
    return found


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
