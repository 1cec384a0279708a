"""An urgent reply reaches on-call within a dispatch pass, at any hour (SPEC §10).

The whole path: a signed inbound webhook, triage, outbox rows written with the reply,
the dispatcher sending them through the real Twilio sender to the fake Twilio (every
request checked against Twilio's OpenAPI spec), repeats until a member of staff marks
the reply handled. The clock is the test's.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from notifier.consent.opt_out import Source
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.twilio_sender import TwilioSender
from notifier.planning.plan import load_plans
from notifier.planning.schedule import QuietHours
from notifier.settings import Settings
from notifier.store.models import Message, MessageKind, Reply, Status
from tests.conftest import (
    PHONE,
    STAFF,
    START,
    TWILIO_TOKEN,
    BookingSystem,
    Clock,
    TwilioWebhooks,
    completed_event,
)
from tests.support.fake_twilio import FakeMessage, FakeTwilio

ONCALL = ("+971501110001", "+971501110002")
BASE = "https://clinic.example"
NIGHT = START + timedelta(hours=13)  # 23:00 in Dubai: inside the quiet hours below
BLEEDING = "my scalp is bleeding and really sore"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TWILIO_TOKEN) as server:
        yield server


@pytest.fixture
def night_settings(settings: Settings, fake: FakeTwilio) -> Settings:
    """On-call configured, Twilio at the fake, quiet hours every night."""
    assert settings.twilio is not None
    return replace(
        settings,
        twilio=replace(settings.twilio, api_base_url=fake.base_url, timeout_seconds=5.0),
        oncall_phones=ONCALL,
        public_base_url=BASE,
        alert_repeat_minutes=15,
        quiet_hours=QuietHours.parse("21:00-08:00"),
    )


@dataclass
class Clinic:
    """The app, the booking system and Twilio's webhooks, and a worker to run passes."""

    client: Any
    booking: BookingSystem
    twilio: TwilioWebhooks
    dispatcher: Dispatcher
    fake: FakeTwilio
    engine: Any
    clock: Clock

    def pass_at(self, moment: datetime) -> None:
        self.clock.now = moment
        self.dispatcher.run_pass(moment)

    def sent_to(self, *numbers: str) -> list[FakeMessage]:
        return [m for m in self.fake.messages if m.to in numbers]

    def reply(self, sid: str) -> dict[str, Any]:
        answer = self.client.get("/api/replies", headers=STAFF)
        assert answer.status_code == 200
        found: dict[str, Any] = next(r for r in answer.get_json()["replies"] if r["sid"] == sid)
        return found

    def handled(self, sid: str) -> None:
        assert self.client.post(f"/api/replies/{sid}/handled", headers=STAFF).status_code == 200

    def rows(self, kind: MessageKind) -> list[Message]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(Message)
                    .where(Message.kind == kind)
                    .order_by(col(Message.occurrence), col(Message.recipient))
                ).all()
            )


@pytest.fixture
def clinic(
    night_settings: Settings,
    engine: Any,
    clock: Clock,
    fake: FakeTwilio,
    build_app: Callable[..., Any],
) -> Iterator[Clinic]:
    client = build_app(night_settings, engine)
    booking = BookingSystem(client, clock)
    assert booking.post(completed_event()).status_code == 201
    assert night_settings.twilio is not None
    dispatcher = Dispatcher(
        engine,
        TwilioSender(night_settings.twilio),
        load_plans(night_settings.plans_dir),
        night_settings,
        rng=random.Random(3),
    )
    try:
        yield Clinic(
            client, booking, TwilioWebhooks(client, base_url=BASE), dispatcher, fake, engine, clock
        )
    finally:
        dispatcher.close()


def urgent_text(sid: str) -> str:
    return f"SM{sid:0>32}"


# -- the first pass after an urgent reply ---------------------------------------------------


def test_an_urgent_reply_at_night_acknowledges_the_patient_and_alerts_every_oncall_number(
    clinic: Clinic,
) -> None:
    clinic.clock.now = NIGHT
    sid = urgent_text("1")
    assert clinic.twilio.inbound(BLEEDING, sid=sid).status_code == 200

    clinic.pass_at(NIGHT + timedelta(seconds=10))

    [acknowledgement] = clinic.sent_to(PHONE)
    assert "+971 4 000 0000" in (acknowledgement.body or "")  # the clinic's phone
    assert "998" in (acknowledgement.body or "")  # EMERGENCY_NUMBER's default
    alerts = clinic.sent_to(*ONCALL)
    assert sorted(m.to for m in alerts) == sorted(ONCALL)
    for alert in alerts:
        body = alert.body or ""
        assert "P-1001" in body and "Omar" in body and BLEEDING in body
        assert f"{BASE}/staff/patients/P-1001" in body
    # The plan's 11:00 message, overdue, still waits for the quiet hours to end.
    assert len(clinic.fake.messages) == 3
    assert clinic.fake.violations == []
    listed = clinic.reply(sid)
    assert (listed["urgent"], listed["category"]) == (True, "urgent")
    assert set(listed["signs"]) >= {"bleeding", "pain"}


