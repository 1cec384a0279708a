"""POST /webhooks/booking (SPEC §4, §5): a new enrolment's answer, what it stores, and the
defaults of what the event leaves out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from notifier.settings import Settings
from tests.conftest import BookingSystem, Clock, completed_event
from tests.support.booking import SPEC_TIMELINE, scheduled, stored_events
from tests.support.shipped import SMP_STEPS
from tests.support.staff import patient_view

ENGLISH_AFTER_TREATMENT = "thank you for coming in today"


# -- a new enrolment -----------------------------------------------------------------------


def test_new_enrolment_answers_201_with_the_spec_shape_and_the_smp_timeline(
    booking: BookingSystem,
) -> None:
    event = completed_event(treatment={"performed_at": "2027-03-01T10:00:00+04:00"})
    answer = booking.post(event)

    assert answer.status_code == 201, answer.data
    assert answer.is_json
    body = answer.get_json()
    assert set(body) == {"patient_id", "treatment_id", "scheduled", "expired"}
    assert (body["patient_id"], body["treatment_id"]) == ("P-1001", "T-555")
    assert body["expired"] == []
    for item in body["scheduled"]:
        assert set(item) == {"step", "send_at", "channel"}
        assert item["channel"] == "sms"
        assert item["send_at"].endswith("Z")
        assert datetime.fromisoformat(item["send_at"]).utcoffset() == timedelta(0)
    assert {step for step, _ in scheduled(answer)} == set(SMP_STEPS)
    assert sorted(scheduled(answer), key=lambda s: s[1]) == SPEC_TIMELINE


def test_enrolment_is_stored_and_visible_to_staff(booking: BookingSystem, engine: Any) -> None:
    answer = booking.post(completed_event())
    assert answer.status_code == 201
    patient = patient_view(booking.client)
    assert len(patient["messages"]) == len(SPEC_TIMELINE)
    assert {m["status"] for m in patient["messages"]} == {"scheduled"}
    assert stored_events(engine) == ["evt_0001"]


# -- defaults ------------------------------------------------------------------------------------


def test_channel_language_and_timezone_default(booking: BookingSystem) -> None:
    event = completed_event()
    for name in ("channel", "language", "timezone"):
        del event["patient"][name]
    answer = booking.post(event)
    assert answer.status_code == 201, answer.data
    patient = patient_view(booking.client)
    assert (patient["channel"], patient["language"], patient["timezone"]) == (
        "sms",
        "en",
        "Asia/Dubai",
    )
    assert {item["channel"] for item in answer.get_json()["scheduled"]} == {"sms"}
    assert ("sunscreen", "2027-03-02T06:00:00Z") in scheduled(answer)  # 10:00 in Dubai


def test_the_default_timezone_is_clinic_timezone(
    settings: Settings,
    engine: Any,
    clock: Clock,
    build_app: Callable[..., Any],
) -> None:
    client = build_app(dataclasses.replace(settings, clinic_timezone="Europe/London"), engine)
    event = completed_event()
    del event["patient"]["timezone"]
    answer = BookingSystem(client, clock).post(event)
    assert answer.status_code == 201, answer.data
    assert patient_view(client)["timezone"] == "Europe/London"
    assert ("sunscreen", "2027-03-02T10:00:00Z") in scheduled(answer)  # 10:00 in London (GMT)


def test_a_language_the_plan_lacks_falls_back_to_english(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(patient={"language": "fr-CA"}))
    assert answer.status_code == 201, answer.data
    patient = patient_view(booking.client)
    after = next(m for m in patient["messages"] if m["step"] == "after_treatment")
    assert ENGLISH_AFTER_TREATMENT in after["body"]
    assert "Omar" in after["body"]


def test_a_regional_language_tag_is_read_as_its_primary_language(
    booking: BookingSystem,
) -> None:
    answer = booking.post(completed_event(patient={"language": "EN-gb"}))
    assert answer.status_code == 201, answer.data
    assert patient_view(booking.client)["language"] == "en"


def test_whatsapp_channel_is_carried_to_every_message(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(patient={"channel": "whatsapp"}))
    assert answer.status_code == 201
    assert {item["channel"] for item in answer.get_json()["scheduled"]} == {"whatsapp"}
    assert {m["channel"] for m in patient_view(booking.client)["messages"]} == {"whatsapp"}
