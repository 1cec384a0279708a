"""GET /api/openapi.json (SPEC §12): a valid OpenAPI 3.1 document, and the app's real
answers (every documented status of every operation) match it."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIResponse
from openapi_core.testing import MockRequest
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from sqlmodel import Session, select

from notifier.delivery import twilio_media
from notifier.settings import Settings
from notifier.signature import sign
from notifier.store.db import make_engine
from notifier.store.models import Event
from tests.conftest import (
    PHONE,
    SECRET,
    STAFF,
    START,
    TWILIO_SID,
    TWILIO_TOKEN,
    BookingSystem,
    Clock,
    TwilioWebhooks,
    completed_event,
)
from tests.support.fake_twilio import PHOTO, FakeTwilio
from tests.support.rows import rows, run_pass
from webhooks.openapi import DOCUMENT, document

DOC = document()
API = OpenAPI.from_dict(DOC)
BOOKING = "post /webhooks/booking"
METHODS = ("get", "post", "put", "patch", "delete")


def operations() -> dict[str, set[int]]:
    """'method /path' of each documented operation -> its documented statuses."""
    return {
        f"{method} {path}": {int(status) for status in operation["responses"]}
        for path, item in DOC["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


class Answers:
    """Checks each answer against the document and notes which statuses were seen."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = defaultdict(set)

    def __call__(
        self, operation: str, answer: Any, *, valid_request: bool = False, body: bytes = b""
    ) -> Any:
        sent = answer.request  # its body was read by the app: `body` says what it was
        request = MockRequest(
            sent.host_url,
            sent.method,
            sent.path,
            args=sent.args,
            headers=dict(sent.headers),
            data=body,
            content_type=sent.content_type or "application/octet-stream",
        )
        API.validate_response(request, WerkzeugOpenAPIResponse(answer))
        if valid_request:  # a request the document describes (signed, with a token, ...)
            API.validate_request(request)
        self.seen[operation].add(answer.status_code)
        return answer

    def assert_every_documented_status_seen(self, *names: str) -> None:
        documented = operations()
        for name in names:
            assert self.seen[name] == documented[name], name


@pytest.fixture
def answers() -> Answers:
    return Answers()


# -- the document --------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    OpenAPIV31SpecValidator(DOC).validate()
    assert DOC["openapi"].startswith("3.1.")
    assert set(DOC["webhooks"]) == {
        "message.status_changed",
        "patient.opted_out",
        "patient.opted_in",
        "reply.received",
        "reply.urgent",
    }


def test_the_document_is_served_as_json_without_a_token(client: Any) -> None:
    answer = client.get("/api/openapi.json")
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.get_json() == yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert list(answer.get_json()) == list(DOC)  # in the file's order, not sorted


