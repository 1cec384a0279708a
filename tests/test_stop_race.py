"""The STOP race: nothing is sent after an opt-out is committed (SQLite and PostgreSQL).

A message the dispatcher has claimed can meet a STOP at two moments:
- the STOP commits after the claim but before the send: the send sees it and holds;
- the STOP arrives while the request to Twilio is in flight: its commit waits until
  that send is finished and recorded, so the send happened before the opt-out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import Session, select

from notifier.models import Message, Patient, Status
from notifier.outcome import PassReport
from notifier.sending import Accepted, Outgoing
from tests.conftest import START, RecordingSender, completed_event

DUE = START + timedelta(hours=1)  # after_treatment


def status_of(engine, step: str) -> str:
    with Session(engine) as session:
        return session.exec(select(Message).where(Message.step == step)).one().status


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
        accepted = super().send(message)
        self.log.append("sent")
        return accepted


def test_a_stop_during_an_in_flight_send_commits_only_after_it(
    booking, twilio, engine, dispatcher, app
) -> None:
    assert booking.post(completed_event()).status_code == 201
    sender = InFlightSender()
    dispatcher.sender = sender
    dispatching = threading.Thread(target=dispatcher.run_pass, args=(DUE,))
    dispatching.start()
    assert sender.started.wait(timeout=30)

    def stop() -> None:
        answer = twilio.__class__(app.test_client()).inbound("STOP")
        sender.log.append(f"stop answered {answer.status_code}")

    stopping = threading.Thread(target=stop)
    stopping.start()
    stopping.join(timeout=0.5)  # give an unblocked STOP every chance to overtake the send
    sender.release.set()
    dispatching.join(timeout=30)
    stopping.join(timeout=30)

    assert sender.log == ["sent", "stop answered 200"]
    assert status_of(engine, "after_treatment") == Status.QUEUED
    with Session(engine) as session:
        assert session.exec(select(Patient)).one().opted_out
        pending = session.exec(select(Message).where(Message.step != "after_treatment")).all()
    assert {m.status for m in pending} == {Status.HELD}
    dispatcher.run_pass(START + timedelta(days=40))
    assert len(sender.sent) == 1  # and nothing after the STOP
