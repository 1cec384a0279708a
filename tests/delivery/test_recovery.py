"""Recovering rows whose send was ambiguous or whose worker died: it cannot stick.

Each stuck row adopts a message of its own from Twilio's list (never one another row
holds), one row's trouble never stops the others, every recovery counts as an
attempt (so each row ends in a final status), and Twilio is asked about all the
stuck rows of a pass at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import Ambiguous, Lookup, Outgoing, RetryLater
from notifier.delivery.twilio_sender import TwilioSender
from notifier.planning.plan import load_plans
from notifier.store.models import Message, Status
from tests.conftest import DUE, PHONE, START, RecordingSender, completed_event
from tests.support.booking import enrol
from tests.support.fake_twilio import FakeTwilio
from tests.support.rows import row, run_pass
from tests.support.shipped import EXAMPLE_TEMPLATES, PLANS
from tests.support.twilio_settings import settings_for

FAMILY_PHONE = "+971501234567"
AFTER_TREATMENT = EXAMPLE_TEMPLATES.find("scalp_micropigmentation", "after_treatment", "en")
assert AFTER_TREATMENT is not None


@pytest.fixture
def parent_and_child(booking) -> None:
    """Two patients on one number, sent the same text at the same moment."""
    for n, patient_id in enumerate(("P-1001", "P-1002")):
        event = completed_event(f"evt_{n}", patient={"id": patient_id}, treatment={"id": f"T-{n}"})
        assert booking.post(event).status_code == 201


def first_messages(engine) -> list[Message]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Message).where(Message.step == "after_treatment").order_by(Message.id)
            ).all()
        )


def lease_end(engine) -> object:
    return max(m.lease_until for m in first_messages(engine))


@pytest.mark.usefixtures("parent_and_child")
def test_two_patients_on_one_number_each_adopt_their_own_message(
    engine, dispatcher, sender
) -> None:
    for _ in range(2):
        sender.fail_next(Ambiguous("502 Bad Gateway"), delivered_anyway=True)
    assert dispatcher.run_pass(DUE).unresolved == 2

    report = dispatcher.run_pass(lease_end(engine))

    assert report.adopted == 2
    parent, child = first_messages(engine)
    assert parent.status == child.status == Status.QUEUED
    assert {parent.sid, child.sid} == set(sender.carrier_log)  # one each, none twice
    assert sender.sent == []


@pytest.mark.usefixtures("parent_and_child")
def test_when_twilio_took_only_one_of_the_two_the_other_is_sent_again(
    engine, dispatcher, sender
) -> None:
    sender.fail_next(Ambiguous("502 Bad Gateway"), delivered_anyway=True)
    sender.fail_next(Ambiguous("read timeout"))  # never reached Twilio
    dispatcher.run_pass(DUE)

    report = dispatcher.run_pass(lease_end(engine))

    assert (report.adopted, report.retrying, report.sent) == (1, 1, 1)
    parent, child = first_messages(engine)
    assert parent.status == child.status == Status.QUEUED
    assert parent.sid != child.sid
    assert len(sender.carrier_log) == 2


@pytest.mark.usefixtures("parent_and_child")
def test_a_sid_another_row_holds_is_never_adopted(engine, dispatcher, sender) -> None:
    # The parent's message went out cleanly; the child's answer was lost and Twilio
    # never got it. Twilio's list shows one message with that text: the parent's.
    sender.fail_next(Ambiguous("read timeout"))
    dispatcher.run_pass(DUE)
    parent, child = first_messages(engine)
    stuck = child if child.status == Status.SENDING else parent
    held = parent if stuck is child else child
    assert held.status == Status.QUEUED

    dispatcher.run_pass(stuck.lease_until)

    again = {m.id: m for m in first_messages(engine)}
    assert again[stuck.id].status == Status.QUEUED
    assert again[stuck.id].sid != held.sid
    assert len(sender.carrier_log) == 2  # sent again, not taken for the parent's


@pytest.mark.usefixtures("parent_and_child")
def test_one_rows_trouble_does_not_stop_the_others(engine, dispatcher, sender) -> None:
    for _ in range(2):
        sender.fail_next(Ambiguous("502 Bad Gateway"), delivered_anyway=True)
    dispatcher.run_pass(DUE)
    lookups = sender.find_sent

    def failing_for_the_first(lookup: Lookup) -> list[str]:
        if sender.lookups == 0:
            sender.lookups += 1
            raise RetryLater("Twilio answered 503")
        return lookups(lookup)

    sender.find_sent = failing_for_the_first  # type: ignore[method-assign]
    report = dispatcher.run_pass(lease_end(engine))

    assert (report.adopted, report.unresolved) == (1, 1)
    statuses = sorted(m.status for m in first_messages(engine))
    assert statuses == [Status.QUEUED, Status.SENDING]


@pytest.mark.usefixtures("parent_and_child")
def test_a_row_twilio_cannot_be_asked_about_ends_failed_after_the_attempts(
    engine, sender, settings
) -> None:
    dispatcher = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, max_attempts=3),
        rng=random.Random(3),
    )

    def unreachable(lookup: Lookup) -> list[str]:
        raise RetryLater("Could not connect to Twilio")

    sender.find_sent = unreachable  # type: ignore[method-assign]
    try:
        sender.fail_next(Ambiguous("read timeout"))
        sender.fail_next(Ambiguous("read timeout"))
        dispatcher.run_pass(DUE)
        passes = 0
        while any(m.status == Status.SENDING for m in first_messages(engine)):
            passes += 1
            assert passes <= 10, "a stuck row never ended"
            dispatcher.run_pass(lease_end(engine))
    finally:
        dispatcher.close()

    rows = first_messages(engine)
    assert [m.status for m in rows] == [Status.FAILED, Status.FAILED]
    assert all(m.attempts == 3 for m in rows)
    assert all("not known whether Twilio sent it" in (m.error_message or "") for m in rows)
    assert sender.sent == []  # never sent blind


def test_stuck_rows_are_looked_up_at_once_not_one_after_another():
    with FakeTwilio(latency=0.2) as fake:
        sender = TwilioSender(settings_for(fake.base_url), concurrency=8)
        try:
            sender.send(Outgoing("+971501230001", "sms", "Hello"))
            since = START.replace(year=2000)
            found = sender.find_batch(
                [Lookup(f"+97150123{n:04d}", "sms", "Hello", since) for n in range(1, 7)]
            )
        finally:
            sender.close()
    assert fake.most_in_flight == 6
    assert found[0] == [fake.messages[0].sid]
    assert found[1:] == [[]] * 5


def test_the_recording_sender_honours_since_when_it_has_a_clock() -> None:
    clock_at = [START]
    sender = RecordingSender(clock=lambda: clock_at[0])
    sender.send(Outgoing(FAMILY_PHONE, "sms", "Hello"))
    assert sender.find_sent(Lookup(FAMILY_PHONE, "sms", "Hello", START)) != []
    assert sender.find_sent(Lookup(FAMILY_PHONE, "sms", None, START)) != []
    assert sender.find_sent(Lookup(FAMILY_PHONE, "sms", "Hello", DUE)) == []


def test_the_recording_sender_finds_a_template_by_any_body_only_newest_first() -> None:
    sender = RecordingSender()
    template = Outgoing(FAMILY_PHONE, "whatsapp", "Hello Omar", content_sid="HX" + "1" * 32)
    older = sender.add_message(template, START)
    newer = sender.add_message(template, DUE)
    oldest = sender.add_message(template, START - timedelta(days=1))  # told last, taken first
    any_body = Lookup(FAMILY_PHONE, "whatsapp", None, START - timedelta(days=2))
    assert sender.find_sent(any_body) == [newer, older, oldest]
    assert sender.find_sent(replace(any_body, since=START)) == [newer, older]
    assert sender.find_sent(replace(any_body, body="Hello Omar")) == []  # Twilio's text
    assert sender.find_sent(replace(any_body, channel="sms")) == []


# -- a WhatsApp template: any body will do, but only since the claim ------------------------


@pytest.fixture
def template_patient(booking, engine, settings, clock) -> Iterator[Dispatcher]:
    """A WhatsApp patient who never wrote to the clinic, so after_treatment goes as the
    example mapping's template; the dispatcher's sender knows when the carrier took each
    message (the app's clock, moved with each pass by `run_pass`)."""
    enrol(booking, channel="whatsapp")
    sender = RecordingSender(clock=clock)
    dispatcher = Dispatcher(
        engine, sender, PLANS, settings, rng=random.Random(7), templates=EXAMPLE_TEMPLATES
    )
    yield dispatcher
    dispatcher.close()


def test_an_ambiguous_template_send_twilio_took_is_adopted_not_sent_again(
    engine, clock, template_patient
) -> None:
    dispatcher, sender = template_patient, template_patient.sender
    sender.fail_next(Ambiguous("502 Bad Gateway"), delivered_anyway=True)
    assert run_pass(dispatcher, clock, DUE).unresolved == 1
    stuck = row(engine, "after_treatment")
    assert (stuck.status, stuck.channel, stuck.content_sid) == (
        Status.SENDING,
        "whatsapp",
        AFTER_TREATMENT.content_sid,
    )
    [(taken, _)] = sender.carrier_log.values()
    assert taken.body != stuck.body  # Twilio's list shows the template's text, not ours

    report = run_pass(dispatcher, clock, stuck.lease_until)

    assert (report.adopted, report.sent) == (1, 0)
    adopted = row(engine, "after_treatment")
    assert (adopted.status, adopted.sid) == (Status.QUEUED, next(iter(sender.carrier_log)))
    assert sender.sent == []  # never a second copy
    assert len(sender.carrier_log) == 1


def test_a_template_message_twilio_took_before_the_claim_is_not_adopted(
    engine, clock, template_patient
) -> None:
    dispatcher, sender = template_patient, template_patient.sender
    # Twilio's list holds a template message to the same number from two days before
    # (an earlier treatment's, which no row holds any more): any body matches it.
    template = Outgoing(PHONE, "whatsapp", "", content_sid=AFTER_TREATMENT.content_sid)
    earlier = sender.add_message(template, DUE - timedelta(days=2))
    sender.fail_next(Ambiguous("read timeout"))  # this time Twilio never got it
    assert run_pass(dispatcher, clock, DUE).unresolved == 1
    stuck = row(engine, "after_treatment")
    assert stuck.status == Status.SENDING

    report = run_pass(dispatcher, clock, stuck.lease_until)  # reconciled, then sent again

    assert (report.adopted, report.retrying, report.sent) == (0, 1, 1)
    sent = row(engine, "after_treatment")
    assert sent.status == Status.QUEUED
    assert sent.sid not in (None, earlier)
    assert [m.content_sid for m in sender.sent] == [AFTER_TREATMENT.content_sid]
    assert len(sender.carrier_log) == 2
