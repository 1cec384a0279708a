"""A later session of the same kind supersedes the earlier one's plan; the same treatment
at a new time is rescheduled, never sending again what already went out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from notifier.store.models import Message
from tests.conftest import START, BookingSystem, Clock, completed_event
from tests.support.booking import SPEC_TIMELINE, scheduled
from tests.support.rows import rows, set_status, statuses
from tests.support.staff import patient_view
from tests.support.times import iso


def test_a_later_session_of_the_same_kind_supersedes_the_earlier_one(
    booking: BookingSystem, engine: Any, clock: Clock
) -> None:
    assert booking.post(completed_event()).status_code == 201
    clock.advance(days=10)
    answer = booking.post(
        completed_event("evt_0002", treatment={"id": "T-556"}, performed_at=clock.now)
    )
    assert answer.status_code == 201, answer.data
    assert statuses(engine, "T-555") == {"cancelled"}
    assert statuses(engine, "T-556") == {"scheduled"}
    new_day_1 = iso(clock.now + timedelta(days=1))  # 10:00 Dubai again
    assert ("after_treatment", iso(clock.now + timedelta(hours=1))) in scheduled(answer)
    assert ("sunscreen", new_day_1) in scheduled(answer)
    staff = patient_view(booking.client)["messages"]
    assert sorted(m["status"] for m in staff) == ["cancelled"] * 11 + ["scheduled"] * 11


def test_an_older_session_arriving_late_does_not_supersede_the_current_one(
    booking: BookingSystem, engine: Any, clock: Clock
) -> None:
    clock.advance(days=10)
    assert booking.post(completed_event(performed_at=clock.now)).status_code == 201
    answer = booking.post(
        completed_event("evt_0002", treatment={"id": "T-554"}, performed_at=START)
    )
    assert answer.status_code in {200, 201}
    assert answer.get_json()["scheduled"] == []
    assert statuses(engine, "T-555") == {"scheduled"}


def test_the_same_treatment_with_a_new_performed_at_is_rescheduled(
    booking: BookingSystem, engine: Any, clock: Clock
) -> None:
    assert booking.post(completed_event()).status_code == 201
    set_status(engine, "T-555", "after_treatment", "queued")  # it already went out
    clock.advance(days=1)
    answer = booking.post(completed_event("evt_0002", performed_at=clock.now))

    assert answer.status_code == 200, answer.data
    steps = [step for step, _ in scheduled(answer)]
    assert "after_treatment" not in steps
    assert ("sunscreen", "2027-03-03T06:00:00Z") in scheduled(answer)  # new day 1
    assert ("no_wash_reminder", "2027-03-04T06:00:00Z") in scheduled(answer)
    assert ("yearly_checkup", "2028-03-02T06:00:00Z") in scheduled(answer)
    by_status: dict[str, list[Message]] = {}
    for message in rows(engine, "T-555"):
        by_status.setdefault(message.status, []).append(message)
    assert [m.step for m in by_status["queued"]] == ["after_treatment"]
    assert len(by_status["cancelled"]) == len(SPEC_TIMELINE) - 1
    assert len(by_status["scheduled"]) == len(SPEC_TIMELINE) - 1
    assert sorted(iso(m.send_at) for m in by_status["scheduled"]) == sorted(
        at for _, at in scheduled(answer)
    )
    assert [m.step for m in rows(engine) if m.step == "after_treatment"] == ["after_treatment"]


def test_the_same_treatment_with_the_same_time_again_schedules_nothing_new(
    booking: BookingSystem, engine: Any
) -> None:
    first = booking.post(completed_event())
    again = booking.post(completed_event("evt_0002"))
    assert again.status_code == 200, again.data
    assert again.get_json()["scheduled"] == first.get_json()["scheduled"]
    assert len(rows(engine)) == len(SPEC_TIMELINE)
