"""Twilio's delivery status callbacks (SPEC §7): a message's status only moves forward,
whatever order the callbacks arrive in, and one that beats the SID's commit still counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import Session, col

from notifier.delivery.dispatcher import Dispatcher
from notifier.planning.plan import load_plans
from notifier.store.db import make_engine
from notifier.store.models import Message, StatusCallback
from tests.conftest import (
    START,
    BookingSystem,
    Clock,
    RecordingSender,
    TwilioWebhooks,
    completed_event,
    make_settings,
)
from tests.support.fuzzing import fuzz
from tests.support.rows import count, statuses
from tests.support.staff import message_view
from tests.support.twilio_webhooks import STATUS


def set_sid(engine: Any, step: str, sid: str, status: str = "queued") -> None:
    """Do what the dispatcher does when Twilio accepts a message: store its SID."""
    with Session(engine) as session:
        session.exec(
            update(Message)
            .where(col(Message.step) == step, col(Message.occurrence) == 0)
            .values(sid=sid, status=status)
        )
        session.commit()


# -- status callbacks -----------------------------------------------------------------------------


@pytest.fixture
def sent_sid(enrolled: BookingSystem, dispatcher: Dispatcher) -> str:
    """The SID of the after-treatment message, sent by the dispatcher."""
    assert dispatcher.run_pass(START + timedelta(hours=1)).sent == 1
    message = message_view(enrolled.client, "after_treatment")
    assert message["status"] == "queued"
    assert message["sid"]
    return str(message["sid"])


def after_treatment(client: Any) -> tuple[str, int | None]:
    message = message_view(client, "after_treatment")
    return message["status"], message["error_code"]


def test_status_callbacks_move_a_message_forward(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    for status in ("sent", "delivered", "read"):
        answer = twilio.status(sent_sid, status)
        assert answer.status_code == 204
        assert after_treatment(client) == (status, None)


@pytest.mark.parametrize(
    ("sequence", "final"),
    [
        (["delivered", "sent", "queued"], "delivered"),
        (["read", "delivered", "sent"], "read"),
        (["sent", "queued", "accepted", "sending"], "sent"),
        (["undelivered", "sent"], "undelivered"),
        (["failed", "queued"], "failed"),
    ],
)
def test_a_late_callback_never_moves_a_message_backwards(
    sent_sid: str, twilio: TwilioWebhooks, client: Any, sequence: list[str], final: str
) -> None:
    for status in sequence:
        assert twilio.status(sent_sid, status).status_code == 204
    assert after_treatment(client)[0] == final


def test_an_error_code_is_stored_with_the_status(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    twilio.status(sent_sid, "sent")
    twilio.status(sent_sid, "undelivered", 30003)
    assert after_treatment(client) == ("undelivered", 30003)


def test_a_repeated_callback_changes_nothing(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    twilio.status(sent_sid, "undelivered", 30003)
    twilio.status(sent_sid, "undelivered", 30003)
    twilio.status(sent_sid, "failed", 30008)  # another final outcome does not replace it
    twilio.status(sent_sid, "sent")
    assert after_treatment(client) == ("undelivered", 30003)


def test_a_status_twilio_uses_but_we_do_not_track_is_accepted_and_ignored(
    sent_sid: str, twilio: TwilioWebhooks, client: Any
) -> None:
    for word in ("receiving", "received", "canceled", "partially_delivered", "nonsense"):
        assert twilio.status(sent_sid, word).status_code == 204
    assert after_treatment(client) == ("queued", None)


def test_a_callback_for_an_unknown_sid_is_accepted(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    assert twilio.status("SM" + "9" * 32, "delivered").status_code == 204
    assert count(engine, StatusCallback) == 1
    assert statuses(engine) == {"scheduled"}


def test_a_callback_that_arrives_before_the_sid_is_stored_is_applied_by_the_next_pass(
    sent_sid: str,
    twilio: TwilioWebhooks,
    engine: Any,
    client: Any,
    dispatcher: Dispatcher,
) -> None:
    early = "SM" + "8" * 32
    assert twilio.status(early, "delivered").status_code == 204  # Twilio was faster ...
    assert twilio.status(early, "sent").status_code == 204
    set_sid(engine, "after_treatment", early)  # ... than the commit of the SID
    assert after_treatment(client) == ("queued", None)
    dispatcher.run_pass(START + timedelta(hours=1, minutes=1))
    assert after_treatment(client) == ("delivered", None)
    twilio.status(early, "read")
    assert after_treatment(client) == ("read", None)


def test_a_status_callback_without_sid_or_status_is_400(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    assert twilio.post(STATUS, {"MessageStatus": "sent"}).status_code == 400
    assert twilio.post(STATUS, {"MessageSid": "SM" + "1" * 32}).status_code == 400
    assert count(engine, StatusCallback) == 0


@pytest.mark.parametrize("code", ["9" * 20, str(2**63), str(2**31), "-30003", "30003.0"])
def test_an_error_code_that_is_no_database_integer_is_not_a_server_error(
    sent_sid: str, twilio: TwilioWebhooks, client: Any, code: str
) -> None:
    form = {"MessageSid": sent_sid, "MessageStatus": "undelivered", "ErrorCode": code}
    assert twilio.post(STATUS, form).status_code == 204
    assert after_treatment(client)[0] == "undelivered"


@pytest.mark.postgres
def test_an_error_code_beyond_32_bits_is_not_a_server_error_on_postgresql(
    postgres_url: str, build_app: Callable[..., Any]
) -> None:
    client = build_app(make_settings(postgres_url))
    form = {
        "MessageSid": "SM" + "1" * 32,
        "MessageStatus": "undelivered",
        "ErrorCode": "2147483648",
    }
    assert TwilioWebhooks(client).post(STATUS, form).status_code < 500


# -- the status order, as a property -----------------------------------------------------------


SEQUENCES = [
    ["queued", "sent", "delivered", "read"],
    ["queued", "sent", "undelivered"],
    ["queued", "sent", "failed"],
    ["accepted", "queued", "sending", "sent", "delivered"],
]
RANK = {"queued": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2, "read": 3}
AS_QUEUED = {"accepted": "queued", "sending": "queued"}
FUZZ = fuzz(max_examples=100)


@st.composite
def callback_orders(draw: st.DrawFn) -> list[str]:
    """A shuffled sequence of a message's statuses, some repeated, some perhaps missing."""
    sequence = draw(st.sampled_from(SEQUENCES))
    kept = draw(st.permutations(sequence))[: draw(st.integers(1, len(sequence)))]
    repeats = draw(st.lists(st.sampled_from(sequence), max_size=4))
    return draw(st.permutations(kept + repeats))


