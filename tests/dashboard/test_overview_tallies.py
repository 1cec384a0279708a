"""The overview's tallies: database triggers count every message and reply as it is
written, changed or deleted; folding moves the counts without changing them; the
overview's days are exact local days; concurrent writers never wait on a count.

Every test that uses `database_url` also checks, afterwards, that the tallies count
exactly what its database holds (`tests.support.tallies.check_database`)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, inspect, text
from sqlmodel import Session, col, delete, select, update

from notifier.consent.erasure import erase_patient
from notifier.staff import overview
from notifier.store import migrate, tally
from notifier.store.db import make_engine, transaction
from notifier.store.models import Message, MessageTallyChange, Reply, ReplyTallyChange
from notifier.worker import TALLY_INTERVAL, TALLY_JOB_ID, add_upkeep_jobs, fold_tallies
from tests.dashboard.conftest import Clinic
from tests.support.rows import count
from tests.support.tallies import (
    assert_tallies_match,
    message_tallies,
    message_truth,
    quarter,
)

TRIGGERS = {
    "sqlite": {
        "message_tally_insert",
        "message_tally_delete",
        "message_tally_update",
        "reply_tally_insert",
        "reply_tally_delete",
        "reply_tally_update_old",
        "reply_tally_update_new",
    },
    "postgresql": {"message_tally", "message_tally_update", "reply_tally", "reply_tally_update"},
}


def triggers(engine: Any) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            found = connection.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'"))
        else:
            found = connection.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
        return {name for (name,) in found}


def changes(engine: Any) -> int:
    return count(engine, MessageTallyChange)


def test_the_triggers_are_in_place_at_head(engine: Any) -> None:
    """A batch migration on SQLite recreates a table without its triggers: this fails
    then, until the migration creates them again."""
    assert triggers(engine) == TRIGGERS[engine.dialect.name]


def test_every_write_to_a_counted_column_moves_exactly_one_count(
    clinic: Clinic, engine: Any
) -> None:
    omar = clinic.patient()
    first = clinic.message(omar, "day_1", status="scheduled")
    clinic.message(omar, "day_3", status="scheduled", send_at=clinic.now + timedelta(days=2))
    assert changes(engine) == 2
    assert_tallies_match(engine)

    with transaction(engine) as session:  # the ORM, one row
        message = session.get(Message, first.id)
        assert message is not None
        message.status = "sending"
    assert changes(engine) == 4  # -1 scheduled, +1 sending
    with transaction(engine) as session:  # a bulk update, as hold_pending does
        session.exec(update(Message).values(status="held"))  # type: ignore[call-overload]
    assert changes(engine) == 8
    with transaction(engine) as session:  # rescheduled into another quarter hour
        session.exec(
            update(Message)  # type: ignore[call-overload]
            .where(col(Message.id) == first.id)
            .values(send_at=clinic.now + timedelta(minutes=20))
        )
    assert_tallies_match(engine)

    before = changes(engine)
    with transaction(engine) as session:  # nothing counted changes
        session.exec(update(Message).values(body=None, attempts=3))  # type: ignore[call-overload]
        session.exec(update(Message).values(status="held"))  # type: ignore[call-overload]
    assert changes(engine) == before

    with transaction(engine) as session:
        session.exec(delete(Message).where(col(Message.id) == first.id))  # type: ignore[call-overload]
    assert_tallies_match(engine)
    with Session(engine) as session:
        assert sum(message_truth(session).values()) == 1


def test_a_fold_moves_the_changes_into_the_tallies_without_changing_a_count(
    clinic: Clinic, engine: Any
) -> None:
    omar = clinic.patient()
    sent = clinic.message(omar, "day_1", status="queued")
    clinic.message(omar, "day_2", status="delivered", channel="whatsapp")
    with Session(engine) as session:
        counted = message_tallies(session)
    assert fold_tallies(engine) == 2
    assert changes(engine) == 0
    with Session(engine) as session:
        assert message_tallies(session) == counted

    with transaction(engine) as session:  # after a fold: a count in each place
        session.exec(
            update(Message)  # type: ignore[call-overload]
            .where(col(Message.id) == sent.id)
            .values(status="delivered", channel="whatsapp")
        )
    assert changes(engine) == 2
    assert_tallies_match(engine)
    assert fold_tallies(engine) == 2
    assert_tallies_match(engine)
    with engine.connect() as connection:  # the emptied count is gone, not kept as 0
        kept = connection.execute(text("SELECT step, status, n FROM messagetally")).all()
    assert sorted(kept) == [("day_1", "delivered", 1), ("day_2", "delivered", 1)]
    assert fold_tallies(engine) == 0


def test_replies_are_counted_against_the_step_they_followed_and_stay_counted_after_erasure(
    clinic: Clinic, engine: Any
) -> None:
    omar = clinic.patient()
    clinic.message(omar, "day_1", send_at=clinic.now - timedelta(hours=5))
    clinic.message(omar, "day_3", status="scheduled", send_at=clinic.now + timedelta(days=2))
    clinic.reply(omar, "is redness normal?", received_at=clinic.now - timedelta(hours=4))
    clinic.reply(None, "wrong number?")  # from nobody we know: no step, not counted
    day = (clinic.now - timedelta(days=1), clinic.now + timedelta(days=3))
    with Session(engine) as session:
        found = tally.replies(session, *day)
    assert [(r.quarter, r.step, r.n) for r in found] == [
        (quarter(clinic.now - timedelta(hours=4)), "day_1", 1)
    ]
    assert count(engine, ReplyTallyChange) == 1

    fold_tallies(engine)
    with transaction(engine) as session:  # texts and numbers go; the rows, anonymous, stay
        erase_patient(session, omar.external_id, clinic.now)
    with Session(engine) as session:
        assert [(r.step, r.n) for r in tally.replies(session, *day)] == [("day_1", 1)]
        assert sorted((m.step, m.status) for m in tally.messages(session, *day)) == [
            ("day_1", "delivered"),
            ("day_3", "cancelled"),
        ]


@pytest.mark.parametrize(
    ("zone", "local_midnight_utc"),
    [
        ("Asia/Kolkata", datetime(2027, 2, 28, 18, 30, tzinfo=UTC)),  # +05:30
        ("Asia/Kathmandu", datetime(2027, 2, 28, 18, 15, tzinfo=UTC)),  # +05:45
        ("America/New_York", datetime(2027, 3, 1, 5, 0, tzinfo=UTC)),  # -05:00
    ],
)
def test_days_are_the_clinic_zones_own_even_off_the_hour(
    clinic: Clinic, engine: Any, zone: str, local_midnight_utc: datetime
) -> None:
    """Counts per quarter hour add up to exact local days in every zone in use."""
    omar = clinic.patient()
    clinic.message(omar, "day_1", send_at=local_midnight_utc - timedelta(minutes=1))
    clinic.message(omar, "day_2", send_at=local_midnight_utc)
    with Session(engine) as session:
        days = overview.figures(session, local_midnight_utc + timedelta(hours=2), ZoneInfo(zone))
    local = local_midnight_utc.astimezone(ZoneInfo(zone)).date()
    assert days.days[local] == {"delivered": 1}
    assert days.days[local - timedelta(days=1)] == {"delivered": 1}
    assert len(days.days) == overview.DAYS


def test_a_message_due_later_today_counts_on_today_and_not_after(
    clinic: Clinic, engine: Any
) -> None:
    omar = clinic.patient()
    zone = ZoneInfo("Asia/Dubai")
    end_of_today = datetime.combine(
        clinic.now.astimezone(zone).date() + timedelta(days=1), datetime.min.time(), zone
    )
    clinic.message(omar, "day_1", status="scheduled", send_at=end_of_today - timedelta(minutes=1))
    clinic.message(omar, "day_2", status="scheduled", send_at=end_of_today)
    with Session(engine) as session:
        figures = overview.figures(session, clinic.now, zone)
    assert figures.days[clinic.now.astimezone(zone).date()] == {"scheduled": 1}
    assert sum(sum(d.values()) for d in figures.days.values()) == 1


def test_the_worker_and_aftercare_run_fold_every_minute(settings: Any, engine: Any) -> None:
    scheduler = BackgroundScheduler(timezone=UTC)
    add_upkeep_jobs(scheduler, engine, settings)  # what both start beside dispatching
    job = scheduler.get_job(TALLY_JOB_ID)
    assert job is not None
    assert job.trigger.interval == TALLY_INTERVAL == timedelta(minutes=1)
    assert (job.func, job.args) == (fold_tallies, (engine,))


# -- PostgreSQL: concurrent transactions ---------------------------------------------


@pytest.mark.postgres
def test_writers_touching_the_same_counts_in_opposite_orders_neither_wait_nor_deadlock(
    postgres_url: str,
) -> None:
    """Two transactions each move many messages of the same counts, in opposite orders,
    and hold on before committing. Counts kept in place would make them wait for each
    other's row locks (and deadlock); appended changes do not."""
    engine = make_engine(postgres_url)
    clinic = Clinic(engine, datetime(2027, 3, 1, 6, 0, tzinfo=UTC))
    omar = clinic.patient()
    ids = [
        clinic.message(omar, f"day_{n // 2 % 2}", status="scheduled", sid=None).id
        for n in range(40)
    ]
    halves = [ids[0::2], list(reversed(ids[1::2]))]
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def move(mine: list[int]) -> None:
        try:
            with transaction(engine) as session:
                session.execute(text("SET LOCAL lock_timeout = '2s'"))
                barrier.wait()
                for message_id in mine:
                    session.exec(
                        update(Message)  # type: ignore[call-overload]
                        .where(col(Message.id) == message_id)
                        .values(status="sending")
                    )
                barrier.wait()  # both have written every change, neither has committed
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=move, args=(half,)) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_tallies_match(engine)
    engine.dispose()