def test_the_acknowledgement_and_alerts_show_in_the_patients_timeline(clinic: Clinic) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound(BLEEDING, sid=urgent_text("1"))
    clinic.pass_at(NIGHT)

    view = clinic.client.get("/api/patients/P-1001", headers=STAFF).get_json()
    kinds = [(m["kind"], m["status"]) for m in view["messages"] if m["kind"] != "plan"]
    assert kinds.count(("acknowledgement", "queued")) == 1
    assert kinds.count(("alert", "queued")) == 2  # one for each on-call number
    assert kinds.count(("alert", "scheduled")) == 4  # two repeats each, if not handled


def test_a_thank_you_sets_nothing_off(clinic: Clinic) -> None:
    clinic.clock.now = NIGHT
    sid = urgent_text("2")
    clinic.twilio.inbound("thanks 🙏", sid=sid)
    clinic.pass_at(NIGHT)

    assert clinic.fake.messages == []
    assert clinic.rows(MessageKind.ALERT) == clinic.rows(MessageKind.ACKNOWLEDGEMENT) == []
    listed = clinic.reply(sid)
    assert (listed["urgent"], listed["category"], listed["signs"]) == (False, "thanks", [])


@pytest.mark.parametrize(
    "text",
    [
        "у меня кожа покраснела и горячая",  # noqa: RUF001
        "عندي تورم وحرارة في الرأس",
        "the scalp feels really hot and swollen 🤕",
    ],
)
def test_every_language_reaches_on_call(clinic: Clinic, text: str) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound(text, sid=urgent_text("3"))
    clinic.pass_at(NIGHT)
    assert len(clinic.sent_to(*ONCALL)) == 2
    assert all(text in (m.body or "") for m in clinic.sent_to(*ONCALL))


# -- repeats ------------------------------------------------------------------------------


def test_alerts_repeat_every_alert_repeat_minutes_three_times_in_all(clinic: Clinic) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound(BLEEDING, sid=urgent_text("4"))
    seen = []
    for minutes in (0, 10, 15, 25, 30, 45, 60, 120):
        clinic.pass_at(NIGHT + timedelta(minutes=minutes))
        seen.append(len(clinic.sent_to(*ONCALL)))
    assert seen == [2, 2, 4, 4, 6, 6, 6, 6]
    repeats = [m.body or "" for m in clinic.sent_to(ONCALL[0])]
    assert "2 of 3" in repeats[1] and "3 of 3" in repeats[2]
    assert len(clinic.sent_to(PHONE)) == 1  # acknowledged once
    assert clinic.fake.violations == []


def test_marking_the_reply_handled_stops_the_repeats(clinic: Clinic) -> None:
    clinic.clock.now = NIGHT
    sid = urgent_text("5")
    clinic.twilio.inbound(BLEEDING, sid=sid)
    clinic.pass_at(NIGHT)
    clinic.clock.now = NIGHT + timedelta(minutes=5)
    clinic.handled(sid)

    for minutes in (15, 30, 45):
        clinic.pass_at(NIGHT + timedelta(minutes=minutes))

    assert len(clinic.sent_to(*ONCALL)) == 2
    assert [m.status for m in clinic.rows(MessageKind.ALERT)] == [Status.QUEUED] * 2 + [
        Status.CANCELLED
    ] * 4


def test_a_reply_handled_while_its_repeat_is_claimed_is_not_alerted_again(
    clinic: Clinic,
) -> None:
    """Handling commits between the claim and the send: the re-check cancels it."""
    clinic.clock.now = NIGHT
    sid = urgent_text("6")
    clinic.twilio.inbound(BLEEDING, sid=sid)
    clinic.pass_at(NIGHT)
    with Session(clinic.engine) as session:  # as `mark_handled` would, but not cancelling
        reply = session.exec(select(Reply).where(Reply.sid == sid)).one()
        reply.handled = True
        session.add(reply)
        session.commit()

    clinic.pass_at(NIGHT + timedelta(minutes=15))

    assert len(clinic.sent_to(*ONCALL)) == 2


# -- several urgent replies -----------------------------------------------------------------


