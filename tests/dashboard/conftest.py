"""The dashboard's fixtures: the app with SECRET_KEY set, a staff account, a browser-like
test client that sends each form's CSRF token, and rows a test pretends exist."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from bs4 import BeautifulSoup

from notifier import create_app
from notifier.planning.outbox import last_step_sent
from notifier.settings import Settings
from notifier.staff import accounts
from notifier.store.db import transaction
from notifier.store.models import Message, Patient, Reply, StatusCallback, Treatment
from tests.conftest import START, Clock

SECRET_KEY = "dashboard-test-secret-key-0123456789abcdef"
NAME, PASSWORD = "amira", "correct horse battery"


@pytest.fixture
def dashboard_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, secret_key=SECRET_KEY)


@pytest.fixture
def dashboard_app(dashboard_settings: Settings, engine: Any, clock: Clock) -> Any:
    return create_app(dashboard_settings, engine=engine, clock=clock)


@pytest.fixture
def account(engine: Any) -> str:
    with transaction(engine) as session:
        accounts.create(session, NAME, PASSWORD, START)
    return NAME


def page(response: Any) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


@dataclass
class Staff:
    """A person at a browser: follows what a page offers, CSRF token included."""

    client: Any
    last: BeautifulSoup | None = None
    address: str = "192.0.2.10"

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, environ_base={"REMOTE_ADDR": self.address}, **kwargs)
        if response.mimetype == "text/html":
            self.last = page(response)
        return response

    def token(self) -> str:
        if self.last is None or self.last.find("input", {"name": "csrf_token"}) is None:
            self.get("/staff/login", follow_redirects=True)
        assert self.last is not None
        found = self.last.find("input", {"name": "csrf_token"})
        assert found is not None
        return str(found["value"])

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True) -> Any:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.token())
        response = self.client.post(path, data=form, environ_base={"REMOTE_ADDR": self.address})
        if response.mimetype == "text/html":
            self.last = page(response)
        return response

    def login(self, name: str = NAME, password: str = PASSWORD) -> Any:
        self.get("/staff/login")
        return self.post("/staff/login", {"username": name, "password": password})


@pytest.fixture
def staff(dashboard_app: Any) -> Staff:
    return Staff(dashboard_app.test_client())


@pytest.fixture
def signed_in(staff: Staff, account: str) -> Staff:
    response = staff.login()
    assert response.status_code == 302, response.get_data(as_text=True)
    return staff


# -- rows a test pretends already exist ----------------------------------------------


@dataclass
class Clinic:
    """Patients, their messages and replies, written straight to the database."""

    engine: Any
    now: datetime = START
    _counter: int = field(default=0)

    def patient(self, external_id: str = "P-1001", **values: Any) -> Patient:
        fields = {
            "phone": "+971501234567",
            "first_name": "Omar",
            "language": "en",
            "timezone": "Asia/Dubai",
            "created_at": self.now,
            "updated_at": self.now,
            **values,
        }
        with transaction(self.engine) as session:
            patient = Patient(external_id=external_id, **fields)
            session.add(patient)
            session.flush()
            session.add(
                Treatment(
                    external_id=f"T-{external_id}",
                    patient_id=patient.id,
                    kind="scalp_micropigmentation",
                    performed_at=self.now - timedelta(days=1),
                    created_at=self.now,
                    updated_at=self.now,
                )
            )
        return patient

    def message(self, patient: Patient, step: str = "day_1", **values: Any) -> Message:
        with transaction(self.engine) as session:
            treatment = session.exec(
                Treatment.__table__.select().where(Treatment.patient_id == patient.id)  # type: ignore[attr-defined]
            ).first()
            self._counter += 1
            send_at = values.pop("send_at", self.now - timedelta(hours=2))
            status = values.pop("status", "delivered")
            message = Message(
                patient_id=patient.id,
                treatment_id=treatment.id,
                step=step,
                channel=values.pop("channel", "sms"),
                language=values.pop("language", patient.language),
                body=values.pop("body", f"Aftercare message {step}"),
                send_at=send_at,
                expires_at=send_at + timedelta(days=1),
                window_start=0,
                window_end=24 * 60 - 1,
                status=status,
                sid=values.pop("sid", f"SMmsg{self._counter:028d}"),
                created_at=send_at - timedelta(days=1),
                updated_at=values.pop("updated_at", send_at),
                **values,
            )
            session.add(message)
        return message

    def callbacks(self, message: Message, *statuses: str) -> None:
        with transaction(self.engine) as session:
            for n, status in enumerate(statuses):
                session.add(
                    StatusCallback(
                        sid=message.sid or "",
                        message_id=message.id,
                        status=status,
                        received_at=message.send_at + timedelta(seconds=n + 1),
                    )
                )

    def reply(self, patient: Patient | None, body: str = "Thank you", **values: Any) -> Reply:
        self._counter += 1
        with transaction(self.engine) as session:
            received = values.pop("received_at", self.now - timedelta(hours=1))
            reply = Reply(
                sid=f"SMreply{self._counter:026d}",
                patient_id=patient.id if patient else None,
                from_phone=values.pop("from_phone", patient.phone if patient else "+971509999999"),
                body=body,
                received_at=received,
                # as the inbox stores it: the step the reply followed
                after_step=last_step_sent(session, patient.id, received)
                if patient and patient.id
                else None,
                **values,
            )
            session.add(reply)
        return reply


@pytest.fixture
def clinic(engine: Any, clock: Clock) -> Clinic:
    return Clinic(engine, clock.now)
