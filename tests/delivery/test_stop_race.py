"""What a send in flight meets: a STOP, an erasure, a `patient.updated` (SQLite and PostgreSQL).

No transaction is open while a request to Twilio is in flight, so none of these
waits for the send. The guarantees:
- a STOP committed after the claim but before the request starts holds the message
  (consent is re-read immediately before the requests start);
- a STOP committed while the request is on the wire is answered at once; that one
  message has gone out, everything after it is held;
- an erasure or an update committed while the request is on the wire wins: the
  send's outcome is recorded on the rows as they are now, never writing erased or
  outdated data back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.delivery.sender import Accepted, Outgoing, RetryLater
from notifier.store.models import Patient, Status
from tests.conftest import DUE, START, RecordingSender, TwilioWebhooks, completed_event
from tests.support.booking import erase_event, update_event
from tests.support.rows import row, rows


def status_of(engine: Any, step: str) -> str:
    return row(engine, step).status


def test_a_stop_committed_after_the_claim_holds_the_message(
    booking, twilio, engine, dispatcher, sender
) -> None:
    assert booking.post(completed_event()).status_code == 201
    batch = dispatcher._claim(DUE)
    assert len(batch) == 1 and status_of(engine, "after_treatment") == Status.SENDING
    assert twilio.inbound("STOP").status_code == 200  # commits while the row is claimed

    report = PassReport()
    dispatcher._send(batch, DUE, report)

    assert sender.sent == []
    assert report.held == 1
    assert status_of(engine, "after_treatment") == Status.HELD


@dataclass
class InFlightSender(RecordingSender):
    """Holds each request 'in flight' until the test lets it finish."""

    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    log: list[str] = field(default_factory=list)

    def send(self, message: Outgoing) -> Accepted:
        self.started.set()
        assert self.release.wait(timeout=30), "the test never released the send"
        try:
            return super().send(message)
        finally:
            self.log.append("sent")


@contextmanager
def in_flight(dispatcher: Dispatcher, at: Any) -> Iterator[InFlightSender]:
    """A pass at `at` whose request to Twilio is on the wire until the block ends."""
    sender = InFlightSender()
    dispatcher.sender = sender
    reports: list[PassReport] = []
    dispatching = threading.Thread(target=lambda: reports.append(dispatcher.run_pass(at)))
    dispatching.start()
    try:
        assert sender.started.wait(timeout=30), "the pass never sent"
        yield sender
    finally:
        sender.release.set()
        dispatching.join(timeout=30)
    assert reports, "the pass did not finish"


def test_a_stop_during_an_in_flight_send_is_answered_at_once_and_holds_the_rest(
    booking, app, engine, dispatcher
) -> None:
    assert booking.post(completed_event()).status_code == 201
    with in_flight(dispatcher, DUE) as sender:
        answer = TwilioWebhooks(app.test_client()).inbound("STOP")
        sender.log.append(f"stop answered {answer.status_code}")

    assert sender.log == ["stop answered 200", "sent"]  # the STOP did not wait
    assert status_of(engine, "after_treatment") == Status.QUEUED  # it was on the wire
    with Session(engine) as session:
        assert session.exec(select(Patient)).one().opted_out
    assert {m.status for m in rows(engine) if m.step != "after_treatment"} == {Status.HELD}
    dispatcher.run_pass(START + timedelta(days=40))
    assert len(sender.sent) == 1  # and nothing after the STOP


def erase(booking: Any) -> None:
    assert booking.post(erase_event("evt_erase")).json["erased"] is True


def test_an_erasure_during_an_in_flight_send_wins(booking, engine, dispatcher) -> None:
    assert booking.post(completed_event()).status_code == 201
    with in_flight(dispatcher, DUE):
        erase(booking)

    sent = row(engine, "after_treatment")
    assert (sent.status, sent.body) == (Status.QUEUED, None)  # recorded, nothing written back
    assert all(m.body is None for m in rows(engine))
    with Session(engine) as session:
        patient = session.exec(select(Patient)).one()
    assert (patient.first_name, patient.phone) == (None, None)


def test_an_erasure_during_a_send_that_must_be_retried_cancels_it(
    booking, engine, dispatcher
) -> None:
    assert booking.post(completed_event()).status_code == 201
    with in_flight(dispatcher, DUE) as sender:
        sender.fail_next(RetryLater("429 Too Many Requests"))
        erase(booking)

    assert status_of(engine, "after_treatment") == Status.CANCELLED  # not back to scheduled
    assert {m.status for m in rows(engine)} <= {Status.CANCELLED, Status.EXPIRED}


def test_an_erasure_during_a_yearly_send_schedules_no_next_anniversary(
    booking, engine, dispatcher
) -> None:
    assert booking.post(completed_event()).status_code == 201
    yearly = row(engine, "yearly_checkup")
    with in_flight(dispatcher, yearly.send_at):  # everything else has expired by then
        erase(booking)

    checkups = [m for m in rows(engine) if m.step == "yearly_checkup"]
    assert [(m.occurrence, m.status) for m in checkups] == [(yearly.occurrence, Status.QUEUED)]
    assert all(m.body is None for m in rows(engine))


def update_language(booking: Any, language: str) -> None:
    event = update_event(f"evt_lang_{language}", language=language)
    assert booking.post(event).json["updated"] is True


@pytest.fixture
def english(booking, clock, engine) -> str:
    """A patient enrolled in English, the app's clock at the first message's due time:
    that message's body."""
    assert booking.post(completed_event()).status_code == 201
    clock.now = DUE
    return row(engine, "after_treatment").body


def test_an_update_during_a_send_that_must_be_retried_re_renders_it(
    booking, engine, dispatcher, english
) -> None:
    with in_flight(dispatcher, DUE) as sender:
        sender.fail_next(RetryLater("429 Too Many Requests"))
        update_language(booking, "ar")

    retried = row(engine, "after_treatment")
    assert (retried.status, retried.language) == (Status.SCHEDULED, "ar")
    assert retried.body != english
    assert any("\u0600" <= ch <= "\u06ff" for ch in retried.body)  # written in Arabic
    assert all(m.language == "ar" for m in rows(engine) if m.status == Status.SCHEDULED)


def test_an_update_during_an_accepted_send_keeps_what_was_sent(
    booking, engine, dispatcher, english
) -> None:
    with in_flight(dispatcher, DUE) as sender:
        update_language(booking, "ru")

    sent = row(engine, "after_treatment")
    assert (sent.status, sent.language, sent.body) == (Status.QUEUED, "en", english)
    assert sender.sent[0].body == english
    assert all(m.language == "ru" for m in rows(engine) if m.status == Status.SCHEDULED)
