"""Delivery statuses from Twilio's callbacks: a message's status only moves forward.

Callbacks arrive out of order and can be repeated, so each status has a rank and
a callback that would move a message backwards (or sideways among the final
outcomes) is recorded but changes nothing. Every callback is kept, also one that
arrives before the dispatcher has stored the message's SID; the dispatcher applies
it when it does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from notifier.delivery import whatsapp
from notifier.events import record
from notifier.planning.schedule import QuietHours
from notifier.store.models import Message, Patient, Status, StatusCallback, Treatment

EARLY_CALLBACK_HORIZON = timedelta(days=1)
RANK = {
    Status.QUEUED: 0,
    Status.SENT: 1,
    Status.DELIVERED: 2,
    Status.UNDELIVERED: 2,
    Status.FAILED: 2,
    Status.READ: 3,
}
# Twilio's own words for the states before "sent" all mean: Twilio has it.
_TWILIO_WORDS = {
    "accepted": Status.QUEUED,
    "scheduled": Status.QUEUED,
    "sending": Status.QUEUED,
    "queued": Status.QUEUED,
}


def as_status(twilio_status: str) -> Status | None:
    """Our status for one of Twilio's MessageStatus words, None for words we do not track."""
    word = twilio_status.strip().lower()
    if word in _TWILIO_WORDS:
        return _TWILIO_WORDS[word]
    try:
        status = Status(word)
    except ValueError:
        return None
    return status if status in RANK else None


def record_callback(
    session: Session,
    sid: str,
    twilio_status: str,
    error_code: int | None,
    now: datetime,
    *,
    sms_fallback: bool = True,
    quiet: QuietHours | None,
) -> Message | None:
    """Store a callback and move its message forward; the message, if known yet.

    WhatsApp reports most "cannot reach this person" failures here, after it took the
    message: such a message is sent again by SMS when `sms_fallback` allows, outside
    the `quiet` hours."""
    message = session.exec(select(Message).where(Message.sid == sid)).first()
    session.add(
        StatusCallback(
            sid=sid,
            status=twilio_status[:32],
            error_code=error_code,
            received_at=now,
            message_id=message.id if message else None,
        )
    )
    if message is not None:
        _apply(session, message, twilio_status, error_code, now, sms_fallback, quiet)
    return message


def _apply(
    session: Session,
    message: Message,
    twilio_status: str,
    error_code: int | None,
    now: datetime,
    sms_fallback: bool,
    quiet: QuietHours | None,
) -> None:
    """Move the message forward; WhatsApp's "cannot reach" failures go again by SMS."""
    moved = advance(message, as_status(twilio_status), error_code, now)
    patient = session.get(Patient, message.patient_id) if moved else None
    treatment = session.get(Treatment, message.treatment_id) if moved else None
    if patient is not None and treatment is not None:
        record.message_status_changed(session, message, patient, treatment, now)
    unreachable = moved and sms_fallback and _unreachable_on_whatsapp(message, error_code)
    if unreachable and patient is not None and patient.phone is not None:
        reason = f"WhatsApp {message.status} with error {error_code} ({message.sid})"
        whatsapp.fall_back_to_sms(message, reason, ZoneInfo(patient.timezone), now, quiet)
    session.add(message)


def _unreachable_on_whatsapp(message: Message, error_code: int | None) -> bool:
    return (
        message.channel == "whatsapp"
        and message.status in (Status.FAILED, Status.UNDELIVERED)
        and error_code in whatsapp.UNDELIVERABLE_ON_WHATSAPP
    )


def match_early_callbacks(
    session: Session, now: datetime, *, sms_fallback: bool = True, quiet: QuietHours | None
) -> int:
    """Apply callbacks that came before their message's SID was stored (Twilio can be
    faster than our commit). Only the last day is looked at: older unmatched ones are
    for messages this service did not send.

    Every pass calls this, nearly always to find nothing: the join reads only the
    message's id, which the SID index holds, and the messages are loaded by id after.
    Joining whole message rows let SQLite's planner scan the whole table per callback
    once ANALYZE had counted the NULL SIDs of unsent messages as one common value."""
    matches = session.exec(
        select(StatusCallback, Message.id)
        .join(Message, col(Message.sid) == StatusCallback.sid)
        .where(
            col(StatusCallback.message_id).is_(None),
            col(StatusCallback.received_at) >= now - EARLY_CALLBACK_HORIZON,
        )
        .order_by(col(StatusCallback.id))
    ).all()
    if not matches:
        return 0
    ids = {message_id for _, message_id in matches}
    messages = {m.id: m for m in session.exec(select(Message).where(col(Message.id).in_(ids)))}
    for callback, message_id in matches:
        message = messages[message_id]
        callback.message_id = message.id
        session.add(callback)
        _apply(session, message, callback.status, callback.error_code, now, sms_fallback, quiet)
    return len(matches)


def advance(message: Message, status: Status | None, error_code: int | None, now: datetime) -> bool:
    """Move `message` to `status` if that is further along; True if it moved."""
    current = RANK.get(message.status)
    if status is None or current is None or RANK[status] <= current:
        return False
    message.status, message.updated_at = status, now
    if error_code is not None:
        message.error_code = error_code
    return True
