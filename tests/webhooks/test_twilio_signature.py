"""Twilio's webhooks (SPEC §7) refuse anything not signed by Twilio for the URL it
called: behind a TLS proxy that is PUBLIC_BASE_URL, query string included."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from notifier.settings import Settings
from notifier.store.models import ConsentChange, Reply, StatusCallback
from tests.conftest import PHONE, TWILIO_SID, BookingSystem, TwilioWebhooks
from tests.support.rows import count
from tests.support.staff import patient_view, staff_replies
from tests.support.twilio_webhooks import INBOUND, STATUS, twiml

PUBLIC = "https://care.example.org"


def test_a_correctly_signed_inbound_message_is_accepted_and_answered_with_twiml(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    answer = twilio.inbound("Thanks!")
    assert answer.status_code == 200
    assert twiml(answer) == []
    assert len(staff_replies(enrolled.client)) == 1


def test_a_correctly_signed_status_callback_is_answered_204(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    answer = twilio.status("SM" + "1" * 32, "delivered")
    assert answer.status_code == 204
    assert answer.data == b""


FORGED: dict[str, Callable[[TwilioWebhooks, str, dict[str, str]], Any]] = {
    "no signature header": lambda t, path, params: t.client.post(path, data=params),
    "empty signature": lambda t, path, params: t.post(path, params, signature=""),
    "garbage signature": lambda t, path, params: t.post(path, params, signature="not-base64!"),
    "another auth token": lambda t, path, params: TwilioWebhooks(t.client, token="other").post(
        path, params
    ),
    "tampered params": lambda t, path, params: t.post(
        path, {**params, "Body": "hello", "MessageStatus": "sent"}, signature=t_sig(t, path, params)
    ),
    "signed for another path": lambda t, path, params: t.post(
        path, params, signed_url="http://localhost/webhooks/twilio/other"
    ),
    "signed for another host": lambda t, path, params: t.post(
        path, params, signed_url="http://evil.example.com" + path
    ),
    "signed for https": lambda t, path, params: t.post(
        path, params, signed_url="https://localhost" + path
    ),
    "signed with a query the request lacks": lambda t, path, params: t.post(
        path, params, signed_url=f"http://localhost{path}?x=1"
    ),
    "sha256 instead of sha1": lambda t, path, params: t.post(
        path, params, signature=t_sig(t, path, params, algorithm="HMAC_SHA256")
    ),
}


def t_sig(
    t: TwilioWebhooks, path: str, params: dict[str, str], algorithm: str = "HMAC_SHA1"
) -> str:
    return RequestValidator(t.token).compute_signature(t.base_url + path, params, algorithm)


STOP_FORM = {
    "MessageSid": "SM" + "f" * 32,
    "AccountSid": TWILIO_SID,
    "From": PHONE,
    "To": "+14155550100",
    "Body": "STOP",
    "OptOutType": "STOP",
}
STATUS_FORM = {"MessageSid": "SM" + "e" * 32, "MessageStatus": "delivered", "ErrorCode": "30003"}


@pytest.mark.parametrize(("path", "form"), [(INBOUND, STOP_FORM), (STATUS, STATUS_FORM)])
def test_a_missing_or_wrong_signature_is_403_and_nothing_is_stored(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    path: str,
    form: dict[str, str],
) -> None:
    before = patient_view(enrolled.client)
    for name, forge in FORGED.items():
        answer = forge(twilio, path, form)
        assert answer.status_code == 403, (name, answer.data)
        assert twiml(answer) == [], name
        assert patient_view(enrolled.client) == before, name  # a forged STOP opts nobody out
        assert count(engine, Reply) == 0, name
        assert count(engine, StatusCallback) == 0, name
        assert count(engine, ConsentChange) == 1, name
    # The genuine request afterwards is processed as the first of its kind.
    assert twilio.post(path, form).status_code in (200, 204)
    assert count(engine, Reply) + count(engine, StatusCallback) + count(engine, ConsentChange) == 2


def test_behind_a_tls_proxy_the_public_base_url_is_what_is_validated(
    settings: Settings, engine: Any, build_app: Callable[..., Any], enrolled: BookingSystem
) -> None:
    client = build_app(dataclasses.replace(settings, public_base_url=PUBLIC), engine)
    proxied = TwilioWebhooks(client)  # the test client posts to http://localhost
    answer = proxied.inbound("Is redness normal?", sid="SM" + "a" * 32, signed_url=PUBLIC + INBOUND)
    assert answer.status_code == 200, answer.data
    assert [r["body"] for r in staff_replies(client)] == ["Is redness normal?"]

    # What the app sees internally is not what Twilio signed: refused.
    internal = proxied.inbound("Hello?", sid="SM" + "b" * 32)
    assert internal.status_code == 403
    assert len(staff_replies(client)) == 1

    # Twilio's validator accepts the explicit default port too.
    with_port = proxied.inbound(
        "And itching?", sid="SM" + "c" * 32, signed_url="https://care.example.org:443" + INBOUND
    )
    assert with_port.status_code == 200


def test_behind_a_proxy_the_query_string_is_part_of_the_signed_url(
    settings: Settings, engine: Any, build_app: Callable[..., Any]
) -> None:
    client = build_app(dataclasses.replace(settings, public_base_url=PUBLIC), engine)
    proxied = TwilioWebhooks(client)
    params = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "sent"}
    signed = proxied.post(STATUS + "?x=1", params, signed_url=PUBLIC + STATUS + "?x=1")
    assert signed.status_code == 204
    without_query = proxied.post(STATUS + "?x=1", params, signed_url=PUBLIC + STATUS)
    assert without_query.status_code == 403
    encoded = "?clinic=Sk%C3%AFn%20Clinic&next=%2Fhome"
    percent = proxied.post(STATUS + encoded, params, signed_url=PUBLIC + STATUS + encoded)
    assert percent.status_code == 204


def test_without_a_public_base_url_the_request_url_and_its_query_are_validated(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    params = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "sent"}
    assert twilio.post(STATUS + "?x=1", params).status_code == 204
    unsigned_query = twilio.post(STATUS + "?x=1", params, signed_url="http://localhost" + STATUS)
    assert unsigned_query.status_code == 403
    assert count(engine, StatusCallback) == 1


def test_without_a_public_base_url_a_percent_encoded_query_is_validated_as_sent(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    params = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "sent"}
    answer = twilio.post(STATUS + "?clinic=Sk%C3%AFn%20Clinic&next=%2Fhome", params)
    assert answer.status_code == 204


def test_without_twilio_configured_both_webhooks_answer_503_and_store_nothing(
    settings: Settings, engine: Any, build_app: Callable[..., Any], enrolled: BookingSystem
) -> None:
    client = build_app(dataclasses.replace(settings, twilio=None), engine)
    webhooks = TwilioWebhooks(client)
    inbound = webhooks.inbound("STOP")
    status = webhooks.status("SM" + "1" * 32, "delivered")
    assert (inbound.status_code, status.status_code) == (503, 503)
    assert patient_view(client)["opted_out"] is False
    assert count(engine, StatusCallback) == 0
    assert count(engine, Reply) == 0
