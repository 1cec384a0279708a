"""POST /webhooks/booking (SPEC §4): only events signed with the shared secret, fresh, are
taken; a refused one stores nothing, so the genuine one afterwards is no replay."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from notifier.settings import Settings
from notifier.signature import sign
from tests.conftest import SECRET, BookingSystem, Clock, completed_event
from tests.support.booking import nothing_stored


def post_raw(client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/webhooks/booking", data=body, headers=headers or {}, content_type="application/json"
    )


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
    settings: Settings, engine: Any, build_app: Callable[..., Any], clock: Clock
) -> None:
    client = build_app(dataclasses.replace(settings, booking_webhook_secret=None), engine)
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
