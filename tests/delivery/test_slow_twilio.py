"""A slow Twilio never slows the doorways: nothing holds the database while it answers.

The dispatcher sends to a fake Twilio that takes 10 s per request (a bad afternoon,
well inside TWILIO_TIMEOUT_SECONDS); meanwhile every webhook and a staff read are
answered, each before any of those requests has come back.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from notifier import create_app
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.twilio_sender import TwilioSender
from notifier.planning.plan import load_plans
from notifier.store.db import make_engine
from notifier.store.models import Status
from tests.conftest import (
    DUE,
    STAFF,
    BookingSystem,
    Clock,
    TwilioWebhooks,
    completed_event,
    make_settings,
)
from tests.support.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from tests.support.rows import rows

LATENCY = 10.0  # seconds Twilio takes to answer each request
PATIENTS = 8
ANSWERED_WITHIN = 1.0  # seconds: well under Twilio's 15 s webhook timeout


def phone(n: int) -> str:
    return f"+97150123{n:04d}"


@pytest.fixture
def slow_twilio() -> Any:
    with FakeTwilio(latency=LATENCY) as fake:
        yield fake


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_every_doorway_answers_at_once_while_twilio_takes_10_s(
    database_url, slow_twilio, clock: Clock
) -> None:
    base = make_settings(database_url)
    assert base.twilio is not None
    twilio_settings = replace(
        base.twilio,
        account_sid=DEFAULT_ACCOUNT_SID,
        auth_token=DEFAULT_AUTH_TOKEN,
        api_base_url=slow_twilio.base_url,
        timeout_seconds=15.0,
    )
    settings = replace(base, twilio=twilio_settings)
    engine = make_engine(database_url)
    client = create_app(settings, engine=engine, clock=clock).test_client()
    booking = BookingSystem(client, clock)
    twilio = TwilioWebhooks(client, token=DEFAULT_AUTH_TOKEN)
    for n in range(PATIENTS):
        patient = {"id": f"P-{n}", "phone": phone(n)}
        event = completed_event(f"evt_{n}", patient=patient, treatment={"id": f"T-{n}"})
        assert booking.post(event).status_code == 201
    assert twilio.inbound("STOP", sender=phone(1)).status_code == 200  # to START later
    clock.now = DUE
    dispatcher = Dispatcher(
        engine,
        TwilioSender(twilio_settings, concurrency=32),
        load_plans(settings.plans_dir),
        settings,
    )
    # Late in a long test session a full garbage collection can take a second; one now
    # keeps it out of the timed calls below, which measure waiting for Twilio.
    gc.collect()
    sending = threading.Thread(target=dispatcher.run_pass, args=(DUE,))
    sending.start()
    try:
        wait_for(lambda: slow_twilio.in_flight == PATIENTS - 1, "the sends are on the wire")
        doorways: dict[str, Callable[[], Any]] = {
            "STOP": lambda: twilio.inbound("STOP", sender=phone(0)),
            "START": lambda: twilio.inbound("START", sender=phone(1)),
            "reply": lambda: twilio.inbound("Is a little redness normal?", sender=phone(2)),
            "status callback": lambda: twilio.status("SM" + "5" * 32, "delivered"),
            "enrolment": lambda: booking.post(
                completed_event("evt_new", patient={"id": "P-new"}, treatment={"id": "T-new"})
            ),
            "patient.updated": lambda: booking.post(
                {
                    "id": "evt_update",
                    "type": "patient.updated",
                    "patient": {"id": "P-3", "language": "ar"},
                }
            ),
            "patient.erased": lambda: booking.post(
                {"id": "evt_erase", "type": "patient.erased", "patient": {"id": "P-4"}}
            ),
            "staff read": lambda: client.get("/api/patients/P-5", headers=STAFF),
        }
        for name, call in doorways.items():
            started = time.perf_counter()
            answer = call()
            took = time.perf_counter() - started
            assert answer.status_code < 300, (name, answer.status_code)
            assert took < ANSWERED_WITHIN, f"{name} took {took:.2f} s while Twilio was slow"
            assert slow_twilio.in_flight == PATIENTS - 1, f"{name} waited for Twilio"
    finally:
        sending.join(timeout=LATENCY + 20)
        dispatcher.close()

    first = {m.patient_id: m for m in rows(engine) if m.step == "after_treatment"}
    assert sum(m.status == Status.QUEUED for m in first.values()) == PATIENTS - 1
    assert len(slow_twilio.messages) == PATIENTS - 1  # P-1 had opted out before the pass
    engine.dispose()
