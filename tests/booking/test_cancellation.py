"""`treatment.cancelled` (SPEC §5): the treatment's pending messages are cancelled, what
already went out is left alone, and the answer is the same every time."""

from __future__ import annotations

from typing import Any

from tests.conftest import BookingSystem, completed_event
from tests.support.booking import SPEC_TIMELINE, cancel_event
from tests.support.rows import set_status, statuses
from tests.support.staff import patient_view


def test_a_cancelled_treatment_cancels_its_pending_messages(
    booking: BookingSystem, engine: Any
) -> None:
    booking.post(completed_event())
    set_status(engine, "T-555", "after_treatment", "queued")  # already out: left alone
    answer = booking.post(cancel_event("evt_0002", "T-555"))
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {"treatment_id": "T-555", "cancelled": True}
    assert sorted(m["status"] for m in patient_view(booking.client)["messages"]) == [
        "cancelled"
    ] * (len(SPEC_TIMELINE) - 1) + ["queued"]


def test_cancelling_an_unknown_treatment_is_200_with_nothing_cancelled(
    booking: BookingSystem,
) -> None:
    answer = booking.post(cancel_event("evt_0002", "T-404"))
    assert answer.status_code == 200
    body = answer.get_json()
    assert set(body) == {"treatment_id", "cancelled", "reason"}
    assert (body["treatment_id"], body["cancelled"]) == ("T-404", False)
    assert body["reason"]


def test_cancelling_a_treatment_twice_with_two_events_answers_cancelled_both_times(
    booking: BookingSystem, engine: Any
) -> None:
    booking.post(completed_event())
    assert booking.post(cancel_event("evt_0002", "T-555")).get_json()["cancelled"] is True
    again = booking.post(cancel_event("evt_0003", "T-555"))
    assert again.status_code == 200
    assert again.get_json() == {"treatment_id": "T-555", "cancelled": True}
    assert statuses(engine, "T-555") == {"cancelled"}


def test_a_cancellation_without_a_treatment_id_is_422(booking: BookingSystem, engine: Any) -> None:
    booking.post(completed_event())
    answer = booking.post(cancel_event("evt_0002", None))
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == ["treatment.id"]
    assert statuses(engine, "T-555") == {"scheduled"}


def test_a_cancellation_replayed_answers_the_same(booking: BookingSystem) -> None:
    booking.post(completed_event())
    first = booking.post(cancel_event("evt_0002", "T-555"))
    second = booking.post(cancel_event("evt_0002", "T-555"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json() == first.get_json()
