"""POST /webhooks/booking (SPEC §4): a body that is not a valid event is refused with the
status that says why (400, 413, 415, 422), every bad field named, and nothing stored."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from notifier.settings import Settings
from tests.conftest import START, BookingSystem, Clock, completed_event
from tests.support.booking import nothing_stored, scheduled
from tests.support.staff import patient_view
from tests.support.times import iso

# -- the body ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(
    booking: BookingSystem, engine: Any, content_type: str
) -> None:
    answer = booking.post(completed_event(), content_type=content_type)
    assert answer.status_code == 415
    assert answer.is_json
    nothing_stored(booking.client, engine)


def test_json_with_a_charset_parameter_is_accepted(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(), content_type="application/json; charset=utf-8")
    assert answer.status_code == 201


@pytest.mark.parametrize(
    "body", [b"{", b"", b"{'id': 1}", b"\xff\xfe{}", b'{"id": "evt_0001",}'], ids=repr
)
def test_malformed_json_is_400(booking: BookingSystem, engine: Any, body: bytes) -> None:
    answer = booking.post(body)
    assert answer.status_code == 400
    assert answer.is_json
    nothing_stored(booking.client, engine)


def test_a_body_over_64_kib_is_413(booking: BookingSystem, engine: Any) -> None:
    event = completed_event()
    body = json.dumps(event).encode()
    body = body[:-1] + b" " * (64 * 1024 + 1 - len(body)) + b"}"
    assert len(body) == 64 * 1024 + 1
    answer = booking.post(body)
    assert answer.status_code == 413
    assert answer.is_json
    nothing_stored(booking.client, engine)


def test_a_body_of_exactly_64_kib_is_accepted(booking: BookingSystem) -> None:
    body = json.dumps(completed_event()).encode()
    body = body[:-1] + b" " * (64 * 1024 - len(body)) + b"}"
    assert len(body) == 64 * 1024
    assert booking.post(body).status_code == 201


@pytest.mark.parametrize("body", [[], [completed_event()], "evt_0001", 42, None])
def test_json_that_is_not_an_object_is_422(booking: BookingSystem, engine: Any, body: Any) -> None:
    answer = booking.post(json.dumps(body).encode())
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]
    assert errors
    assert all(set(e) == {"field", "message"} for e in errors)
    nothing_stored(booking.client, engine)


def test_deeply_nested_json_is_not_a_server_error(sqlite_booking: BookingSystem) -> None:
    answer = sqlite_booking.post(b"[" * 30_000 + b"]" * 30_000)
    assert answer.status_code in {400, 422}


# -- field validation ----------------------------------------------------------------------


def test_every_bad_field_is_named_at_once(booking: BookingSystem, engine: Any) -> None:
    event = completed_event(
        patient={"phone": "12", "timezone": "Mars/Olympus_Mons", "consent": "yes"},
        treatment={"kind": "tattoo_removal", "performed_at": "2027-03-01T10:00:00"},
    )
    answer = booking.post(event)
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]
    assert all(set(e) == {"field", "message"} and e["message"] for e in errors)
    assert {e["field"] for e in errors} == {
        "patient.phone",
        "patient.timezone",
        "patient.consent",
        "treatment.kind",
        "treatment.performed_at",
    }
    nothing_stored(booking.client, engine)


def test_a_bad_id_does_not_hide_the_other_bad_fields(booking: BookingSystem) -> None:
    event = completed_event(patient={"phone": "12"})
    del event["id"]
    answer = booking.post(event)
    assert answer.status_code == 422
    assert {e["field"] for e in answer.get_json()["errors"]} == {"id", "patient.phone"}


def _without(*path: str) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _with(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


IN_6_MINUTES = (START + timedelta(minutes=6)).isoformat()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(_without("id"), "id", id="missing-id"),
        pytest.param(_with("", "id"), "id", id="empty-id"),
        pytest.param(_with(1001, "id"), "id", id="numeric-id"),
        pytest.param(_with("treatment.started", "type"), "type", id="unknown-type"),
        pytest.param(_without("type"), "type", id="missing-type"),
        pytest.param(_without("patient", "id"), "patient.id", id="missing-patient-id"),
        pytest.param(_with("12", "patient", "phone"), "patient.phone", id="phone-12"),
        pytest.param(_with("not a phone", "patient", "phone"), "patient.phone", id="phone-text"),
        pytest.param(_without("patient", "phone"), "patient.phone", id="missing-phone"),
        pytest.param(
            _with("2027-03-01T10:00:00", "treatment", "performed_at"),
            "treatment.performed_at",
            id="performed-at-naive",
        ),
        pytest.param(
            _with("yesterday", "treatment", "performed_at"),
            "treatment.performed_at",
            id="performed-at-text",
        ),
        pytest.param(
            _with(1_772_344_800, "treatment", "performed_at"),
            "treatment.performed_at",
            id="performed-at-number",
        ),
        pytest.param(
            _with(IN_6_MINUTES, "treatment", "performed_at"),
            "treatment.performed_at",
            id="performed-at-6-minutes-ahead",
        ),
        pytest.param(_with("tattoo", "treatment", "kind"), "treatment.kind", id="unknown-kind"),
        pytest.param(_without("treatment", "id"), "treatment.id", id="missing-treatment-id"),
        pytest.param(_with("fax", "patient", "channel"), "patient.channel", id="channel-fax"),
        pytest.param(_with("123", "patient", "language"), "patient.language", id="language-123"),
        pytest.param(
            _with("Mars/Olympus", "patient", "timezone"), "patient.timezone", id="bad-timezone"
        ),
        pytest.param(_without("patient", "consent"), "patient.consent", id="missing-consent"),
        pytest.param(_with("yes", "patient", "consent"), "patient.consent", id="consent-string"),
        pytest.param(_with(1, "patient", "consent"), "patient.consent", id="consent-number"),
        pytest.param(_without("patient"), "patient", id="missing-patient"),
        pytest.param(_with([], "treatment"), "treatment", id="treatment-list"),
    ],
)
def test_a_single_bad_field_is_422_naming_it(
    booking: BookingSystem,
    engine: Any,
    change: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    event = completed_event()
    change(event)
    answer = booking.post(event)
    assert answer.status_code == 422, answer.data
    errors = answer.get_json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert errors[0]["message"]
    nothing_stored(booking.client, engine)


def test_a_national_phone_number_is_read_with_the_default_region(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(patient={"phone": "050 123 4567"}))
    assert answer.status_code == 201, answer.data
    assert patient_view(booking.client)["phone"] == "+971501234567"


def test_default_phone_region_is_configurable(
    settings: Settings,
    engine: Any,
    clock: Clock,
    build_app: Callable[..., Any],
) -> None:
    client = build_app(dataclasses.replace(settings, default_phone_region="GB"), engine)
    answer = BookingSystem(client, clock).post(completed_event(patient={"phone": "07400 123456"}))
    assert answer.status_code == 201, answer.data
    assert patient_view(client)["phone"] == "+447400123456"


def test_performed_at_up_to_5_minutes_ahead_is_accepted(booking: BookingSystem) -> None:
    performed = START + timedelta(minutes=4)
    answer = booking.post(completed_event(performed_at=performed))
    assert answer.status_code == 201, answer.data
    assert ("after_treatment", iso(performed + timedelta(hours=1))) in scheduled(answer)


def test_a_timezone_that_names_a_tz_directory_is_422(sqlite_booking: BookingSystem) -> None:
    answer = sqlite_booking.post(completed_event(patient={"timezone": "Asia"}))
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == ["patient.timezone"]


def test_a_performed_at_at_the_edge_of_the_calendar_is_not_a_server_error(
    sqlite_booking: BookingSystem,
) -> None:
    event = completed_event(treatment={"performed_at": "0001-01-01T00:00:00+14:00"})
    answer = sqlite_booking.post(event)
    assert answer.status_code == 422
