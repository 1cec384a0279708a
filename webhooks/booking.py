"""POST /webhooks/booking: the clinic's booking system enrols and cancels (SPEC §5).

Order of checks: size (413), content type (415), signature (401), JSON (400),
fields (422); then the event id decides between a replay (200, same answer),
a conflict (409) and processing by the handler of the event's type (`HANDLERS`).
The event is stored in the same transaction as its effects, so a failure part-way
stores nothing and the booking system's retry is processed afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request
from sqlmodel import Session

from notifier import signature
from notifier.booking.enrolment import (
    Enrolment,
    EnrolmentConflict,
    cancel_treatment,
    complete_treatment,
    update_patient,
)
from notifier.booking.event import (
    Cancelled,
    Completed,
    Context,
    Erased,
    FieldErrors,
    Updated,
    parse_event,
)
from notifier.consent.erasure import ERASED_FINGERPRINT, erase_patient
from notifier.privacy import mask_phone
from notifier.store.db import retrying
from notifier.store.models import BookingEvent, Patient
from webhooks.encoding import iso_utc
from webhooks.services import services

bp = Blueprint("booking", __name__)
log = logging.getLogger(__name__)

Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What an event did: the answer, and the booking system's ids it is about (stored
    with the event, so that erasure finds it)."""

    status: int
    answer: dict[str, Any]
    patient_id: str | None = None
    treatment_id: str | None = None


# An event type's handler gets the body `parse_event` validated for that type.
Handler = Callable[[Session, Any, Context], Outcome]


class _Rejected(Exception):
    """An answer that must leave the database as it was."""

    def __init__(self, status: int, answer: dict[str, Any]) -> None:
        super().__init__(status)
        self.status, self.answer = status, answer


@bp.post("/webhooks/booking")
def receive() -> Response:
    svc = services()
    secret = svc.settings.booking_webhook_secret
    if not secret:
        return _json(
            503,
            {"error": "the booking webhook is not configured (BOOKING_WEBHOOK_SECRET is unset)"},
        )
    body = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH -> 413
    if request.mimetype != "application/json":
        return _json(415, {"error": "send Content-Type: application/json"})
    now = svc.clock()
    if not signature.verify(request.headers.get("X-Aftercare-Signature"), secret, body, now):
        return _json(401, {"error": "missing, wrong or stale X-Aftercare-Signature"})
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        return _json(400, {"error": f"malformed JSON: {type(error).__name__}"})
    if not isinstance(data, dict):
        return _json(422, {"errors": [{"field": "(body)", "message": "expected a JSON object"}]})
    context = Context(
        now=now,
        plan_kinds=frozenset(svc.plans),
        default_region=svc.settings.default_phone_region,
        default_timezone=svc.settings.clinic_timezone,
    )
    try:
        status, answer = _handle(data, context)
    except FieldErrors as error:
        return _json(422, {"errors": error.errors})
    return _json(status, answer)


def _handle(data: dict[str, Any], context: Context) -> Answer:
    envelope, body = parse_event(data, context)
    fingerprint = body_fingerprint(data)
    if envelope.type == "patient.erased":  # a hash of the id it erases: not kept either
        fingerprint = ERASED_FINGERPRINT
    svc = services()

    def attempt(session: Session) -> Answer:
        replay = _replay(session, envelope.id, fingerprint)
        if replay is not None:
            return replay
        handler = HANDLERS.get(envelope.type)
        if handler is None or body is None:
            raise _Rejected(501, {"error": f"event type {envelope.type!r} is not supported"})
        outcome = handler(session, body, context)
        if outcome.status >= 300:
            raise _Rejected(outcome.status, outcome.answer)  # roll back anything half-done
        session.add(
            BookingEvent(
                id=envelope.id,
                patient_id=outcome.patient_id,
                treatment_id=outcome.treatment_id,
                fingerprint=fingerprint,
                status_code=outcome.status,
                response=json.dumps(outcome.answer),
                received_at=context.now,
            )
        )
        return outcome.status, outcome.answer

    try:
        # A concurrent request for the same event id, patient or treatment that
        # committed first makes this one collide: the second try sees its work (a
        # replay, or an existing patient) instead of answering 500.
        return retrying(svc.engine, attempt)
    except _Rejected as rejected:
        return rejected.status, rejected.answer


