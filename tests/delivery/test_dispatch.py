"""The dispatcher: every due message goes out once, on time, or is settled another way."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from notifier.backoff import retry_delay
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.delivery.sender import Ambiguous, PermanentFailure, RecipientOptedOut, RetryLater
from notifier.planning.plan import load_plans
from notifier.store.models import ConsentChange, Patient, Status
from tests.conftest import PHONE, START, completed_event
from tests.support.rows import row as by_step
from tests.support.rows import rows as messages
from tests.support.times import DUBAI


def next_due(engine) -> datetime | None:
    pending = [m.send_at for m in messages(engine) if m.status == Status.SCHEDULED]
    return min(pending) if pending else None


@pytest.mark.usefixtures("enrolled")
def test_three_years_of_smp_messages_go_out_on_their_local_day_exactly_once(
    engine, dispatcher, sender
) -> None:
    sent_at: list[tuple[str, str]] = []
    end = START + timedelta(days=3 * 366)
    while (due := next_due(engine)) is not None and due < end:
        before = len(sender.sent)
        assert dispatcher.run_pass(due - timedelta(seconds=1)).sent == 0  # nothing early
        assert len(sender.sent) == before
        report = dispatcher.run_pass(due)
        assert report.sent >= 1
        sent_at += [
            (m.body.split(",")[1].strip()[:12], due.astimezone(DUBAI).strftime("%Y-%m-%d %H:%M"))
            for m in sender.sent[before:]
        ]
    steps = [
        (m.step, m.occurrence, m.send_at.astimezone(DUBAI).strftime("%Y-%m-%d %H:%M"))
        for m in messages(engine)
        if m.status == Status.QUEUED
    ]
    assert steps == [
        ("after_treatment", 0, "2027-03-01 11:00"),
        ("sunscreen", 0, "2027-03-02 10:00"),
        ("no_wash_reminder", 0, "2027-03-03 10:00"),
        ("water_rinse", 0, "2027-03-05 10:00"),
        ("moisturise", 0, "2027-03-06 10:00"),
        ("sunscreen", 1, "2027-03-09 10:00"),
        ("sunscreen", 2, "2027-03-16 10:00"),
        ("sunscreen", 3, "2027-03-23 10:00"),
        ("sunscreen", 4, "2027-03-30 10:00"),
        ("long_term_care", 0, "2027-03-31 10:00"),
        ("yearly_checkup", 0, "2028-03-01 10:00"),
        ("yearly_checkup", 1, "2029-03-01 10:00"),
        ("yearly_checkup", 2, "2030-03-01 10:00"),
    ]
    assert len(sender.sent) == 13  # nothing twice
    assert {m.to for m in sender.sent} == {PHONE}
    assert all(m.sid for m in messages(engine) if m.status == Status.QUEUED)
    assert "SPF 50" in sender.sent[1].body and "Omar" in sender.sent[1].body


@pytest.mark.usefixtures("enrolled")
def test_a_message_due_while_the_service_was_down_waits_for_the_next_window(
    engine, dispatcher, sender
) -> None:
    evening = datetime(2027, 3, 3, 21, 0, tzinfo=DUBAI)  # no_wash_reminder was due at 10:00
    report = dispatcher.run_pass(evening)
    assert report.deferred >= 1
    reminder = by_step(engine, "no_wash_reminder")
    assert reminder.status == Status.SCHEDULED
    assert reminder.send_at.astimezone(DUBAI) == datetime(2027, 3, 4, 9, 0, tzinfo=DUBAI)
    assert not any("nearly there" in m.body for m in sender.sent)
    dispatcher.run_pass(reminder.send_at)
    assert by_step(engine, "no_wash_reminder").status == Status.QUEUED


@pytest.mark.usefixtures("enrolled")
def test_a_message_past_its_expiry_is_expired_and_never_sent(engine, dispatcher, sender) -> None:
    after_day_3 = datetime(2027, 3, 5, 9, 30, tzinfo=DUBAI)
    report = dispatcher.run_pass(after_day_3)
    assert by_step(engine, "no_wash_reminder").status == Status.EXPIRED
    assert by_step(engine, "after_treatment").status == Status.EXPIRED
    assert report.expired >= 2
    assert not any("nearly there" in m.body for m in sender.sent)


@pytest.mark.usefixtures("enrolled")
def test_retry_later_backs_off_and_then_sends_once(engine, dispatcher, sender) -> None:
    due = by_step(engine, "after_treatment").send_at
    sender.fail_next(RetryLater("429 Too Many Requests", code=20429))
    assert dispatcher.run_pass(due).retrying == 1
    retried = by_step(engine, "after_treatment")
    assert retried.status == Status.SCHEDULED
    assert timedelta(seconds=15) <= retried.send_at - due <= timedelta(seconds=30)
    assert dispatcher.run_pass(retried.send_at - timedelta(seconds=1)).sent == 0
    assert dispatcher.run_pass(retried.send_at).sent == 1
    final = by_step(engine, "after_treatment")
    assert (final.status, final.attempts) == (Status.QUEUED, 2)
    assert len(sender.sent) == 1


@pytest.mark.usefixtures("enrolled")
def test_retries_stop_after_the_maximum_attempts(engine, sender, settings, dispatcher) -> None:
    limited = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, max_attempts=2),
        rng=random.Random(1),
    )
    try:
        for _ in range(2):
            sender.fail_next(RetryLater("503 from a proxy"))
            limited.run_pass(by_step(engine, "after_treatment").send_at)
    finally:
        limited.close()
    failed = by_step(engine, "after_treatment")
    assert (failed.status, failed.attempts) == (Status.FAILED, 2)
    assert failed.error_message == "503 from a proxy"


@pytest.mark.usefixtures("enrolled")
def test_a_permanent_error_fails_the_message_with_its_code_and_is_not_retried(
    engine, dispatcher, sender
) -> None:
    due = by_step(engine, "after_treatment").send_at
    sender.fail_next(PermanentFailure("not a valid phone number", code=21211))
    assert dispatcher.run_pass(due).failed == 1
    failed = by_step(engine, "after_treatment")
    assert (failed.status, failed.error_code) == (Status.FAILED, 21211)
    dispatcher.run_pass(due + timedelta(hours=2))
    assert by_step(engine, "after_treatment").status == Status.FAILED
    assert sender.sent == []
    assert by_step(engine, "no_wash_reminder").status == Status.SCHEDULED  # others go on


@pytest.mark.usefixtures("enrolled")
def test_twilio_21610_opts_the_patient_out_and_holds_the_rest(engine, dispatcher, sender) -> None:
    due = by_step(engine, "after_treatment").send_at
    sender.fail_next(RecipientOptedOut("unsubscribed recipient", code=21610))
    dispatcher.run_pass(due)
    failed = by_step(engine, "after_treatment")
    assert (failed.status, failed.error_code) == (Status.FAILED, 21610)
    others = [m.status for m in messages(engine) if m.step != "after_treatment"]
    assert others and set(others) == {Status.HELD}
    with Session(engine) as session:
        patient = session.exec(select(Patient)).one()
        log = session.exec(select(ConsentChange).order_by(col(ConsentChange.id))).all()
    assert patient.opted_out
    assert [(c.consented, c.source) for c in log] == [(True, "booking"), (False, "twilio_21610")]
    dispatcher.run_pass(START + timedelta(days=40))
    assert sender.sent == []


@pytest.mark.usefixtures("enrolled")
def test_an_ambiguous_send_that_twilio_took_is_adopted_not_sent_again(
    engine, dispatcher, sender
) -> None:
    due = by_step(engine, "after_treatment").send_at
    sender.fail_next(Ambiguous("502 Bad Gateway"), delivered_anyway=True)
    assert dispatcher.run_pass(due).unresolved == 1
    pending = by_step(engine, "after_treatment")
    assert pending.status == Status.SENDING and pending.lease_until > due
    assert dispatcher.run_pass(pending.lease_until - timedelta(seconds=1)).adopted == 0
    report = dispatcher.run_pass(pending.lease_until)
    assert report.adopted == 1
    adopted = by_step(engine, "after_treatment")
    assert adopted.status == Status.QUEUED
    assert adopted.sid in sender.carrier_log
    assert sender.sent == []  # never a second copy
    assert len(sender.carrier_log) == 1


@pytest.mark.usefixtures("enrolled")
def test_an_ambiguous_send_twilio_never_got_is_sent_once_more(engine, dispatcher, sender) -> None:
    due = by_step(engine, "after_treatment").send_at
    sender.fail_next(Ambiguous("read timeout"))
    dispatcher.run_pass(due)
    lease = by_step(engine, "after_treatment").lease_until
    report = dispatcher.run_pass(lease)  # reconciled (not found), then claimed and sent
    assert (report.retrying, report.sent) == (1, 1)
    assert sender.lookups == 1
    assert len(sender.carrier_log) == 1
    assert by_step(engine, "after_treatment").status == Status.QUEUED


@pytest.mark.usefixtures("enrolled")
def test_a_row_left_by_a_dead_worker_is_recovered_after_its_lease(
    engine, dispatcher, sender, settings
) -> None:
    due = by_step(engine, "after_treatment").send_at
    claimed = dispatcher._claim(due)  # a worker claims, then dies before sending
    assert claimed == [by_step(engine, "after_treatment").id]
    assert dispatcher.run_pass(due + timedelta(seconds=settings.lease_seconds - 1)).sent == 0
    assert by_step(engine, "after_treatment").status == Status.SENDING
    recovered_at = due + timedelta(seconds=settings.lease_seconds)
    dispatcher.run_pass(recovered_at)
    dispatcher.run_pass(recovered_at)
    assert sender.lookups == 1  # Twilio was asked before anything was re-sent
    assert len(sender.sent) == 1
    assert by_step(engine, "after_treatment").status == Status.QUEUED


@pytest.mark.usefixtures("enrolled")
def test_consent_withdrawn_by_the_clinic_holds_messages(
    engine, booking, dispatcher, sender
) -> None:
    answer = booking.post(completed_event("evt_0002", patient={"consent": False}))
    assert answer.status_code == 200
    dispatcher.run_pass(START + timedelta(days=2))
    assert sender.sent == []
    statuses = {m.step: m.status for m in messages(engine)}
    assert statuses["sunscreen"] == Status.HELD
    assert statuses["after_treatment"] == Status.EXPIRED or statuses["after_treatment"] in (
        Status.HELD,
        Status.CANCELLED,
    )


def test_the_status_callback_is_set_when_public_base_url_is(
    engine, sender, settings, booking
) -> None:
    assert booking.post(completed_event()).status_code == 201
    public = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, public_base_url="https://aftercare.example.org"),
    )
    try:
        public.run_pass(START + timedelta(hours=1))
    finally:
        public.close()
    assert sender.sent[0].status_callback == (
        "https://aftercare.example.org/webhooks/twilio/status"
    )


def test_without_public_base_url_no_status_callback_is_sent(booking, dispatcher, sender) -> None:
    assert booking.post(completed_event()).status_code == 201
    dispatcher.run_pass(START + timedelta(hours=1))
    assert sender.sent[0].status_callback is None


def test_retry_delay_grows_exponentially_with_bounded_jitter() -> None:
    rng = random.Random(3)
    for attempts, base in [(1, 30), (2, 60), (3, 120), (8, 3600), (20, 3600)]:
        delays = [retry_delay(attempts, rng).total_seconds() for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays), (attempts, delays)
        assert len(set(delays)) > 1  # jittered


def test_a_pass_with_nothing_due_does_nothing(dispatcher, sender) -> None:
    report = dispatcher.run_pass(datetime(2027, 1, 1, tzinfo=UTC))
    assert report.summary() == "nothing due"
    assert sender.sent == []


@pytest.mark.usefixtures("enrolled")
def test_a_rate_limit_halves_the_next_claim_and_pauses_briefly(
    engine, dispatcher, sender, settings
) -> None:
    from notifier.delivery.sender import RateLimited

    due = by_step(engine, "after_treatment").send_at
    sender.fail_next(RateLimited("429 Too Many Requests", code=20429))
    first = dispatcher.run_pass(due)
    assert (first.rate_limited, first.retrying) == (1, 1)
    assert dispatcher.claim_limit == dispatcher.max_claim // 2
    paused_until = dispatcher.throttled_until
    assert paused_until is not None
    assert timedelta(seconds=0.5) <= paused_until - due <= timedelta(seconds=1)
    # Another message falls due while paused: it waits, nothing is claimed.
    later = datetime(2027, 3, 2, 10, 0, tzinfo=DUBAI)
    dispatcher.throttled_until = later + timedelta(seconds=1)
    paused = dispatcher.run_pass(later)
    assert (paused.throttled, paused.claimed) == (True, 0)
    resumed = dispatcher.run_pass(later + timedelta(seconds=1))
    assert resumed.sent == 2  # the retried one and sunscreen #1
    assert dispatcher.throttled_until is None
    assert dispatcher.claim_limit > dispatcher.max_claim // 2  # growing back


def test_repeated_rate_limits_shrink_claims_but_never_stall(engine, sender, settings) -> None:
    dispatcher = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, dispatch_batch_size=64, dispatch_concurrency=64),
        rng=random.Random(2),
    )
    try:
        for streak in range(1, 12):
            report = PassReport(rate_limited=1)
            dispatcher._throttle(report, START)
            assert dispatcher.throttled_until - START <= timedelta(seconds=10)
            assert dispatcher.claim_limit == max(1, 64 >> streak)
        for _ in range(20):
            dispatcher._throttle(PassReport(), START)
        assert dispatcher.claim_limit == 64
    finally:
        dispatcher.close()


def test_a_claim_is_one_round_of_parallel_sends(engine, sender, settings) -> None:
    # Every request of a pass starts right after consent is re-read: none waits for a
    # slot while a STOP could commit.
    dispatcher = Dispatcher(
        engine,
        sender,
        load_plans(settings.plans_dir),
        replace(settings, dispatch_batch_size=200, dispatch_concurrency=8),
    )
    try:
        assert dispatcher.max_claim == dispatcher.claim_limit == 8
    finally:
        dispatcher.close()
