"""`patient.erased` (SPEC §5): the patient's personal data goes, anonymous counts stay.

The central test lives a patient's whole story (messages sent with SIDs, status
callbacks, replies by SMS and WhatsApp, STOP and START, several booking events),
erases them, and then reads every text column of every row of every table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, func, select

from notifier import create_app
from notifier.delivery.dispatcher import Dispatcher
from notifier.settings import Settings, StaffToken
from notifier.store import migrate
from notifier.store.db import make_engine
from notifier.store.models import ConsentChange, Message, StatusCallback
from tests.conftest import (
    PHONE,
    SECRET,
    STAFF,
    STAFF_TOKEN,
    START,
    BookingSystem,
    Clock,
    RecordingSender,
    TwilioWebhooks,
    completed_event,
)
from tests.support.booking import erase_event
from tests.support.rows import count
from tests.support.staff import staff_view
from tests.support.times import dubai
from tests.support.traces import fragments, leftovers
from webhooks import booking as booking_module

OTHER_PHONE = "+971509999999"
IDENTIFIERS = ["+971501234567", "971501234567", "0501234567", "501234567", "Omar"]
BOOKING_IDS = ["P-1001", "T-555", "T-556"]


# -- the whole story, then nothing left -------------------------------------------------------


def test_erasure_leaves_no_trace_of_the_patient_in_any_column_of_any_table(
    booking: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    clock: Clock,
    dispatcher: Dispatcher,
    sender: RecordingSender,
) -> None:
    client = booking.client

    def sid_of(step: str, treatment_sent: int = 0) -> str:
        sent = [
            m["sid"]
            for m in staff_view(client).get_json()["messages"]
            if m["step"] == step and m["sid"]
        ]
        return str(sent[treatment_sent])

    # A text from the number the day before the patient is enrolled: an unknown number then.
    clock.now = START - timedelta(days=1)
    twilio.inbound("Hi, Omar here, see you tomorrow for my SMP", sid="SM" + "a1" * 16)
    clock.now = START
    posted: list[dict[str, Any]] = [completed_event("evt_0001")]
    assert booking.post(posted[0]).status_code == 201
    twilio.inbound("Unrelated question from a stranger", sender=OTHER_PHONE, sid="SM" + "b1" * 16)

    dispatcher.run_pass(START + timedelta(hours=1))  # after_treatment goes out
    first = sid_of("after_treatment")
    assert twilio.status(first, "sent").status_code == 204
    assert twilio.status(first, "delivered").status_code == 204
    clock.now = START + timedelta(hours=2)
    twilio.inbound("My scalp is itchy tonight, is that normal?", sid="SM" + "a2" * 16)

    dispatcher.run_pass(dubai(3, 2, 10))  # day 1: sunscreen
    assert twilio.status(sid_of("sunscreen"), "undelivered", 30003).status_code == 204
    clock.now = dubai(3, 2, 12)
    twilio.inbound("STOP")
    clock.now = dubai(3, 2, 13)
    twilio.inbound("start")
    clock.now = dubai(3, 2, 14)
    twilio.inbound(
        "Sending a picture of the redness by whatsapp",
        sender=f"whatsapp:{PHONE}",
        sid="SM" + "a3" * 16,
    )
    assert client.post(f"/api/replies/{'SM' + 'a2' * 16}/handled", headers=STAFF).status_code == 200
    posted.append(completed_event("evt_0002"))
    assert booking.post(posted[-1]).status_code == 200  # the same again

    clock.now = dubai(3, 3, 10)  # a second session two days later supersedes the first
    second_session = completed_event("evt_0003", treatment={"id": "T-556"}, performed_at=clock.now)
    assert booking.post(second_session).status_code == 201
    cancelled = {"id": "evt_0004", "type": "treatment.cancelled", "treatment": {"id": "T-555"}}
    assert booking.post(cancelled).status_code == 200
    posted += [second_session, cancelled]
    dispatcher.run_pass(dubai(3, 3, 11))  # T-556's after_treatment
    assert twilio.status(sid_of("after_treatment", 1), "read").status_code == 204
    assert twilio.status("SM" + "c1" * 16, "delivered").status_code == 204  # not ours
    assert len(sender.sent) == 3

    # What exists before erasure, to look for afterwards.
    before = staff_view(client).get_json()
    bodies = [m["body"] for m in before["messages"]] + [r["body"] for r in before["replies"]]
    bodies.append("Hi, Omar here, see you tomorrow for my SMP")
    assert len(before["replies"]) == 2
    needles = IDENTIFIERS + BOOKING_IDS + [f for body in bodies for f in fragments(body)]
    # A hash of a body with the patient's name and number in it is theirs too.
    needles += [booking_module.body_fingerprint(event) for event in posted]
    # The scan does find every one of them while the patient exists (the national form
    # of the number is only looked for in case something stores it so).
    found = {n for _, _, n in leftovers(engine, needles)}
    assert found == {n.casefold() for n in needles} - {"0501234567"}
    pending = sum(m["status"] in ("scheduled", "held") for m in before["messages"])
    counts = {model: count(engine, model) for model in (Message, ConsentChange, StatusCallback)}

    clock.now = dubai(3, 3, 12)
    answer = booking.post(erase_event())
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {
        "erased": True,
        "messages_cancelled": pending,
        "erasure_id": answer.get_json()["erasure_id"],
        "twilio_redactions": 3 + 3,  # three messages sent; two replies, one from before
    }

    assert leftovers(engine, needles) == []
    assert staff_view(client).status_code == 404
    listed = client.get("/api/replies", headers=STAFF)
    assert not [n for n in needles if n.casefold() in listed.get_data(as_text=True).casefold()]
    [stranger] = [r for r in listed.get_json()["replies"] if r["from"] is not None]
    assert (stranger["from"], stranger["body"]) == (
        OTHER_PHONE,
        "Unrelated question from a stranger",
    )

    # Anonymous counts remain: what was planned, sent, delivered, and the consent history.
    assert {model: count(engine, model) for model in counts} == counts
    with Session(engine) as session:
        kept = session.exec(select(Message.status, func.count()).group_by(Message.status)).all()
        assert sum(n for status, n in kept if status in ("scheduled", "held")) == 0
        assert dict(kept)["cancelled"] >= pending
        assert session.exec(select(func.count()).where(col(Message.body).is_not(None))).one() == 0

    # Nothing pending was left to go out.
    for days in (1, 7, 30, 366):
        dispatcher.run_pass(clock.now + timedelta(days=days))
    assert len(sender.sent) == 3


def test_erasure_clears_the_ids_stored_with_each_booking_event(
    enrolled: BookingSystem, engine: Any
) -> None:
    cancelled = {"id": "evt_0002", "type": "treatment.cancelled", "treatment": {"id": "T-555"}}
    assert enrolled.post(cancelled).status_code == 200
    assert enrolled.post(erase_event()).status_code == 200
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM bookingevent ORDER BY id")).mappings().all()
    assert [row["id"] for row in rows] == ["evt_0001", "evt_0002", "evt_x"]
    for row in rows:
        assert row.get("patient_id") is None, row
        assert row.get("treatment_id") is None, row
        assert not [n for n in BOOKING_IDS if n in row["response"]], row


# -- idempotency ------------------------------------------------------------------------------


def test_the_same_erasure_event_again_gets_the_same_answer(
    enrolled: BookingSystem, engine: Any
) -> None:
    first = enrolled.post(erase_event())
    again = enrolled.post(erase_event())
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.get_json() == first.get_json()
    assert first.get_json()["erased"] is True
    assert first.get_json()["messages_cancelled"] == 11


def test_a_new_erasure_event_for_an_erased_patient_answers_erased_false(
    enrolled: BookingSystem,
) -> None:
    assert enrolled.post(erase_event("evt_x")).get_json()["erased"] is True
    answer = enrolled.post(erase_event("evt_y"))
    assert answer.status_code == 200
    assert answer.get_json()["erased"] is False
    assert answer.get_json()["reason"]


def test_erasing_an_unknown_patient_answers_200_erased_false(booking: BookingSystem) -> None:
    answer = booking.post(erase_event(patient_id="P-404"))
    assert answer.status_code == 200
    assert answer.get_json()["erased"] is False


def test_an_erasure_event_without_a_patient_id_is_422(enrolled: BookingSystem) -> None:
    answer = enrolled.post({"id": "evt_x", "type": "patient.erased", "patient": {}})
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == ["patient.id"]
    assert staff_view(enrolled.client).status_code == 200


def test_replaying_an_enrolment_after_erasure_restores_nothing(
    enrolled: BookingSystem, engine: Any
) -> None:
    enrolled.post(erase_event())
    replay = enrolled.post(completed_event())  # the booking system retries an old event
    assert replay.status_code == 200
    assert not [n for n in IDENTIFIERS + BOOKING_IDS if n in replay.get_data(as_text=True)]
    assert staff_view(enrolled.client).status_code == 404
    assert leftovers(engine, IDENTIFIERS + BOOKING_IDS) == []


def test_a_new_enrolment_after_erasure_starts_afresh(enrolled: BookingSystem, clock: Clock) -> None:
    enrolled.post(erase_event())
    clock.advance(days=1)
    again = completed_event("evt_0002", treatment={"id": "T-600"}, performed_at=clock.now)
    assert enrolled.post(again).status_code == 201
    patient = staff_view(enrolled.client).get_json()
    assert [c["source"] for c in patient["consent_log"]] == ["booking"]
    assert {m["status"] for m in patient["messages"]} == {"scheduled"}
    assert patient["replies"] == []


# -- only this patient ---------------------------------------------------------------------


def test_erasing_one_patient_leaves_another_untouched(
    enrolled: BookingSystem, twilio: TwilioWebhooks
) -> None:
    other = completed_event(
        "evt_0002",
        patient={"id": "P-2002", "first_name": "Layla", "phone": OTHER_PHONE},
        treatment={"id": "T-777"},
    )
    assert enrolled.post(other).status_code == 201
    twilio.inbound("Question from Layla", sender=OTHER_PHONE)
    twilio.inbound("Question from Omar")
    before = staff_view(enrolled.client, "P-2002").get_json()
    enrolled.post(erase_event())
    assert staff_view(enrolled.client, "P-2002").get_json() == before
    assert "Layla" in before["messages"][0]["body"]


def test_after_erasure_a_text_from_the_old_number_is_an_unknown_number(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    enrolled.post(erase_event())
    twilio.inbound("Hello again")
    assert twilio.inbound("STOP").status_code == 200
    listed = enrolled.client.get("/api/replies", headers=STAFF).get_json()["replies"]
    assert [(r["patient_id"], r["from"], r["body"]) for r in listed] == [
        (None, PHONE, "Hello again")
    ]


# -- answers stored where erasure cannot find them ----------------------------------------------


def test_a_cancellation_that_arrived_before_the_enrolment_is_erased_too(
    booking: BookingSystem, engine: Any
) -> None:
    early = {"id": "evt_0000", "type": "treatment.cancelled", "treatment": {"id": "T-555"}}
    assert booking.post(early).get_json()["cancelled"] is False  # out of order: unknown yet
    assert booking.post(completed_event()).status_code == 201
    assert booking.post(erase_event()).get_json()["erased"] is True
    assert leftovers(engine, BOOKING_IDS) == []


@pytest.fixture
def legacy_sqlite(tmp_path: Any, clock: Clock) -> Iterator[tuple[Any, Any]]:
    """A SQLite database created by the previous release (revision 0001), holding the
    answers to an enrolment (T-555) and to a cancellation of an earlier session (T-554),
    then upgraded to head: (client, engine)."""
    url = f"sqlite:///{tmp_path / 'legacy.sqlite3'}"
    migrate.upgrade(url, "0001")
    answers = {  # as the previous release answered an enrolment and a cancellation
        "evt_0001": {
            "patient_id": "P-1001",
            "treatment_id": "T-555",
            "scheduled": [{"step": "after_treatment", "send_at": "2027-03-01T07:00:00Z"}],
            "expired": [],
        },
        "evt_0002": {"treatment_id": "T-554", "cancelled": 11},
    }
    engine = make_engine(url)
    with engine.begin() as connection:
        for event_id, answer in answers.items():
            connection.execute(
                text(
                    "INSERT INTO bookingevent (id, fingerprint, status_code, response, received_at)"
                    " VALUES (:id, :fingerprint, 200, :response, :at)"
                ),
                {
                    "id": event_id,
                    "fingerprint": "0" * 64,
                    "response": json.dumps(answer),
                    "at": "2027-03-01 06:00:00",
                },
            )
    migrate.upgrade(url)
    settings = Settings(
        database_url=url,
        booking_webhook_secret=SECRET,
        staff_api_tokens=(StaffToken("reception", STAFF_TOKEN),),
    )
    yield create_app(settings, engine=engine, clock=clock).test_client(), engine
    engine.dispose()


def test_events_stored_before_the_upgrade_are_erased_too(
    legacy_sqlite: tuple[Any, Any], clock: Clock
) -> None:
    client, engine = legacy_sqlite
    booking = BookingSystem(client, clock)
    # The patient's rows as the previous release left them (posted anew here: the rows
    # themselves are the same in both schemas), T-554 superseded by T-555.
    earlier = completed_event("evt_0003", treatment={"id": "T-554"}, performed_at=START)
    assert booking.post(earlier).status_code == 201
    clock.advance(days=1)
    later = completed_event("evt_0004", performed_at=clock.now)
    assert booking.post(later).status_code == 201
    assert booking.post(erase_event()).get_json()["erased"] is True
    assert leftovers(engine, [*BOOKING_IDS, "T-554"]) == []


def test_erasure_is_atomic_with_its_event(
    enrolled: BookingSystem, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure part-way leaves the patient as they were and the event unrecorded, so
    the booking system's retry erases for real."""
    real: Callable[..., Any] = booking_module.erase_patient

    def half_done(session: Session, external_id: str, now: datetime) -> int:
        real(session, external_id, now)
        raise RuntimeError("database went away")

    monkeypatch.setattr(booking_module, "erase_patient", half_done)
    answer = enrolled.post(erase_event())
    assert answer.status_code == 500
    assert staff_view(enrolled.client).get_json()["phone"] == PHONE
    assert {m["body"] is not None for m in staff_view(enrolled.client).get_json()["messages"]} == {
        True
    }
    monkeypatch.setattr(booking_module, "erase_patient", real)
    assert enrolled.post(erase_event()).get_json()["erased"] is True
