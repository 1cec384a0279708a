"""The `aftercare` command, run as an operator runs it: a subprocess with an environment."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from notifier import create_app
from notifier.settings import Settings
from notifier.store import migrate
from notifier.store.db import make_engine
from notifier.store.models import Message, MessageTallyChange, Status
from tests.conftest import SECRET, completed_event
from tests.support.booking import enrol_due_now
from tests.support.command import AFTERCARE, aftercare
from tests.support.rows import count
from tests.support.serving import free_port, wait_until_serving
from tests.support.tallies import assert_tallies_match


def test_plan_check_passes_on_the_shipped_plans() -> None:
    result = aftercare("plan", "check")
    assert result.returncode == 0, result.stderr
    assert "ok  scalp_micropigmentation: 7 steps" in result.stdout


def test_plan_check_names_the_file_and_step_of_a_problem(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text(
        'kind = "broken"\n[[steps]]\nkey = "hello"\nday = 1\n[steps.text]\nen = "Hi {nme}"\n'
    )
    result = aftercare("plan", "check", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'broken.toml'}: step 'hello': text.en: unknown placeholder {{nme}}" in (
        result.stderr
    )
    assert "set exactly one of valid_until_day or valid_for" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_preview_prints_the_local_timeline() -> None:
    result = aftercare(
        "plan",
        "preview",
        "--kind",
        "scalp_micropigmentation",
        "--performed-at",
        "2027-03-26T15:00:00+00:00",
        "--tz",
        "Europe/London",
        "--lang",
        "en",
    )
    assert result.returncode == 0, result.stderr
    assert "day   2  Sun 2027-03-28 10:00 BST  no_wash_reminder  [scheduled]" in result.stdout
    assert "day 366  Sun 2028-03-26 10:00 BST  yearly_checkup" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "tattoo"], "no plan 'tattoo'"),
        (["--tz", "Mars/Olympus"], "'Mars/Olympus' is not an IANA timezone name"),
        (["--performed-at", "2027-03-01T10:00:00"], "needs a UTC offset"),
        (["--performed-at", "yesterday"], "'yesterday' is not ISO 8601"),
    ],
)
def test_plan_preview_rejects_bad_arguments_clearly(args: list[str], message: str) -> None:
    base = {
        "--kind": "scalp_micropigmentation",
        "--performed-at": "2027-03-01T10:00:00+04:00",
        "--tz": "Asia/Dubai",
    }
    base[args[0]] = args[1]
    result = aftercare("plan", "preview", *[x for kv in base.items() for x in kv])
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://nope"),
        ("CLINIC_TIMEZONE", "Mars/Olympus"),
        ("DISPATCH_INTERVAL_SECONDS", "soon"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_AUTH_TOKEN", ""),
        ("TWILIO_SMS_FROM", "0501234567"),
        ("PUBLIC_BASE_URL", "aftercare.example.org"),
        ("BOOKING_WEBHOOK_SECRET", "dev-secret"),
        ("TRUST_FORWARDED_HEADERS", "maybe"),
    ],
)
def test_a_bad_configuration_value_stops_with_a_message_naming_it(
    variable: str, value: str
) -> None:
    env = {variable: value}
    if variable.startswith("TWILIO_"):
        env = {
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "token",
            "TWILIO_SMS_FROM": "+14155550100",
            **env,
        }
    result = aftercare("dispatch", env=env)
    assert result.returncode == 1
    assert f"configuration error: {variable}: " in result.stderr
    assert "Traceback" not in result.stderr


TWILIO_ENV = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "token",
    "TWILIO_SMS_FROM": "+14155550100",
}


@pytest.mark.parametrize(
    ("env", "variable", "also_named"),
    [
        (TWILIO_ENV, "PUBLIC_BASE_URL", "TRUST_FORWARDED_HEADERS"),
        (
            {
                **TWILIO_ENV,
                "PUBLIC_BASE_URL": "https://care.example.org",
                "DISPATCH_LEASE_SECONDS": "20",
            },
            "DISPATCH_LEASE_SECONDS",
            "TWILIO_TIMEOUT_SECONDS",
        ),
    ],
)
@pytest.mark.parametrize("command", ["worker", "dispatch"])
def test_settings_that_cannot_work_together_stop_start_up_naming_them(
    command: str, env: dict[str, str], variable: str, also_named: str
) -> None:
    result = aftercare(command, env=env)
    assert result.returncode == 1
    assert f"configuration error: {variable}: " in result.stderr
    assert also_named in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["worker", "dispatch"])
def test_worker_and_dispatch_refuse_the_console_sender_unless_asked(
    command: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'console.sqlite3'}"
    migrate.upgrade(url)
    result = aftercare(command, env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: no Twilio credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN): messages would "
        "only be printed; set them, or pass --console to print them on purpose"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["worker", "dispatch"])
def test_console_with_twilio_credentials_is_refused(command: str) -> None:
    env = {**TWILIO_ENV, "PUBLIC_BASE_URL": "https://care.example.org"}
    result = aftercare(command, "--console", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --console: Twilio credentials are set, so messages go to Twilio; drop --console"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--help"],
        ["dispatch", "--help"],
        ["queue", "--help"],
        ["db", "upgrade", "--help"],
        ["plan", "check"],
        ["plan", "preview", "--help"],
        ["booking", "post", "--help"],
    ],
)
def test_every_command_masks_phone_numbers_in_logs(args: list[str]) -> None:
    from click.testing import CliRunner

    from notifier.cli import main

    root = logging.getLogger()
    written = io.StringIO()
    handler = logging.StreamHandler(written)  # a handler no command has seen yet
    root.addHandler(handler)
    try:
        result = CliRunner().invoke(main, args)
        logging.getLogger("aftercare.test").warning("texting +971501234567 now")
    finally:
        root.removeHandler(handler)
    assert result.exit_code == 0, result.output
    assert "texting ***4567 now" in written.getvalue()
    assert "501234567" not in written.getvalue()


def test_db_upgrade_then_dispatch_sends_what_is_due(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    env = {"DATABASE_URL": url, "CLINIC_NAME": "Skin Clinic"}
    upgraded = aftercare("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "is at revision" in upgraded.stdout

    enrol_due_now(url)
    engine = make_engine(url)

    result = aftercare("dispatch", "--console", env=env)
    assert result.returncode == 0, result.stderr
    assert "[console sender] sms to ***4567" in result.stdout
    assert "thank you for coming in today" in result.stdout
    assert "dispatch: claimed 1, sent 1" in result.stdout
    assert "+971501234567" not in result.stdout + result.stderr
    with Session(engine) as session:
        assert (
            session.exec(select(Message).where(Message.step == "after_treatment")).one().status
            == Status.QUEUED
        )
    assert count(engine, MessageTallyChange) == 0  # the overview's counts folded in
    assert_tallies_match(engine)
    again = aftercare("dispatch", "--console", env=env)
    assert "dispatch: nothing due" in again.stdout
    engine.dispose()


def test_dispatch_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = aftercare(
        "dispatch", "--console", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    )
    assert result.returncode == 1
    assert "run `aftercare db upgrade` first" in result.stderr


def test_a_second_worker_on_sqlite_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.sqlite3'}"
    migrate.upgrade(url)
    env = {"DATABASE_URL": url, "DISPATCH_INTERVAL_SECONDS": "60"}
    first = subprocess.Popen(
        [AFTERCARE, "worker", "--console"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = tmp_path / "one.sqlite3.worker.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = aftercare("worker", "--console", env=env)
        assert second.returncode == 1
        assert "is already dispatching" in second.stderr
        assert "SQLite allows one worker" in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 0  # SIGTERM stops the worker cleanly


def test_run_serves_the_web_and_dispatches_to_the_console(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "BOOKING_WEBHOOK_SECRET": SECRET,
        "DISPATCH_INTERVAL_SECONDS": "0.5",
        "CLINIC_TIMEZONE": "UTC",
    }
    server = subprocess.Popen(
        [AFTERCARE, "run", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz")
        # Performed 61 minutes ago in a zone whose window is open all day for this test.
        event = completed_event(
            performed_at=datetime.now(UTC) - timedelta(minutes=61),
            patient={"timezone": _zone_in_window()},
        )
        event_file = tmp_path / "event.json"
        event_file.write_text(json.dumps(event))
        posted = aftercare(
            "booking",
            "post",
            str(event_file),
            "--url",
            f"http://127.0.0.1:{port}/webhooks/booking",
            env={"BOOKING_WEBHOOK_SECRET": SECRET},
        )
        assert posted.returncode == 0, posted.stdout + posted.stderr
        assert "HTTP 201" in posted.stdout
        output = _read_until(server, "thank you for coming in today", seconds=30)
        assert "[console sender] sms to ***4567" in output
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _zone_in_window() -> str:
    """A zone where it is now between 10:00 and 20:00, so the first message is due now."""
    from zoneinfo import ZoneInfo

    for offset in range(-12, 15):
        zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
        if 10 <= datetime.now(ZoneInfo(zone)).hour < 20:
            return zone
    raise AssertionError("no zone found")


def _read_until(process: subprocess.Popen[str], needle: str, seconds: float) -> str:
    """Read the process's output until `needle` appears, for at most `seconds`.

    Reads the pipe's file descriptor itself: select() on the buffered text stream
    would miss lines already read into its buffer."""
    import selectors

    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while needle.encode() not in seen and time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    selector.close()
    if needle.encode() not in seen:
        raise AssertionError("not seen in time: " + needle + "\n" + seen.decode())
    return seen.decode()


def test_gunicorn_serves_the_app_factory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'web.sqlite3'}"
    migrate.upgrade(url)
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    web = subprocess.Popen(
        [gunicorn, "--bind", f"127.0.0.1:{port}", "notifier:create_app()"],
        env={**os.environ, "DATABASE_URL": url},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz")
    finally:
        web.terminate()
        web.wait(timeout=30)


def test_gunicorn_stops_on_bad_configuration_with_one_clear_line(tmp_path: Path) -> None:
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "--bind", f"127.0.0.1:{free_port()}", "notifier:create_app()"],
        env={**os.environ, "CLINIC_TIMEZONE": "Mars/Olympus"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "aftercare cannot start: CLINIC_TIMEZONE: 'Mars/Olympus'" in result.stderr
    assert "Traceback" not in result.stderr


def test_queue_reports_overdue_and_stuck_messages_and_exits_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    migrate.upgrade(url)
    env = {"DATABASE_URL": url}
    empty = aftercare("queue", env=env)
    assert empty.returncode == 0, empty.stderr
    assert "messages: empty" in empty.stdout

    now = datetime.now(UTC)
    app = create_app(Settings(database_url=url, booking_webhook_secret=SECRET), clock=lambda: now)
    from tests.conftest import BookingSystem, Clock

    booking = BookingSystem(app.test_client(), Clock(now))
    assert booking.post(completed_event(performed_at=now - timedelta(hours=3))).status_code
    engine = make_engine(url)
    with Session(engine) as session:
        rows = session.exec(select(Message)).all()
        overdue, stuck = rows[0], rows[1]
        overdue.status, overdue.send_at = Status.SCHEDULED, now - timedelta(minutes=10)
        stuck.status, stuck.lease_until = Status.SENDING, now - timedelta(minutes=1)
        session.add_all([overdue, stuck])
        session.commit()
    engine.dispose()

    report = aftercare("queue", env=env)
    assert report.returncode == 1
    assert "overdue (due > 1 min ago, not claimed): 1; oldest due 6" in report.stdout
    assert "stuck (claimed, lease run out): 1" in report.stdout


def test_plan_preview_shows_each_texts_encoding_and_warns_above_three_segments(
    tmp_path: Path,
) -> None:
    arabic = aftercare(
        "plan",
        "preview",
        "--kind",
        "scalp_micropigmentation",
        "--performed-at",
        "2027-03-01T10:00:00+04:00",
        "--tz",
        "Asia/Dubai",
        "--lang",
        "ar",
    )
    assert arabic.returncode == 0, arabic.stderr
    assert "language ar" in arabic.stdout
    assert "UCS-2" in arabic.stdout
    assert "GSM-7" not in arabic.stdout
    assert "WARNING" not in arabic.stdout  # the shipped texts stay within 3 segments
    english = aftercare(
        "plan",
        "preview",
        "--kind",
        "scalp_micropigmentation",
        "--performed-at",
        "2027-03-01T10:00:00+04:00",
        "--tz",
        "Asia/Dubai",
    )
    assert "GSM-7" in english.stdout
    assert "UCS-2" not in english.stdout

    long_text = "Привет " * 40  # 279 UCS-2 units once trimmed: 5 segments
    (tmp_path / "wordy.toml").write_text(
        'kind = "wordy"\nlanguages = ["en"]\n[[steps]]\nkey = "hello"\nday = 1\n'
        f'valid_until_day = 2\n[steps.text]\nen = "{long_text}"\n',
        encoding="utf-8",
    )
    wordy = aftercare(
        "plan",
        "preview",
        "--kind",
        "wordy",
        "--performed-at",
        "2027-03-01T10:00:00+04:00",
        "--tz",
        "Asia/Dubai",
        env={"AFTERCARE_PLANS_DIR": str(tmp_path)},
    )
    assert wordy.returncode == 0, wordy.stderr
    assert "UCS-2, 279 units, 5 segments  WARNING: over 3 segments" in wordy.stdout
