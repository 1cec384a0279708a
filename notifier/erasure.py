"""Erasing a patient (`patient.erased`): personal data goes, anonymous counts stay.

Erased: name, phone, the booking system's ids, message bodies, replies' text and
numbers, and the stored answers of this patient's booking events. Kept: message
steps, times and statuses, and the consent log's times, so a clinic can still
count what was sent. Pending messages are cancelled first.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select, update

from notifier.models import (
    PENDING,
    BookingEvent,
    Message,
    Patient,
    Reply,
    Status,
    Treatment,
)

ERASED = '{"erased": true}'


def erase_patient(session: Session, external_id: str, now: datetime) -> int | None:
    """Erase one patient; the number of messages cancelled, None if unknown (already erased)."""
    patient = session.exec(select(Patient).where(Patient.external_id == external_id)).first()
    if patient is None:
        return None
    cancelled = session.exec(
        update(Message)
        .where(col(Message.patient_id) == patient.id, col(Message.status).in_(PENDING))
        .values(status=Status.CANCELLED, updated_at=now)
    ).rowcount
    session.exec(
        update(Message)
        .where(col(Message.patient_id) == patient.id)
        .values(body=None, updated_at=now)
    )
    replies_from = [patient.phone] if patient.phone else []
    session.exec(
        update(Reply)
        .where((col(Reply.patient_id) == patient.id) | col(Reply.from_phone).in_(replies_from))
        .values(body=None, from_phone=None)
    )
    treatments = list(session.exec(select(Treatment).where(Treatment.patient_id == patient.id)))
    session.exec(
        update(BookingEvent)
        .where(
            (col(BookingEvent.patient_id) == external_id)
            | col(BookingEvent.treatment_id).in_([t.external_id for t in treatments])
        )
        .values(response=ERASED, patient_id=None, treatment_id=None)
    )
    for treatment in treatments:
        treatment.external_id = f"erased-{treatment.id}"
        treatment.updated_at = now
        session.add(treatment)
    patient.external_id = f"erased-{patient.id}"
    patient.first_name = patient.phone = None
    patient.consented, patient.updated_at = False, now
    session.add(patient)
    return int(cancelled)
