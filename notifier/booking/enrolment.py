"""Enrolment: what a completed or cancelled treatment does to a patient's messages.

Rules (SPEC §5):
- a new treatment id enrols the patient in the plan of its kind;
- the same treatment id with a new `performed_at` re-plans it (steps that already
  went out are not sent again);
- a later session of the same kind supersedes the earlier one: its pending
  messages are cancelled and the plan restarts. A session that arrives late but was
  performed *before* the current one is recorded as superseded straight away;
- `consent: false` records the patient, schedules nothing and holds what was pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from notifier.consent.opt_out import set_booking_consent
from notifier.planning.clinic import Clinic
from notifier.planning.outbox import (
    Planned,
    cancel_pending,
    refresh_pending,
    schedule_treatment,
)
from notifier.planning.plan import Plan
from notifier.store.models import Message, Patient, Status, Treatment, TreatmentStatus


class EnrolmentConflict(Exception):
    """The event contradicts what is stored (e.g. a treatment id of another patient)."""


@dataclass(frozen=True)
class PatientDetails:
    external_id: str
    first_name: str | None
    phone: str
    channel: str
    language: str
    timezone: str
    consent: bool


@dataclass(frozen=True)
class TreatmentDetails:
    external_id: str
    kind: str
    performed_at: datetime


@dataclass
class Enrolment:
    """What an event did: `created` is True for a new enrolment."""

    patient: Patient
    treatment: Treatment
    created: bool
    messages: list[Planned] = field(default_factory=list)
    reason: str | None = None

    @property
    def scheduled(self) -> list[Planned]:
        return sorted(
            (m for m in self.messages if m.status == Status.SCHEDULED),
            key=lambda m: (m.send_at, m.step, m.occurrence),
        )

    @property
    def expired(self) -> list[Planned]:
        return [m for m in self.messages if m.status == Status.EXPIRED]


def complete_treatment(
    session: Session,
    plan: Plan,
    who: PatientDetails,
    what: TreatmentDetails,
    clinic: Clinic,
    now: datetime,
) -> Enrolment:
    """Apply a `treatment.completed` event."""
    patient, new_patient = _upsert_patient(session, who, now)
    treatment, created, moved = _upsert_treatment(session, patient, what, now)
    set_booking_consent(
        session, patient, who.consent, now, quiet=clinic.quiet_hours, first=new_patient
    )
    outcome = Enrolment(patient=patient, treatment=treatment, created=created)
    # A patient created just now has no other sessions to supersede.
    if not new_patient and _superseded_by_later(session, treatment, now):
        outcome.reason = "a later session of the same treatment kind is already enrolled"
    elif not patient.consented:
        if moved:  # held messages of the old time would be wrong if consent returns
            cancel_pending(session, treatment, now)
        outcome.reason = "the patient has not consented to messages"
    elif created or moved or not _has_live_messages(session, treatment):
        outcome.messages = schedule_treatment(
            session, plan, patient, treatment, clinic, now, new=created
        )
    else:
        outcome.messages = [
            Planned.of(m)
            for m in session.exec(select(Message).where(Message.treatment_id == treatment.id))
        ]
    if patient.opted_out and not outcome.reason:
        outcome.reason = "the patient has opted out (STOP); messages are held"
    return outcome


@dataclass(frozen=True)
class PatientChanges:
    """What a `patient.updated` event changes; None leaves a field as it is."""

    first_name: str | None = None
    phone: str | None = None
    channel: str | None = None
    language: str | None = None
    timezone: str | None = None
    consent: bool | None = None


def update_patient(
    session: Session,
    plans: dict[str, Plan],
    external_id: str,
    changes: PatientChanges,
    clinic: Clinic,
    now: datetime,
) -> int | None:
    """Apply `patient.updated`: every pending message follows the new details.
    Returns how many messages were re-timed and re-rendered; None for an unknown patient."""
    patient = session.exec(
        select(Patient).where(Patient.external_id == external_id).with_for_update()
    ).first()
    if patient is None:
        return None
    if changes.phone is not None and changes.phone != patient.phone:
        patient.whatsapp_inbound_at = None  # the window belonged to the old number
    changed = False
    for name in ("first_name", "phone", "channel", "language", "timezone"):
        value = getattr(changes, name)
        if value is not None and value != getattr(patient, name):
            setattr(patient, name, value)
            changed = True
    patient.updated_at = now
    session.add(patient)
    session.flush()
    if changes.consent is not None:
        set_booking_consent(session, patient, changes.consent, now, quiet=clinic.quiet_hours)
    treatments = session.exec(
        select(Treatment).where(
            Treatment.patient_id == patient.id, Treatment.status == TreatmentStatus.ACTIVE
        )
    ).all()
    count = 0
    for treatment in (t for t in treatments if t.kind in plans):
        plan = plans[treatment.kind]
        if patient.consented and not _has_live_messages(session, treatment):
            # Consent given now for a treatment enrolled without it: its plan starts.
            count += len(schedule_treatment(session, plan, patient, treatment, clinic, now))
        elif changed:
            count += refresh_pending(session, plan, patient, treatment, clinic, now)
    return count


def cancel_treatment(session: Session, external_id: str, now: datetime) -> Treatment | None:
    """Apply `treatment.cancelled`: its pending messages are cancelled. None if unknown."""
    treatment = session.exec(select(Treatment).where(Treatment.external_id == external_id)).first()
    if treatment is None:
        return None
    treatment.status, treatment.updated_at = TreatmentStatus.CANCELLED, now
    session.add(treatment)
    cancel_pending(session, treatment, now)
    return treatment


def _upsert_patient(session: Session, who: PatientDetails, now: datetime) -> tuple[Patient, bool]:
    """The patient row with the event's details, and whether it is new."""
    # Locked: two events for one patient at once (a retry through another process)
    # apply one after the other, so supersession and consent see each other.
    patient = session.exec(
        select(Patient).where(Patient.external_id == who.external_id).with_for_update()
    ).first()
    new = patient is None
    if patient is None:
        patient = Patient(
            external_id=who.external_id,
            timezone=who.timezone,
            consented=who.consent,
            created_at=now,
            updated_at=now,
        )
    patient.first_name = who.first_name
    patient.phone = who.phone
    patient.channel = who.channel
    patient.language = who.language
    patient.timezone = who.timezone
    patient.updated_at = now
    session.add(patient)
    session.flush()
    return patient, new


