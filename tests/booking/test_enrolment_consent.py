"""Consent from the booking system (SPEC §5): without it a patient is recorded and sent
nothing; given later it schedules the next treatment; withdrawn it holds what waits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.conftest import START, BookingSystem, Clock, completed_event
from tests.support.booking import SPEC_TIMELINE, scheduled
from tests.support.staff import patient_view
from tests.support.times import iso


def test_consent_false_records_the_patient_and_schedules_nothing(
    booking: BookingSystem, engine: Any
) -> None:
    answer = booking.post(completed_event(patient={"consent": False}))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["scheduled"] == []
    assert body["reason"]
    patient = patient_view(booking.client)
    assert patient["messages"] == []
    assert [(c["consented"], c["source"]) for c in patient["consent_log"]] == [(False, "booking")]


def test_consent_false_answers_200(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(patient={"consent": False}))
    assert answer.status_code == 200


def test_consent_given_later_schedules_the_next_treatment_and_logs_both_changes(
    booking: BookingSystem, clock: Clock
) -> None:
    booking.post(completed_event(patient={"consent": False}))
    clock.advance(days=7)
    answer = booking.post(
        completed_event("evt_0002", treatment={"id": "T-556"}, performed_at=clock.now)
    )
    assert answer.status_code == 201, answer.data
    assert len(answer.get_json()["scheduled"]) == len(SPEC_TIMELINE)
    assert ("after_treatment", iso(clock.now + timedelta(hours=1))) in scheduled(answer)
    patient = patient_view(booking.client)
    assert [(c["at"], c["consented"], c["source"]) for c in patient["consent_log"]] == [
        (iso(START), False, "booking"),
        (iso(clock.now), True, "booking"),
    ]
    assert {m["status"] for m in patient["messages"]} == {"scheduled"}


def test_consent_withdrawn_holds_what_was_pending(booking: BookingSystem, clock: Clock) -> None:
    booking.post(completed_event())
    clock.advance(days=3)
    answer = booking.post(
        completed_event(
            "evt_0002",
            patient={"consent": False},
            treatment={"id": "T-556"},
            performed_at=clock.now,
        )
    )
    assert answer.status_code in {200, 201}
    assert answer.get_json()["scheduled"] == []
    patient = patient_view(booking.client)
    assert "scheduled" not in {m["status"] for m in patient["messages"]}
    assert [c["consented"] for c in patient["consent_log"]] == [True, False]
