"""Recovering rows whose send was ambiguous or whose worker died: it cannot stick.

Each stuck row adopts a message of its own from Twilio's list (never one another row
holds), one row's trouble never stops the others, every recovery counts as an
attempt (so each row ends in a final status), and Twilio is asked about all the
stuck rows of a pass at once.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import Ambiguous, Lookup, Outgoing, RetryLater
from notifier.delivery.twilio_sender import TwilioSender
from notifier.planning.plan import load_plans
from notifier.store.models import Message, Status
from tests.conftest import START, RecordingSender, completed_event
from tests.support.fake_twilio import FakeTwilio
from tests.test_twilio_sender import settings_for

DUE = START + timedelta(hours=1)  # after_treatment
FAMILY_PHONE = "+971501234567"


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
