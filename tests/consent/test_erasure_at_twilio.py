"""Erasure that erases exactly one patient, everywhere: at Twilio too.

A parent and a child who share a number keep what is the other's; the erased
patient's messages and replies are redacted at Twilio through the outbox (retried
until done, visible in the staff API), with requests Twilio's spec allows.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from notifier.consent import erasure
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.redaction import REDACTION_GIVE_UP
from notifier.delivery.sender import Outgoing, RateLimited, Redact
from notifier.delivery.twilio_sender import TwilioSender
from notifier.planning.plan import load_plans
from notifier.store.models import Redaction, Reply
from tests.conftest import DUE, STAFF, START, BookingSystem, TwilioWebhooks, completed_event
from tests.support.booking import erase_event
from tests.support.fake_twilio import FakeTwilio
from tests.support.staff import staff_view
from tests.support.traces import leftovers
from tests.support.twilio_settings import settings_for

FAMILY = "+971501234567"


@pytest.fixture
def parent_and_child(booking: BookingSystem, twilio: TwilioWebhooks, clock: Any) -> BookingSystem:
    """Omar (P-1001) and his son Sami (P-2002) share a number; each has replied."""
    twilio.inbound("Hi, it's the family phone, before any booking", sid="SM" + "0" * 32)
    assert booking.post(completed_event()).status_code == 201
    twilio.inbound("Omar: is redness normal?", sid="SM" + "1" * 32)  # to Omar, updated last
    clock.advance(minutes=5)
    child = completed_event(
        "evt_child",
        patient={"id": "P-2002", "first_name": "Sami"},
        treatment={"id": "T-777"},
    )
    assert booking.post(child).status_code == 201
    twilio.inbound("Sami: my scalp itches", sid="SM" + "2" * 32)  # to Sami, updated last
    return booking


def reply_bodies(engine: Any) -> dict[str, str | None]:
    with Session(engine) as session:
        return {r.sid: r.body for r in session.exec(select(Reply)).all()}


def test_erasing_the_parent_leaves_the_childs_replies_and_data(
    parent_and_child: BookingSystem, engine: Any
) -> None:
    child_before = staff_view(parent_and_child.client, "P-2002").get_json()

    assert parent_and_child.post(erase_event()).get_json()["erased"] is True

    assert staff_view(parent_and_child.client, "P-2002").get_json() == child_before
    assert reply_bodies(engine) == {
        "SM"
        + "0" * 32: "Hi, it's the family phone, before any booking",  # the number is Sami's too
        "SM" + "1" * 32: None,
        "SM" + "2" * 32: "Sami: my scalp itches",
    }
    assert leftovers(engine, ["Omar", "T-555", "P-1001"]) == []


def test_replies_from_a_number_only_the_erased_patient_had_are_erased_too(
    booking: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    twilio.inbound("Hello, Omar here, booking tomorrow", sid="SM" + "0" * 32)
    assert booking.post(completed_event()).status_code == 201
    update = {
        "id": "evt_new_phone",
        "type": "patient.updated",
        "patient": {"id": "P-1001", "phone": "+971509999999"},
    }
    twilio.inbound("From my old number", sid="SM" + "1" * 32)
    assert booking.post(update).status_code == 200
    twilio.inbound("From my new number", sender="+971509999999", sid="SM" + "2" * 32)

    booking.post(erase_event())

    assert set(reply_bodies(engine).values()) == {None}
    assert leftovers(engine, ["Omar", "old number", "new number", "509999999"]) == []


def test_every_message_and_reply_of_the_patient_is_redacted_at_twilio(
    booking: BookingSystem, twilio: TwilioWebhooks, dispatcher: Any, sender: Any, engine: Any
) -> None:
    assert booking.post(completed_event()).status_code == 201
    dispatcher.run_pass(DUE)
    [sent] = [m for m in sender.carrier_log]
    twilio.inbound("A photo of my scalp", sid="SM" + "7" * 32)

    answer = booking.post(erase_event()).get_json()
    assert answer["twilio_redactions"] == 2
    state = booking.client.get(f"/api/erasures/{answer['erasure_id']}", headers=STAFF)
    assert state.get_json()["twilio_redactions"] == {"pending": 2, "done": 0, "failed": 0}
    assert state.get_json()["complete"] is False

    assert dispatcher.run_pass(DUE + timedelta(minutes=1)).redacted == 2

    assert sorted(sender.redacted, key=lambda r: r.sid) == sorted(
        [Redact(sent, inbound=False), Redact("SM" + "7" * 32, inbound=True)], key=lambda r: r.sid
    )
    state = booking.client.get(f"/api/erasures/{answer['erasure_id']}", headers=STAFF).get_json()
    assert state["twilio_redactions"] == {"pending": 0, "done": 2, "failed": 0}
    assert state["complete"] is True
    dispatcher.run_pass(DUE + timedelta(days=1))
    assert len(sender.redacted) == 2  # done once, not again


def test_a_redaction_twilio_refuses_is_retried_and_given_up_after_a_week(
    booking: BookingSystem, twilio: TwilioWebhooks, dispatcher: Any, sender: Any
) -> None:
    assert booking.post(completed_event()).status_code == 201
    twilio.inbound("Please forget me", sid="SM" + "8" * 32)
    erasure_id = booking.post(erase_event()).get_json()["erasure_id"]
    sender.redact_errors.append(RateLimited("Twilio answered 429", code=20429))

    assert dispatcher.run_pass(DUE).redacted == 0
    assert dispatcher.run_pass(DUE).redacted == 0  # not due again yet: backoff
    assert dispatcher.run_pass(DUE + timedelta(hours=2)).redacted == 1

    twilio.inbound("Another, never redacted", sid="SM" + "9" * 32)
    sender.redact_errors.extend([RateLimited("Twilio answered 429", code=20429)] * 500)
    with Session(dispatcher.engine) as session:
        session.add(
            Redaction(
                patient_id=1,
                sid="SM" + "9" * 32,
                inbound=True,
                next_at=DUE,
                created_at=DUE,
            )
        )
        session.commit()
    at = DUE
    while at < DUE + REDACTION_GIVE_UP + timedelta(hours=2):
        at += timedelta(hours=1)
        dispatcher.run_pass(at)
    state = booking.client.get(f"/api/erasures/{erasure_id}", headers=STAFF).get_json()
    assert state["twilio_redactions"] == {"pending": 0, "done": 1, "failed": 1}
    assert state["complete"] is False
    assert state["failed"][0]["sid"] == "SM" + "9" * 32
    assert "429" in state["failed"][0]["error"]


def test_an_unknown_erasure_is_404(client: Any) -> None:
    assert client.get("/api/erasures/erased-99", headers=STAFF).status_code == 404
    assert client.get("/api/erasures/P-1001", headers=STAFF).status_code == 404


def test_the_scan_for_leftovers_finds_a_reply_erasure_forgot(
    parent_and_child: BookingSystem, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: with replies left out of erasure, the scan reports them."""
    monkeypatch.setattr(erasure, "_their_replies", lambda session, patient: {})
    parent_and_child.post(erase_event())
    assert ("reply", "body", "omar: is redness normal?") in leftovers(
        engine, ["Omar: is redness normal?"]
    )


