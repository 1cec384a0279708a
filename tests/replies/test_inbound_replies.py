"""A text that is no keyword is a reply (SPEC §7): stored once against the patient (or
none, from an unknown number) and listed for staff."""

from __future__ import annotations

from typing import Any

from notifier.store.models import Reply
from tests.conftest import PHONE, START, BookingSystem, Clock, TwilioWebhooks, completed_event
from tests.support.rows import count
from tests.support.staff import patient_view, staff_replies
from tests.support.times import iso
from tests.support.twilio_webhooks import twiml


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
            "urgent": True,  # when unsure, urgent: a clinician looks
            "category": "urgent",
            "signs": ["redness"],
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
            "urgent": True,
            "category": "urgent",
            "signs": ["redness"],
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