def test_several_urgent_replies_acknowledge_once_an_hour_and_alert_once_per_open_case(
    clinic: Clinic,
) -> None:
    clinic.clock.now = NIGHT
    first = urgent_text("7")
    for n, minute in enumerate((0, 3, 8)):
        clinic.clock.now = NIGHT + timedelta(minutes=minute)
        clinic.twilio.inbound(f"{BLEEDING} ({n})", sid=first if n == 0 else urgent_text(f"7{n}"))
    clinic.pass_at(NIGHT + timedelta(minutes=9))
    assert len(clinic.sent_to(PHONE)) == 1
    assert len(clinic.sent_to(*ONCALL)) == 2

    clinic.clock.now = NIGHT + timedelta(minutes=70)  # still open, but an hour later
    clinic.twilio.inbound("it's getting worse, lots of pus", sid=urgent_text("74"))
    clinic.pass_at(NIGHT + timedelta(minutes=70))
    assert len(clinic.sent_to(PHONE)) == 2
    assert len(clinic.rows(MessageKind.ALERT)) == 6  # still the first case's

    clinic.handled(first)  # the case is closed; the next urgent reply opens another
    clinic.clock.now = NIGHT + timedelta(minutes=80)
    clinic.twilio.inbound("now it's swollen too", sid=urgent_text("75"))
    clinic.pass_at(NIGHT + timedelta(minutes=80))
    assert len(clinic.rows(MessageKind.ALERT)) == 12
    assert len(clinic.sent_to(PHONE)) == 2  # acknowledged 10 minutes ago: not again


# -- the worker down ------------------------------------------------------------------------


def test_a_worker_down_when_the_reply_arrives_sends_one_round_when_it_is_back(
    clinic: Clinic,
) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound(BLEEDING, sid=urgent_text("8"))
    assert clinic.fake.requests == []  # the web process never calls Twilio itself

    clinic.pass_at(NIGHT + timedelta(hours=3))
    assert len(clinic.sent_to(*ONCALL)) == 2  # one round, not all three at once
    assert len(clinic.sent_to(PHONE)) == 1
    clinic.pass_at(NIGHT + timedelta(hours=3, minutes=5))
    assert len(clinic.sent_to(*ONCALL)) == 2
    clinic.pass_at(NIGHT + timedelta(hours=3, minutes=15))
    assert len(clinic.sent_to(*ONCALL)) == 4


def test_an_opted_out_patient_is_not_acknowledged_but_on_call_still_hears(
    clinic: Clinic,
) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound("STOP", sid=urgent_text("90"))
    clinic.twilio.inbound(BLEEDING, sid=urgent_text("91"))
    clinic.pass_at(NIGHT)
    assert clinic.sent_to(PHONE) == []
    assert len(clinic.sent_to(*ONCALL)) == 2


def test_an_oncall_number_twilio_says_opted_out_fails_its_alert_and_holds_no_patient(
    clinic: Clinic,
) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound("STOP", sid=urgent_text("90"))  # no acknowledgement: two requests
    clinic.twilio.inbound(BLEEDING, sid=urgent_text("92"))
    clinic.fake.script([("error", 400, 21610)])  # whichever on-call number comes first
    clinic.pass_at(NIGHT)
    view = clinic.client.get("/api/patients/P-1001", headers=STAFF).get_json()
    assert [c["source"] for c in view["consent_log"]].count(Source.TWILIO_21610) == 0
    alerts = sorted(m["status"] for m in view["messages"] if m["kind"] == "alert")
    assert alerts[:2] == ["failed", "queued"]


def test_a_reply_from_an_unknown_number_is_urgent_in_the_inbox_but_pages_nobody(
    clinic: Clinic,
) -> None:
    clinic.clock.now = NIGHT
    sid = urgent_text("93")
    clinic.twilio.inbound(BLEEDING, sid=sid, sender="+971509999999")
    clinic.pass_at(NIGHT)
    assert clinic.fake.messages == []
    assert clinic.reply(sid)["urgent"] is True


# -- the same webhook twice at once ------------------------------------------------------------


def test_the_same_urgent_reply_delivered_twice_at_once_alerts_once(clinic: Clinic) -> None:
    clinic.clock.now = NIGHT
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def deliver() -> None:
        barrier.wait()
        answers.append(clinic.twilio.inbound(BLEEDING, sid=urgent_text("95")).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [200, 200]
    assert len(clinic.rows(MessageKind.ALERT)) == 6
    assert len(clinic.rows(MessageKind.ACKNOWLEDGEMENT)) == 1


# -- the staff API's list -------------------------------------------------------------------


def test_urgent_replies_come_first_and_can_be_listed_alone(clinic: Clinic) -> None:
    clinic.clock.now = NIGHT
    clinic.twilio.inbound(BLEEDING, sid=urgent_text("96"))
    clinic.clock.now = NIGHT + timedelta(minutes=5)
    clinic.twilio.inbound("what time is my check-up?", sid=urgent_text("97"))

    listed = clinic.client.get("/api/replies?handled=false", headers=STAFF).get_json()
    assert [r["sid"] for r in listed["replies"]] == [urgent_text("96"), urgent_text("97")]
    assert [r["category"] for r in listed["replies"]] == ["urgent", "question"]
    only = clinic.client.get("/api/replies?urgent=true", headers=STAFF).get_json()
    assert [r["sid"] for r in only["replies"]] == [urgent_text("96")]
    assert clinic.client.get("/api/replies?urgent=yes", headers=STAFF).status_code == 400
