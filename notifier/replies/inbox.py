"""Inbound messages from patients: keywords change consent, anything else is a reply."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from notifier.consent import opt_out
from notifier.consent.keywords import Intent, Keywords, answer, intent
from notifier.planning.clinic import Clinic
from notifier.privacy import mask_phone
from notifier.store.models import Patient, Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    """One message as Twilio reports it; `phone` is E.164 without `whatsapp:`."""

    sid: str
    phone: str
    channel: str
    body: str
    opt_out_type: str | None


@dataclass(frozen=True)
class Received:
    """What an inbound message was, and our answer to the patient, if any."""

    intent: Intent
    answer: str | None


def receive(
    session: Session, message: Inbound, now: datetime, keywords: Keywords, clinic: Clinic
) -> Received:
    """Apply an inbound message and say what it was and what to answer.

    A number can belong to several patients (a parent booking for a child, say):
    STOP and START apply to the number, so to all of them. The answer is in the
    language of the patient replies go to (see `keywords.answer`)."""
    patients = list(
        session.exec(
            select(Patient)
            .where(Patient.phone == message.phone)
            .order_by(col(Patient.id))
            .with_for_update()  # a STOP and a START crossing apply one after the other
        ).all()
    )
    if message.channel == "whatsapp":
        for patient in patients:  # opens WhatsApp's 24-hour window for free text
            patient.whatsapp_inbound_at = now
            session.add(patient)
    meaning = intent(message.body, message.opt_out_type, keywords)
    if meaning is Intent.STOP:
        for patient in patients:
            opt_out.opt_out(session, patient, opt_out.Source.KEYWORD, now)
    elif meaning is Intent.START:
        for patient in patients:
            opt_out.opt_in(session, patient, opt_out.Source.KEYWORD, now, quiet=clinic.quiet_hours)
    elif meaning is Intent.REPLY:
        _store_reply(session, message, patients, now)
    log.info(
        "inbound %s from %s: %s (%d patient(s))",
        message.sid,
        mask_phone(message.phone),
        meaning,
        len(patients),
    )
    latest = _latest(patients)
    text = answer(
        message.body,
        message.opt_out_type,
        message.channel,
        latest.language if latest else None,
        keywords,
    )
    fields = {"clinic_name": clinic.name, "clinic_phone": clinic.phone}
    return Received(meaning, text.format_map(fields) if text else None)


def _latest(patients: list[Patient]) -> Patient | None:
    """With several patients on one number, replies and answers go to the most recently
    updated one."""
    return max(patients, key=lambda p: p.updated_at, default=None)


def _store_reply(
    session: Session, message: Inbound, patients: list[Patient], now: datetime
) -> None:
    if session.exec(select(Reply.id).where(Reply.sid == message.sid)).first() is not None:
        return  # Twilio retried the webhook: stored once
    patient = _latest(patients)
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
