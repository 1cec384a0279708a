"""An enrolment that arrives days after the treatment: what is past its expiry is expired,
what is still valid goes now or in the next send window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import START, BookingSystem, Clock, completed_event
from tests.support.booking import scheduled
from tests.support.rows import statuses
from tests.support.staff import patient_view
from tests.support.times import iso


def test_a_late_enrolment_expires_what_is_past_and_sends_what_is_still_valid_now(
    booking: BookingSystem, engine: Any
) -> None:
    performed = START - timedelta(days=5)  # 2027-02-24 10:00 Dubai; now is day 5, 10:00
    answer = booking.post(completed_event(performed_at=performed))
    assert answer.status_code == 201, answer.data
    body = answer.get_json()

    expired = {item["step"] for item in body["expired"]}
    assert expired == {"after_treatment", "no_wash_reminder"}
    for item in body["expired"]:
        assert item["expired_at"] == "2027-02-27T20:00:00Z"  # end of day 3 in Dubai
    assert not expired & {step for step, _ in scheduled(answer)}
    assert ("water_rinse", iso(START)) in scheduled(answer)  # day 4, valid through day 5
    assert ("moisturise", iso(START)) in scheduled(answer)  # day 5, 10:00: now
    # The first sunscreen (day 1) is valid until the day-8 repeat replaces it: it goes now.
    assert ("sunscreen", iso(START)) in scheduled(answer)
    assert ("sunscreen", "2027-03-04T06:00:00Z") in scheduled(answer)  # day 8

    assert statuses(engine, "T-555") == {"scheduled", "expired"}
    staff = patient_view(booking.client)["messages"]
    assert sorted(m["step"] for m in staff if m["status"] == "expired") == [
        "after_treatment",
        "no_wash_reminder",
    ]


def test_a_late_enrolment_in_the_evening_waits_for_the_next_send_window(
    booking: BookingSystem, clock: Clock
) -> None:
    clock.now = datetime(2027, 3, 1, 17, 0, tzinfo=UTC)  # 21:00 in Dubai, day 4
    event = completed_event(treatment={"performed_at": "2027-02-25T10:00:00+04:00"})
    answer = booking.post(event)
    assert answer.status_code == 201, answer.data
    assert ("water_rinse", "2027-03-02T05:00:00Z") in scheduled(answer)  # day 5, 09:00 local
    assert ("moisturise", "2027-03-02T06:00:00Z") in scheduled(answer)  # day 5, 10:00 local
    assert {item["step"] for item in answer.get_json()["expired"]} == {
        "after_treatment",
        "no_wash_reminder",
    }
