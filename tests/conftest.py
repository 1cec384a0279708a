"""Shared fixtures: a migrated database per test (SQLite, and PostgreSQL where asked),
the app with a controllable clock, a recording sender, and a booking system that
signs its webhooks exactly as the contract says."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from notifier import create_app
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import Accepted, Lookup, OneByOne, Outgoing, Redact, SendError
from notifier.planning.plan import load_plans
from notifier.settings import Settings, StaffToken, TwilioSettings
from notifier.signature import sign
from notifier.store import migrate
from notifier.store.db import make_engine
from tests.support import tallies
from tests.support.postgres import admin_connection

SECRET = "test-booking-secret"
TWILIO_TOKEN = "test-twilio-auth-token"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
STAFF_TOKEN = "staff-token-0123456789"
DASHBOARD_SECRET_KEY = "dashboard-secret-key-0123456789abcdefghij"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
CLINIC = {"clinic_name": "Skin Clinic", "clinic_phone": "+971 4 000 0000"}
PHONE = "+971501234567"  # the SPEC example's patient
# 2027-03-01 10:00 in Dubai: a Monday morning inside every send window.
START = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)
DUE = START + timedelta(hours=1)  # after_treatment, of a treatment at START: 11:00 in Dubai
DAY_1 = START + timedelta(days=1)  # sunscreen #0: day 1, 10:00 in Dubai
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# -- databases ---------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database to copy from; skipped only off CI."""
    try:
        admin = admin_connection(POSTGRES_URL)
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {POSTGRES_URL}: {error}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set TEST_POSTGRES_URL): {error}")
    name = f"aftercare_tpl_{os.getpid()}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield name
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for one test."""
    name = f"aftercare_t_{uuid.uuid4().hex[:12]}"
    with admin_connection(POSTGRES_URL) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin_connection(POSTGRES_URL) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(sqlite_template: str, tmp_path: Any) -> str:
    path = tmp_path / "aftercare.sqlite3"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test using this runs on SQLite and on PostgreSQL. Afterwards, whatever the
    test did, the overview's tallies must still count exactly what the database holds."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    yield url
    tallies.check_database(url)


def make_settings(database_url: str) -> Settings:
    """The tests' settings (Twilio configured, a loopback API that refuses) for a database."""
    return Settings(
        database_url=database_url,
        twilio=TwilioSettings(
            account_sid=TWILIO_SID,
            auth_token=TWILIO_TOKEN,
            sms_from="+14155550100",
            messaging_service_sid=None,
            whatsapp_from="+14155550111",
            api_base_url="http://127.0.0.1:9",
            timeout_seconds=1.0,
        ),
        booking_webhook_secret=SECRET,
        staff_api_tokens=(StaffToken("reception", STAFF_TOKEN),),
        secret_key=DASHBOARD_SECRET_KEY,  # the staff pages answer (503 without one)
        **CLINIC,
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Any]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


# -- time ----------------------------------------------------------------------


@dataclass
class Clock:
    """The app's clock in tests: moves only when told."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- the app and its doorways ------------------------------------------------------


@pytest.fixture
def app(settings: Settings, engine: Any, clock: Clock) -> Any:
    return create_app(settings, engine=engine, clock=clock)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def staff_headers() -> dict[str, str]:
    return dict(STAFF)


@pytest.fixture
def build_app(clock: Clock) -> Iterator[Callable[..., Any]]:
    """A test client for another app (own settings, own database or engine) on the shared
    clock; the engines are disposed after the test."""
    engines: list[Any] = []

    def build(settings: Settings, engine: Any = None) -> Any:
        engine = engine or make_engine(settings.database_url)
        engines.append(engine)
        return create_app(settings, engine=engine, clock=clock).test_client()

    yield build
    for engine in engines:
        engine.dispose()


def completed_event(
    event_id: str = "evt_0001",
    *,
    patient: dict[str, Any] | None = None,
    treatment: dict[str, Any] | None = None,
    performed_at: datetime = START,
) -> dict[str, Any]:
    """A `treatment.completed` event like the SPEC's example, with overrides."""
    return {
        "id": event_id,
        "type": "treatment.completed",
        "patient": {
            "id": "P-1001",
            "first_name": "Omar",
            "phone": PHONE,
            "channel": "sms",
            "language": "en",
            "timezone": "Asia/Dubai",
            "consent": True,
            **(patient or {}),
        },
        "treatment": {
            "id": "T-555",
            "kind": "scalp_micropigmentation",
            "performed_at": performed_at.isoformat(),
            **(treatment or {}),
        },
    }


@dataclass
class BookingSystem:
    """Posts events the way the clinic's booking system does: signed, JSON."""

    client: Any
    clock: Clock
    secret: str = SECRET

    def post(
        self,
        event: dict[str, Any] | bytes,
        *,
        signature: str | None = None,
        content_type: str = "application/json",
        timestamp: int | None = None,
    ) -> Any:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        when = int(self.clock.now.timestamp()) if timestamp is None else timestamp
        headers = {"X-Aftercare-Signature": signature or sign(self.secret, body, when)}
        return self.client.post(
            "/webhooks/booking", data=body, headers=headers, content_type=content_type
        )


@pytest.fixture
def booking(client: Any, clock: Clock) -> BookingSystem:
    return BookingSystem(client, clock)


@pytest.fixture
def enrolled(booking: BookingSystem) -> BookingSystem:
    """The booking system, once the SPEC's example patient is enrolled."""
    answer = booking.post(completed_event())
    assert answer.status_code == 201, answer.data
    return booking


