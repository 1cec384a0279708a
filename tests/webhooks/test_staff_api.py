"""The staff API and the health check (SPEC §9)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine

from notifier.delivery.sender import RecipientOptedOut
from notifier.settings import Settings, StaffToken
from tests.conftest import (
    PHONE,
    STAFF,
    STAFF_TOKEN,
    START,
    BookingSystem,
    Clock,
    TwilioWebhooks,
    completed_event,
)

PATIENT_KEYS = {
    "id",
    "phone",
    "channel",
    "language",
    "timezone",
    "opted_out",
    "messages",
    "replies",
    "consent_log",
}
MESSAGE_KEYS = {"step", "send_at", "status", "channel", "sid", "error_code", "body"}
TRIAGE_KEYS = {"urgent", "category", "signs"}  # "media" too, for a reply with photos
REPLY_KEYS = {"received_at", "body", "sid", "handled", "handled_by", "handled_at", *TRIAGE_KEYS}
LISTED_REPLY_KEYS = {"sid", "patient_id", "from", "received_at", "body", "handled", *TRIAGE_KEYS}
CONSENT_KEYS = {"at", "consented", "source", "by"}


def get_patient(client: Any, headers: dict[str, str] | None, patient_id: str = "P-1001") -> Any:
    return client.get(f"/api/patients/{patient_id}", headers=headers or {})


# -- authentication ----------------------------------------------------------------------------


REFUSED: dict[str, dict[str, str]] = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer wrong-token-0123456789"},
    "token plus one": {"Authorization": f"Bearer {STAFF_TOKEN}x"},
    "token prefix": {"Authorization": f"Bearer {STAFF_TOKEN[:-1]}"},
    "empty token": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": f"Basic {STAFF_TOKEN}"},
    "token scheme": {"Authorization": f"Token {STAFF_TOKEN}"},
    "no scheme": {"Authorization": STAFF_TOKEN},
    "non-ascii": {"Authorization": "Bearer t\u00e9l\u00e9phone"},
}


def test_the_staff_api_needs_a_configured_bearer_token(enrolled: BookingSystem) -> None:
    for name, headers in REFUSED.items():
        answer = get_patient(enrolled.client, headers)
        assert answer.status_code == 401, name
        assert answer.is_json, name
        assert "phone" not in answer.get_json(), name
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), name


def test_the_bearer_scheme_is_case_insensitive(enrolled: BookingSystem) -> None:
    answer = get_patient(enrolled.client, {"Authorization": f"bearer {STAFF_TOKEN}"})
    assert answer.status_code == 200


def test_any_of_several_configured_tokens_is_accepted(
    settings: Settings, engine: Any, build_app: Callable[..., Any]
) -> None:
    other = "second-token-abcdefghijk"
    client = build_app(
        dataclasses.replace(
            settings, staff_api_tokens=(StaffToken("a", STAFF_TOKEN), StaffToken("b", other))
        ),
        engine,
    )
    assert get_patient(client, {"Authorization": f"Bearer {other}"}).status_code == 404
    assert get_patient(client, {"Authorization": f"Bearer {STAFF_TOKEN}"}).status_code == 404


def test_the_staff_api_answers_503_when_no_tokens_are_configured(
    settings: Settings, engine: Any, build_app: Callable[..., Any]
) -> None:
    client = build_app(dataclasses.replace(settings, staff_api_tokens=()), engine)
    for headers in (None, {"Authorization": f"Bearer {STAFF_TOKEN}"}, {"Authorization": "Bearer "}):
        answer = get_patient(client, headers)
        assert answer.status_code == 503
        assert "STAFF_API_TOKENS" in answer.get_json()["error"]


# -- the patient view ------------------------------------------------------------------------


def test_an_unknown_patient_is_404(client: Any, staff_headers: dict[str, str]) -> None:
    answer = get_patient(client, staff_headers, "P-404")
    assert answer.status_code == 404
    assert answer.is_json


def test_a_patient_shows_details_messages_and_consent_log(
    enrolled: BookingSystem, staff_headers: dict[str, str]
) -> None:
    answer = get_patient(enrolled.client, staff_headers)
    assert answer.status_code == 200
    patient = answer.get_json()

    assert set(patient) >= PATIENT_KEYS
    assert patient["id"] == "P-1001"
    assert (patient["phone"], patient["channel"], patient["language"], patient["timezone"]) == (
        "+971501234567",
        "sms",
        "en",
        "Asia/Dubai",
    )
    assert patient["opted_out"] is False

    messages = patient["messages"]
    assert len(messages) == 11
    for message in messages:
        assert set(message) >= MESSAGE_KEYS
        assert message["status"] == "scheduled"
        assert message["channel"] == "sms"
        assert message["sid"] is None
        assert message["error_code"] is None
        assert message["send_at"].endswith("Z")
        assert "Skin Clinic" in message["body"]  # rendered with the clinic's name ...
        assert "Omar" in message["body"]  # ... and the patient's
    assert messages[0]["step"] == "after_treatment"
    assert messages[0]["send_at"] == "2027-03-01T07:00:00Z"
    assert messages[-1]["step"] == "yearly_checkup"
    assert messages[-1]["send_at"] == "2028-03-01T06:00:00Z"

    assert patient["consent_log"] == [
        {"at": "2027-03-01T06:00:00Z", "consented": True, "source": "booking", "by": None}
    ]
    for change in patient["consent_log"]:
        assert set(change) >= CONSENT_KEYS


def test_messages_are_ordered_by_send_time(
    enrolled: BookingSystem, staff_headers: dict[str, str]
) -> None:
    # Re-plan the treatment a day earlier: the newer rows go out before some older ones,
    # so an order by insertion would not be an order by time.
    event = completed_event("evt_0002", performed_at=START - timedelta(days=1))
    assert enrolled.post(event).status_code == 200
    messages = get_patient(enrolled.client, staff_headers).get_json()["messages"]
    times = [datetime.fromisoformat(m["send_at"]) for m in messages]
    assert len(times) == 22
    assert times == sorted(times)
    assert {m["status"] for m in messages} == {"scheduled", "cancelled"}


def test_every_timestamp_is_utc(
    enrolled: BookingSystem, staff_headers: dict[str, str], clock: Clock
) -> None:
    clock.advance(days=2)
    enrolled.post(
        completed_event(
            "evt_0002",
            patient={"consent": False},
            treatment={"id": "T-556"},
            performed_at=clock.now,
        )
    )
    patient = get_patient(enrolled.client, staff_headers).get_json()
    stamps = [m["send_at"] for m in patient["messages"]] + [c["at"] for c in patient["consent_log"]]
    assert stamps
    for stamp in stamps:
        assert stamp.endswith("Z")
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert [c["consented"] for c in patient["consent_log"]] == [True, False]


def test_a_patient_shows_their_replies(
    enrolled: BookingSystem, staff_headers: dict[str, str], twilio: TwilioWebhooks, clock: Clock
) -> None:
    assert get_patient(enrolled.client, staff_headers).get_json()["replies"] == []
    twilio.inbound("Is redness normal?", sid="SM" + "1" * 32)
    clock.advance(hours=2)
    twilio.inbound("It's gone now, thanks", sid="SM" + "2" * 32)
    twilio.inbound("Not from Omar", sender="+971509999999", sid="SM" + "3" * 32)
    replies = get_patient(enrolled.client, staff_headers).get_json()["replies"]
    assert replies == [
        {
            "received_at": "2027-03-01T08:00:00Z",
            "body": "It's gone now, thanks",
            "sid": "SM" + "2" * 32,
            "handled": False,
            "handled_by": None,
            "handled_at": None,
            "urgent": False,
            "category": "thanks",
            "signs": [],
        },
        {
            "received_at": "2027-03-01T06:00:00Z",
            "body": "Is redness normal?",
            "sid": "SM" + "1" * 32,
            "handled": False,
            "handled_by": None,
            "handled_at": None,
            "urgent": True,
            "category": "urgent",
            "signs": ["redness"],
        },
    ]
    for reply in replies:
        assert set(reply) >= REPLY_KEYS


# -- replies --------------------------------------------------------------------------------


def list_replies(client: Any, query: str = "?handled=false") -> Any:
    return client.get(f"/api/replies{query}", headers=STAFF)


def reply_sids(client: Any, query: str = "?handled=false") -> list[str]:
    answer = list_replies(client, query)
    assert answer.status_code == 200, answer.data
    return [r["sid"] for r in answer.get_json()["replies"]]


@pytest.fixture
def three_replies(enrolled: BookingSystem, twilio: TwilioWebhooks, clock: Clock) -> list[str]:
    """Replies at 10:00, 10:30 and 11:00 Dubai time; the last from an unknown number."""
    sids = ["SM" + str(n) * 32 for n in (1, 2, 3)]
    for n, sid in enumerate(sids):
        sender = "+971509999999" if n == 2 else PHONE
        assert twilio.inbound(f"reply {n}", sid=sid, sender=sender).status_code == 200
        clock.advance(minutes=30)
    return sids


def test_replies_needing_attention_are_listed_newest_first(
    enrolled: BookingSystem, three_replies: list[str]
) -> None:
    answer = list_replies(enrolled.client)
    assert answer.status_code == 200
    replies = answer.get_json()["replies"]
    assert [r["sid"] for r in replies] == three_replies[::-1]
    for reply in replies:
        assert set(reply) == LISTED_REPLY_KEYS
        assert reply["received_at"].endswith("Z")
        assert reply["handled"] is False
    assert [(r["patient_id"], r["from"], r["body"]) for r in replies] == [
        (None, "+971509999999", "reply 2"),
        ("P-1001", PHONE, "reply 1"),
        ("P-1001", PHONE, "reply 0"),
    ]
    assert [r["received_at"] for r in replies] == [
        "2027-03-01T07:00:00Z",
        "2027-03-01T06:30:00Z",
        "2027-03-01T06:00:00Z",
    ]


def test_replies_at_the_same_moment_are_listed_latest_received_first(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    for n in range(3):
        twilio.inbound(f"reply {n}", sid=f"SM{n:032d}")
    assert reply_sids(enrolled.client) == [f"SM{n:032d}" for n in (2, 1, 0)]


def test_a_reply_marked_handled_leaves_the_list_needing_attention(
    enrolled: BookingSystem, three_replies: list[str], staff_headers: dict[str, str]
) -> None:
    answer = enrolled.client.post(f"/api/replies/{three_replies[1]}/handled", headers=staff_headers)
    assert answer.status_code == 200
    assert answer.get_json() == {
        "sid": three_replies[1],
        "handled": True,
        "handled_by": "reception",
        "handled_at": "2027-03-01T07:30:00Z",
    }
    assert reply_sids(enrolled.client) == [three_replies[2], three_replies[0]]
    assert reply_sids(enrolled.client, "?handled=true") == [three_replies[1]]
    assert reply_sids(enrolled.client, "") == three_replies[::-1]
    patient = get_patient(enrolled.client, staff_headers).get_json()
    assert [r["handled"] for r in patient["replies"]] == [True, False]
    # Marking it again changes nothing.
    again = enrolled.client.post(f"/api/replies/{three_replies[1]}/handled", headers=staff_headers)
    assert again.status_code == 200
    assert reply_sids(enrolled.client, "?handled=true") == [three_replies[1]]


def test_marking_an_unknown_reply_handled_is_404(
    enrolled: BookingSystem, three_replies: list[str], staff_headers: dict[str, str]
) -> None:
    answer = enrolled.client.post("/api/replies/SM404/handled", headers=staff_headers)
    assert answer.status_code == 404
    assert answer.is_json
    assert reply_sids(enrolled.client) == three_replies[::-1]


@pytest.mark.parametrize("query", ["?handled=maybe", "?handled=", "?handled=False", "?handled=1"])
def test_a_bad_handled_filter_is_400(enrolled: BookingSystem, query: str) -> None:
    answer = list_replies(enrolled.client, query)
    assert answer.status_code == 400
    assert "handled" in answer.get_json()["error"]


@pytest.mark.parametrize("limit", ["0", "-1", "501", "ten", "1.5", "\u0663"])
def test_a_bad_limit_is_400(enrolled: BookingSystem, limit: str) -> None:
    assert list_replies(enrolled.client, f"?limit={limit}").status_code == 400


def test_the_limit_keeps_the_newest(enrolled: BookingSystem, three_replies: list[str]) -> None:
    assert reply_sids(enrolled.client, "?handled=false&limit=2") == three_replies[:0:-1]


# -- consent by staff ------------------------------------------------------------------------


def set_consent(client: Any, patient_id: str = "P-1001", **request: Any) -> Any:
    """POST /api/patients/<id>/consent; `request` is the test client's json= or data=."""
    headers = {"Authorization": f"Bearer {STAFF_TOKEN}"}
    return client.post(f"/api/patients/{patient_id}/consent", headers=headers, **request)


