"""Retention (RETENTION_DAYS): the texts of finished aftercare go, current ones stay.

A clock is passed in throughout: the treatments are lived through at START and after,
then retention runs months later. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlmodel import Session, col, func, select

from notifier.consent.retention import Erased, Retention, erase_old_replies, erase_old_treatments
from notifier.delivery.sender import Redact
from notifier.settings import ConfigError, Settings
from notifier.store.models import ConsentChange, Message, Redaction, Reply
from notifier.worker import RETENTION_JOB_ID, add_retention_job
from tests.conftest import START, BookingSystem, Clock, TwilioWebhooks, completed_event
from tests.support.booking import cancel_event
from tests.support.staff import staff_view
from tests.support.traces import fragments, leftovers

DAYS = 30
OMAR, LAYLA, SARA = "+971501234567", "+971502222222", "+971503333333"
STRANGER, LATER_STRANGER = "+971504444444", "+971505555555"
# SIDs of the replies, to find them at Twilio.
OMAR_SAYS, LAYLA_SAYS, SARA_SAYS = "SM" + "1" * 32, "SM" + "2" * 32, "SM" + "3" * 32
STRANGER_SAYS, LATER_STRANGER_SAYS = "SM" + "4" * 32, "SM" + "5" * 32


def days(n: float) -> datetime:
    return START + timedelta(days=n)


def enrol(
    booking: BookingSystem,
    patient: str,
    name: str,
    phone: str,
    treatment: str,
    language: str = "en",
) -> None:
    event = completed_event(
        f"evt_{treatment}",
        patient={"id": patient, "first_name": name, "phone": phone, "language": language},
        treatment={"id": treatment},
        performed_at=booking.clock.now,
    )
    assert booking.post(event).status_code == 201


def cancel(booking: BookingSystem, treatment: str) -> None:
    assert booking.post(cancel_event(f"evt_x_{treatment}", treatment)).status_code == 200


def texts(client: Any, patient: str) -> list[str | None]:
    """The patient's message bodies and reply texts, as staff see them."""
    view = staff_view(client, patient).get_json()
    return [m["body"] for m in view["messages"]] + [r["body"] for r in view["replies"]]


def replies(engine: Any) -> dict[str, tuple[str | None, str | None]]:
    """Every reply's (number, text) by SID."""
    with Session(engine) as session:
        return {r.sid: (r.from_phone, r.body) for r in session.exec(select(Reply)).all()}


def anonymous_counts(engine: Any) -> dict[str, Any]:
    """What a clinic counts: rows of every kind, and messages by step and status."""
    with Session(engine) as session:
        by_status = session.exec(
            select(Message.step, Message.status, func.count()).group_by(
                col(Message.step), col(Message.status)
            )
        ).all()
        return {
            "messages": sorted(by_status),
            "replies": session.exec(select(func.count()).select_from(Reply)).one(),
            "consent": session.exec(select(func.count()).select_from(ConsentChange)).one(),
        }


@pytest.fixture
def clinic(
    booking: BookingSystem, twilio: TwilioWebhooks, clock: Clock, dispatcher: Any
) -> BookingSystem:
    """Four months of a clinic, seen from START + 131 days (cutoff: START + 101 days).

    Omar's treatment (his texts in Russian, so that none is also another's) was
    cancelled the day after it (old); Layla's is active, with only
    its yearly check-up still to come (her last message changed on day 100); Sara's was
    enrolled and cancelled recently. A stranger texted before START, another on day 120.
    """
    clock.now = days(-1)
    twilio.inbound(
        "Wrong number? Who is this, asking about my hair", sender=STRANGER, sid=STRANGER_SAYS
    )
    clock.now = START
    enrol(booking, "P-1001", "Omar", OMAR, "T-555", language="ru")
    enrol(booking, "P-2002", "Layla", LAYLA, "T-777")
    dispatcher.run_pass(START + timedelta(hours=1))  # both first messages go out
    clock.now = START + timedelta(hours=2)
    twilio.inbound("Omar here: my scalp is itchy tonight, is that normal?", sid=OMAR_SAYS)
    twilio.inbound("Layla here: is the redness normal?", sender=LAYLA, sid=LAYLA_SAYS)
    clock.now = days(1)
    cancel(booking, "T-555")
    dispatcher.run_pass(days(100))  # Layla's plan ran out: all expired but the yearly check-up
    clock.now = days(110)
    enrol(booking, "P-3003", "Sara", SARA, "T-888")
    twilio.inbound("Sara here: thank you, see you next month!", sender=SARA, sid=SARA_SAYS)
    clock.now = days(111)
    cancel(booking, "T-888")
    clock.now = days(120)
    twilio.inbound("Hello, is this the clinic?", sender=LATER_STRANGER, sid=LATER_STRANGER_SAYS)
    clock.now = days(131)
    return booking