@pytest.fixture
def sqlite_booking(sqlite_url: str, clock: Clock, build_app: Callable[..., Any]) -> BookingSystem:
    """The booking system posting to an app on SQLite only: for input handling that never
    reaches the database differently on PostgreSQL, and for the slower property tests."""
    client = build_app(
        Settings(
            database_url=sqlite_url,
            booking_webhook_secret=SECRET,
            staff_api_tokens=(StaffToken("reception", STAFF_TOKEN),),
        )
    )
    return BookingSystem(client, clock)


@dataclass
class TwilioWebhooks:
    """Posts form callbacks signed exactly as Twilio signs them."""

    client: Any
    base_url: str = "http://localhost"  # what the Flask test client's requests look like
    token: str = TWILIO_TOKEN
    sids: int = 0

    def post(
        self,
        path: str,
        params: dict[str, str],
        *,
        signature: str | None = None,
        signed_url: str | None = None,
        **kwargs: Any,
    ) -> Any:
        url = signed_url or self.base_url + path
        signed = RequestValidator(self.token).compute_signature(url, params)
        headers = {"X-Twilio-Signature": signature if signature is not None else signed}
        return self.client.post(path, data=params, headers=headers, **kwargs)

    def inbound(
        self,
        body: str,
        *,
        sender: str = PHONE,
        sid: str | None = None,
        opt_out_type: str | None = None,
        **kwargs: Any,
    ) -> Any:
        self.sids += 1
        params = {
            "MessageSid": sid or f"SM{self.sids:032x}",
            "AccountSid": TWILIO_SID,
            "From": sender,
            "To": "+14155550100",
            "Body": body,
            "NumMedia": "0",
        }
        if opt_out_type is not None:
            params["OptOutType"] = opt_out_type
        return self.post("/webhooks/twilio/inbound", params, **kwargs)

    def status(self, sid: str, status: str, error_code: int | None = None) -> Any:
        params = {
            "MessageSid": sid,
            "MessageStatus": status,
            "AccountSid": TWILIO_SID,
            "To": PHONE,
            "From": "+14155550100",
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return self.post("/webhooks/twilio/status", params)


@pytest.fixture
def twilio(client: Any) -> TwilioWebhooks:
    return TwilioWebhooks(client)


# -- sending ----------------------------------------------------------------------


@dataclass
class RecordingSender(OneByOne):
    """A sender that records what it was asked to send and can be told to fail."""

    sent: list[Outgoing] = field(default_factory=list)
    # The next sends fail with these errors; True means the carrier got it anyway
    # (a 5xx or timeout after Twilio accepted the message).
    failures: list[tuple[SendError, bool]] = field(default_factory=list)
    # What the carrier has, as its list shows it, and when it took each one: by `clock`
    # when a test gives one (then look-ups honour `since`), else unknown (then they
    # cannot). A test that gives one keeps it in step with its passes (`run_pass`).
    carrier_log: dict[str, tuple[Outgoing, datetime | None]] = field(default_factory=dict)
    clock: Callable[[], datetime] | None = None
    lookups: int = 0
    closed: bool = False
    redacted: list[Redact] = field(default_factory=list)  # what the carrier was told to forget
    redact_errors: list[SendError] = field(default_factory=list)  # the next redactions fail

    def fail_next(self, error: SendError, *, delivered_anyway: bool = False) -> None:
        self.failures.append((error, delivered_anyway))

    def send(self, message: Outgoing) -> Accepted:
        if self.failures:
            error, delivered = self.failures.pop(0)
            if delivered:
                self._take(message)
            raise error
        self.sent.append(message)
        return Accepted(sid=self._take(message))

    def add_message(self, message: Outgoing, at: datetime) -> str:
        """A message the carrier took at `at` without this sender (another worker's, an
        earlier treatment's): only look-ups see it. Its SID."""
        return self._take(message, at)

    def _take(self, message: Outgoing, at: datetime | None = None) -> str:
        """The carrier takes the message (now, by `clock`, unless `at`): its SID. A
        template's text in Twilio's list is the template's, not our body, so only a
        look-up for any body finds it."""
        sid = f"SM{uuid.uuid4().hex}"
        if message.content_sid is not None:
            message = replace(message, body=f"(template {message.content_sid})")
        if at is None and self.clock is not None:
            at = self.clock()
        self.carrier_log[sid] = (message, at)
        return sid

    def find_sent(self, lookup: Lookup) -> list[str]:
        """The `Sender.find_batch` contract for one look-up, as Twilio's list answers it:
        messages to that recipient on that channel, with that body (any body when
        `lookup.body` is None: a template), taken at or after `since` (where the time
        is known), newest first."""
        self.lookups += 1
        found = [
            (sid, at)
            for sid, (m, at) in reversed(self.carrier_log.items())  # the last taken first
            if m.to == lookup.to
            and m.channel == lookup.channel
            and (lookup.body is None or m.body == lookup.body)
            and (at is None or at >= lookup.since)
        ]
        if all(at is not None for _, at in found):  # by when the carrier took them
            found.sort(key=lambda match: match[1], reverse=True)
        return [sid for sid, _ in found]

    def redact(self, redaction: Redact) -> None:
        if self.redact_errors:
            raise self.redact_errors.pop(0)
        self.redacted.append(redaction)

    def bodies_to(self, to: str) -> list[str]:
        return [m.body for m in self.sent if m.to == to]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def dispatcher(engine: Any, sender: RecordingSender, settings: Settings) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(
        engine, sender, load_plans(settings.plans_dir), settings, rng=random.Random(7)
    )
    yield dispatcher
    dispatcher.close()
