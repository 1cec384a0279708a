"""Events back to the booking system: recorded with each change, posted by the worker
to a loopback receiver, signed, at least once, in order per patient."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlmodel import Session, select

from notifier.delivery.dispatcher import Dispatcher
from notifier.events import publisher as publishing
from notifier.events.publisher import MAX_AGE, Publisher
from notifier.events.record import TYPES
from notifier.settings import ConfigError, Settings
from notifier.signature import verify
from notifier.store.models import Event, EventStatus
from tests.conftest import (
    DUE,
    PHONE,
    STAFF,
    BookingSystem,
    Clock,
    TwilioWebhooks,
    completed_event,
    make_settings,
)
from tests.support.command import aftercare

SECRET = "events-secret-0123456789"


@dataclass
class Receiver:
    """The booking system's end: records every post, answers as scripted."""

    answers: list[int] = field(default_factory=list)  # statuses to answer next; then 200
    delay: float = 0.0  # seconds before answering (after recording)
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.posts]

    def types(self) -> list[str]:
        return [body["type"] for body in self.bodies()]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.lock:
                received.posts.append((dict(self.headers.items()), body))
                status = received.answers.pop(0) if received.answers else 200
            time.sleep(received.delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/aftercare-events"
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def events_settings(settings: Settings, receiver: Receiver) -> Settings:
    return replace(settings, events_webhook_url=receiver.url, events_webhook_secret=SECRET)


def publish_all(publisher: Publisher, now: datetime) -> int:
    """Passes until one delivers nothing; how many were delivered."""
    total = 0
    while (delivered := publisher.run(now).delivered) > 0:
        total += delivered
    return total


def stored(engine: Any) -> list[Event]:
    with Session(engine) as session:
        return list(session.exec(select(Event).order_by(Event.id)).all())


def test_every_kind_of_event_reaches_the_receiver_signed_and_in_order(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    dispatcher: Dispatcher,
    clock: Clock,
    engine: Any,
    events_settings: Settings,
    receiver: Receiver,
    sender: Any,
) -> None:
    clock.now = DUE
    dispatcher.run_pass(DUE)  # the plan's first message: queued
    [sid] = list(sender.carrier_log)
    twilio.status(sid, "delivered")
    twilio.inbound("my scalp is bleeding", sid="SM" + "1" * 32)
    twilio.inbound("STOP", sid="SM" + "2" * 32)
    twilio.inbound("START", sid="SM" + "3" * 32)

    publisher = Publisher(engine, events_settings, rng=random.Random(1))
    assert publish_all(publisher, DUE) == 6

    assert receiver.types() == [
        "message.status_changed",
        "message.status_changed",
        "reply.received",
        "reply.urgent",
        "patient.opted_out",
        "patient.opted_in",
    ]
    bodies = receiver.bodies()
    assert [b["data"]["status"] for b in bodies[:2]] == ["queued", "delivered"]
    assert {b["patient_id"] for b in bodies} == {"P-1001"}
    assert bodies[0]["treatment_id"] == "T-555"
    assert [b["data"]["source"] for b in bodies[4:]] == ["keyword", "keyword"]
    assert len({b["id"] for b in bodies}) == 6
    assert set(receiver.types()) <= set(TYPES)
    for headers, body in receiver.posts:
        assert verify(headers["X-Aftercare-Signature"], SECRET, body, DUE)
        assert headers["Content-Type"] == "application/json"
        text = body.decode()
        assert PHONE not in text and "Omar" not in text and "bleeding" not in text
    assert {e.status for e in stored(engine)} == {EventStatus.DELIVERED}


def test_a_failed_post_is_retried_later_and_holds_that_patients_next_events(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    events_settings: Settings,
    receiver: Receiver,
    clock: Clock,
) -> None:
    twilio.inbound("STOP", sid="SM" + "2" * 32)
    clock.advance(minutes=1)
    twilio.inbound("START", sid="SM" + "3" * 32)
    receiver.answers = [500]
    publisher = Publisher(engine, events_settings, rng=random.Random(1))
    now = clock.now

    assert publisher.run(now).failed == 1
    assert publish_all(publisher, now + timedelta(seconds=10)) == 0  # waits its backoff
    assert receiver.types() == ["patient.opted_out"]
    [first, second] = stored(engine)
    assert (first.status, first.attempts, first.error) == (EventStatus.PENDING, 1, "HTTP 500")
    assert (second.status, second.attempts) == (EventStatus.PENDING, 0)  # never posted yet
    assert timedelta(seconds=15) <= first.next_at - now <= timedelta(seconds=30)

    assert publish_all(publisher, now + timedelta(seconds=31)) == 2
    assert receiver.types() == ["patient.opted_out", "patient.opted_out", "patient.opted_in"]


def test_a_post_that_times_out_is_posted_again_with_the_same_id(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    events_settings: Settings,
    receiver: Receiver,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publishing, "TIMEOUT_SECONDS", 0.2)
    twilio.inbound("STOP", sid="SM" + "2" * 32)
    receiver.delay = 1.0
    publisher = Publisher(engine, events_settings, rng=random.Random(1))
    assert publisher.run(clock.now).failed == 1
    receiver.delay = 0.0
    assert publish_all(publisher, clock.now + timedelta(minutes=2)) == 1
    ids = [body["id"] for body in receiver.bodies()]
    assert len(ids) == 2 and ids[0] == ids[1]  # at least once: the receiver de-duplicates


def test_a_claim_left_by_a_dead_worker_is_posted_once_its_lease_runs_out(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    events_settings: Settings,
    receiver: Receiver,
    clock: Clock,
) -> None:
    twilio.inbound("STOP", sid="SM" + "2" * 32)
    publisher = Publisher(engine, events_settings, rng=random.Random(1))
    publisher._claim(clock.now)  # the worker died right after claiming
    assert publish_all(publisher, clock.now) == 0
    assert publish_all(publisher, clock.now + publishing.LEASE) == 1


def test_events_nobody_received_within_the_maximum_age_are_dropped_and_counted(
    enrolled: BookingSystem,
    twilio: TwilioWebhooks,
    engine: Any,
    settings: Settings,
    events_settings: Settings,
    receiver: Receiver,
    clock: Clock,
) -> None:
    twilio.inbound("STOP", sid="SM" + "2" * 32)
    unconfigured = Publisher(engine, settings)  # no EVENTS_WEBHOOK_URL: recorded, not posted
    assert unconfigured.run(clock.now).dropped == 0
    assert unconfigured.run(clock.now + MAX_AGE + timedelta(seconds=1)).dropped == 1
    assert Publisher(engine, events_settings).run(clock.now + MAX_AGE * 2).delivered == 0
    assert receiver.posts == []
    assert [e.status for e in stored(engine)] == [EventStatus.DROPPED]
    unconfigured.run(clock.now + publishing.KEEP_DELIVERED + timedelta(seconds=1))
    assert stored(engine) == []  # old settled events are deleted


def test_staff_and_twilio_opt_outs_are_events_too(
    enrolled: BookingSystem,
    engine: Any,
    events_settings: Settings,
    receiver: Receiver,
    clock: Clock,
) -> None:
    client = enrolled.client
    answer = client.post("/api/patients/P-1001/consent", json={"opted_out": True}, headers=STAFF)
    assert answer.status_code == 200
    assert publish_all(Publisher(engine, events_settings), clock.now) == 1
    assert receiver.bodies()[0]["data"] == {"source": "staff"}


def test_scheduling_is_no_event_and_an_unreported_status_is_none(
    enrolled: BookingSystem, twilio: TwilioWebhooks, engine: Any
) -> None:
    """Scheduling, holding and claiming are the service's own business; a reply from a
    number no patient has is nothing the booking system can place."""
    twilio.inbound("hello?", sid="SM" + "4" * 32, sender="+971509999999")
    assert stored(engine) == []


def test_a_url_without_a_secret_stops_start_up() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"EVENTS_WEBHOOK_URL": "https://booking.example/hooks"})
    assert str(error.value).startswith("EVENTS_WEBHOOK_SECRET: required with EVENTS_WEBHOOK_URL")
    with pytest.raises(ConfigError) as bad:
        Settings.from_env(
            {"EVENTS_WEBHOOK_URL": "booking.example", "EVENTS_WEBHOOK_SECRET": SECRET}
        )
    assert str(bad.value).startswith("EVENTS_WEBHOOK_URL: expected an http(s) URL")


def test_aftercare_dispatch_from_cron_posts_the_events_too(
    sqlite_url: str, build_app: Any, clock: Clock, receiver: Receiver
) -> None:
    clock.now = datetime.now(UTC)  # the command's clock is the real one
    client = build_app(make_settings(sqlite_url))
    event = completed_event(performed_at=clock.now)
    assert BookingSystem(client, clock).post(event).status_code == 201
    TwilioWebhooks(client).inbound("STOP", sid="SM" + "2" * 32)
    TwilioWebhooks(client).inbound("START", sid="SM" + "3" * 32)

    result = aftercare(
        "dispatch",
        "--console",
        env={
            "DATABASE_URL": sqlite_url,
            "EVENTS_WEBHOOK_URL": receiver.url,
            "EVENTS_WEBHOOK_SECRET": SECRET,
        },
    )

    assert result.returncode == 0, result.stderr
    assert "events: 2 delivered, 0 to retry, 0 dropped" in result.stdout
    assert receiver.types() == ["patient.opted_out", "patient.opted_in"]
