"""Twilio's webhooks (SPEC §7): signed inbound messages and delivery status callbacks.

Inbound: STOP/START/HELP keywords change consent exactly as Twilio's own opt-out
handling does, anything else is a reply for staff. Status: a message's status only
moves forward. Both refuse anything not signed by Twilio for the URL it used.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import Session, col, func, select
from twilio.request_validator import RequestValidator

from notifier import create_app
from notifier.consent.keywords import Intent, intent, load_keywords
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import RecipientOptedOut
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store.db import make_engine
from notifier.store.models import ConsentChange, Message, Reply, StatusCallback
from tests.conftest import (
    STAFF_TOKEN,
    START,
    TWILIO_SID,
    BookingSystem,
    Clock,
    RecordingSender,
    TwilioWebhooks,
    completed_event,
    make_settings,
)
from tests.support.rows import row as by_step
from tests.support.rows import rows as messages

DUBAI = ZoneInfo("Asia/Dubai")
PHONE = "+971501234567"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
INBOUND = "/webhooks/twilio/inbound"
STATUS = "/webhooks/twilio/status"
PUBLIC = "https://care.example.org"

STOP_WORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
START_WORDS = ["START", "YES", "UNSTOP"]
HELP_WORDS = ["HELP", "INFO"]
NOT_KEYWORDS = [
    "stop please",
    "please stop",
    "STOP STOP",
    "S T O P",
    "stopp",
    "yes please",
    "help me",
    "Can I wash my scalp tomorrow?",
]


# -- helpers ---------------------------------------------------------------------------------


def dubai(month: int, day: int, hour: int, minute: int = 0, year: int = 2027) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=DUBAI).astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def mixed_case(word: str) -> str:
    """'stop' -> 'sToP': neither upper nor lower case."""
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(word))


def twiml(answer: Any) -> list[str]:
    """The texts of the <Message> elements of a TwiML answer (which must be text/xml)."""
    assert answer.mimetype == "text/xml", (answer.status_code, answer.data)
    root = ET.fromstring(answer.data)  # noqa: S314 - our own answer, not untrusted input
    assert root.tag == "Response"
    return [element.text or "" for element in root.iter("Message")]


def patient_view(client: Any, patient_id: str = "P-1001") -> dict[str, Any]:
    answer = client.get(f"/api/patients/{patient_id}", headers=STAFF)
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def message_view(client: Any, step: str, nth: int = 0) -> dict[str, Any]:
    """The nth message of a step in the staff view (in send order)."""
    found = [m for m in patient_view(client)["messages"] if m["step"] == step]
    return found[nth]


def staff_replies(client: Any, handled: str | None = "false") -> list[dict[str, Any]]:
    query = "" if handled is None else f"?handled={handled}"
    answer = client.get(f"/api/replies{query}", headers=STAFF)
    assert answer.status_code == 200, answer.data
    return answer.get_json()["replies"]


def statuses(engine: Any) -> set[str]:
    return {m.status for m in messages(engine)}


def count(engine: Any, model: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def consent_log(client: Any) -> list[tuple[str, bool, str]]:
    return [(c["at"], c["consented"], c["source"]) for c in patient_view(client)["consent_log"]]


def set_sid(engine: Any, step: str, sid: str, status: str = "queued") -> None:
    """Do what the dispatcher does when Twilio accepts a message: store its SID."""
    with Session(engine) as session:
        session.exec(
            update(Message)
            .where(col(Message.step) == step, col(Message.occurrence) == 0)
            .values(sid=sid, status=status)
        )
        session.commit()


@pytest.fixture
def enrolled(booking: BookingSystem) -> BookingSystem:
    answer = booking.post(completed_event())
    assert answer.status_code == 201, answer.data
    return booking


@pytest.fixture
def build_app(clock: Clock) -> Iterator[Callable[..., Any]]:
    """A test client for another app on the shared clock; its engine is disposed after."""
    engines: list[Any] = []

    def build(settings: Settings, engine: Any = None) -> Any:
        engine = engine or make_engine(settings.database_url)
        engines.append(engine)
        return create_app(settings, engine=engine, clock=clock).test_client()

    yield build
    for engine in engines:
        engine.dispose()


# -- the signature ---------------------------------------------------------------------------


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


# -- keywords ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "opt_out_type", "meaning"),
    [
        *[(f"  {mixed_case(w)}\t\n", None, Intent.STOP) for w in STOP_WORDS],
        *[(w.lower(), None, Intent.STOP) for w in STOP_WORDS],
        *[(f"\n{mixed_case(w)} ", None, Intent.START) for w in START_WORDS],
        *[(w.capitalize(), None, Intent.START) for w in START_WORDS],
        *[(f" {mixed_case(w)} ", None, Intent.HELP) for w in HELP_WORDS],
        *[(body, None, Intent.REPLY) for body in NOT_KEYWORDS],
        ("", None, Intent.REPLY),
        ("hello", "STOP", Intent.STOP),
        ("stop", "START", Intent.START),
        ("start", "STOP", Intent.STOP),
        ("help", "HELP", Intent.HELP),
        ("stop", "HELP", Intent.HELP),
    ],
)
def test_what_an_inbound_text_means(body: str, opt_out_type: str | None, meaning: Intent) -> None:
    settings = Settings()
    keywords = load_keywords(settings.keywords_file, load_plans(settings.plans_dir))
    assert intent(body, opt_out_type, keywords) is meaning


@pytest.mark.parametrize("word", STOP_WORDS)
def test_every_opt_out_keyword_in_any_case_opts_the_patient_out(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any, word: str
) -> None:
    answer = twilio.inbound(f"  {mixed_case(word)}\n")
    assert answer.status_code == 200
    assert twiml(answer) == []  # no reply of ours: Twilio sends its own
    patient = patient_view(enrolled.client)
    assert patient["opted_out"] is True
    assert {m["status"] for m in patient["messages"]} == {"held"}
    assert consent_log(enrolled.client)[-1] == (iso(START), False, "keyword")
    assert count(engine, Reply) == 0


@pytest.mark.parametrize("word", START_WORDS)
def test_every_opt_in_keyword_in_any_case_opts_the_patient_in_again(
    enrolled: BookingSystem, twilio: TwilioWebhooks, clock: Clock, engine: Any, word: str
) -> None:
    assert twilio.inbound("STOP").status_code == 200
    clock.advance(minutes=5)
    answer = twilio.inbound(f"\t{mixed_case(word)}  ")
    assert answer.status_code == 200
    assert twiml(answer) == []
    patient = patient_view(enrolled.client)
    assert patient["opted_out"] is False
    assert {m["status"] for m in patient["messages"]} == {"scheduled"}
    assert consent_log(enrolled.client)[1:] == [
        (iso(START), False, "keyword"),
        (iso(clock.now), True, "keyword"),
    ]
    assert count(engine, Reply) == 0


@pytest.mark.parametrize("word", HELP_WORDS)
def test_every_help_keyword_gets_a_twiml_reply_naming_the_clinic_its_phone_and_stop(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any, word: str
) -> None:
    answer = twilio.inbound(f" {mixed_case(word)}\n")
    assert answer.status_code == 200
    [reply] = twiml(answer)
    assert "Skin Clinic" in reply
    assert "+971 4 000 0000" in reply
    assert "STOP" in reply
    assert patient_view(enrolled.client)["opted_out"] is False
    assert count(engine, Reply) == 0
    assert count(engine, ConsentChange) == 1


def test_help_reported_by_twilio_as_opt_out_type_gets_no_reply_of_ours(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    answer = twilio.inbound("HELP", opt_out_type="HELP")
    assert answer.status_code == 200
    assert twiml(answer) == []  # Twilio already answered
    assert count(engine, Reply) == 0
    assert patient_view(enrolled.client)["opted_out"] is False


def test_a_text_that_is_not_exactly_one_keyword_is_a_reply_for_staff(
    enrolled: BookingSystem, twilio: TwilioWebhooks, clock: Clock
) -> None:
    for body in NOT_KEYWORDS:
        clock.advance(minutes=1)
        answer = twilio.inbound(body)
        assert answer.status_code == 200, body
        assert twiml(answer) == [], body
        patient = patient_view(enrolled.client)
        assert patient["opted_out"] is False, body
        assert {m["status"] for m in patient["messages"]} == {"scheduled"}, body
        assert len(patient["consent_log"]) == 1, body
        assert staff_replies(enrolled.client)[0]["body"] == body
    assert [r["body"] for r in staff_replies(enrolled.client)] == NOT_KEYWORDS[::-1]


def test_opt_out_type_stop_opts_out_whatever_the_body_says(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    answer = twilio.inbound("hello", opt_out_type="STOP")
    assert twiml(answer) == []
    assert patient_view(enrolled.client)["opted_out"] is True
    assert statuses(engine) == {"held"}
    assert count(engine, Reply) == 0


def test_opt_out_type_start_wins_over_a_stop_body(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    twilio.inbound("STOP", opt_out_type="STOP")
    answer = twilio.inbound("stop", opt_out_type="START")
    assert twiml(answer) == []
    assert patient_view(enrolled.client)["opted_out"] is False
    assert statuses(engine) == {"scheduled"}


def test_stop_from_whatsapp_finds_the_patient_without_the_prefix(
    booking: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    assert booking.post(completed_event(patient={"channel": "whatsapp"})).status_code == 201
    assert twilio.inbound("stop", sender=f"whatsapp:{PHONE}").status_code == 200
    assert patient_view(booking.client)["opted_out"] is True
    assert statuses(engine) == {"held"}


def test_stop_applies_to_every_patient_on_the_number(
    booking: BookingSystem, twilio: TwilioWebhooks
) -> None:
    booking.post(completed_event())
    child = completed_event("evt_0002", patient={"id": "P-1002"}, treatment={"id": "T-556"})
    assert booking.post(child).status_code == 201
    twilio.inbound("STOP")
    assert patient_view(booking.client, "P-1001")["opted_out"] is True
    assert patient_view(booking.client, "P-1002")["opted_out"] is True


def test_stop_twice_is_logged_once(
    enrolled: BookingSystem, twilio: TwilioWebhooks, clock: Clock
) -> None:
    twilio.inbound("STOP")
    clock.advance(minutes=1)
    twilio.inbound("STOP", opt_out_type="STOP")
    assert [source for _, _, source in consent_log(enrolled.client)] == ["booking", "keyword"]


def test_stop_from_an_unknown_number_is_accepted_and_changes_nothing(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    answer = twilio.inbound("STOP", sender="+971509999999")
    assert answer.status_code == 200
    assert twiml(answer) == []
    assert patient_view(enrolled.client)["opted_out"] is False
    assert statuses(engine) == {"scheduled"}


# -- STOP and START over time -----------------------------------------------------------------


def test_after_stop_nothing_more_is_sent(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    dispatcher: Dispatcher,
    sender: RecordingSender,
) -> None:
    due = sorted({m.send_at for m in messages(engine)})
    twilio.inbound("STOP")
    assert statuses(engine) == {"held"}
    for moment in [*due, START + timedelta(days=400)]:
        dispatcher.run_pass(moment)
    assert sender.sent == []
    assert "queued" not in statuses(engine)
    assert "scheduled" not in statuses(engine)


def test_start_puts_held_messages_back_into_the_next_send_window(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    clock: Clock,
    dispatcher: Dispatcher,
    sender: RecordingSender,
) -> None:
    before = {(m.step, m.occurrence): m.send_at for m in messages(engine)}
    twilio.inbound("STOP")
    for moment in sorted(set(before.values()))[:3]:  # due while opted out: nothing goes
        dispatcher.run_pass(moment)
    assert sender.sent == []

    clock.now = dubai(3, 3, 22, 30)  # day 2, after every send window closed
    twilio.inbound("START")
    after = {(m.step, m.occurrence): (m.status, m.send_at) for m in messages(engine)}
    assert after[("after_treatment", 0)] == ("scheduled", dubai(3, 4, 8))  # its 08:00 window
    assert after[("no_wash_reminder", 0)] == ("scheduled", dubai(3, 4, 9))
    assert after[("sunscreen", 0)] == ("scheduled", dubai(3, 4, 9))
    for key, (status, send_at) in after.items():
        assert status == "scheduled"
        if before[key] > clock.now:
            assert send_at == before[key], key  # not due yet: unchanged

    dispatcher.run_pass(dubai(3, 4, 9))
    assert len(sender.sent) == 3


def test_start_expires_held_messages_past_their_expiry_and_sends_the_rest_now(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    clock: Clock,
    dispatcher: Dispatcher,
    sender: RecordingSender,
) -> None:
    twilio.inbound("STOP")
    clock.now = dubai(3, 5, 12)  # day 4: after_treatment and no_wash_reminder ended with day 3
    twilio.inbound("START")
    assert by_step(engine, "after_treatment").status == "expired"
    assert by_step(engine, "no_wash_reminder").status == "expired"
    for step in ("water_rinse", "sunscreen"):
        message = by_step(engine, step)
        assert (message.status, message.send_at) == ("scheduled", clock.now), step

    report = dispatcher.run_pass(clock.now)
    assert report.sent == 2
    bodies = [m.body for m in sender.sent]
    assert not any("thank you for coming in" in b or "nearly there" in b for b in bodies)
    assert {m.step for m in messages(engine) if m.status == "queued"} == {
        "water_rinse",
        "sunscreen",
    }


def test_stop_start_stop_over_weeks_sends_only_what_was_due_while_opted_in(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    clock: Clock,
    dispatcher: Dispatcher,
    sender: RecordingSender,
) -> None:
    def run_through(until: datetime) -> None:
        """Run the dispatcher at every moment something was due, up to `until`."""
        for moment in sorted({m.send_at for m in messages(engine)} | {until}):
            if clock.now <= moment <= until:
                dispatcher.run_pass(moment)

    def sent_steps() -> list[tuple[str, int]]:
        return sorted((m.step, m.occurrence) for m in messages(engine) if m.status == "queued")

    dispatcher.run_pass(START + timedelta(hours=1))
    assert sent_steps() == [("after_treatment", 0)]

    clock.now = dubai(3, 1, 12)
    twilio.inbound("STOP")  # day 0
    run_through(dubai(3, 5, 12))
    assert len(sender.sent) == 1
    assert by_step(engine, "no_wash_reminder").status == "expired"  # expired while held

    clock.now = dubai(3, 5, 12)
    twilio.inbound("START")  # day 4: the day-1 sunscreen and the water rinse still count
    dispatcher.run_pass(clock.now)
    assert len(sender.sent) == 3

    clock.now = dubai(3, 5, 13)
    twilio.inbound("Stop")
    run_through(dubai(5, 10, 10))  # day 70: the whole first months go by
    assert len(sender.sent) == 3

    clock.now = dubai(5, 10, 10)
    twilio.inbound("start")
    assert {m.status for m in messages(engine) if m.step != "yearly_checkup"} <= {
        "queued",
        "expired",
    }
    dispatcher.run_pass(clock.now)
    assert len(sender.sent) == 3  # nothing that expired while opted out goes late
    run_through(dubai(3, 2, 12, year=2028))

    assert sent_steps() == [
        ("after_treatment", 0),
        ("sunscreen", 0),
        ("water_rinse", 0),
        ("yearly_checkup", 0),
    ]
    assert len(sender.sent) == 4
    assert {(m.step, m.occurrence) for m in messages(engine) if m.status == "expired"} == {
        ("no_wash_reminder", 0),
        ("moisturise", 0),
        ("sunscreen", 1),
        ("sunscreen", 2),
        ("sunscreen", 3),
        ("sunscreen", 4),
        ("long_term_care", 0),
    }
    assert by_step(engine, "yearly_checkup", 1).status == "scheduled"  # next year's is planned
    assert consent_log(enrolled.client) == [
        (iso(START), True, "booking"),
        (iso(dubai(3, 1, 12)), False, "keyword"),
        (iso(dubai(3, 5, 12)), True, "keyword"),
        (iso(dubai(3, 5, 13)), False, "keyword"),
        (iso(dubai(5, 10, 10)), True, "keyword"),
    ]


def test_a_booking_event_never_lifts_a_patients_stop(
    enrolled: BookingSystem, twilio: TwilioWebhooks, clock: Clock, engine: Any
) -> None:
    twilio.inbound("STOP")
    clock.advance(days=2)
    session = completed_event("evt_0002", treatment={"id": "T-556"}, performed_at=clock.now)
    answer = enrolled.post(session)
    assert answer.status_code == 201, answer.data
    assert "opted out" in answer.get_json()["reason"]
    assert patient_view(enrolled.client)["opted_out"] is True
    assert statuses(engine) == {"held", "cancelled"}
    twilio.inbound("START")
    assert statuses(engine) == {"scheduled", "cancelled"}


def test_twilio_error_21610_is_logged_and_start_lifts_it(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    clock: Clock,
    dispatcher: Dispatcher,
    sender: RecordingSender,
) -> None:
    sender.fail_next(RecipientOptedOut("unsubscribed recipient", code=21610))
    dispatcher.run_pass(START + timedelta(hours=1))
    patient = patient_view(enrolled.client)
    assert patient["opted_out"] is True
    assert (message_view(enrolled.client, "after_treatment")["error_code"]) == 21610
    clock.advance(hours=2)
    twilio.inbound("START")
    assert consent_log(enrolled.client) == [
        (iso(START), True, "booking"),
        (iso(START + timedelta(hours=1)), False, "twilio_21610"),
        (iso(clock.now), True, "keyword"),
    ]
    assert patient_view(enrolled.client)["opted_out"] is False


# -- replies ------------------------------------------------------------------------------------


def test_a_reply_is_stored_against_the_patient_and_flagged_for_staff(
    enrolled: BookingSystem, twilio: TwilioWebhooks, clock: Clock
) -> None:
    clock.advance(minutes=30)
    answer = twilio.inbound("Is some redness normal?", sid="SM" + "1" * 32)
    assert answer.status_code == 200
    assert twiml(answer) == []
    assert staff_replies(enrolled.client) == [
        {
            "sid": "SM" + "1" * 32,
            "patient_id": "P-1001",
            "from": PHONE,
            "received_at": iso(clock.now),
            "body": "Is some redness normal?",
            "handled": False,
        }
    ]
    assert patient_view(enrolled.client)["replies"] == [
        {
            "received_at": iso(clock.now),
            "body": "Is some redness normal?",
            "sid": "SM" + "1" * 32,
            "handled": False,
            "handled_by": None,
            "handled_at": None,
        }
    ]


def test_a_whatsapp_reply_is_matched_without_the_prefix(
    booking: BookingSystem, twilio: TwilioWebhooks
) -> None:
    booking.post(completed_event(patient={"channel": "whatsapp"}))
    twilio.inbound("Thanks!", sender=f"whatsapp:{PHONE}")
    [reply] = staff_replies(booking.client)
    assert (reply["patient_id"], reply["from"], reply["body"]) == ("P-1001", PHONE, "Thanks!")


def test_the_same_message_sid_twice_is_stored_once(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any, clock: Clock
) -> None:
    first = twilio.inbound("Hello", sid="SM" + "2" * 32)
    clock.advance(seconds=15)  # Twilio retried the webhook
    second = twilio.inbound("Hello", sid="SM" + "2" * 32)
    assert (first.status_code, second.status_code) == (200, 200)
    assert count(engine, Reply) == 1
    assert [r["received_at"] for r in staff_replies(enrolled.client)] == [iso(START)]


def test_a_reply_from_an_unknown_number_is_stored_with_no_patient(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    twilio.inbound("Who is this?", sender="+971509999999")
    [reply] = staff_replies(enrolled.client)
    assert (reply["patient_id"], reply["from"], reply["body"]) == (
        None,
        "+971509999999",
        "Who is this?",
    )
    assert patient_view(enrolled.client)["replies"] == []


def test_a_reply_from_an_opted_out_patient_is_still_stored(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    twilio.inbound("STOP")
    twilio.inbound("Why did I get these?")
    assert [r["body"] for r in staff_replies(enrolled.client)] == ["Why did I get these?"]


# -- status callbacks -----------------------------------------------------------------------------


@pytest.fixture
def sent_sid(enrolled: BookingSystem, dispatcher: Dispatcher) -> str:
    """The SID of the after-treatment message, sent by the dispatcher."""
    assert dispatcher.run_pass(START + timedelta(hours=1)).sent == 1
    message = message_view(enrolled.client, "after_treatment")
    assert message["status"] == "queued"
    assert message["sid"]
    return str(message["sid"])


def after_treatment(client: Any) -> tuple[str, int | None]:
    message = message_view(client, "after_treatment")
    return message["status"], message["error_code"]


def test_status_callbacks_move_a_message_forward(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    for status in ("sent", "delivered", "read"):
        answer = twilio.status(sent_sid, status)
        assert answer.status_code == 204
        assert after_treatment(client) == (status, None)


@pytest.mark.parametrize(
    ("sequence", "final"),
    [
        (["delivered", "sent", "queued"], "delivered"),
        (["read", "delivered", "sent"], "read"),
        (["sent", "queued", "accepted", "sending"], "sent"),
        (["undelivered", "sent"], "undelivered"),
        (["failed", "queued"], "failed"),
    ],
)
def test_a_late_callback_never_moves_a_message_backwards(
    sent_sid: str, twilio: TwilioWebhooks, client: Any, sequence: list[str], final: str
) -> None:
    for status in sequence:
        assert twilio.status(sent_sid, status).status_code == 204
    assert after_treatment(client)[0] == final


def test_an_error_code_is_stored_with_the_status(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    twilio.status(sent_sid, "sent")
    twilio.status(sent_sid, "undelivered", 30003)
    assert after_treatment(client) == ("undelivered", 30003)


def test_a_repeated_callback_changes_nothing(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    twilio.status(sent_sid, "undelivered", 30003)
    twilio.status(sent_sid, "undelivered", 30003)
    twilio.status(sent_sid, "failed", 30008)  # another final outcome does not replace it
    twilio.status(sent_sid, "sent")
    assert after_treatment(client) == ("undelivered", 30003)


def test_a_status_twilio_uses_but_we_do_not_track_is_accepted_and_ignored(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    for word in ("receiving", "received", "canceled", "partially_delivered", "nonsense"):
        assert twilio.status(sent_sid, word).status_code == 204
    assert after_treatment(client) == ("queued", None)


def test_a_callback_for_an_unknown_sid_is_accepted(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    assert twilio.status("SM" + "9" * 32, "delivered").status_code == 204
    assert count(engine, StatusCallback) == 1
    assert statuses(engine) == {"scheduled"}


def test_a_callback_that_arrives_before_the_sid_is_stored_is_applied_by_the_next_pass(
    sent_sid: str,
    twilio: TwilioWebhooks,
    engine: Any,
    client: Any,
    dispatcher: Dispatcher,
) -> None:
    early = "SM" + "8" * 32
    assert twilio.status(early, "delivered").status_code == 204  # Twilio was faster ...
    assert twilio.status(early, "sent").status_code == 204
    set_sid(engine, "after_treatment", early)  # ... than the commit of the SID
    assert after_treatment(client) == ("queued", None)
    dispatcher.run_pass(START + timedelta(hours=1, minutes=1))
    assert after_treatment(client) == ("delivered", None)
    twilio.status(early, "read")
    assert after_treatment(client) == ("read", None)


def test_a_status_callback_without_sid_or_status_is_400(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    assert twilio.post(STATUS, {"MessageStatus": "sent"}).status_code == 400
    assert twilio.post(STATUS, {"MessageSid": "SM" + "1" * 32}).status_code == 400
    assert count(engine, StatusCallback) == 0


@pytest.mark.parametrize("code", ["9" * 20, str(2**63), str(2**31), "-30003", "30003.0"])
def test_an_error_code_that_is_no_database_integer_is_not_a_server_error(
    sent_sid: str, twilio: TwilioWebhooks, client: Any, code: str
) -> None:
    form = {"MessageSid": sent_sid, "MessageStatus": "undelivered", "ErrorCode": code}
    assert twilio.post(STATUS, form).status_code == 204
    assert after_treatment(client)[0] == "undelivered"


@pytest.mark.postgres
def test_an_error_code_beyond_32_bits_is_not_a_server_error_on_postgresql(
    postgres_url: str, build_app: Callable[..., Any]
) -> None:
    client = build_app(make_settings(postgres_url))
    form = {
        "MessageSid": "SM" + "1" * 32,
        "MessageStatus": "undelivered",
        "ErrorCode": "2147483648",
    }
    assert TwilioWebhooks(client).post(STATUS, form).status_code < 500


# -- junk never makes a server error -----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("path", "field"),
    [
        (INBOUND, "Body"),
        (INBOUND, "MessageSid"),
        (INBOUND, "From"),
        (STATUS, "MessageSid"),
        (STATUS, "MessageStatus"),
    ],
)
def test_a_nul_character_is_not_a_server_error_on_postgresql(
    postgres_url: str, build_app: Callable[..., Any], path: str, field: str
) -> None:
    client = build_app(make_settings(postgres_url))
    form = {
        "MessageSid": "SM" + "1" * 32,
        "From": PHONE,
        "Body": "hello",
        "MessageStatus": "delivered",
    }
    form[field] = form[field][:5] + "\x00" + form[field][5:]
    answer = TwilioWebhooks(client).post(path, form)
    assert answer.status_code < 500


FIELDS = ["MessageSid", "From", "To", "Body", "OptOutType", "MessageStatus", "ErrorCode"]
VALUES = st.text(max_size=40) | st.sampled_from(
    [
        "",
        " ",
        PHONE,
        f"whatsapp:{PHONE}",
        "whatsapp:",
        "0501234567",
        "+1",
        "SM" + "1" * 32,
        "STOP",
        "START",
        "HELP",
        "stop please",
        "queued",
        "sent",
        "delivered",
        "read",
        "undelivered",
        "30003",
        "-1",
        "\u0663\u0660\u0660\u0660\u0663",  # 30003 in Arabic-Indic digits
        "1e5",
    ]
)
SIDS = st.sampled_from(["SM" + "1" * 32, "SM" + "2" * 32]) | st.text(min_size=1, max_size=70)
SENDERS = st.sampled_from([PHONE, f"whatsapp:{PHONE}", "+971509999999"]) | st.text(max_size=25)
# Mostly forms with what Twilio always sends (so they get past the 400s), junk besides.
PLAUSIBLE_FORMS = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries(
        {"MessageSid": SIDS, "From": SENDERS, "MessageStatus": VALUES},
        optional={f: VALUES for f in ("To", "Body", "OptOutType", "ErrorCode")},
    ),
    st.dictionaries(st.text(max_size=12), VALUES, max_size=4),
)
RAW_FORMS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), VALUES, max_size=8)
FORMS = PLAUSIBLE_FORMS | RAW_FORMS
FUZZ = hypothesis_settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def sqlite_twilio(sqlite_url: str, clock: Clock, build_app: Callable[..., Any]) -> TwilioWebhooks:
    """Twilio posting to an app on SQLite only, with one enrolled patient: for the
    property tests, which post many requests."""
    client = build_app(make_settings(sqlite_url))
    assert BookingSystem(client, clock).post(completed_event()).status_code == 201
    return TwilioWebhooks(client)


@FUZZ
@given(form=FORMS)
def test_junk_inbound_form_data_is_never_a_server_error(
    sqlite_twilio: TwilioWebhooks, form: dict[str, str]
) -> None:
    answer = sqlite_twilio.post(INBOUND, form)
    event(f"status {answer.status_code}")
    assert answer.status_code in {200, 400}, answer.data
    twiml(answer)


@FUZZ
@given(form=FORMS)
def test_junk_status_form_data_is_never_a_server_error(
    sqlite_twilio: TwilioWebhooks, form: dict[str, str]
) -> None:
    answer = sqlite_twilio.post(STATUS, form)
    event(f"status {answer.status_code}")
    assert answer.status_code in {204, 400}, answer.data


# -- the status order, as a property -----------------------------------------------------------


SEQUENCES = [
    ["queued", "sent", "delivered", "read"],
    ["queued", "sent", "undelivered"],
    ["queued", "sent", "failed"],
    ["accepted", "queued", "sending", "sent", "delivered"],
]
RANK = {"queued": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2, "read": 3}
AS_QUEUED = {"accepted": "queued", "sending": "queued"}


@st.composite
def callback_orders(draw: st.DrawFn) -> list[str]:
    """A shuffled sequence of a message's statuses, some repeated, some perhaps missing."""
    sequence = draw(st.sampled_from(SEQUENCES))
    kept = draw(st.permutations(sequence))[: draw(st.integers(1, len(sequence)))]
    repeats = draw(st.lists(st.sampled_from(sequence), max_size=4))
    return draw(st.permutations(kept + repeats))