def test_staff_can_opt_a_patient_out_and_in_again_and_it_is_logged(
    enrolled: BookingSystem, staff_headers: dict[str, str], clock: Clock
) -> None:
    clock.advance(minutes=10)
    answer = set_consent(enrolled.client, json={"opted_out": True})
    assert answer.status_code == 200
    assert answer.get_json() == {"id": "P-1001", "opted_out": True}
    patient = get_patient(enrolled.client, staff_headers).get_json()
    assert patient["opted_out"] is True
    assert {m["status"] for m in patient["messages"]} == {"held"}

    clock.now = datetime(2027, 3, 1, 19, 0, tzinfo=UTC)  # 23:00 in Dubai: every window shut
    answer = set_consent(enrolled.client, json={"opted_out": False})
    assert answer.get_json() == {"id": "P-1001", "opted_out": False}
    patient = get_patient(enrolled.client, staff_headers).get_json()
    assert patient["opted_out"] is False
    after = next(m for m in patient["messages"] if m["step"] == "after_treatment")
    assert (after["status"], after["send_at"]) == ("scheduled", "2027-03-02T04:00:00Z")  # 08:00
    assert {m["status"] for m in patient["messages"]} == {"scheduled"}
    assert patient["consent_log"] == [
        {"at": "2027-03-01T06:00:00Z", "consented": True, "source": "booking", "by": None},
        {"at": "2027-03-01T06:10:00Z", "consented": False, "source": "staff", "by": "reception"},
        {"at": "2027-03-01T19:00:00Z", "consented": True, "source": "staff", "by": "reception"},
    ]


