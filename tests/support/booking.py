"""The booking system's events, and what its webhook answered and stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from notifier import create_app
from notifier.settings import Settings
from notifier.store.db import make_engine
from notifier.store.models import BookingEvent, Message, Status
from tests.conftest import SECRET, BookingSystem, Clock, completed_event
from tests.support.rows import rows
from tests.support.staff import staff_view

# The SPEC example, performed 2027-03-01 10:00 in Dubai (UTC+4), enrolled at that moment.
SPEC_TIMELINE = [
    ("after_treatment", "2027-03-01T07:00:00Z"),  # + 1 h
    ("sunscreen", "2027-03-02T06:00:00Z"),  # day 1, 10:00 local
    ("no_wash_reminder", "2027-03-03T06:00:00Z"),  # day 2
    ("water_rinse", "2027-03-05T06:00:00Z"),  # day 4
    ("moisturise", "2027-03-06T06:00:00Z"),  # day 5
    ("sunscreen", "2027-03-09T06:00:00Z"),  # day 8
    ("sunscreen", "2027-03-16T06:00:00Z"),  # day 15
    ("sunscreen", "2027-03-23T06:00:00Z"),  # day 22
    ("sunscreen", "2027-03-30T06:00:00Z"),  # day 29
    ("long_term_care", "2027-03-31T06:00:00Z"),  # day 30
    ("yearly_checkup", "2028-03-01T06:00:00Z"),  # first anniversary
]


def enrol(booking: BookingSystem, **patient: Any) -> None:
    """The SPEC's `treatment.completed`, with these patient fields; it must enrol."""
    answer = booking.post(completed_event(patient=patient))
    assert answer.status_code == 201, answer.get_json()


def enrol_due_now(database_url: str, **patient: Any) -> None:
    """Enrol the SPEC's patient (with these fields) into the database at `database_url`,
    treated two hours ago, and make their first message due now, whatever the hour."""
    now = datetime.now(UTC)
    settings = Settings(database_url=database_url, booking_webhook_secret=SECRET)
    engine = make_engine(database_url)
    app = create_app(settings, engine=engine, clock=lambda: now)
    booking = BookingSystem(app.test_client(), Clock(now))
    event = completed_event(patient=patient, performed_at=now - timedelta(hours=2))
    assert booking.post(event).status_code == 201
    with Session(engine) as session:
        first = session.exec(select(Message).where(Message.step == "after_treatment")).one()
        first.send_at, first.window_start, first.window_end = now, 0, 24 * 60 - 1
        first.status = Status.SCHEDULED
        session.add(first)
        session.commit()
    engine.dispose()


def cancel_event(event_id: str, treatment_id: str | None) -> dict[str, Any]:
    treatment = {} if treatment_id is None else {"id": treatment_id}
    return {"id": event_id, "type": "treatment.cancelled", "treatment": treatment}


def update_event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "patient.updated", "patient": {"id": "P-1001", **fields}}


def erase_event(event_id: str = "evt_x", patient_id: str = "P-1001") -> dict[str, Any]:
    return {"id": event_id, "type": "patient.erased", "patient": {"id": patient_id}}


def scheduled(answer: Any) -> list[tuple[str, str]]:
    """(step, send_at) of each message an enrolment's answer says it scheduled."""
    return [(item["step"], item["send_at"]) for item in answer.get_json()["scheduled"]]


def stored_events(engine: Any) -> list[str]:
    with Session(engine) as session:
        return [e.id for e in session.exec(select(BookingEvent)).all()]


def nothing_stored(client: Any, engine: Any) -> None:
    assert staff_view(client).status_code == 404
    assert rows(engine) == []
    assert stored_events(engine) == []
