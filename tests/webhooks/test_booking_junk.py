"""POST /webhooks/booking: no body, however broken or hostile, is a server error."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from notifier.settings import Settings
from tests.conftest import SECRET, BookingSystem, Clock, completed_event
from tests.support.booking import cancel_event
from tests.support.fuzzing import fuzz
from tests.support.times import DUBAI

WEBHOOK_STATUSES = {200, 201, 400, 409, 413, 415, 422, 501}


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
    build_app: Callable[..., Any],
    event: dict[str, Any],
) -> None:
    client = build_app(Settings(database_url=postgres_url, booking_webhook_secret=SECRET))
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
FUZZ = fuzz(max_examples=150)


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
