"""Retries that arrive at the same moment: never a 500, never stored twice.

Booking systems and Twilio retry, sometimes into two processes at once. Each test
releases its threads together with a barrier against the real app (its own test
client per thread), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlmodel import Session, func, select

from notifier import create_app
from notifier.store.db import TurnLock, make_engine
from notifier.store.models import BookingEvent, ConsentChange, Message, Patient, Reply, Treatment
from tests.conftest import BookingSystem, TwilioWebhooks, completed_event
from tests.support.rows import count

AT_ONCE = 8


def at_once(app: Any, request: Callable[[Any, int], Any], times: int = AT_ONCE) -> list[Any]:
    """Fire `request(client, n)` from `times` threads (n = 0, 1, ...) released together;
    the answers, in order of n."""
    barrier = threading.Barrier(times)
    answers: list[Any] = [None] * times
    errors: list[BaseException] = []

    def fire(n: int) -> None:
        client = app.test_client()
        barrier.wait(timeout=30)
        try:
            answers[n] = request(client, n)
        except BaseException as error:  # a crash in the app must fail the test, not hang it
            errors.append(error)

    threads = [threading.Thread(target=fire, args=(n,)) for n in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return answers


def test_the_same_event_at_once_is_enrolled_once_and_replayed_to_the_rest(
    app, clock, engine
) -> None:
    event = completed_event()
    answers = at_once(app, lambda client, _: BookingSystem(client, clock).post(event))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * (AT_ONCE - 1) + [201]
    assert len({a.get_data() for a in answers}) == 1  # the same body for every one
    assert (count(engine, Patient), count(engine, Treatment)) == (1, 1)
    assert count(engine, BookingEvent) == 1
    assert count(engine, Message) == len(answers[0].get_json()["scheduled"]) + len(
        answers[0].get_json()["expired"]
    )


def test_several_events_for_one_new_patient_and_treatment_at_once_store_them_once(
    app, clock, engine
) -> None:
    def post(client: Any, n: int) -> Any:
        return BookingSystem(client, clock).post(completed_event(f"evt_retry_{n}"))

    answers = at_once(app, post)

    assert sorted(a.status_code for a in answers) == [200] * (AT_ONCE - 1) + [201]
    assert (count(engine, Patient), count(engine, Treatment)) == (1, 1)
    assert count(engine, BookingEvent) == AT_ONCE  # each event id answered, once
    with Session(engine) as session:
        steps = session.exec(select(Message.step, Message.occurrence)).all()
    assert len(steps) == len(set(steps))  # no message planned twice


def test_several_treatments_for_one_new_patient_at_once_make_one_patient(
    app, clock, engine
) -> None:
    def post(client: Any, n: int) -> Any:
        event = completed_event(f"evt_t_{n}", treatment={"id": f"T-{n}"})
        return BookingSystem(client, clock).post(event)

    answers = at_once(app, post)

    assert all(a.status_code in (200, 201) for a in answers), [a.status_code for a in answers]
    assert count(engine, Patient) == 1
    assert count(engine, Treatment) == AT_ONCE
    with Session(engine) as session:
        active = session.exec(
            select(func.count()).select_from(Treatment).where(Treatment.status == "active")
        ).one()
    assert active == 1  # the sessions supersede each other: one plan runs


def test_the_same_inbound_message_at_once_is_stored_once(app, engine) -> None:
    sid = "SM" + "7" * 32

    def inbound(client: Any, _: int) -> Any:
        return TwilioWebhooks(client).inbound("Is a little redness normal?", sid=sid)

    answers = at_once(app, inbound)

    assert [a.status_code for a in answers] == [200] * AT_ONCE
    assert count(engine, Reply) == 1


def test_a_stop_and_a_start_crossing_leave_a_consistent_patient(app, booking, engine) -> None:
    assert booking.post(completed_event()).status_code == 201

    def keyword(client: Any, n: int) -> Any:
        return TwilioWebhooks(client).inbound("STOP" if n % 2 else "START")

    answers = at_once(app, keyword)

    assert [a.status_code for a in answers] == [200] * AT_ONCE
    with Session(engine) as session:
        patient = session.exec(select(Patient)).one()
        changes = session.exec(
            select(ConsentChange)
            .where(ConsentChange.source == "keyword")
            .order_by(ConsentChange.id)  # type: ignore[arg-type]
        ).all()
        statuses = set(session.exec(select(Message.status)).all())
    # Every change flipped the state, so the log alternates and ends where the patient is.
    flips = [c.consented for c in changes]
    assert all(a != b for a, b in itertools.pairwise(flips))
    assert (not flips) or flips[-1] == (not patient.opted_out)
    assert statuses <= ({"held", "expired"} if patient.opted_out else {"scheduled", "expired"})


def test_a_database_that_cannot_be_reached_answers_503_to_try_again(settings, clock) -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/none")
    app = create_app(settings, engine=unreachable, clock=clock)

    answer = BookingSystem(app.test_client(), clock).post(completed_event())

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.get_json()["error"] == "Service Unavailable"


def test_sqlite_writers_of_a_process_get_the_database_in_the_order_they_asked() -> None:
    lock = TurnLock()
    assert lock.acquire(timeout=1)
    order: list[int] = []

    def writer(n: int) -> None:
        assert lock.acquire(timeout=10)
        order.append(n)
        lock.release()

    threads = []
    for n in range(5):  # each queues behind the one before it
        thread = threading.Thread(target=writer, args=(n,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while len(lock._queue) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    lock.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]


def test_a_writer_that_gives_up_waiting_leaves_the_queue() -> None:
    lock = TurnLock()
    assert lock.acquire(timeout=1)
    assert lock.acquire(timeout=1)  # re-entrant for its holder
    lock.release()
    waited: list[bool] = []
    thread = threading.Thread(target=lambda: waited.append(lock.acquire(timeout=0.05)))
    thread.start()
    thread.join(timeout=10)
    assert waited == [False] and not lock._queue
    lock.release()
    assert lock.acquire(timeout=0.05)  # free again