# -- the requests, as Twilio's spec allows them ----------------------------------------------


def test_twilio_is_asked_to_redact_bodies_and_delete_a_replys_photos() -> None:
    with FakeTwilio() as fake:
        sender = TwilioSender(settings_for(fake.base_url))
        try:
            sent = sender.send(Outgoing(FAMILY, "sms", "Day 4: rinse with water only"))
            reply = fake.add_inbound(FAMILY, "Here is a photo", photos=2)
            outcomes = sender.redact_batch(
                [Redact(sent.sid), Redact(reply.sid, inbound=True), Redact("SM" + "f" * 32)]
            )
        finally:
            sender.close()
        assert outcomes == [None, None, None]  # one Twilio no longer has counts as done
        redacted_sent, redacted_reply = fake.message(sent.sid), fake.message(reply.sid)
        assert redacted_sent is not None and redacted_sent.body == ""
        assert redacted_reply is not None and (redacted_reply.body, redacted_reply.media) == (
            "",
            (),
        )
        assert fake.violations == []
        methods = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in fake.requests]
        assert ("DELETE", ["Media", f"{reply.media[0]}.json"]) in methods


def test_a_redaction_twilio_rate_limits_is_returned_to_retry() -> None:
    with FakeTwilio() as fake:
        sender = TwilioSender(settings_for(fake.base_url))
        try:
            sent = sender.send(Outgoing(FAMILY, "sms", "Hello"))
            fake.script(["429"])
            [outcome] = sender.redact_batch([Redact(sent.sid)])
        finally:
            sender.close()
    assert isinstance(outcome, RateLimited)


def test_an_erasure_goes_to_twilio_before_a_backlog_of_retention(
    booking: BookingSystem, engine: Any, sender: Any, settings: Any
) -> None:
    assert booking.post(completed_event()).status_code == 201
    dispatcher = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, dispatch_batch_size=2),
        rng=random.Random(5),
    )
    try:
        dispatcher.run_pass(DUE)  # after_treatment goes out
        [sent] = list(sender.carrier_log)
        with Session(engine) as session:  # retention queued these long before
            session.add_all(
                Redaction(sid=f"SM{n:032d}", next_at=START, created_at=START) for n in range(5)
            )
            session.commit()
        booking.post(erase_event())

        dispatcher.run_pass(DUE + timedelta(minutes=1))
    finally:
        dispatcher.close()
    assert sender.redacted[0].sid == sent  # first, despite the older backlog
    assert len(sender.redacted) == 2
