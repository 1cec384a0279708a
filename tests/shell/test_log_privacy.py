"""No personal data in what the real processes write to their logs, tracebacks included.

Database errors are forced on requests and dispatch passes that carry a patient's
phone, first name and message or reply text; then everything the process wrote
(gunicorn's error and access logs, the app's and APScheduler's logs) is searched
for them. The error itself must have been logged, masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from notifier.signature import sign
from tests.conftest import SECRET, STAFF_TOKEN, completed_event
from tests.support.booking import enrol_due_now
from tests.support.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from tests.support.serving import free_port, wait_until_serving

BIN = Path(sys.executable).parent
# Every phone number here starts so; "***0001" is how the logs may show one.
PHONE_DIGITS = "50111000"
NAMES = ("Zebulon", "Bartholomew", "Ottoline", "Wilhelmina")
REPLY = "my scalp itches after the session"


def _environment(database_url: str, twilio_url: str, public_url: str) -> dict[str, str]:
    """The README's settings, with Twilio pointed at the loopback fake."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "DATABASE_URL", "BOOKING_", "STAFF_", "PUBLIC_"))
    }
    return {
        **clean,
        "DATABASE_URL": database_url,
        "BOOKING_WEBHOOK_SECRET": SECRET,
        "STAFF_API_TOKENS": STAFF_TOKEN,
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "TWILIO_SMS_FROM": "+14155550100",
        "TWILIO_API_BASE_URL": twilio_url,
        "TWILIO_TIMEOUT_SECONDS": "2",
        "PUBLIC_BASE_URL": public_url,
        "CLINIC_NAME": "Skin Clinic",
        "DISPATCH_INTERVAL_SECONDS": "0.5",
    }


def _assert_nothing_personal(log: str) -> None:
    assert PHONE_DIGITS not in log, _around(log, PHONE_DIGITS)
    for name in NAMES:
        assert name not in log, _around(log, name)
    assert REPLY not in log, _around(log, REPLY)
    assert "thank you for coming in today" not in log  # a message text