@pytest.fixture
def sqlite_sent(
    sqlite_url: str, clock: Clock, build_app: Callable[..., Any]
) -> tuple[TwilioWebhooks, Any, str]:
    """On SQLite: an enrolled patient whose after-treatment message the dispatcher sent."""
    settings = make_settings(sqlite_url)
    engine = make_engine(sqlite_url)
    client = build_app(settings, engine)
    assert BookingSystem(client, clock).post(completed_event()).status_code == 201
    dispatcher = Dispatcher(engine, RecordingSender(), load_plans(settings.plans_dir), settings)
    try:
        assert dispatcher.run_pass(START + timedelta(hours=1)).sent == 1
    finally:
        dispatcher.close()
    sid = message_view(client, "after_treatment")["sid"]
    return TwilioWebhooks(client), engine, sid


@FUZZ
@given(order=callback_orders())
def test_callbacks_in_any_order_end_at_the_furthest_status(
    sqlite_sent: tuple[TwilioWebhooks, Any, str], order: list[str]
) -> None:
    webhooks, engine, sid = sqlite_sent
    set_sid(engine, "after_treatment", sid, status="queued")  # a fresh start per example
    with Session(engine) as session:
        session.exec(update(Message).values(error_code=None))
        session.commit()
    for status in order:
        code = 30003 if status in ("undelivered", "failed") else None
        assert webhooks.status(sid, status, code).status_code == 204
    furthest = max((AS_QUEUED.get(s, s) for s in order), key=RANK.__getitem__)
    expected_code = 30003 if furthest in ("undelivered", "failed") else None
    assert after_treatment(webhooks.client) == (furthest, expected_code), order