def test_every_route_of_the_api_is_documented(app: Any) -> None:
    """The booking webhook, the staff API and health: every route the app serves there
    (parameter names aside)."""
    served = {
        f"{method.lower()} {re.sub('<[^>]*>', '{}', rule.rule)}"
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(("/api/", "/webhooks/booking", "/healthz"))
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == {re.sub("{[^}]*}", "{}", name) for name in operations()}


def _examples(node: Any, at: str = "#") -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) of every example of a media type in the document."""
    if isinstance(node, dict):
        if "schema" in node and ("example" in node or "examples" in node):
            examples = [node["example"]] if "example" in node else []
            examples += [e["value"] for e in node.get("examples", {}).values()]
            for example in examples:
                yield at, node["schema"], example
        for key, value in node.items():
            yield from _examples(value, f"{at}/{key}")


EXAMPLES = list(_examples(DOC))
ROOT = "urn:aftercare:openapi"


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) for `schema`, whose
    `#/...` references point into the document."""
    document = Resource.from_contents(
        {**DOC, "$schema": "https://json-schema.org/draft/2020-12/schema"}
    )
    registry: Registry[Any] = Registry().with_resource(ROOT, document)
    schema = json.loads(json.dumps(schema).replace('"#/', f'"{ROOT}#/'))
    return Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize(("where", "schema", "example"), EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_every_example_matches_its_schema(where: str, schema: dict[str, Any], example: Any) -> None:
    _validator(schema).validate(example)


def test_the_examples_cover_each_booking_event_type_and_each_outbound_event() -> None:
    booking = DOC["paths"]["/webhooks/booking"]["post"]["requestBody"]["content"]
    types = {e["value"]["type"] for e in booking["application/json"]["examples"].values()}
    assert types == {
        "treatment.completed",
        "treatment.cancelled",
        "patient.updated",
        "patient.erased",
    }
    assert len(EXAMPLES) >= 10


# -- the booking webhook's answers ------------------------------------------------------


def test_every_answer_of_the_booking_webhook_matches_the_document(
    booking: BookingSystem,
    clock: Clock,
    settings: Settings,
    build_app: Callable[..., Any],
    answers: Answers,
) -> None:
    def post(event: dict[str, Any]) -> Any:
        body = json.dumps(event).encode()
        return answers(BOOKING, booking.post(body), valid_request=True, body=body)

    first = post(completed_event())
    assert first.status_code == 201
    assert post(completed_event()).status_code == 200  # a replay
    refused = post(
        completed_event("evt_no", patient={"id": "P-2", "consent": False}, treatment={"id": "T-2"})
    )
    assert refused.status_code == 200
    assert refused.get_json()["reason"]
    moved = completed_event("evt_moved", treatment={"id": "T-555"}, patient={"id": "P-9"})
    assert post(moved).status_code == 409  # a treatment of another patient
    assert post({**completed_event(), "type": "patient.erased"}).status_code == 409  # reused id
    for event in (
        {"id": "evt_c1", "type": "treatment.cancelled", "treatment": {"id": "T-555"}},
        {"id": "evt_c2", "type": "treatment.cancelled", "treatment": {"id": "T-none"}},
        {"id": "evt_u1", "type": "patient.updated", "patient": {"id": "P-1001", "language": "ar"}},
        {"id": "evt_u2", "type": "patient.updated", "patient": {"id": "P-none"}},
        {"id": "evt_e1", "type": "patient.erased", "patient": {"id": "P-1001"}},
        {"id": "evt_e2", "type": "patient.erased", "patient": {"id": "P-1001"}},
    ):
        assert post(event).status_code == 200, event
    assert post(completed_event()).get_json() == {"erased": True}  # replayed after erasure

    bad = completed_event("evt_bad", patient={"phone": "12345"}, treatment={"kind": "nope"})
    assert answers(BOOKING, booking.post(bad)).status_code == 422
    assert answers(BOOKING, booking.post(b"[1, 2]")).status_code == 422
    assert answers(BOOKING, booking.post(b"{not json")).status_code == 400
    assert (
        answers(BOOKING, booking.post(completed_event(), signature="t=1,v1=00")).status_code == 401
    )
    assert answers(BOOKING, booking.post(b"{}", content_type="text/plain")).status_code == 415
    huge = json.dumps({"id": "evt_big", "padding": "x" * 70_000}).encode()
    assert answers(BOOKING, booking.post(huge)).status_code == 413

    unconfigured = build_app(replace(settings, booking_webhook_secret=None))
    assert (
        answers(BOOKING, BookingSystem(unconfigured, clock).post(completed_event())).status_code
        == 503
    )
    broken = build_app(settings, make_engine("sqlite:////nonexistent/directory/db.sqlite3"))
    unreachable = answers(BOOKING, BookingSystem(broken, clock).post(completed_event("evt_x")))
    assert unreachable.status_code == 503
    assert unreachable.headers["Retry-After"] == "5"
    answers.assert_every_documented_status_seen(BOOKING)


def test_a_signed_request_as_the_document_describes_it_is_accepted(client: Any) -> None:
    """The document's own example, signed as its security scheme says."""
    body = json.dumps(
        DOC["paths"]["/webhooks/booking"]["post"]["requestBody"]["content"]["application/json"][
            "examples"
        ]["completed"]["value"]
    ).encode()
    header = DOC["components"]["securitySchemes"]["bookingSignature"]["name"]
    answer = client.post(
        "/webhooks/booking",
        data=body,
        headers={header: sign(SECRET, body, int(START.timestamp()))},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.get_json()


# -- the staff API and health ------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TWILIO_TOKEN) as server:
        yield server


def test_every_answer_of_the_staff_api_and_health_matches_the_document(
    settings: Settings,
    engine: Any,
    clock: Clock,
    fake: FakeTwilio,
    build_app: Callable[..., Any],
    answers: Answers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.twilio is not None
    configured = replace(
        settings, twilio=replace(settings.twilio, api_base_url=fake.base_url, timeout_seconds=5.0)
    )
    api = build_app(configured, engine)
    assert BookingSystem(api, clock).post(completed_event()).status_code == 201
    twilio = TwilioWebhooks(api)
    photo = inbound(twilio, fake, "my scalp is bleeding", "image/jpeg")
    voice = inbound(twilio, fake, "", "audio/ogg")
    assert twilio.inbound("thank you!").status_code == 200

    def call(operation: str, path: str, **options: Any) -> Any:
        method = operation.split()[0]
        headers, invalid = options.pop("headers", STAFF), options.pop("invalid", False)
        answer = getattr(api, method)(path, headers=headers, **options)
        body = json.dumps(options["json"]).encode() if "json" in options else b""
        return answers(operation, answer, valid_request=headers == STAFF and not invalid, body=body)

    patient = "get /api/patients/{patient_id}"
    view = call(patient, "/api/patients/P-1001")
    assert view.status_code == 200
    assert any(r.get("media") for r in view.get_json()["replies"])
    assert call(patient, "/api/patients/P-none").status_code == 404
    assert call(patient, "/api/patients/P-1001", headers={}).status_code == 401
    assert call(patient, "/api/patients/P%00").status_code == 400

    listing = "get /api/replies"
    replies = call(listing, "/api/replies?handled=false").get_json()["replies"]
    assert [r["urgent"] for r in replies][:1] == [True]
    assert call(listing, "/api/replies?urgent=true&limit=5").status_code == 200
    assert call(listing, "/api/replies?limit=0", invalid=True).status_code == 400
    assert (
        call(listing, "/api/replies", headers={"Authorization": "Bearer nope"}).status_code == 401
    )

    media = "get /api/replies/{sid}/media/{n}"
    assert call(media, f"/api/replies/{photo}/media/0").data == PHOTO
    assert call(media, f"/api/replies/{photo}/media/7").status_code == 404
    assert call(media, f"/api/replies/{photo}/media/{2**31}").status_code == 404  # no INTEGER
    assert call(media, f"/api/replies/{voice}/media/0").status_code == 415
    assert call(media, f"/api/replies/{photo}/media/0", headers={}).status_code == 401
    assert call(media, "/api/replies/SM%00/media/0").status_code == 400
    monkeypatch.setattr(twilio_media, "MAX_MEDIA_BYTES", len(PHOTO) - 1)
    assert call(media, f"/api/replies/{photo}/media/0").status_code == 413
    monkeypatch.undo()
    nowhere = f"{settings.twilio.api_base_url}/2010-04-01/Accounts/{TWILIO_SID}/Media/ME1"
    lost = inbound(twilio, fake, "", "image/png", url=nowhere)
    unreachable = build_app(settings, engine)  # its Twilio refuses connections
    answer = unreachable.get(f"/api/replies/{lost}/media/0", headers=STAFF)
    assert answers(media, answer, valid_request=True).status_code == 502
    no_twilio = build_app(replace(settings, twilio=None), engine)
    assert (
        answers(media, no_twilio.get(f"/api/replies/{photo}/media/0", headers=STAFF)).status_code
        == 503
    )

    handled = "post /api/replies/{sid}/handled"
    assert call(handled, f"/api/replies/{photo}/handled").get_json()["handled"] is True
    assert call(handled, "/api/replies/SMnone/handled").status_code == 404
    assert call(handled, f"/api/replies/{photo}/handled", headers={}).status_code == 401
    assert call(handled, "/api/replies/%00/handled").status_code == 400

    consent = "post /api/patients/{patient_id}/consent"
    assert (
        call(consent, "/api/patients/P-1001/consent", json={"opted_out": False}).status_code == 200
    )
    assert (
        call(consent, "/api/patients/P-none/consent", json={"opted_out": True}).status_code == 404
    )
    assert (
        call(
            consent, "/api/patients/P-1001/consent", json={"opted_out": "no"}, invalid=True
        ).status_code
        == 422
    )
    assert twilio.inbound("STOP").status_code == 200
    assert (
        call(consent, "/api/patients/P-1001/consent", json={"opted_out": False}).status_code == 409
    )
    assert call(consent, "/api/patients/P-1001/consent", headers={}, json={}).status_code == 401
    assert call(consent, "/api/patients/%00/consent", json={}, invalid=True).status_code == 400

    erasure = "get /api/erasures/{erasure_id}"
    erased = BookingSystem(api, clock).post(
        {"id": "evt_erase", "type": "patient.erased", "patient": {"id": "P-1001"}}
    )
    erasure_id = erased.get_json()["erasure_id"]
    assert call(erasure, f"/api/erasures/{erasure_id}").status_code == 200
    assert call(patient, f"/api/patients/{erasure_id}").get_json()["phone"] is None
    assert call(erasure, "/api/erasures/erased-999").status_code == 404
    assert call(erasure, f"/api/erasures/{erasure_id}", headers={}).status_code == 401
    assert call(erasure, "/api/erasures/%00").status_code == 400

    health = "get /healthz"
    assert call(health, "/healthz", headers={}).get_json() == {"status": "ok"}
    description = "get /api/openapi.json"
    assert call(description, "/api/openapi.json", headers={}).status_code == 200

    unconfigured = build_app(replace(settings, staff_api_tokens=(), twilio=None), engine)
    for operation, path in [
        (patient, "/api/patients/P-1001"),
        (listing, "/api/replies"),
        (handled, f"/api/replies/{photo}/handled"),
        (consent, "/api/patients/P-1001/consent"),
        (erasure, f"/api/erasures/{erasure_id}"),
    ]:
        method = operation.split()[0]
        assert answers(operation, getattr(unconfigured, method)(path)).status_code == 503
    broken = build_app(settings, make_engine("sqlite:////nonexistent/directory/db.sqlite3"))
    assert answers(health, broken.get("/healthz")).status_code == 503
    answers.assert_every_documented_status_seen(
        patient, listing, media, handled, consent, erasure, health, description
    )


def inbound(
    twilio: TwilioWebhooks, fake: FakeTwilio, body: str, content_type: str, url: str = ""
) -> str:
    """A reply from the enrolled patient carrying one file (kept by `fake`, unless at
    `url`); its SID."""
    message = fake.add_inbound(PHONE, body, 1)
    params = {
        "MessageSid": message.sid,
        "AccountSid": fake.account_sid,
        "From": PHONE,
        "To": "+14155550100",
        "Body": body,
        "NumMedia": "1",
        "MediaUrl0": url or fake.media_url(message, 0),
        "MediaContentType0": content_type,
    }
    assert twilio.post("/webhooks/twilio/inbound", params).status_code == 200
    return message.sid


# -- the events the service sends ------------------------------------------------------------

EVENT_SCHEMAS = {
    "message.status_changed": "MessageStatusChanged",
    "patient.opted_out": "PatientOptedOut",
    "patient.opted_in": "PatientOptedIn",
    "reply.received": "ReplyReceived",
    "reply.urgent": "ReplyUrgent",
}


def test_every_event_the_service_records_matches_its_webhook_schema(
    booking: BookingSystem,
    twilio: TwilioWebhooks,
    client: Any,
    engine: Any,
    clock: Clock,
    dispatcher: Any,
) -> None:
    """Real events, from real traffic: each payload as it will be posted validates
    against the document's `webhooks` entry of its type."""
    assert booking.post(completed_event()).status_code == 201
    first = run_pass(dispatcher, clock, START + timedelta(hours=1, minutes=1))
    assert first.sent == 1
    [message] = [m for m in rows(engine) if m.sid]
    assert twilio.status(message.sid, "delivered").status_code in (200, 204)
    assert twilio.inbound("my scalp is bleeding and swollen").status_code == 200
    assert twilio.inbound("STOP").status_code == 200
    assert twilio.inbound("START").status_code == 200
    consent = client.post("/api/patients/P-1001/consent", headers=STAFF, json={"opted_out": True})
    assert consent.status_code == 200

    with Session(engine) as session:
        events = [json.loads(e.payload) for e in session.exec(select(Event))]
    assert {e["type"] for e in events} == set(EVENT_SCHEMAS)
    for event in events:
        schema = {"$ref": f"#/components/schemas/{EVENT_SCHEMAS[event['type']]}"}
        _validator(schema).validate(event)
    webhooks = DOC["webhooks"]
    for kind, name in EVENT_SCHEMAS.items():
        body = webhooks[kind]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{name}"}
