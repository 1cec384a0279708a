"""STOP, START and HELP texted to the inbound webhook (SPEC §7) change consent exactly as
Twilio's own opt-out handling does; any other text is a reply for staff."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.consent.keywords import Intent, intent, load_keywords
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store.models import ConsentChange, Reply
from tests.conftest import PHONE, START, BookingSystem, Clock, TwilioWebhooks, completed_event
from tests.support.rows import count, statuses
from tests.support.staff import consent_log, patient_view, staff_replies
from tests.support.times import iso
from tests.support.twilio_webhooks import twiml

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


def mixed_case(word: str) -> str:
    """'stop' -> 'sToP': neither upper nor lower case."""
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(word))


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
