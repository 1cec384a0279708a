"""Junk anywhere in a URL or a body is answered 4xx, never 500, on SQLite and PostgreSQL.

Every route of the app (read from its url_map, so a new route is swept too) gets
hypothesis-made path segments, query strings and bodies, signed where the route checks
a signature and with the staff token, so the junk reaches the database code."""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier import create_app
from notifier.settings import Settings
from notifier.signature import sign
from tests.conftest import (
    SECRET,
    STAFF_TOKEN,
    START,
    BookingSystem,
    TwilioWebhooks,
    completed_event,
)

REPLY_SID = "SM" + "f" * 32
FRESH = "fresh-event-id"
EVENT_IDS = itertools.count()
KNOWN_IDS = ["P-1001", "T-555", "evt_0001", REPLY_SID]
PHONES = ["+971501234567", "whatsapp:+971501234567", "0501234567", "+1", "12345", "whatsapp:"]
NASTY = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ufffd", "%00", "%", "..", "/", "\\"]

# -- the junk ------------------------------------------------------------------------

# Any code point, lone surrogates too (JSON's "\ud800" escapes carry them into a body).
any_text = st.text(st.characters(), max_size=30)
# What an HTTP form or URL can carry: UTF-8 text, so no surrogates, but NUL and the rest.
form_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
junk_text = st.one_of(any_text, st.sampled_from(NASTY + KNOWN_IDS + PHONES), st.just("x" * 300))
junk_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | junk_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(junk_text, inner, max_size=3),
    max_leaves=8,
)


def mostly(good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> Any:
    """`good` nine times in ten, so that a body's fields all pass validation often enough
    for the request to reach the database; else junk."""
    return st.integers(0, 9).flatmap(lambda n: junk if n == 9 else good)


def either(plausible: st.SearchStrategy[Any] | str | bool | None, *more: Any) -> Any:
    """Mostly a plausible value (one of these), else junk."""
    if isinstance(plausible, st.SearchStrategy):
        return mostly(plausible | st.sampled_from(more) if more else plausible, junk_json)
    return mostly(st.sampled_from([plausible, *more]), junk_json)


def _moments() -> st.SearchStrategy[Any]:
    seconds = st.integers(-600, 3 * 86400) | st.integers(-600, 11 * 365 * 86400)
    ago = seconds.map(lambda s: (START - timedelta(seconds=s)).isoformat())
    naive = st.datetimes().map(lambda d: d.isoformat())
    return mostly(ago, naive | junk_json)


ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
booking_bodies = st.fixed_dictionaries(
    {
        "id": either(FRESH, FRESH, "evt_0001"),
        "type": either(
            "treatment.completed", "treatment.cancelled", "patient.updated", "patient.erased"
        ),
        "patient": either(
            st.fixed_dictionaries(
                {
                    "id": either(ids, "P-1001"),
                    "phone": either("+971501234567", "0501234567", *PHONES),
                    "consent": either(True, False),
                },
                optional={
                    "first_name": either("Omar", "Zoë", None, "x" * 101),
                    "channel": either("sms", "whatsapp"),
                    "language": either("en", "ar", "ru-RU"),
                    "timezone": either("Asia/Dubai", "UTC", "America/Los_Angeles"),
                },
            )
        ),
        "treatment": either(
            st.fixed_dictionaries(
                {
                    "id": either(ids, "T-555"),
                    "kind": either("scalp_micropigmentation"),
                    "performed_at": _moments(),
                }
            )
        ),
    }
)

twilio_forms = st.fixed_dictionaries(
    {
        "MessageSid": mostly(st.sampled_from([REPLY_SID, "SM" + "0" * 32]), form_text),
        "From": mostly(st.sampled_from(PHONES), form_text),
        "Body": mostly(st.sampled_from(["STOP", "START", "HELP", "توقف", "СТОП", "ok"]), form_text),
        "MessageStatus": mostly(st.sampled_from(["sent", "delivered", "failed"]), form_text),
    },
    optional={
        "AccountSid": form_text,
        "To": mostly(st.sampled_from(PHONES), form_text),
        "OptOutType": mostly(st.sampled_from(["STOP", "START", "HELP"]), form_text),
        "ErrorCode": mostly(
            st.sampled_from(["21610", "63016", "30003", "-1", "9" * 30]), form_text
        ),
        "NumMedia": form_text,
    },
)

segments = st.one_of(
    st.sampled_from(KNOWN_IDS).map(lambda s: quote(s, safe="")),
    form_text.map(lambda s: quote(s, safe="")),
    st.binary(max_size=20).map(lambda b: quote(b, safe="")),  # not UTF-8 either
    st.sampled_from(["%00", "a%00b", "%ED%A0%80", "%FF", "..", "%2F"]),
)
query_strings = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(["handled", "limit", "urgent"]) | form_text, form_text),
        max_size=3,
    ).map(lambda pairs: urlencode(pairs)),
    st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=2).map(urlencode),
    st.sampled_from(["", "handled=%00", "limit=%00", "%00=1", "handled", "=&&=", "a=%ZZ"]),
)


