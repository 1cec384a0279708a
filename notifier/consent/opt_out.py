"""Consent: who may be texted, every change logged with its time and source.

Two switches are kept apart on purpose: `consented` is what the clinic's booking
system recorded, `opted_out` is the patient's own STOP (or Twilio's 21610). A
booking event can never lift a patient's STOP; only the patient (START) can.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select, update

from notifier.events import record
from notifier.planning.outbox import last_step_sent
from notifier.planning.schedule import QuietHours, retime
from notifier.store.models import ConsentChange, Message, MessageKind, Patient, Status


class Source(StrEnum):
    BOOKING = "booking"
    KEYWORD = "keyword"
    TWILIO_21610 = "twilio_21610"
    STAFF = "staff"


def set_booking_consent(
    session: Session,
    patient: Patient,
    consented: bool,
    now: datetime,
    *,
    quiet: QuietHours | None,
    first: bool = False,
) -> None:
    """Apply the clinic's consent flag; withdrawing it holds pending messages, giving it
    back resumes them (outside `quiet` hours).

    A patient's `first` flag (a patient created just now) is always logged, later
    ones only when they change. A new patient has no messages to hold or resume."""
    if not first and patient.consented == consented:
        return
    patient.consented = consented
    session.add(patient)
    session.flush()
    _log(session, patient, consented, Source.BOOKING, now)
    if first:
        return
    if consented and not patient.opted_out:
        resume_held(session, patient, now, quiet)
    elif not consented:
        hold_pending(session, patient, now)


def opt_out(
    session: Session, patient: Patient, source: Source, now: datetime, by: str | None = None
) -> None:
    """The patient asked to stop: hold everything pending, send nothing more. `by` names
    the staff member who recorded it, for `Source.STAFF`."""
    if patient.opted_out:
        return
    patient.opted_out = True
    session.add(patient)
    _log(session, patient, False, source, now, by)
    record.patient_opted(session, patient, opted_out=True, source=source, now=now)
    hold_pending(session, patient, now)


def opt_in(
    session: Session,
    patient: Patient,
    source: Source,
    now: datetime,
    by: str | None = None,
    *,
    quiet: QuietHours | None,
) -> None:
    """The patient asked to resume: held messages still valid are scheduled again, at
    the next moment inside their window and outside `quiet` hours."""
    if not patient.opted_out:
        return
    patient.opted_out = False
    session.add(patient)
    _log(session, patient, True, source, now, by)
    record.patient_opted(session, patient, opted_out=False, source=source, now=now)
    if patient.consented:
        resume_held(session, patient, now, quiet)


def hold_pending(session: Session, patient: Patient, now: datetime) -> int:
    """Every scheduled plan message of the patient becomes held; returns how many. On-call
    alerts are for staff and go on; an acknowledgement is dropped when it comes up
    (the dispatcher's re-check)."""
    result = session.exec(
        update(Message)
        .where(
            col(Message.patient_id) == patient.id,
            col(Message.status) == Status.SCHEDULED,
            col(Message.kind) == MessageKind.PLAN,
        )
        .values(status=Status.HELD, updated_at=now)
    )
    return int(result.rowcount)


def resume_held(session: Session, patient: Patient, now: datetime, quiet: QuietHours | None) -> int:
    """Held messages still valid go back to scheduled, at the next moment inside their
    send window and outside the quiet hours; those that expire first become expired.
    Returns how many were rescheduled."""
    tz = ZoneInfo(patient.timezone)
    held = session.exec(
        select(Message).where(Message.patient_id == patient.id, Message.status == Status.HELD)
    ).all()
    resumed = 0
    for message in held:
        when = retime(message, max(now, message.send_at), quiet, tz)
        message.updated_at = now
        if when.expired:
            message.status = Status.EXPIRED
        else:
            message.status, message.send_at = Status.SCHEDULED, when.at
            resumed += 1
        session.add(message)
    return resumed


class PatientsOwnStop(Exception):
    """Staff asked to lift an opt-out the patient made: only their START lifts it."""


def resume_for_staff(
    session: Session, patient: Patient, now: datetime, by: str, *, quiet: QuietHours | None
) -> bool:
    """Staff record the patient's wish, told to the clinic, to get messages again; True
    if the patient was opted out. `PatientsOwnStop` if the opt-out was the patient's."""
    if opted_out_by_the_patient(session, patient):
        raise PatientsOwnStop(patient.external_id)
    was_out = patient.opted_out
    opt_in(session, patient, Source.STAFF, now, by=by, quiet=quiet)
    return was_out


def opted_out_by_the_patient(session: Session, patient: Patient) -> bool:
    """Whether the patient's opt-out is their own (a STOP keyword, or Twilio's 21610 for
    a STOP sent to Twilio): only the patient can lift it, by texting START."""
    if not patient.opted_out:
        return False
    latest = session.exec(
        select(ConsentChange.source)
        .where(ConsentChange.patient_id == patient.id, col(ConsentChange.consented).is_(False))
        .where(col(ConsentChange.source).in_([Source.KEYWORD, Source.TWILIO_21610, Source.STAFF]))
        .order_by(col(ConsentChange.at).desc(), col(ConsentChange.id).desc())
        .limit(1)
    ).first()
    return latest in (Source.KEYWORD, Source.TWILIO_21610)


def _log(
    session: Session,
    patient: Patient,
    consented: bool,
    source: Source,
    now: datetime,
    by: str | None = None,
) -> None:
    assert patient.id is not None
    after = None if consented else last_step_sent(session, patient.id, now)
    session.add(
        ConsentChange(
            patient_id=patient.id,
            at=now,
            consented=consented,
            source=source,
            by=by,
            after_step=after,
        )
    )
