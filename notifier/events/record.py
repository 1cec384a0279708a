"""Recording the events the booking system hears of, in the transaction of the change.

Only the booking system's own ids and what happened: no names, numbers or texts
(a reply's text stays here; the event says one arrived, and whether it is urgent).
Events are recorded whether or not EVENTS_WEBHOOK_URL is set; the publisher drops
what nobody received within `MAX_AGE`.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from notifier.store.models import Event, Message, MessageKind, Patient, Reply, Status, Treatment

MESSAGE_STATUS_CHANGED = "message.status_changed"
PATIENT_OPTED_OUT = "patient.opted_out"
PATIENT_OPTED_IN = "patient.opted_in"
REPLY_RECEIVED = "reply.received"
REPLY_URGENT = "reply.urgent"
TYPES = (MESSAGE_STATUS_CHANGED, PATIENT_OPTED_OUT, PATIENT_OPTED_IN, REPLY_RECEIVED, REPLY_URGENT)
# The statuses a booking system hears of: what Twilio did with a message, or why it
# never went. Claiming, holding and re-timing are the service's own business.
REPORTED = frozenset(
    {
        Status.QUEUED,
        Status.SENT,
        Status.DELIVERED,
        Status.READ,
        Status.UNDELIVERED,
        Status.FAILED,
        Status.EXPIRED,
    }
)


def message_status_changed(
    session: Session, message: Message, patient: Patient, treatment: Treatment, now: datetime
) -> None:
    """A plan message reached a status the booking system hears of."""
    if message.kind != MessageKind.PLAN or message.status not in REPORTED:
        return
    if patient.phone is None:
        return  # erased while its request was in flight: the booking system knows
    _add(
        session,
        MESSAGE_STATUS_CHANGED,
        patient,
        now,
        {
            "message_id": message.id,
            "step": message.step,
            "occurrence": message.occurrence,
            "channel": str(message.channel),
            "status": str(message.status),
            "error_code": message.error_code,
            "send_at": _iso(message.send_at),
        },
        treatment=treatment,
    )


def patient_opted(
    session: Session, patient: Patient, *, opted_out: bool, source: str, now: datetime
) -> None:
    """The patient's STOP (or Twilio's 21610, or staff recording their wish), or START."""
    kind = PATIENT_OPTED_OUT if opted_out else PATIENT_OPTED_IN
    _add(session, kind, patient, now, {"source": source})


def reply_received(session: Session, reply: Reply, patient: Patient, now: datetime) -> None:
    """A reply from a known patient; `reply.urgent` follows it when triage says so."""
    data = {
        "reply_sid": reply.sid,
        "received_at": _iso(reply.received_at),
        "category": reply.category,
        "urgent": reply.urgent,
    }
    _add(session, REPLY_RECEIVED, patient, now, data)
    if reply.urgent:
        _add(session, REPLY_URGENT, patient, now, data)


def _add(
    session: Session,
    kind: str,
    patient: Patient,
    now: datetime,
    data: dict[str, Any],
    *,
    treatment: Treatment | None = None,
) -> None:
    assert patient.id is not None
    event_id = "evt_" + secrets.token_hex(16)
    body = {
        "id": event_id,
        "type": kind,
        "created_at": _iso(now),
        "patient_id": patient.external_id,
        "treatment_id": treatment.external_id if treatment is not None else None,
        "data": data,
    }
    session.add(
        Event(
            event_id=event_id,
            type=kind,
            patient_id=patient.id,
            payload=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            next_at=now,
            created_at=now,
        )
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