def _upsert_treatment(
    session: Session, patient: Patient, what: TreatmentDetails, now: datetime
) -> tuple[Treatment, bool, bool]:
    """The treatment row, whether it is new, and whether its time or status changed."""
    treatment = session.exec(
        select(Treatment).where(Treatment.external_id == what.external_id)
    ).first()
    if treatment is None:
        assert patient.id is not None
        treatment = Treatment(
            external_id=what.external_id,
            patient_id=patient.id,
            kind=what.kind,
            performed_at=what.performed_at,
            created_at=now,
            updated_at=now,
        )
        session.add(treatment)
        session.flush()
        return treatment, True, False
    if treatment.patient_id != patient.id or treatment.kind != what.kind:
        raise EnrolmentConflict(
            f"treatment {what.external_id!r} is already recorded for another patient or kind"
        )
    moved = (
        treatment.performed_at != what.performed_at or treatment.status != TreatmentStatus.ACTIVE
    )
    treatment.performed_at, treatment.status = what.performed_at, TreatmentStatus.ACTIVE
    treatment.updated_at = now
    session.add(treatment)
    session.flush()
    return treatment, False, moved


def _superseded_by_later(session: Session, treatment: Treatment, now: datetime) -> bool:
    """Supersede other active sessions of this kind performed earlier; True if a later
    one exists, in which case this treatment is the one superseded."""
    others = session.exec(
        select(Treatment).where(
            Treatment.patient_id == treatment.patient_id,
            Treatment.kind == treatment.kind,
            Treatment.status == TreatmentStatus.ACTIVE,
            col(Treatment.id) != treatment.id,
        )
    ).all()
    for other in sorted(others, key=lambda t: t.performed_at):
        earlier = other if other.performed_at <= treatment.performed_at else treatment
        earlier.status, earlier.updated_at = TreatmentStatus.SUPERSEDED, now
        session.add(earlier)
        cancel_pending(session, earlier, now)
    return treatment.status == TreatmentStatus.SUPERSEDED


def _has_live_messages(session: Session, treatment: Treatment) -> bool:
    """Whether the treatment has messages that are not cancelled."""
    found = session.exec(
        select(Message.id)
        .where(Message.treatment_id == treatment.id, Message.status != Status.CANCELLED)
        .limit(1)
    ).first()
    return found is not None
