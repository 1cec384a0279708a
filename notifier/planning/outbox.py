"""Writing a treatment's planned messages into the outbox, texts rendered and frozen.

The text is rendered when a message is scheduled, so a later edit of a plan
file never changes a message that is already waiting to go out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert
from sqlmodel import Session, col, select, update

from notifier.planning.clinic import Clinic
from notifier.planning.plan import Plan, Step
from notifier.planning.schedule import PlannedMessage, next_occurrence, plan_messages
from notifier.store.models import (
    PENDING,
    WENT_OUT,
    Channel,
    Message,
    MessageKind,
    Patient,
    Status,
    Treatment,
)


def schedule_treatment(
    session: Session,
    plan: Plan,
    patient: Patient,
    treatment: Treatment,
    clinic: Clinic,
    now: datetime,
    *,
    new: bool = False,
) -> list[Planned]:
    """(Re)plan a treatment: pending messages are replaced; steps that already went out
    are not sent again. Returns what was planned, expired ones included.

    `new` says the treatment was created in this transaction, so it has no messages
    yet: nothing to cancel, nothing already sent. The rows are inserted at once, in
    one batch."""
    done: set[tuple[str, int]] = set()
    if not new:
        cancel_pending(session, treatment, now)
        done = set(
            session.exec(
                select(Message.step, Message.occurrence).where(
                    Message.treatment_id == treatment.id,
                    col(Message.status).in_([*WENT_OUT, Status.SENDING]),
                )
            ).all()
        )
    planned = plan_messages(
        plan, treatment.performed_at, ZoneInfo(patient.timezone), now, quiet=clinic.quiet_hours
    )
    rows = [
        _fields(plan, patient, treatment, item, clinic, now)
        for item in planned
        if (item.step, item.occurrence) not in done
    ]
    insert_messages(session, rows)
    return [Planned.of(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Planned:
    """A message as it was planned: what an enrolment answers with."""

    step: str
    occurrence: int
    channel: str
    status: str
    send_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, row: Mapping[str, Any] | Message) -> Planned:
        values: Mapping[str, Any] = row if isinstance(row, Mapping) else vars(row)
        return cls(
            step=values["step"],
            occurrence=values["occurrence"],
            channel=values["channel"],
            status=values["status"],
            send_at=values["send_at"],
            expires_at=values["expires_at"],
        )


def insert_messages(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new messages, given as column values, in one executemany (pipelined on
    PostgreSQL), without the unit of work: nothing reads their ids back, and building
    ORM objects only to read them back into values cost an enrolment a sixth of its
    CPU (and one multi-row INSERT ... RETURNING per plan would be long enough that the
    driver re-parses it on every request)."""
    if rows:
        session.execute(insert(Message), rows)


def schedule_next_yearly(
    session: Session,
    plan: Plan,
    message: Message,
    patient: Patient,
    treatment: Treatment,
    clinic: Clinic,
    now: datetime,
) -> Message | None:
    """After a yearly message is done, add the next anniversary (one is kept ahead)."""
    step = plan.step(message.step)
    if step is None or not step.yearly:
        return None
    item = next_occurrence(
        step,
        treatment.performed_at,
        ZoneInfo(patient.timezone),
        after=message.occurrence,
        now=now,
        quiet=clinic.quiet_hours,
    )
    if item is None:
        return None
    row = _row(plan, patient, treatment, item, clinic, now)
    session.add(row)
    return row


def refresh_pending(
    session: Session,
    plan: Plan,
    patient: Patient,
    treatment: Treatment,
    clinic: Clinic,
    now: datetime,
) -> int:
    """Re-time the treatment's pending messages in the patient's (new) timezone and
    re-render them in their (new) language and channel. Returns how many."""
    tz = ZoneInfo(patient.timezone)
    pending = session.exec(
        select(Message).where(
            Message.treatment_id == treatment.id,
            col(Message.status).in_(PENDING),
            Message.kind == MessageKind.PLAN,
        )
    ).all()
    for message in pending:
        step = plan.step(message.step)
        item = None
        if step is not None:
            item = next_occurrence(
                step,
                treatment.performed_at,
                tz,
                after=message.occurrence - 1,
                now=now,
                quiet=clinic.quiet_hours,
            )
        if item is None:
            continue  # the step left the plan since: the message stays as it was
        fresh = _row(plan, patient, treatment, item, clinic, now)
        for name in ("send_at", "expires_at", "window_start", "window_end"):
            setattr(message, name, getattr(fresh, name))
        rerender(plan, message, patient, clinic)
        message.updated_at = now
        if item.expired:
            message.status = Status.EXPIRED
        session.add(message)
    return len(pending)


