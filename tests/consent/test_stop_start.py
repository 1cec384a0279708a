"""STOP and START over days and weeks: nothing goes out while a patient is opted out,
START brings back only what is still valid, and only a keyword lifts a STOP."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import RecipientOptedOut
from tests.conftest import (
    START,
    BookingSystem,
    Clock,
    RecordingSender,
    TwilioWebhooks,
    completed_event,
)
from tests.support.rows import row as by_step
from tests.support.rows import rows as messages
from tests.support.rows import statuses
from tests.support.staff import consent_log, message_view, patient_view
from tests.support.times import dubai, iso


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
