"""Inbound messages from patients: keywords change consent, anything else is a reply."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from notifier import consent
from notifier.keywords import Intent, intent
from notifier.models import Patient, Reply
from notifier.privacy import mask_phone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    """One message as Twilio reports it; `phone` is E.164 without `whatsapp:`."""

    sid: str
    phone: str
    channel: str
    body: str
    opt_out_type: str | None


def receive(session: Session, message: Inbound, now: datetime) -> Intent:
    """Apply an inbound message and say what it was.

    A number can belong to several patients (a parent booking for a child, say):
    STOP and START apply to the number, so to all of them."""
    patients = list(
        session.exec(
            select(Patient).where(Patient.phone == message.phone).order_by(col(Patient.id))
        ).all()
    )
    if message.channel == "whatsapp":
        for patient in patients:  # opens WhatsApp's 24-hour window for free text
            patient.whatsapp_inbound_at = now
            session.add(patient)
    meaning = intent(message.body, message.opt_out_type)
    if meaning is Intent.STOP:
        for patient in patients:
            consent.opt_out(session, patient, consent.Source.KEYWORD, now)
    elif meaning is Intent.START:
        for patient in patients:
            consent.opt_in(session, patient, consent.Source.KEYWORD, now)
    elif meaning is Intent.REPLY:
        _store_reply(session, message, patients, now)
    log.info(
        "inbound %s from %s: %s (%d patient(s))",
        message.sid,
        mask_phone(message.phone),
        meaning,
        len(patients),
    )
    return meaning


def _store_reply(
    session: Session, message: Inbound, patients: list[Patient], now: datetime
) -> None:
    if session.exec(select(Reply.id).where(Reply.sid == message.sid)).first() is not None:
        return  # Twilio retried the webhook: stored once
    # With several patients on one number, the reply goes to the most recently updated.
    patient = max(patients, key=lambda p: p.updated_at, default=None)
    session.add(
        Reply(
            sid=message.sid,
            patient_id=patient.id if patient else None,
            from_phone=message.phone,
            channel=message.channel,
            body=message.body,
            received_at=now,
        )
    )