def test_staff_opting_out_twice_is_logged_once(
    enrolled: BookingSystem, staff_headers: dict[str, str]
) -> None:
    assert set_consent(enrolled.client, json={"opted_out": True}).status_code == 200
    assert set_consent(enrolled.client, json={"opted_out": True}).status_code == 200
    log = get_patient(enrolled.client, staff_headers).get_json()["consent_log"]
    assert [c["source"] for c in log] == ["booking", "staff"]


@pytest.mark.parametrize("how", ["keyword", "twilio"])
def test_staff_cannot_lift_an_opt_out_the_patient_made_themselves(
    enrolled: BookingSystem, staff_headers: dict[str, str], twilio: TwilioWebhooks, how: str
) -> None:
    if how == "keyword":
        twilio.inbound("STOP")
    else:
        twilio.inbound("STOP", opt_out_type="STOP")  # Twilio's own STOP handling
    answer = set_consent(enrolled.client, json={"opted_out": False})
    assert answer.status_code == 409
    assert "texting START" in answer.get_json()["error"]
    patient = get_patient(enrolled.client, staff_headers).get_json()
    assert patient["opted_out"] is True
    assert [(c["consented"], c["source"]) for c in patient["consent_log"]] == [
        (True, "booking"),
        (False, "keyword"),
    ]
    twilio.inbound("START")  # only the patient lifts it
    assert get_patient(enrolled.client, staff_headers).get_json()["opted_out"] is False