# -- the routes ----------------------------------------------------------------------

_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _routes() -> list[tuple[str, str]]:
    app = create_app(Settings(database_url="sqlite://"))
    return sorted(
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods or ())
        if method not in ("HEAD", "OPTIONS")
    )


ROUTES = _routes()


def test_the_sweep_covers_the_known_routes() -> None:
    """A guard against the sweep silently sweeping nothing."""
    assert {
        ("/webhooks/booking", "POST"),
        ("/webhooks/twilio/inbound", "POST"),
        ("/webhooks/twilio/status", "POST"),
        ("/api/patients/<patient_id>", "GET"),
        ("/api/replies/<sid>/handled", "POST"),
    } <= set(ROUTES)


@pytest.fixture
def seeded(client: Any, booking: BookingSystem, twilio: TwilioWebhooks) -> Any:
    """A patient with a plan and a reply, so known ids in the junk find rows."""
    assert booking.post(completed_event()).status_code == 201
    assert twilio.inbound("thank you", sid=REPLY_SID).status_code == 200
    return client


@pytest.mark.parametrize(("rule", "method"), ROUTES, ids=[f"{m} {r}" for r, m in ROUTES])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_junk_in_any_route_is_answered_4xx_never_5xx(
    rule: str,
    method: str,
    seeded: Any,
    twilio: TwilioWebhooks,
    data: st.DataObject,
) -> None:
    path = _ARGUMENT.sub(lambda _: data.draw(segments), rule)
    query = data.draw(query_strings)
    url = path + (f"?{query}" if query else "")
    if rule == "/webhooks/booking":
        event = data.draw(booking_bodies)
        if event["id"] == FRESH:  # most events are new, so they are carried out
            event["id"] = f"evt-{next(EVENT_IDS)}"
        body = json.dumps(event).encode()
        response = seeded.post(
            url,
            data=body,
            content_type="application/json",
            headers={"X-Aftercare-Signature": sign(SECRET, body, int(START.timestamp()))},
        )
    elif rule.startswith("/webhooks/twilio/"):
        response = twilio.post(url, data.draw(twilio_forms))
    else:
        body = data.draw(either(st.fixed_dictionaries({"opted_out": either(True, False)})))
        response = seeded.open(
            url,
            method=method,
            data=json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
        )
    assert response.status_code < 500, (url, response.status_code, response.get_data(as_text=True))


# -- the guards, one by one ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/patients/%00",
        "/api/patients/P-1001%00",
        "/api/replies?handled=%00",
        "/api/replies?%00=true",
        "/api/replies/%00/handled",
        "/no/such/route/%00",
    ],
)
def test_a_nul_in_the_url_is_a_400_in_json(client: Any, staff_headers: Any, url: str) -> None:
    method = "POST" if url.endswith("/handled") else "GET"
    response = client.open(url, method=method, headers=staff_headers)
    assert response.status_code == 400
    assert response.is_json
    assert "NUL" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("field", "junk"),
    [
        ("patient.first_name", "Om\x00ar"),
        ("patient.first_name", "Om\ud800ar"),
        ("patient.id", "P-\x001"),
        ("treatment.id", "\udfff"),
    ],
)
def test_an_unstorable_character_in_a_booking_field_is_a_422_naming_it(
    booking: BookingSystem, field: str, junk: str
) -> None:
    event = completed_event()
    part, name = field.split(".")
    event[part][name] = junk
    response = booking.post(json.dumps(event).encode())
    assert response.status_code == 422
    assert {e["field"] for e in response.get_json()["errors"]} == {field}
    assert "NUL or a lone surrogate" in response.get_json()["errors"][0]["message"]


def test_the_url_guard_lets_ordinary_text_through(client: Any, staff_headers: Any) -> None:
    response = client.get("/api/patients/%D8%B9%D9%85%D8%B1", headers=staff_headers)
    assert response.status_code == 404  # an Arabic id is fine, just unknown
