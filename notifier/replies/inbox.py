"""Inbound messages from patients: keywords change consent, anything else is a reply,
triaged when it arrives (an urgent one sets off `notifier.replies.urgent`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from notifier.consent import opt_out
from notifier.consent.keywords import Intent, Keywords, answer, intent
from notifier.events import record
from notifier.planning.clinic import Clinic
from notifier.planning.outbox import last_step_sent
from notifier.planning.plan import Plan
from notifier.privacy import mask_phone
from notifier.replies.triage import Triage, TriageRules, classify
from notifier.replies.urgent import Alarm, Alerting, close_case, raise_alarm
from notifier.store.models import Patient, Reply, ReplyMedia

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Media:
    """A file an inbound message carried (Twilio's `MediaUrlN`, `MediaContentTypeN`)."""

    url: str
    content_type: str


@dataclass(frozen=True)
class Inbound:
    """One message as Twilio reports it; `phone` is E.164 without `whatsapp:`."""

    sid: str
    phone: str
    channel: str
    body: str
    opt_out_type: str | None
    media: tuple[Media, ...] = ()


@dataclass(frozen=True)
class Listening:
    """What the inbox needs to know of the deployment."""

    keywords: Keywords
    triage: TriageRules
    clinic: Clinic
    alerting: Alerting
    plans: Mapping[str, Plan]


@dataclass(frozen=True)
class Received:
    """What an inbound message was, our answer to the patient if any, and for a reply
    its triage and what an urgent one set off."""

    intent: Intent
    answer: str | None
    triage: Triage | None = None
    alarm: Alarm | None = None


def receive(session: Session, message: Inbound, now: datetime, listening: Listening) -> Received:
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
    keywords, clinic = listening.keywords, listening.clinic
    meaning = intent(message.body, message.opt_out_type, keywords)
    triage, alarm = None, None
    if meaning is Intent.STOP:
        for patient in patients:
            opt_out.opt_out(session, patient, opt_out.Source.KEYWORD, now)
    elif meaning is Intent.START:
        for patient in patients:
            opt_out.opt_in(session, patient, opt_out.Source.KEYWORD, now, quiet=clinic.quiet_hours)
    elif meaning is Intent.REPLY:
        triage, alarm = _store_reply(session, message, patients, now, listening)
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
    return Received(meaning, text.format_map(fields) if text else None, triage, alarm)


def mark_handled(session: Session, reply: Reply, by: str, now: datetime) -> bool:
    """Staff have dealt with the reply: recorded with who and when, and the on-call
    alerts it raised stop. False if it was handled already (nothing changes)."""
    if reply.handled:
        return False
    reply.handled, reply.handled_by, reply.handled_at = True, by, now
    session.add(reply)
    close_case(session, reply, now)
    return True


def _latest(patients: list[Patient]) -> Patient | None:
    """With several patients on one number, replies and answers go to the most recently
    updated one."""
    return max(patients, key=lambda p: p.updated_at, default=None)


def _store_reply(
    session: Session,
    message: Inbound,
    patients: list[Patient],
    now: datetime,
    listening: Listening,
) -> tuple[Triage | None, Alarm | None]:
    """Keep the reply with its photos and triage; an urgent one from a known patient
    sets off the acknowledgement and alerts. A retried webhook changes nothing."""
    if session.exec(select(Reply.id).where(Reply.sid == message.sid)).first() is not None:
        return None, None  # Twilio retried the webhook: stored once
    patient = _latest(patients)
    triage = classify(message.body, len(message.media), listening.triage)
    reply = Reply(
        sid=message.sid,
        patient_id=patient.id if patient else None,
        from_phone=message.phone,
        channel=message.channel,
        body=message.body,
        received_at=now,
        urgent=triage.urgent,
        category=triage.category,
        signs=",".join(triage.signs) or None,
        after_step=last_step_sent(session, patient.id, now) if patient and patient.id else None,
    )
    session.add(reply)
    session.flush()  # its id, for the photos and alerts
    assert reply.id is not None
    for position, media in enumerate(message.media):
        session.add(
            ReplyMedia(
                reply_id=reply.id,
                position=position,
                url=media.url,
                content_type=media.content_type,
            )
        )
    if patient is None:
        return triage, None  # a number no patient has: nothing to tell the booking system
    record.reply_received(session, reply, patient, now)
    if not triage.urgent:
        return triage, None
    alarm = raise_alarm(
        session, reply, patient, now, listening.alerting, listening.clinic, listening.plans
    )
    log.warning(  # no patient id or signs: health data stays out of logs
        "urgent reply %s: acknowledgement %s, %d alert(s)%s",
        message.sid,
        "queued" if alarm.acknowledged else "not queued",
        alarm.alerts,
        ", joins an open case" if alarm.joined_case else "",
    )
    return triage, alarm