# -- what goes and what stays -----------------------------------------------------------------


def test_an_old_treatments_texts_go_here_and_at_twilio_while_current_ones_stay(
    clinic: BookingSystem, engine: Any, dispatcher: Any, sender: Any
) -> None:
    client = clinic.client
    omar = [t for t in texts(client, "P-1001") if t]
    gone = [f for text in omar for f in fragments(text)] + [
        "Wrong number? Who is this",
        STRANGER,
    ]
    kept = {patient: texts(client, patient) for patient in ("P-2002", "P-3003")}
    assert len(omar) == 13  # eleven messages, his reply, and its acknowledgement (urgent)
    assert {n for _, _, n in leftovers(engine, gone)} == {n.casefold() for n in gone}
    counts = anonymous_counts(engine)

    erased = Retention(engine, DAYS).run(days(131))

    # Eleven messages and the acknowledgement of his urgent reply.
    assert erased == Erased(treatments=1, messages=12, replies=2, redactions=3)
    assert leftovers(engine, gone) == []
    assert set(texts(client, "P-1001")) == {None}
    assert {patient: texts(client, patient) for patient in kept} == kept
    assert replies(engine) == {
        OMAR_SAYS: (None, None),
        STRANGER_SAYS: (None, None),
        LAYLA_SAYS: (LAYLA, "Layla here: is the redness normal?"),
        SARA_SAYS: (SARA, "Sara here: thank you, see you next month!"),
        LATER_STRANGER_SAYS: (LATER_STRANGER, "Hello, is this the clinic?"),
    }
    assert anonymous_counts(engine) == counts  # every row, step and status remains

    # Twilio forgets them too, through the outbox erasure uses.
    [sent] = [m["sid"] for m in staff_view(client, "P-1001").get_json()["messages"] if m["sid"]]
    assert dispatcher.run_pass(days(131)).redacted == 3
    assert sorted(sender.redacted, key=lambda r: r.sid) == sorted(
        [Redact(sent, inbound=False), Redact(OMAR_SAYS, inbound=True), Redact(STRANGER_SAYS, True)],
        key=lambda r: r.sid,
    )


def test_a_second_run_finds_nothing_to_read_or_erase(clinic: BookingSystem, engine: Any) -> None:
    retention = Retention(engine, DAYS)
    assert retention.run(days(131))
    with Session(engine) as session:
        queued = session.exec(select(func.count()).select_from(Redaction)).one()

    assert retention.run(days(131)) == Erased()
    assert Retention(engine, DAYS).run(days(131)) == Erased()  # a restarted worker, too
    cutoff = days(131 - DAYS)
    with Session(engine) as session:  # where the sweeps stopped, nothing more is read
        assert (
            erase_old_treatments(session, cutoff, days(131), 100, retention.messages_after).read
            == 0
        )
        assert erase_old_replies(session, cutoff, days(131), 100, retention.replies_after).read == 0
        assert session.exec(select(func.count()).select_from(Redaction)).one() == queued