def _around(log: str, needle: str) -> str:
    at = log.index(needle)
    return log[max(0, at - 600) : at + 200]


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def _execute(database_url: str, *statements: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


def _is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


# -- the web app, served by gunicorn ----------------------------------------------------


class Web:
    """Requests to the served app, signed as the booking system and Twilio sign them."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def enrol(self, event_id: str, patient_id: str, name: str, phone: str) -> int:
        performed = datetime.now(UTC) - timedelta(hours=2)
        event = completed_event(
            event_id,
            patient={"id": patient_id, "first_name": name, "phone": phone},
            treatment={"id": f"T-{patient_id}"},
            performed_at=performed,
        )
        body = json.dumps(event).encode()
        signature = sign(SECRET, body, int(time.time()))
        return self._send(
            "/webhooks/booking",
            body,
            {"Content-Type": "application/json", "X-Aftercare-Signature": signature},
        )

    def inbound(self, phone: str, body: str) -> int:
        url = self.base_url + "/webhooks/twilio/inbound"
        params = {
            "MessageSid": "SM" + "7" * 32,
            "AccountSid": DEFAULT_ACCOUNT_SID,
            "From": phone,
            "To": "+14155550100",
            "Body": body,
            "NumMedia": "0",
        }
        signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(url, params)
        return self._send(
            "/webhooks/twilio/inbound",
            urllib.parse.urlencode(params).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )

    def get(self, path: str) -> int:
        return self._send(path, None, {"Authorization": f"Bearer {STAFF_TOKEN}"})

    def _send(self, path: str, body: bytes | None, headers: dict[str, str]) -> int:
        url = self.base_url + path  # always http://127.0.0.1:<port>
        request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)


def _refuse_personal_rows(database_url: str) -> None:
    """Database rules that refuse some rows, each error quoting the values it refused."""
    _execute(database_url, "CREATE UNIQUE INDEX one_per_phone ON patient (phone, first_name)")
    if _is_postgres(database_url):
        _execute(
            database_url,
            "ALTER TABLE patient ADD CONSTRAINT short_names CHECK (length(first_name) < 9)",
            "ALTER TABLE reply ADD CONSTRAINT short_replies CHECK (length(body) < 20)",
        )
    else:
        _execute(
            database_url,
            "CREATE TRIGGER short_names BEFORE INSERT ON patient "
            "WHEN length(NEW.first_name) >= 9 BEGIN SELECT RAISE(ABORT, 'name too long'); END",
            "CREATE TRIGGER short_replies BEFORE INSERT ON reply "
            "WHEN length(NEW.body) >= 20 BEGIN SELECT RAISE(ABORT, 'reply too long'); END",
        )


@pytest.mark.parametrize("command", ["gunicorn", "aftercare run"])
def test_database_errors_on_requests_leave_no_personal_data_in_the_logs(
    command: str, database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    _refuse_personal_rows(database_url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = _environment(database_url, fake_twilio.base_url, base_url)
    if command == "gunicorn":  # as the Procfile runs it
        argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        argv += ["--threads", "4", "--worker-class", "gthread", "--access-logfile", "-"]
        argv += ["--logger-class", "notifier.server.MaskingLogger", "notifier:create_app()"]
    else:
        argv = [str(BIN / "aftercare"), "run", "--port", str(port)]
    log = tmp_path / "output.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_serving(base_url + "/healthz", server, log)
        web = Web(base_url)
        assert web.enrol("evt-1", "P-1", "Zebulon", "+971501110001") == 201
        # The same name and number again: a unique violation quoting both.
        assert web.enrol("evt-2", "P-2", "Zebulon", "+971501110001") == 500
        # A check (PostgreSQL: "Failing row contains (...)") or trigger refuses the row.
        assert web.enrol("evt-3", "P-3", "Bartholomew", "+971501110003") == 500
        assert web.inbound("+971501110004", REPLY) == 500
        # A table the enrolment writes is gone.
        _execute(
            database_url,
            "DROP TABLE message CASCADE" if _is_postgres(database_url) else "DROP TABLE message",
        )
        # SQLite says so with an OperationalError (503, try again); PostgreSQL does not.
        expected = 500 if _is_postgres(database_url) else 503
        assert web.enrol("evt-5", "P-5", "Ottoline", "+971501110005") == expected
        # The access log shows the query string.
        assert web.get("/api/replies?from=%2B971501110006") == 200
    finally:
        _stop(server)
    output = log.read_text()

    _assert_nothing_personal(output)
    assert output.count("Traceback (most recent call last)") >= 4, output
    assert "Exception on /webhooks/booking [POST]" in output
    assert "Exception on /webhooks/twilio/inbound [POST]" in output
    assert "/api/replies?from=***0006" in output  # gunicorn's access log, masked
    if _is_postgres(database_url):
        assert "Key (phone, first_name)=(***) already exists" in output
        assert "Failing row contains (***)" in output
        assert 'relation "message" does not exist' in output
    else:
        assert "UNIQUE constraint failed: patient.phone, patient.first_name" in output
        assert "name too long" in output
        assert "reply too long" in output
        assert "no such table: message" in output


# -- the worker --------------------------------------------------------------------------


def test_a_database_error_in_a_worker_pass_leaves_no_personal_data_in_the_log(
    database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    enrol_due_now(database_url, first_name="Wilhelmina", phone="+971501110007")
    # Twilio refuses the number, quoting it; recording the failure then fails in the
    # database, whose error (on PostgreSQL) quotes the whole row: text, error, number.
    fake_twilio.script([("error", 400, 21211)])
    if _is_postgres(database_url):
        rule = "ALTER TABLE message ADD CONSTRAINT never_failed CHECK (status <> 'failed')"
    else:
        rule = (
            "CREATE TRIGGER never_failed BEFORE UPDATE OF status ON message "
            "WHEN NEW.status = 'failed' BEGIN SELECT RAISE(ABORT, 'refused to fail'); END"
        )
    _execute(database_url, rule)
    env = _environment(database_url, fake_twilio.base_url, "https://aftercare.example.org")
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        worker = subprocess.Popen(
            [str(BIN / "aftercare"), "worker"],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Traceback" not in log.read_text() and time.monotonic() < deadline:
            if worker.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        _stop(worker)
    output = log.read_text()

    _assert_nothing_personal(output)
    assert len(fake_twilio.requests) >= 1  # the send was tried
    assert "Traceback (most recent call last)" in output, output
    assert "21211" in output  # the failure was logged, its number masked
    if _is_postgres(database_url):
        assert "Failing row contains (***)" in output, output
    else:
        assert "refused to fail" in output, output