@pytest.mark.postgres
def test_folds_racing_each_other_and_writers_lose_and_double_no_count(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    clinic = Clinic(engine, datetime(2027, 3, 1, 6, 0, tzinfo=UTC))
    omar = clinic.patient()
    for n in range(30):
        clinic.message(omar, f"day_{n % 3}", status="queued", sid=f"SMrace{n:029d}")
    barrier = threading.Barrier(4, timeout=10)
    errors: list[BaseException] = []

    def folder() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                fold_tallies(engine)
        except BaseException as error:
            errors.append(error)

    def writer(status: str, step: str) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                with transaction(engine) as session:
                    session.exec(
                        update(Message)  # type: ignore[call-overload]
                        .where(col(Message.step) == step)
                        .values(status=status)
                    )
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=folder),
        threading.Thread(target=folder),
        threading.Thread(target=writer, args=("delivered", "day_0")),
        threading.Thread(target=writer, args=("read", "day_1")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_tallies_match(engine)
    fold_tallies(engine)
    assert changes(engine) == 0
    assert_tallies_match(engine)
    engine.dispose()


# -- the migration --------------------------------------------------------------------


def test_the_migration_counts_what_was_stored_before_it(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'before.sqlite3'}"
    migrate.upgrade(url, "0012")
    engine = create_engine(url)
    assert not inspect(engine).has_table("messagetally")
    engine.dispose()
    engine = make_engine(url)
    # Rows written by hand: the models already expect the tallies' tables.
    now = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO patient (id, external_id, first_name, phone, channel, language,"
                " timezone, consented, opted_out, created_at, updated_at) VALUES (1, 'P-1',"
                " 'Omar', '+971501234567', 'sms', 'en', 'Asia/Dubai', 1, 0, :t, :t)"
            ),
            {"t": now.replace(tzinfo=None)},
        )
        connection.execute(
            text(
                "INSERT INTO treatment (id, external_id, patient_id, kind, performed_at, status,"
                " created_at, updated_at) VALUES (1, 'T-1', 1, 'smp', :t, 'active', :t, :t)"
            ),
            {"t": now.replace(tzinfo=None)},
        )
        for n, status in enumerate(("delivered", "delivered", "failed", "scheduled")):
            at = (now + timedelta(minutes=7 * n)).replace(tzinfo=None)
            connection.execute(
                text(
                    "INSERT INTO message (patient_id, treatment_id, kind, step, occurrence,"
                    " channel, language, body, send_at, expires_at, window_start, window_end,"
                    " status, attempts, created_at, updated_at) VALUES (1, 1, 'plan', :step, 0,"
                    " 'sms', 'en', 'text', :at, :at, 0, 1439, :status, 0, :at, :at)"
                ),
                {"step": f"day_{n}", "at": at, "status": status},
            )
        connection.execute(
            text(
                "INSERT INTO reply (sid, patient_id, channel, body, received_at, handled,"
                " urgent, category, after_step) VALUES ('SMr1', 1, 'sms', 'ok', :t, 0, 0,"
                " 'other', 'day_0')"
            ),
            {"t": now.replace(tzinfo=None)},
        )
    migrate.upgrade(url)
    assert changes(engine) == 0  # counted by the migration itself, not by the triggers
    assert_tallies_match(engine)
    with Session(engine) as session:
        assert sum(message_tallies(session).values()) == 4
        assert session.exec(select(Reply)).one().after_step == "day_0"
    engine.dispose()