@pytest.fixture
def sqlite_sent(
    sqlite_url: str, clock: Clock, build_app: Callable[..., Any]
) -> tuple[TwilioWebhooks, Any, str]:
    """On SQLite: an enrolled patient whose after-treatment message the dispatcher sent."""
    settings = make_settings(sqlite_url)
    engine = make_engine(sqlite_url)
    client = build_app(settings, engine)
    assert BookingSystem(client, clock).post(completed_event()).status_code == 201
    dispatcher = Dispatcher(engine, RecordingSender(), load_plans(settings.plans_dir), settings)
    try:
        assert dispatcher.run_pass(START + timedelta(hours=1)).sent == 1
    finally:
        dispatcher.close()
    sid = message_view(client, "after_treatment")["sid"]
    return TwilioWebhooks(client), engine, sid


@FUZZ
@given(order=callback_orders())
def test_callbacks_in_any_order_end_at_the_furthest_status(
    sqlite_sent: tuple[TwilioWebhooks, Any, str], order: list[str]
) -> None:
    webhooks, engine, sid = sqlite_sent
    set_sid(engine, "after_treatment", sid, status="queued")  # a fresh start per example
    with Session(engine) as session:
        session.exec(update(Message).values(error_code=None))
        session.commit()
    for status in order:
        code = 30003 if status in ("undelivered", "failed") else None
        assert webhooks.status(sid, status, code).status_code == 204
    furthest = max((AS_QUEUED.get(s, s) for s in order), key=RANK.__getitem__)
    expected_code = 30003 if furthest in ("undelivered", "failed") else None
    assert after_treatment(webhooks.client) == (furthest, expected_code), order