def test_staff_cannot_lift_an_opt_out_twilio_reported(
    enrolled: BookingSystem, staff_headers: dict[str, str], dispatcher: Any, sender: Any
) -> None:
    sender.fail_next(RecipientOptedOut("Twilio answered 400 (error 21610)", code=21610))
    dispatcher.run_pass(START + timedelta(hours=1))
    assert get_patient(enrolled.client, staff_headers).get_json()["opted_out"] is True

    answer = set_consent(enrolled.client, json={"opted_out": False})

    assert answer.status_code == 409
    assert get_patient(enrolled.client, staff_headers).get_json()["opted_out"] is True


def test_staff_can_lift_an_opt_out_staff_recorded_after_the_patients_start(
    enrolled: BookingSystem, staff_headers: dict[str, str], twilio: TwilioWebhooks
) -> None:
    twilio.inbound("STOP")
    twilio.inbound("START")
    assert set_consent(enrolled.client, json={"opted_out": True}).status_code == 200
    assert set_consent(enrolled.client, json={"opted_out": False}).status_code == 200
    log = get_patient(enrolled.client, staff_headers).get_json()["consent_log"]
    assert [(c["source"], c["by"]) for c in log] == [
        ("booking", None),
        ("keyword", None),
        ("keyword", None),
        ("staff", "reception"),
        ("staff", "reception"),
    ]


