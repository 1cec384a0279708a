"""POST /webhooks/booking (SPEC §5): every event is recorded with its answer; the same
event again is answered the same, a reused id with another body is a 409."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, select

from notifier.store.models import Patient
from tests.conftest import BookingSystem, Clock, completed_event
from tests.support.booking import SPEC_TIMELINE, stored_events
from tests.support.rows import rows
from tests.support.staff import patient_view, staff_view

# -- idempotency ---------------------------------------------------------------------------------


def test_the_same_event_twice_replays_the_first_answer(
    booking: BookingSystem, engine: Any, clock: Clock
) -> None:
    first = booking.post(completed_event())
    stored = len(rows(engine))
    clock.advance(minutes=10)  # the answer is the stored one, not recomputed
    second = booking.post(completed_event())
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json() == first.get_json()
    assert len(rows(engine)) == stored
    assert stored_events(engine) == ["evt_0001"]


def test_key_order_and_whitespace_do_not_make_a_different_body(booking: BookingSystem) -> None:
    event = completed_event()
    first = booking.post(event)

    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(value.items())}
        return value

    again = json.dumps(reverse(event), indent=4, separators=(" ,", " :  ")).encode() + b"\n"
    second = booking.post(again)
    assert second.status_code == 200, second.data
    assert second.get_json() == first.get_json()


def test_the_same_id_with_a_different_body_is_409_and_changes_nothing(
    booking: BookingSystem, engine: Any
) -> None:
    assert booking.post(completed_event()).status_code == 201
    before = patient_view(booking.client)
    answer = booking.post(
        completed_event(patient={"phone": "+971509999999"}, treatment={"id": "T-999"})
    )
    assert answer.status_code == 409
    assert "error" in answer.get_json()
    assert patient_view(booking.client) == before
    assert {m.treatment_id for m in rows(engine)} == {rows(engine, "T-555")[0].treatment_id}


# -- conflicts ---------------------------------------------------------------------------------


def test_a_treatment_id_of_another_patient_is_409_and_changes_nothing(
    booking: BookingSystem, engine: Any
) -> None:
    booking.post(completed_event())
    before = patient_view(booking.client)
    answer = booking.post(
        completed_event("evt_0002", patient={"id": "P-2002", "phone": "+971509999999"})
    )
    assert answer.status_code == 409
    assert staff_view(booking.client, "P-2002").status_code == 404
    assert patient_view(booking.client) == before
    assert stored_events(engine) == ["evt_0001"]
    with Session(engine) as session:
        assert len(session.exec(select(Patient)).all()) == 1


# -- patient events ------------------------------------------------------------------------------


def test_patient_updated_is_recorded_and_replayed(booking: BookingSystem, engine: Any) -> None:
    booking.post(completed_event())
    event = {
        "id": "evt_0002",
        "type": "patient.updated",
        "patient": {"id": "P-1001", "phone": "+971509999999"},
    }
    answer = booking.post(event)
    assert answer.status_code == 200
    assert answer.get_json()["updated"] is True
    assert stored_events(engine) == ["evt_0001", "evt_0002"]
    assert patient_view(booking.client)["phone"] == "+971509999999"
    again = booking.post(event)
    assert (again.status_code, again.get_json()) == (200, answer.get_json())
    event["patient"]["phone"] = "+971508888888"
    assert booking.post(event).status_code == 409


def test_patient_erased_is_supported_and_recorded(booking: BookingSystem, engine: Any) -> None:
    booking.post(completed_event())
    event = {"id": "evt_0002", "type": "patient.erased", "patient": {"id": "P-1001"}}
    answer = booking.post(event)
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {
        "erased": True,
        "messages_cancelled": len(SPEC_TIMELINE),
        "erasure_id": "erased-1",
        "twilio_redactions": 0,  # nothing was sent yet
    }
    assert sorted(stored_events(engine)) == ["evt_0001", "evt_0002"]
    assert staff_view(booking.client).status_code == 404
    assert {m.status for m in rows(engine)} == {"cancelled"}
    again = booking.post(event)
    assert (again.status_code, again.get_json()) == (200, answer.get_json())
    # An erasure keeps no hash of its body (it would be a hash of the id it erased), so
    # a reused erasure event id answers as the replay it most likely is, and does nothing.
    changed = {**event, "patient": {"id": "P-2002"}}
    reused = booking.post(changed)
    assert (reused.status_code, reused.get_json()) == (200, answer.get_json())
