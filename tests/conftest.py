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
from dataclasses import dataclass, field
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
from notifier.store import migrate
from notifier.store.db import make_engine
from tests.support.postgres import admin_connection
from webhooks.signature import sign

SECRET = "test-booking-secret"
TWILIO_TOKEN = "test-twilio-auth-token"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
STAFF_TOKEN = "staff-token-0123456789"
# 2027-03-01 10:00 in Dubai: a Monday morning inside every send window.
START = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)
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
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test using this runs on SQLite and on PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


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
        clinic_name="Skin Clinic",
        clinic_phone="+971 4 000 0000",
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
    return {"Authorization": f"Bearer {STAFF_TOKEN}"}


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
            "phone": "+971501234567",
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
        sender: str = "+971501234567",
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
            "To": "+971501234567",
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
    # What the carrier has, and when it took each one: by `clock` when a test gives
    # one (then look-ups honour `since`), else unknown (look-ups ignore `since`).
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
                self.carrier_log[f"SM{uuid.uuid4().hex}"] = (message, self._now())
            raise error
        self.sent.append(message)
        sid = f"SM{uuid.uuid4().hex}"
        self.carrier_log[sid] = (message, self._now())
        return Accepted(sid=sid)

    def _now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None

    def find_sent(self, lookup: Lookup) -> list[str]:
        """What Twilio's list would show: the matching messages sent since `since`
        (any body for a template lookup), newest first."""
        self.lookups += 1
        return [
            sid
            for sid, (m, at) in reversed(self.carrier_log.items())
            if m.to == lookup.to
            and m.channel == lookup.channel
            and (lookup.body is None or m.body == lookup.body)
            and (at is None or at >= lookup.since)
        ]

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