def rerender(plan: Plan, message: Message, patient: Patient, clinic: Clinic) -> None:
    """Render a waiting message again for the patient as they are now: their language,
    name and channel (a WhatsApp fallback or template chosen before is forgotten)."""
    step = plan.step(message.step)
    if step is None:
        return  # the step left the plan since: the message stays as it was
    message.body = render(plan, step, patient, clinic)
    message.language = plan.language_for(patient.language)
    message.channel = Channel(patient.channel)
    message.content_sid = message.fallback_reason = None


def cancel_pending(session: Session, treatment: Treatment, now: datetime) -> int:
    """Every plan message of the treatment not yet sent is cancelled; returns how many.
    Alerts about the patient's urgent replies are not the treatment's plan: they go on."""
    result = session.exec(
        update(Message)
        .where(
            col(Message.treatment_id) == treatment.id,
            col(Message.status).in_(PENDING),
            col(Message.kind) == MessageKind.PLAN,
        )
        .values(status=Status.CANCELLED, updated_at=now)
    )
    return int(result.rowcount)


def last_step_sent(session: Session, patient_id: int, now: datetime) -> str | None:
    """The plan step of the last message the patient had been sent by `now`: what a
    reply answers, or an opt-out follows."""
    step: str | None = session.exec(
        select(Message.step)
        .where(
            Message.patient_id == patient_id,
            Message.kind == MessageKind.PLAN,
            col(Message.status).in_(WENT_OUT),
            col(Message.send_at) <= now,
        )
        .order_by(col(Message.send_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()
    return step


def render(plan: Plan, step: Step, patient: Patient, clinic: Clinic) -> str:
    return plan.render(step, patient.language, placeholders(patient, clinic))


def placeholders(patient: Patient, clinic: Clinic) -> dict[str, str]:
    """What a plan text or a WhatsApp template may say about the patient and clinic."""
    return {
        "first_name": patient.first_name or "",
        "clinic_name": clinic.name,
        "clinic_phone": clinic.phone,
    }


def _row(
    plan: Plan,
    patient: Patient,
    treatment: Treatment,
    item: PlannedMessage,
    clinic: Clinic,
    now: datetime,
) -> Message:
    return Message(**_fields(plan, patient, treatment, item, clinic, now))


# Every column of a new message that planning does not set, at its default.
_UNSET: dict[str, Any] = {
    "content_sid": None,
    "fallback_reason": None,
    "sid": None,
    "error_code": None,
    "error_message": None,
    "attempts": 0,
    "claimed_at": None,
    "lease_until": None,
}


def _fields(
    plan: Plan,
    patient: Patient,
    treatment: Treatment,
    item: PlannedMessage,
    clinic: Clinic,
    now: datetime,
) -> dict[str, Any]:
    """The column values of a new message for `item` (all but its id)."""
    step = plan.step(item.step)
    assert step is not None
    assert patient.id is not None
    assert treatment.id is not None
    if item.expired:
        status = Status.EXPIRED
    elif patient.opted_out or not patient.consented:
        status = Status.HELD
    else:
        status = Status.SCHEDULED
    return {
        **_UNSET,
        "patient_id": patient.id,
        "treatment_id": treatment.id,
        "step": item.step,
        "occurrence": item.occurrence,
        "channel": patient.channel,
        "language": plan.language_for(patient.language),
        "body": render(plan, step, patient, clinic),
        "send_at": item.send_at,
        "expires_at": item.expires_at,
        "status": status,
        "window_start": step.window.start.hour * 60 + step.window.start.minute,
        "window_end": step.window.end.hour * 60 + step.window.end.minute,
        "created_at": now,
        "updated_at": now,
    }