def test_every_staff_change_records_the_tokens_name(
    settings: Settings,
    engine: Any,
    build_app: Callable[..., Any],
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    clock: Clock,
) -> None:
    tokens = (StaffToken("amira", "amira-token-0123456789"), StaffToken("token-2", STAFF_TOKEN))
    client = build_app(dataclasses.replace(settings, staff_api_tokens=tokens), engine)
    amira = {"Authorization": "Bearer amira-token-0123456789"}
    twilio.inbound("Is this normal?", sid="SM" + "1" * 32)
    clock.advance(minutes=5)

    handled = client.post(f"/api/replies/SM{'1' * 32}/handled", headers=amira)
    again = client.post(
        f"/api/replies/SM{'1' * 32}/handled", headers={"Authorization": f"Bearer {STAFF_TOKEN}"}
    )
    client.post("/api/patients/P-1001/consent", headers=amira, json={"opted_out": True})

    assert handled.get_json()["handled_by"] == again.get_json()["handled_by"] == "amira"
    assert again.get_json()["handled_at"] == "2027-03-01T06:05:00Z"  # the first one's
    patient = get_patient(client, amira).get_json()
    assert patient["replies"][0]["handled_by"] == "amira"
    assert patient["consent_log"][-1]["by"] == "amira"


BAD_CONSENT_BODIES: dict[str, dict[str, Any]] = {
    "empty object": {"json": {}},
    "string": {"json": {"opted_out": "true"}},
    "number": {"json": {"opted_out": 1}},
    "null": {"json": {"opted_out": None}},
    "other key": {"json": {"opted_in": True}},
    "list": {"json": [{"opted_out": True}]},
    "bare true": {"json": True},
    "not json": {"data": b"opted_out=true", "content_type": "application/x-www-form-urlencoded"},
    "malformed json": {"data": b'{"opted_out": tru', "content_type": "application/json"},
    "no body": {"data": b""},
}


@pytest.mark.parametrize("bad", list(BAD_CONSENT_BODIES))
def test_a_bad_consent_body_is_422_and_changes_nothing(
    enrolled: BookingSystem, staff_headers: dict[str, str], bad: str
) -> None:
    before = get_patient(enrolled.client, staff_headers).get_json()
    answer = set_consent(enrolled.client, **BAD_CONSENT_BODIES[bad])
    assert answer.status_code == 422, answer.data
    assert [e["field"] for e in answer.get_json()["errors"]] == ["opted_out"]
    assert get_patient(enrolled.client, staff_headers).get_json() == before


def test_consent_for_an_unknown_patient_is_404(enrolled: BookingSystem) -> None:
    answer = set_consent(enrolled.client, "P-404", json={"opted_out": True})
    assert answer.status_code == 404
    assert answer.is_json


# -- the new endpoints need a token too ---------------------------------------------------------


NEW_ENDPOINTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "list replies": ("GET", "/api/replies?handled=false", {}),
    "mark handled": ("POST", "/api/replies/SM" + "1" * 32 + "/handled", {}),
    "set consent": ("POST", "/api/patients/P-1001/consent", {"json": {"opted_out": True}}),
}


@pytest.mark.parametrize("endpoint", list(NEW_ENDPOINTS))
def test_the_reply_and_consent_endpoints_refuse_a_missing_or_wrong_token(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    staff_headers: dict[str, str],
    endpoint: str,
) -> None:
    twilio.inbound("Private question", sid="SM" + "1" * 32)
    before = get_patient(enrolled.client, staff_headers).get_json()
    method, path, kwargs = NEW_ENDPOINTS[endpoint]
    for name, headers in REFUSED.items():
        answer = enrolled.client.open(path, method=method, headers=headers, **kwargs)
        assert answer.status_code == 401, (name, answer.data)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert "Private question" not in answer.get_data(as_text=True), name
    assert get_patient(enrolled.client, staff_headers).get_json() == before


@pytest.mark.parametrize("endpoint", list(NEW_ENDPOINTS))
def test_the_reply_and_consent_endpoints_answer_503_without_configured_tokens(
    settings: Settings, engine: Any, build_app: Callable[..., Any], endpoint: str
) -> None:
    client = build_app(dataclasses.replace(settings, staff_api_tokens=()), engine)
    method, path, kwargs = NEW_ENDPOINTS[endpoint]
    answer = client.open(
        path, method=method, headers={"Authorization": f"Bearer {STAFF_TOKEN}"}, **kwargs
    )
    assert answer.status_code == 503


# -- health ------------------------------------------------------------------------------------


def test_healthz_is_ok_without_a_token(client: Any) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok"}


def test_healthz_is_503_when_the_database_is_unreachable(
    build_app: Callable[..., Any],
) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/aftercare"
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    client = build_app(Settings(database_url=url), engine)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["status"] != "ok"
