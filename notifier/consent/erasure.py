"""Erasing a patient (`patient.erased`): personal data goes, anonymous counts stay.

Erased: name, phone, the booking system's ids, message bodies, replies' text and
numbers, and the stored answers and body fingerprints of this patient's booking
events; at Twilio, the body of every message sent to the patient and of every reply
they sent, and the photos of those replies (a `Redaction` each, sent through the
outbox until Twilio has done it). Kept: message steps, times and statuses, and the
consent log's times, so a clinic can still count what was sent.

Exactly one patient is erased: a parent and a child who share a number keep what is
the other's (replies are theirs by the patient they were stored against).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import insert
from sqlmodel import Session, col, delete, select, update

from notifier.store.models import (
    PENDING,
    BookingEvent,
    Event,
    Message,
    Patient,
    Redaction,
    RedactionStatus,
    Reply,
    ReplyMedia,
    Status,
    Treatment,
)

ERASED = '{"erased": true}'
# A body's hash is derived from the personal data in it, so it goes too; an event id
# seen before still answers as a replay (`webhooks.booking`).
ERASED_FINGERPRINT = "erased"


@dataclass(frozen=True)
class Erasure:
    """What erasing a patient did; `id` names it in the staff API."""

    id: str
    messages_cancelled: int
    redactions: int  # messages and replies Twilio is asked to redact


def erase_patient(session: Session, external_id: str, now: datetime) -> Erasure | None:
    """Erase one patient; None if unknown (or erased already)."""
    patient = session.exec(
        select(Patient).where(Patient.external_id == external_id).with_for_update()
    ).first()
    if patient is None:
        return None
    assert patient.id is not None
    cancelled = session.exec(
        update(Message)
        .where(col(Message.patient_id) == patient.id, col(Message.status).in_(PENDING))
        .values(status=Status.CANCELLED, updated_at=now)
    ).rowcount
    replies = _their_replies(session, patient)
    redactions = _ask_twilio_to_redact(session, patient.id, replies, now)
    session.exec(
        update(Message)
        .where(col(Message.patient_id) == patient.id)
        .values(body=None, updated_at=now)
    )
    session.exec(
        update(Reply)
        .where(col(Reply.id).in_(list(replies)))
        .values(body=None, from_phone=None, signs=None)
    )
    # Where Twilio keeps their photos: the photos themselves are deleted there (redaction).
    session.exec(delete(ReplyMedia).where(col(ReplyMedia.reply_id).in_(list(replies))))
    # Events for the booking system carry its ids; the erasure came from it, so those
    # not yet delivered are not needed either.
    session.exec(delete(Event).where(col(Event.patient_id) == patient.id))
    treatments = list(session.exec(select(Treatment).where(Treatment.patient_id == patient.id)))
    session.exec(
        update(BookingEvent)
        .where(
            (col(BookingEvent.patient_id) == external_id)
            | col(BookingEvent.treatment_id).in_([t.external_id for t in treatments])
        )
        .values(response=ERASED, fingerprint=ERASED_FINGERPRINT, patient_id=None, treatment_id=None)
    )
    for treatment in treatments:
        treatment.external_id = f"erased-{treatment.id}"
        treatment.updated_at = now
        session.add(treatment)
    patient.external_id = f"erased-{patient.id}"
    patient.first_name = patient.phone = None
    patient.consented, patient.updated_at = False, now
    session.add(patient)
    return Erasure(patient.external_id, int(cancelled), redactions)


def _their_replies(session: Session, patient: Patient) -> dict[int, str]:
    """The patient's replies (id -> SID): those stored against them, and those from a
    number of theirs (current, or one they replied from before) that arrived before
    anyone was enrolled with it, unless another patient has that number now."""
    own = session.exec(
        select(Reply.id, Reply.sid, Reply.from_phone).where(Reply.patient_id == patient.id)
    ).all()
    numbers = {phone for _, _, phone in own if phone} | ({patient.phone} - {None})
    shared = set(
        session.exec(
            select(Patient.phone).where(
                col(Patient.phone).in_(numbers), col(Patient.id) != patient.id
            )
        ).all()
    )
    strays = session.exec(
        select(Reply.id, Reply.sid).where(
            col(Reply.patient_id).is_(None), col(Reply.from_phone).in_(numbers - shared)
        )
    ).all()
    found = {reply_id: sid for reply_id, sid, _ in own}
    found.update(dict(strays))
    return {reply_id: sid for reply_id, sid in found.items() if reply_id is not None}


def _ask_twilio_to_redact(
    session: Session, patient_id: int, replies: dict[int, str], now: datetime
) -> int:
    """A pending `Redaction` for every message Twilio keeps of this patient: the ones
    sent to them (with a SID) and their replies. Returns how many."""
    sent = session.exec(
        select(Message.sid).where(
            col(Message.patient_id) == patient_id, col(Message.sid).is_not(None)
        )
    ).all()
    wanted = [TwilioCopy(sid, False, patient_id) for sid in sent if sid]
    wanted += [TwilioCopy(sid, True, patient_id) for sid in replies.values()]
    return queue_redactions(session, wanted, now, erasure=True)


class TwilioCopy(NamedTuple):
    """A message Twilio keeps: one we sent (`inbound` False) or a reply, and whose it is
    (None: a reply from a number no patient had)."""

    sid: str
    inbound: bool
    patient_id: int | None


def queue_redactions(
    session: Session, wanted: Iterable[TwilioCopy], now: datetime, *, erasure: bool = False
) -> int:
    """A pending `Redaction` for each message Twilio keeps that none is queued for yet
    (the console's own SIDs are not Twilio's); `notifier.consent.retention` uses it too. An
    `erasure`'s go before retention's. Returns how many were queued."""
    by_sid = {copy.sid: copy for copy in wanted}
    if not by_sid:
        return 0
    known = set(
        session.exec(select(Redaction.sid).where(col(Redaction.sid).in_(list(by_sid)))).all()
    )
    rows = [
        {
            "patient_id": copy.patient_id,
            "sid": sid,
            "inbound": copy.inbound,
            "erasure": erasure,
            "status": RedactionStatus.PENDING,
            "attempts": 0,
            "next_at": now,
            "created_at": now,
        }
        for sid, copy in by_sid.items()
        if sid not in known and not sid.startswith("CONSOLE")
    ]
    if rows:
        session.execute(insert(Redaction), rows)
    return len(rows)
