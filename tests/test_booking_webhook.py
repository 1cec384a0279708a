"""POST /webhooks/booking (SPEC §4, §5): signed enrolments, idempotent, never a 5xx."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from notifier import create_app
from notifier.settings import Settings, StaffToken
from notifier.store.db import make_engine
from notifier.store.models import BookingEvent, Message, Patient, Treatment
from tests.conftest import (
    SECRET,
    STAFF_TOKEN,
    START,
    BookingSystem,
    Clock,
    completed_event,
)
from webhooks.signature import sign

DUBAI = ZoneInfo("Asia/Dubai")
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
SMP_STEPS = {
    "after_treatment",
    "no_wash_reminder",
    "water_rinse",
    "moisturise",
    "sunscreen",
    "long_term_care",
    "yearly_checkup",
}
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
ENGLISH_AFTER_TREATMENT = "thank you for coming in today"
WEBHOOK_STATUSES = {200, 201, 400, 409, 413, 415, 422, 501}


# -- helpers -------------------------------------------------------------------------


def staff_view(client: Any, patient_id: str = "P-1001") -> Any:
    return client.get(f"/api/patients/{patient_id}", headers=STAFF)


def patient_json(client: Any, patient_id: str = "P-1001") -> dict[str, Any]:
    answer = staff_view(client, patient_id)
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def rows(engine: Any, treatment_id: str | None = None) -> list[Message]:
    """Every stored message (of one treatment, by the booking system's id), in send order."""
    with Session(engine) as session:
        query = select(Message).join(Treatment, Treatment.id == Message.treatment_id)
        if treatment_id is not None:
            query = query.where(Treatment.external_id == treatment_id)
        return list(session.exec(query.order_by(Message.send_at, Message.id)).all())


def statuses(engine: Any, treatment_id: str) -> set[str]:
    return {m.status for m in rows(engine, treatment_id)}


def stored_events(engine: Any) -> list[str]:
    with Session(engine) as session:
        return [e.id for e in session.exec(select(BookingEvent)).all()]


def nothing_stored(client: Any, engine: Any) -> None:
    assert staff_view(client).status_code == 404
    assert rows(engine) == []
    assert stored_events(engine) == []


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def scheduled(answer: Any) -> list[tuple[str, str]]:
    return [(item["step"], item["send_at"]) for item in answer.get_json()["scheduled"]]


def set_status(engine: Any, treatment_id: str, step: str, status: str) -> None:
    """Pretend the dispatcher already handled `step` (e.g. `queued`: it went out)."""
    with Session(engine) as session:
        message = session.exec(
            select(Message)
            .join(Treatment, Treatment.id == Message.treatment_id)
            .where(Treatment.external_id == treatment_id, Message.step == step)
        ).first()
        assert message is not None
        message.status = status
        session.add(message)
        session.commit()


def post_raw(client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/webhooks/booking", data=body, headers=headers or {}, content_type="application/json"
    )


@pytest.fixture
def build_app(clock: Clock) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Build an extra app (own settings / database) on the shared clock: (client, engine)."""
    engines: list[Any] = []

    def build(settings: Settings, engine: Any = None) -> tuple[Any, Any]:
        engine = engine or make_engine(settings.database_url)
        engines.append(engine)
        return create_app(settings, engine=engine, clock=clock).test_client(), engine

    yield build
    for engine in engines:
        engine.dispose()


@pytest.fixture
def sqlite_booking(
    sqlite_url: str, clock: Clock, build_app: Callable[..., tuple[Any, Any]]
) -> BookingSystem:
    """The booking system posting to an app on SQLite only: for input handling that never
    reaches the database differently on PostgreSQL, and for the slower property tests."""
    client, _ = build_app(
        Settings(
            database_url=sqlite_url,
            booking_webhook_secret=SECRET,
            staff_api_tokens=(StaffToken("reception", STAFF_TOKEN),),
        )
    )
    return BookingSystem(client, clock)


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
    assert {step for step, _ in scheduled(answer)} == SMP_STEPS
    assert sorted(scheduled(answer), key=lambda s: s[1]) == SPEC_TIMELINE


def test_enrolment_is_stored_and_visible_to_staff(booking: BookingSystem, engine: Any) -> None:
    answer = booking.post(completed_event())
    assert answer.status_code == 201
    patient = patient_json(booking.client)
    assert len(patient["messages"]) == len(SPEC_TIMELINE)
    assert {m["status"] for m in patient["messages"]} == {"scheduled"}
    assert stored_events(engine) == ["evt_0001"]


# -- the signature -----------------------------------------------------------------------------


def test_a_request_without_signature_is_401_and_stores_nothing(
    booking: BookingSystem, engine: Any
) -> None:
    answer = post_raw(booking.client, json.dumps(completed_event()).encode())
    assert answer.status_code == 401
    assert answer.is_json
    nothing_stored(booking.client, engine)


FORGERIES: dict[str, Callable[[bytes, int], str]] = {
    "wrong secret": lambda body, t: sign("another-secret", body, t),
    "tampered body": lambda body, t: sign(SECRET, body + b" ", t),
    "t 301 s in the past": lambda body, t: sign(SECRET, body, t - 301),
    "t 301 s in the future": lambda body, t: sign(SECRET, body, t + 301),
    "no v1": lambda body, t: f"t={t}",
    "no t": lambda body, t: sign(SECRET, body, t).split(",")[1],
    "garbage": lambda body, t: "garbage",
}


def test_a_bad_or_stale_signature_is_401_and_stores_nothing(
    booking: BookingSystem, engine: Any, clock: Clock
) -> None:
    body = json.dumps(completed_event()).encode()
    for name, forge in FORGERIES.items():
        answer = booking.post(body, signature=forge(body, int(clock.now.timestamp())))
        assert answer.status_code == 401, (name, answer.data)
        nothing_stored(booking.client, engine)
    # Not recorded: the genuine event afterwards is a new enrolment, not a replay.
    assert booking.post(body).status_code == 201


@pytest.mark.parametrize("skew", [-300, -299, 299, 300])
def test_a_clock_skew_up_to_300_seconds_is_accepted(
    booking: BookingSystem, clock: Clock, skew: int
) -> None:
    answer = booking.post(completed_event(), timestamp=int(clock.now.timestamp()) + skew)
    assert answer.status_code == 201, answer.data


def test_the_webhook_answers_503_when_no_secret_is_configured(
    settings: Settings, engine: Any, build_app: Callable[..., tuple[Any, Any]], clock: Clock
) -> None:
    client, _ = build_app(dataclasses.replace(settings, booking_webhook_secret=None), engine)
    answer = BookingSystem(client, clock).post(completed_event())
    assert answer.status_code == 503
    assert "BOOKING_WEBHOOK_SECRET" in answer.get_json()["error"]
    nothing_stored(client, engine)


def test_a_signature_with_a_non_ascii_digit_timestamp_is_401(
    sqlite_booking: BookingSystem,
) -> None:
    answer = sqlite_booking.post(completed_event(), signature="t=\u00b2,v1=00")
    assert answer.status_code == 401


def test_a_signature_with_a_non_ascii_v1_is_401(
    sqlite_booking: BookingSystem, clock: Clock
) -> None:
    now = int(clock.now.timestamp())
    answer = sqlite_booking.post(completed_event(), signature=f"t={now},v1=\u00e9")
    assert answer.status_code == 401


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
    assert patient_json(booking.client)["phone"] == "+971501234567"


def test_default_phone_region_is_configurable(
    settings: Settings,
    engine: Any,
    clock: Clock,
    build_app: Callable[..., tuple[Any, Any]],
) -> None:
    client, _ = build_app(dataclasses.replace(settings, default_phone_region="GB"), engine)
    answer = BookingSystem(client, clock).post(completed_event(patient={"phone": "07400 123456"}))
    assert answer.status_code == 201, answer.data
    assert patient_json(client)["phone"] == "+447400123456"


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


# -- defaults ------------------------------------------------------------------------------------


def test_channel_language_and_timezone_default(booking: BookingSystem) -> None:
    event = completed_event()
    for name in ("channel", "language", "timezone"):
        del event["patient"][name]
    answer = booking.post(event)
    assert answer.status_code == 201, answer.data
    patient = patient_json(booking.client)
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
    build_app: Callable[..., tuple[Any, Any]],
) -> None:
    client, _ = build_app(dataclasses.replace(settings, clinic_timezone="Europe/London"), engine)
    event = completed_event()
    del event["patient"]["timezone"]
    answer = BookingSystem(client, clock).post(event)
    assert answer.status_code == 201, answer.data
    assert patient_json(client)["timezone"] == "Europe/London"
    assert ("sunscreen", "2027-03-02T10:00:00Z") in scheduled(answer)  # 10:00 in London (GMT)


def test_a_language_the_plan_lacks_falls_back_to_english(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(patient={"language": "fr-CA"}))
    assert answer.status_code == 201, answer.data
    patient = patient_json(booking.client)
    after = next(m for m in patient["messages"] if m["step"] == "after_treatment")
    assert ENGLISH_AFTER_TREATMENT in after["body"]
    assert "Omar" in after["body"]


def test_a_regional_language_tag_is_read_as_its_primary_language(
    booking: BookingSystem,
) -> None:
    answer = booking.post(completed_event(patient={"language": "EN-gb"}))
    assert answer.status_code == 201, answer.data
    assert patient_json(booking.client)["language"] == "en"


def test_whatsapp_channel_is_carried_to_every_message(booking: BookingSystem) -> None:
    answer = booking.post(completed_event(patient={"channel": "whatsapp"}))
    assert answer.status_code == 201
    assert {item["channel"] for item in answer.get_json()["scheduled"]} == {"whatsapp"}
    assert {m["channel"] for m in patient_json(booking.client)["messages"]} == {"whatsapp"}


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
    before = patient_json(booking.client)
    answer = booking.post(
        completed_event(patient={"phone": "+971509999999"}, treatment={"id": "T-999"})
    )
    assert answer.status_code == 409
    assert "error" in answer.get_json()
    assert patient_json(booking.client) == before
    assert {m.treatment_id for m in rows(engine)} == {rows(engine, "T-555")[0].treatment_id}


# -- consent ---------------------------------------------------------------------------------


def test_consent_false_records_the_patient_and_schedules_nothing(
    booking: BookingSystem, engine: Any
) -> None:
    answer = booking.post(completed_event(patient={"consent": False}))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["scheduled"] == []
    assert body["reason"]
    patient = patient_json(booking.client)
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
    patient = patient_json(booking.client)
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
    patient = patient_json(booking.client)
    assert "scheduled" not in {m["status"] for m in patient["messages"]}
    assert [c["consented"] for c in patient["consent_log"]] == [True, False]


# -- supersede and reschedule ---------------------------------------------------------------


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
    staff = patient_json(booking.client)["messages"]
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


# -- late enrolment ----------------------------------------------------------------------------


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
    staff = patient_json(booking.client)["messages"]
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


# -- cancellation --------------------------------------------------------------------------------


def cancel_event(event_id: str, treatment_id: str | None) -> dict[str, Any]:
    treatment = {} if treatment_id is None else {"id": treatment_id}
    return {"id": event_id, "type": "treatment.cancelled", "treatment": treatment}


def test_a_cancelled_treatment_cancels_its_pending_messages(
    booking: BookingSystem, engine: Any
) -> None:
    booking.post(completed_event())
    set_status(engine, "T-555", "after_treatment", "queued")  # already out: left alone
    answer = booking.post(cancel_event("evt_0002", "T-555"))
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {"treatment_id": "T-555", "cancelled": True}
    assert sorted(m["status"] for m in patient_json(booking.client)["messages"]) == [
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


# -- conflicts ---------------------------------------------------------------------------------


def test_a_treatment_id_of_another_patient_is_409_and_changes_nothing(
    booking: BookingSystem, engine: Any
) -> None:
    booking.post(completed_event())
    before = patient_json(booking.client)
    answer = booking.post(
        completed_event("evt_0002", patient={"id": "P-2002", "phone": "+971509999999"})
    )
    assert answer.status_code == 409
    assert staff_view(booking.client, "P-2002").status_code == 404
    assert patient_json(booking.client) == before
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
    assert patient_json(booking.client)["phone"] == "+971509999999"
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


# -- no input is a server error -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    "event",
    [
        pytest.param(cancel_event("evt\u0000", "T-1"), id="event-id"),
        pytest.param(cancel_event("evt_0002", "T\u00001"), id="treatment-id"),
        pytest.param(completed_event(patient={"first_name": "O\u0000mar"}), id="first-name"),
    ],
)
def test_a_nul_character_is_not_a_server_error_on_postgresql(
    postgres_url: str,
    clock: Clock,
    build_app: Callable[..., tuple[Any, Any]],
    event: dict[str, Any],
) -> None:
    client, _ = build_app(Settings(database_url=postgres_url, booking_webhook_secret=SECRET))
    answer = BookingSystem(client, clock).post(event)
    assert answer.status_code < 500


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "",
            " ",
            "sms",
            "whatsapp",
            "en",
            "ar",
            "+971501234567",
            "050 123 4567",
            "Asia/Dubai",
            "Europe/London",
            "scalp_micropigmentation",
            "T-555",
            "P-1001",
            "treatment.completed",
            "treatment.cancelled",
            "patient.updated",
            "patient.erased",
            "2027-03-01T10:00:00+04:00",
            "2027-03-01T10:00:00",
            "2027-02-20T10:00:00Z",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
EVENT_PATHS = [
    ("id",),
    ("type",),
    ("patient",),
    ("treatment",),
    ("patient", "id"),
    ("patient", "first_name"),
    ("patient", "phone"),
    ("patient", "channel"),
    ("patient", "language"),
    ("patient", "timezone"),
    ("patient", "consent"),
    ("treatment", "id"),
    ("treatment", "kind"),
    ("treatment", "performed_at"),
]
FUZZ = hypothesis_settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def assert_handled(answer: Any) -> None:
    event(f"status {answer.status_code}")
    assert answer.status_code in WEBHOOK_STATUSES, (answer.status_code, answer.data)
    assert isinstance(json.loads(answer.data), dict)


@FUZZ
@given(body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_are_never_a_server_error(
    sqlite_booking: BookingSystem, body: bytes
) -> None:
    assert_handled(sqlite_booking.post(body))


@FUZZ
@given(value=JSON)
def test_arbitrary_json_is_never_a_server_error(sqlite_booking: BookingSystem, value: Any) -> None:
    assert_handled(sqlite_booking.post(json.dumps(value).encode()))


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event (completed, cancelled or erased) with a few fields dropped or replaced."""
    patient = draw(st.integers(0, 3))
    event = completed_event(
        patient={"id": f"P-{patient}"},
        treatment={"id": f"T-{patient}-{draw(st.integers(0, 2))}"},
        performed_at=draw(
            st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2027, 3, 1, 6, 5),
                timezones=st.sampled_from([UTC, DUBAI]),
            )
        ),
    )
    event["type"] = draw(
        st.sampled_from(["treatment.completed", "treatment.cancelled", "patient.erased"])
    )
    del event["id"]
    paths = draw(st.lists(st.sampled_from(EVENT_PATHS), max_size=4, unique=True))
    for path in paths:
        target: Any = event
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = draw(JSON)
    if ("id",) not in paths:
        # Mostly an id of its own (so the event is processed), sometimes a shared one.
        digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
        shared = draw(st.sampled_from([False] * 9 + [True]))
        event["id"] = "evt_shared" if shared else f"evt_{digest[:16]}"
    return event


@FUZZ
@given(event=mutated_events())
def test_mutated_events_are_never_a_server_error(
    sqlite_booking: BookingSystem, event: dict[str, Any]
) -> None:
    assert_handled(sqlite_booking.post(event))
