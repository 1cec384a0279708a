"""The worker's job: passes back to back while a backlog lasts, then an early wake-up."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlmodel import Session, col, update

from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.outcomes import PassReport
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store.models import Message
from notifier.worker import JOB_ID, WAKE_MARGIN, DispatchJob, add_dispatch_job
from tests.support.rows import rows
from tests.support.seed import seed_messages

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
TICK = timedelta(minutes=10)


@pytest.fixture
def one_at_a_time(settings: Settings) -> Settings:
    """Claims of one message, so three due messages make a backlog."""
    return replace(settings, dispatch_batch_size=1, dispatch_interval_seconds=TICK.seconds)


@pytest.fixture
def small_dispatcher(engine, sender, one_at_a_time: Settings) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(
        engine, sender, load_plans(one_at_a_time.plans_dir), one_at_a_time, rng=random.Random(3)
    )
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def job(small_dispatcher: Dispatcher, one_at_a_time: Settings) -> Iterator[DispatchJob]:
    """The job on a paused scheduler whose next regular tick is TICK away."""
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    job = add_dispatch_job(scheduler, small_dispatcher, one_at_a_time)
    scheduler.modify_job(JOB_ID, next_run_time=NOW + TICK)
    job.clock = lambda: NOW
    yield job
    scheduler.shutdown(wait=False)


def next_run(job: DispatchJob) -> datetime:
    scheduled = job.scheduler.get_job(JOB_ID)
    assert scheduled is not None
    return scheduled.next_run_time


def test_a_full_claim_says_more_may_be_due(database_url, small_dispatcher) -> None:
    seed_messages(database_url, 2, NOW, NOW)
    assert small_dispatcher.run_pass(NOW).more is True
    last = small_dispatcher.run_pass(NOW)
    assert (last.sent, last.more) == (1, True)  # the claim was full: it cannot know
    assert small_dispatcher.run_pass(NOW).more is False


def test_one_run_drains_the_backlog_then_wakes_when_the_next_message_is_due(
    database_url, job, sender
) -> None:
    seed_messages(database_url, 3, NOW - timedelta(minutes=1), NOW)
    later = NOW + timedelta(seconds=90)
    with Session(job.dispatcher.engine) as session:  # the third falls due 90 s from now
        session.exec(update(Message).where(col(Message.id) == 3).values(send_at=later))
        session.commit()
    job()

    assert sorted(m.to for m in sender.sent) == ["+971500000001", "+971500000002"]
    assert next_run(job) == later  # not the regular tick, 10 minutes away


def test_a_wake_up_is_never_earlier_than_the_margin_nor_later_than_the_tick(
    database_url, job
) -> None:
    job()  # nothing stored: the regular tick stays
    assert next_run(job) == NOW + TICK
    seed_messages(database_url, 1, NOW + timedelta(hours=1), NOW)
    job()  # due after the tick: the tick stays
    assert next_run(job) == NOW + TICK
    job.dispatcher.throttled_until = NOW + timedelta(hours=2)
    assert job.dispatcher.next_pass_at() == NOW + timedelta(hours=2)


def test_a_message_due_now_but_not_taken_wakes_the_job_just_after_it_returns(
    database_url, job, small_dispatcher
) -> None:
    seed_messages(database_url, 1, NOW, NOW)
    small_dispatcher.throttled_until = NOW + timedelta(milliseconds=1)  # Twilio said slow down
    job()
    assert [m.status for m in rows(job.dispatcher.engine)] == ["scheduled"]
    assert next_run(job) == NOW + WAKE_MARGIN


def test_a_stopping_job_finishes_its_pass_and_starts_no_other(
    database_url, job, sender, monkeypatch
) -> None:
    seed_messages(database_url, 3, NOW, NOW)
    one_pass = job.dispatcher.run_pass

    def stopped_during(now: datetime) -> PassReport:
        report = one_pass(now)
        job.stopping.set()  # as a SIGTERM would, in the middle of the pass
        return report

    monkeypatch.setattr(job.dispatcher, "run_pass", stopped_during)
    job()
    assert len(sender.sent) == 1
    job()  # a run the scheduler started before it shut down does nothing
    assert len(sender.sent) == 1


def test_a_pass_summary_names_flags_without_values() -> None:
    assert PassReport(claimed=2, sent=2, more=True).summary() == "claimed 2, sent 2, more"
    assert PassReport().summary() == "nothing due"