def test_a_pending_yearly_check_up_keeps_a_treatment_until_it_is_cancelled(
    clinic: BookingSystem, engine: Any, clock: Clock
) -> None:
    """Layla's last message changed on day 100; only her yearly check-up, still to come,
    keeps her treatment. The same worker, hour after hour, erases it once it is cancelled
    and that too is past retention (her older messages and reply were read long before)."""
    messages = staff_view(clinic.client, "P-2002").get_json()["messages"]
    assert [m["step"] for m in messages if m["status"] == "scheduled"] == ["yearly_checkup"]
    retention = Retention(engine, DAYS)
    layla = texts(clinic.client, "P-2002")
    for day in (131, 200, 300):
        retention.run(days(day))
        assert texts(clinic.client, "P-2002") == layla
    clock.now = days(301)
    cancel(clinic, "T-777")
    assert not retention.run(days(301 + DAYS - 1))
    assert texts(clinic.client, "P-2002") == layla

    erased = retention.run(days(301 + DAYS + 1))

    # Eleven messages and the acknowledgement of her (urgent) reply.
    assert (erased.treatments, erased.messages, erased.replies) == (1, 12, 1)
    assert set(texts(clinic.client, "P-2002")) == {None}
    assert replies(engine)[LAYLA_SAYS] == (None, None)


def test_a_reply_stays_while_its_patient_has_a_current_treatment(
    clinic: BookingSystem, engine: Any, clock: Clock
) -> None:
    """Omar's old treatment goes, but a new one keeps his replies (past the cutoff too)."""
    clock.now = days(125)
    enrol(clinic, "P-1001", "Omar", OMAR, "T-556")

    erased = Retention(engine, DAYS).run(days(131))

    # Eleven messages and the acknowledgement of his urgent reply; the stranger's reply.
    assert (erased.treatments, erased.messages, erased.replies) == (1, 12, 1)
    assert replies(engine)[OMAR_SAYS][1] == "Omar here: my scalp is itchy tonight, is that normal?"


def test_a_first_run_works_through_a_big_backlog_a_small_batch_at_a_time(
    booking: BookingSystem, engine: Any, clock: Clock
) -> None:
    for n in range(5):
        enrol(booking, f"P-{n}", f"Patient{n}", f"+97150000000{n}", f"T-{n}")
        cancel(booking, f"T-{n}")
    batches: list[int] = []

    def stopping() -> bool:
        batches.append(1)
        return False

    erased = Retention(engine, DAYS, batch=4, stopping=stopping).run(days(DAYS + 1))

    assert (erased.treatments, erased.messages) == (5, 55)
    assert len(batches) > 5  # a transaction per batch: at least one per treatment here
    with Session(engine) as session:
        assert session.exec(select(func.count()).where(col(Message.body).is_not(None))).one() == 0


def test_a_stopping_worker_erases_nothing_more(booking: BookingSystem, engine: Any) -> None:
    enrol(booking, "P-1001", "Omar", OMAR, "T-555")
    cancel(booking, "T-555")
    assert Retention(engine, DAYS, stopping=lambda: True).run(days(DAYS + 1)) == Erased()


# -- the worker and the setting ---------------------------------------------------------------


def test_the_worker_runs_retention_hourly_only_when_retention_days_is_set(
    booking: BookingSystem, engine: Any, settings: Settings
) -> None:
    enrol(booking, "P-1001", "Omar", OMAR, "T-555")
    cancel(booking, "T-555")
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    try:
        assert add_retention_job(scheduler, engine, settings) is None  # unset: keep
        assert scheduler.get_job(RETENTION_JOB_ID) is None

        retention = add_retention_job(scheduler, engine, replace(settings, retention_days=DAYS))
        assert retention is not None
        job = scheduler.get_job(RETENTION_JOB_ID)
        assert job.trigger.interval == timedelta(hours=1)
        assert None not in texts(booking.client, "P-1001")
        retention.clock = lambda: days(DAYS + 1)
        job.func()  # as the scheduler runs it
        assert set(texts(booking.client, "P-1001")) == {None}
        assert not retention.stopping()
    finally:
        scheduler.shutdown(wait=False)
    assert retention.stopping()  # a run under way stops after its batch


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("30", 30), ("9132", 9132), (" 365 ", 365)],
)
def test_retention_days_is_a_whole_number_of_days_or_unset(
    value: str | None, expected: int | None
) -> None:
    environ = {} if value is None else {"RETENTION_DAYS": value}
    assert Settings.from_env(environ).retention_days == expected


@pytest.mark.parametrize("value", ["29", "3", "0", "-30", "30.5", "thirty", "1e3", "٣٠", "36526"])
def test_a_retention_period_that_is_no_whole_number_or_too_short_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^RETENTION_DAYS: "):
        Settings.from_env({"RETENTION_DAYS": value})
