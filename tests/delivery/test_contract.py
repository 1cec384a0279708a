"""End to end against Twilio's contract: booking webhook -> outbox -> dispatcher ->
the real TwilioSender -> a loopback Twilio that checks each request against Twilio's
OpenAPI spec (tests/support/fake_twilio.py)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.twilio_sender import TwilioSender
from notifier.planning.plan import load_plans
from notifier.settings import TwilioSettings
from notifier.store.models import Message, Status
from tests.conftest import START, completed_event
from tests.support.fake_twilio import FakeTwilio
from tests.support.twilio_settings import settings_for

SERVICE_SID = "MG" + "0123456789abcdef" * 2


@pytest.fixture
def fake(clock):
    # The fake stamps messages with the test's clock, so reconciliation sees one time.
    with FakeTwilio(timeout_delay=2.0, clock=clock) as server:
        yield server


def twilio_settings(fake: FakeTwilio, **overrides) -> TwilioSettings:
    return settings_for(
        fake.base_url,
        sms_from="+14155550100",
        whatsapp_from="+14155550111",
        timeout_seconds=1.0,
        **overrides,
    )


def dispatch_through_twilio(engine, settings, clock, twilio: TwilioSettings, *passes) -> None:
    sender = TwilioSender(twilio)
    dispatcher = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, public_base_url="https://care.example.org"),
        rng=random.Random(5),
    )
    try:
        for moment in passes:
            clock.now = moment
            dispatcher.run_pass(moment)
    finally:
        dispatcher.close()
        sender.close()


@pytest.mark.parametrize(
    ("overrides", "sender_field"),
    [({}, "from_"), ({"messaging_service_sid": SERVICE_SID}, "messaging_service_sid")],
    ids=["from-number", "messaging-service"],
)
def test_dispatched_messages_are_valid_twilio_requests(
    booking, engine, settings, fake, clock, overrides, sender_field
) -> None:
    assert booking.post(completed_event()).status_code == 201
    dispatch_through_twilio(
        engine,
        settings,
        clock,
        twilio_settings(fake, **overrides),
        START + timedelta(hours=1),
        START + timedelta(days=1, hours=1),
    )
    assert fake.violations == []
    assert [m.to for m in fake.messages] == ["+971501234567", "+971501234567"]
    first = fake.messages[0]
    assert "thank you for coming in today" in first.body
    assert first.status_callback == "https://care.example.org/webhooks/twilio/status"
    if sender_field == "from_":
        assert (first.from_, first.messaging_service_sid) == ("+14155550100", None)
    else:
        assert first.messaging_service_sid == SERVICE_SID
        assert "From" not in first.params
    with Session(engine) as session:
        queued = session.exec(select(Message).where(Message.status == Status.QUEUED)).all()
    assert sorted(m.sid for m in queued) == sorted(m.sid for m in fake.messages)


def test_a_500_after_twilio_took_the_message_is_adopted_not_resent(
    booking, engine, settings, fake, clock
) -> None:
    assert booking.post(completed_event()).status_code == 201
    fake.script(["500_sent"])
    due = START + timedelta(hours=1)
    dispatch_through_twilio(
        engine, settings, clock, twilio_settings(fake), due, due + timedelta(minutes=5)
    )
    assert len(fake.messages) == 1
    with Session(engine) as session:
        first = session.exec(select(Message).where(Message.step == "after_treatment")).one()
    assert (first.status, first.sid) == (Status.QUEUED, fake.messages[0].sid)
    assert fake.violations == []