def body_fingerprint(data: dict[str, Any]) -> str:
    """What tells a replay from a reused event id: the SHA-256 of the canonical JSON."""
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _replay(session: Session, event_id: str, fingerprint: str) -> Answer | None:
    stored = session.get(BookingEvent, event_id)
    if stored is None:
        return None
    if stored.fingerprint not in (fingerprint, ERASED_FINGERPRINT):
        return 409, {"error": f"event id {event_id!r} was already used for a different body"}
    return 200, json.loads(stored.response)


def _completed(session: Session, event: Completed, context: Context) -> Outcome:
    """Enrol the patient in the plan of the treatment's kind (201 when new rows were
    written), or re-plan / update an enrolment already stored (200)."""
    svc = services()
    try:
        outcome = complete_treatment(
            session,
            svc.plans[event.treatment.kind],
            event.patient.details(),
            event.treatment.details(),
            svc.clinic,
            context.now,
        )
    except EnrolmentConflict as error:
        return Outcome(409, {"error": str(error)})
    log.info(
        "treatment %s for %s: %s, %d scheduled",
        event.treatment.id,
        mask_phone(event.patient.phone),
        "enrolled" if outcome.created else "updated",
        len(outcome.scheduled),
    )
    enrolled = outcome.created and bool(outcome.messages)
    return Outcome(
        201 if enrolled else 200,
        _enrolment_answer(outcome),
        event.patient.id,
        event.treatment.id,
    )


def _cancelled(session: Session, event: Cancelled, context: Context) -> Outcome:
    """Cancel the treatment's pending messages; an unknown treatment is not an error."""
    treatment = cancel_treatment(session, event.treatment.id, context.now)
    if treatment is None:
        answer = {
            "treatment_id": event.treatment.id,
            "cancelled": False,
            "reason": "unknown treatment id; nothing to cancel",
        }
        return Outcome(200, answer, treatment_id=event.treatment.id)
    patient = session.get(Patient, treatment.patient_id)
    return Outcome(
        200,
        {"treatment_id": event.treatment.id, "cancelled": True},
        patient.external_id if patient else None,
        event.treatment.id,
    )


def _updated(session: Session, event: Updated, context: Context) -> Outcome:
    """Apply the patient's new details to every pending message."""
    svc = services()
    count = update_patient(
        session, svc.plans, event.patient.id, event.patient.changes(), svc.clinic, context.now
    )
    if count is None:
        answer = {"patient_id": event.patient.id, "updated": False, "reason": "unknown patient id"}
        return Outcome(200, answer, event.patient.id)
    answer = {"patient_id": event.patient.id, "updated": True, "messages_updated": count}
    return Outcome(200, answer, event.patient.id)


def _erased(session: Session, event: Erased, context: Context) -> Outcome:
    """Erase the patient's personal data; the answer names no one (no ids kept)."""
    erasure = erase_patient(session, event.patient.id, context.now)
    if erasure is None:
        return Outcome(200, {"erased": False, "reason": "unknown patient id (or erased already)"})
    log.info(
        "patient erased (%s); %d pending message(s) cancelled, %d to redact at Twilio",
        erasure.id,
        erasure.messages_cancelled,
        erasure.redactions,
    )
    answer = {
        "erased": True,
        "messages_cancelled": erasure.messages_cancelled,
        "erasure_id": erasure.id,
        "twilio_redactions": erasure.redactions,
    }
    return Outcome(200, answer)


HANDLERS: dict[str, Handler] = {
    "treatment.completed": _completed,
    "treatment.cancelled": _cancelled,
    "patient.updated": _updated,
    "patient.erased": _erased,
}


def _enrolment_answer(outcome: Enrolment) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "patient_id": outcome.patient.external_id,
        "treatment_id": outcome.treatment.external_id,
        "scheduled": [
            {"step": m.step, "send_at": iso_utc(m.send_at), "channel": m.channel}
            for m in outcome.scheduled
        ],
        "expired": [{"step": m.step, "expired_at": iso_utc(m.expires_at)} for m in outcome.expired],
    }
    if outcome.reason:
        answer["reason"] = outcome.reason
    return answer


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
