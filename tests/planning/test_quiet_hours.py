"""QUIET_HOURS (SPEC §3): no planned message goes out inside them, whatever its send
window. Every way a message is timed follows the one rule (`next_send_time`): planning
at enrolment, `patient.updated`, START after STOP, the dispatcher's re-check, retries
and the WhatsApp-to-SMS fallback. A message the night outlasts expires."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from notifier import create_app
from notifier.delivery.sender import RetryLater
from notifier.planning.schedule import QuietHours
from notifier.settings import ConfigError, Settings
from notifier.store.models import Status
from tests.conftest import PHONE, STAFF, BookingSystem, Clock, completed_event
from tests.support.booking import update_event
from tests.support.command import aftercare
from tests.support.rows import row, run_pass
from tests.support.times import DUBAI, dubai, iso


@pytest.fixture
def quiet() -> QuietHours:
    """QUIET_HOURS of the deployment under test; a test may parametrize it."""
    return QuietHours.parse("21:00-08:00")


@pytest.fixture
def settings(settings: Settings, quiet: QuietHours) -> Settings:
    return replace(settings, quiet_hours=quiet)


def enrol(
    booking: BookingSystem, clock: Clock, performed_at: datetime, at: datetime | None = None
) -> dict[str, Any]:
    """A `treatment.completed` posted at `at` (a minute after the treatment by default)."""
    clock.now = at or performed_at + timedelta(minutes=1)
    answer = booking.post(completed_event(performed_at=performed_at))
    assert answer.status_code == 201, answer.get_json()
    body: dict[str, Any] = answer.get_json()
    return body


def scheduled(answer: dict[str, Any]) -> dict[str, str]:
    return {item["step"]: item["send_at"] for item in answer["scheduled"]}


# -- enrolment (the booking webhook) and the dispatcher --------------------------------------


@pytest.mark.parametrize(
    ("quiet", "expected"),
    [
        (QuietHours.parse("21:00-08:00"), dubai(3, 2, 8)),  # the end of the quiet hours
        (QuietHours.parse("21:00-06:00"), dubai(3, 2, 8)),  # or the window's later start
        (QuietHours.parse("21:00-09:30"), dubai(3, 2, 9, 30)),
    ],
)
def test_a_message_due_at_21_30_goes_when_the_quiet_hours_end(
    booking, clock, engine, dispatcher, sender, expected
) -> None:
    # after_treatment is due an hour after the treatment: 21:30, inside its 08:00-22:00 window.
    answer = enrol(booking, clock, performed_at=dubai(3, 1, 20, 30))
    assert scheduled(answer)["after_treatment"] == iso(expected)
    assert row(engine, "after_treatment").send_at == expected

    for moment in (dubai(3, 1, 21, 30), dubai(3, 1, 23, 59), expected - timedelta(seconds=1)):
        assert run_pass(dispatcher, clock, moment).sent == 0
    assert sender.sent == []
    assert run_pass(dispatcher, clock, expected).sent == 1
    assert row(engine, "after_treatment").status == Status.QUEUED


def test_a_message_whose_expiry_falls_inside_the_quiet_hours_expires(
    booking, clock, engine, dispatcher, sender
) -> None:
    # Enrolled on day 3 at 21:30: after_treatment (08:00-22:00, valid until the end of day 3)
    # would go now without quiet hours; the night outlasts it.
    answer = enrol(booking, clock, performed_at=dubai(3, 1, 10), at=dubai(3, 4, 21, 30))
    assert "after_treatment" not in scheduled(answer)
    assert "after_treatment" in {item["step"] for item in answer["expired"]}
    assert row(engine, "after_treatment").status == Status.EXPIRED
    run_pass(dispatcher, clock, dubai(3, 4, 21, 30))
    run_pass(dispatcher, clock, dubai(3, 5, 8))
    assert not any("thank you for coming in" in m.body for m in sender.sent)


def test_a_message_stored_inside_quiet_hours_is_deferred_by_the_dispatcher_not_sent(
    booking, clock, engine, dispatcher, sender, settings
) -> None:
    """Scheduled before QUIET_HOURS was set: the dispatcher's re-check applies the rule."""
    before = create_app(replace(settings, quiet_hours=None), engine=engine, clock=clock)
    enrol(BookingSystem(before.test_client(), clock), clock, performed_at=dubai(3, 1, 20, 30))
    assert row(engine, "after_treatment").send_at == dubai(3, 1, 21, 30)

    report = run_pass(dispatcher, clock, dubai(3, 1, 21, 30))
    assert (report.claimed, report.sent, report.deferred) == (1, 0, 1)
    assert sender.sent == []
    deferred = row(engine, "after_treatment")
    assert (deferred.status, deferred.send_at, deferred.attempts) == (
        Status.SCHEDULED,
        dubai(3, 2, 8),
        0,  # waiting out the night is not a failed attempt
    )
    assert run_pass(dispatcher, clock, dubai(3, 2, 8)).sent == 1


def test_a_message_stored_inside_quiet_hours_that_the_night_outlasts_expires_unsent(
    booking, clock, engine, dispatcher, sender, settings
) -> None:
    before = create_app(replace(settings, quiet_hours=None), engine=engine, clock=clock)
    late = BookingSystem(before.test_client(), clock)
    enrol(late, clock, performed_at=dubai(3, 1, 10), at=dubai(3, 4, 21, 30))
    assert row(engine, "after_treatment").status == Status.SCHEDULED  # at 21:30, no quiet hours

    report = run_pass(dispatcher, clock, dubai(3, 4, 21, 30))
    assert (report.sent, report.expired) == (0, 1)
    assert row(engine, "after_treatment").status == Status.EXPIRED
    assert sender.sent == []


def test_a_retry_whose_backoff_lands_in_quiet_hours_waits_for_the_morning(
    booking, clock, engine, dispatcher, sender
) -> None:
    due = dubai(3, 1, 20, 59, 50)  # after_treatment; the backoff (15-30 s) ends after 21:00
    enrol(booking, clock, performed_at=due - timedelta(hours=1))
    sender.fail_next(RetryLater("429 Too Many Requests", code=20429))
    assert run_pass(dispatcher, clock, due).retrying == 1
    retried = row(engine, "after_treatment")
    assert (retried.status, retried.send_at) == (Status.SCHEDULED, dubai(3, 2, 8))
    assert retried.error_code == 20429
    assert run_pass(dispatcher, clock, dubai(3, 1, 21, 0, 30)).sent == 0
    assert run_pass(dispatcher, clock, dubai(3, 2, 8)).sent == 1
    assert len(sender.sent) == 1


def test_patient_updated_at_night_re_times_pending_messages_out_of_quiet_hours(
    booking, clock, engine
) -> None:
    enrol(booking, clock, performed_at=dubai(3, 1, 10))  # after_treatment at 11:00
    clock.now = dubai(3, 1, 21, 30)  # not sent yet (no dispatcher ran), still valid
    answer = booking.post(
        {"id": "evt_upd", "type": "patient.updated", "patient": {"id": "P-1001", "language": "ar"}}
    )
    assert answer.status_code == 200, answer.get_json()
    assert row(engine, "after_treatment").send_at == dubai(3, 2, 8)  # not now, at 21:30


def test_a_whatsapp_message_reported_undeliverable_at_night_goes_by_sms_in_the_morning(
    booking, clock, engine, dispatcher, twilio
) -> None:
    clock.now = dubai(3, 1, 10, 1)
    answer = booking.post(
        completed_event(performed_at=dubai(3, 1, 10), patient={"channel": "whatsapp"})
    )
    assert answer.status_code == 201, answer.get_json()
    twilio.inbound("hi", sender=f"whatsapp:{PHONE}")  # opens WhatsApp's 24-hour window
    assert run_pass(dispatcher, clock, dubai(3, 1, 11)).sent == 1
    sid = row(engine, "after_treatment").sid
    assert sid is not None

    clock.now = dubai(3, 1, 21, 10)
    assert twilio.status(sid, "undelivered", 63016).status_code in (200, 204)
    fallback = row(engine, "after_treatment")
    assert (fallback.status, fallback.channel, fallback.send_at) == (
        Status.SCHEDULED,
        "sms",
        dubai(3, 2, 8),
    )


@pytest.mark.parametrize("quiet", [QuietHours.parse("09:30-10:30")])
def test_quiet_hours_by_day_move_day_steps_and_each_next_anniversary(
    booking, clock, engine, dispatcher
) -> None:
    enrol(booking, clock, performed_at=dubai(3, 1, 10))
    assert row(engine, "no_wash_reminder").send_at == dubai(3, 3, 10, 30)  # not at 10:00
    first = datetime(2028, 3, 1, 10, 30, tzinfo=DUBAI)
    assert row(engine, "yearly_checkup").send_at == first
    run_pass(dispatcher, clock, first)
    assert row(engine, "yearly_checkup").status == Status.QUEUED
    following = row(engine, "yearly_checkup", 1)
    assert (following.status, following.send_at) == (
        Status.SCHEDULED,
        datetime(2029, 3, 1, 10, 30, tzinfo=DUBAI),
    )


# -- consent coming back: START, staff, the booking system -----------------------------------


def resume(how: str, client: Any, booking: BookingSystem, twilio: Any, stop: bool) -> None:
    """Opt the patient out (`stop`) or back in, the way `how` says."""
    if how == "keyword":
        answer = twilio.inbound("STOP" if stop else "START")
    elif how == "staff":
        answer = client.post(
            "/api/patients/P-1001/consent", headers=STAFF, json={"opted_out": stop}
        )
    else:
        answer = booking.post(update_event(f"evt_consent_{stop}", consent=not stop))
    assert answer.status_code == 200, answer.data


@pytest.mark.parametrize("how", ["keyword", "staff", "booking"])
def test_held_messages_resume_at_the_first_moment_after_the_quiet_hours(
    how, client, booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, clock, performed_at=dubai(3, 1, 10))
    resume(how, client, booking, twilio, stop=True)
    assert row(engine, "after_treatment").status == Status.HELD

    clock.now = dubai(3, 3, 21, 30)  # day 2: inside after_treatment's 08:00-22:00 window
    resume(how, client, booking, twilio, stop=False)
    after = row(engine, "after_treatment")
    assert (after.status, after.send_at) == (Status.SCHEDULED, dubai(3, 4, 8))
    assert row(engine, "no_wash_reminder").send_at == dubai(3, 4, 9)  # its window opens later

    assert run_pass(dispatcher, clock, dubai(3, 3, 21, 30)).sent == 0
    assert run_pass(dispatcher, clock, dubai(3, 4, 8)).sent == 1
    assert sender.sent[0].to == PHONE


# -- configuration and the preview ------------------------------------------------------------


def test_quiet_hours_are_read_from_the_environment() -> None:
    assert Settings.from_env({}).quiet_hours is None
    parsed = Settings.from_env({"QUIET_HOURS": "21:00-08:00"}).quiet_hours
    assert parsed == QuietHours.parse("21:00-08:00")


@pytest.mark.parametrize(
    "value", ["21-08", "21:00", "21:00-08:00-09:00", "25:00-08:00", "8:00-9:00"]
)
def test_a_malformed_quiet_hours_value_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^QUIET_HOURS: .*HH:MM-HH:MM"):
        Settings.from_env({"QUIET_HOURS": value})


def test_quiet_hours_starting_where_they_end_stop_start_up() -> None:
    with pytest.raises(ConfigError, match=r"^QUIET_HOURS: '21:00-21:00' starts and ends"):
        Settings.from_env({"QUIET_HOURS": "21:00-21:00"})


def test_quiet_hours_covering_a_steps_whole_window_stop_start_up(settings, engine) -> None:
    """No message of such a step could ever go out: refused, naming QUIET_HOURS and step."""
    with pytest.raises(ConfigError, match=r"^QUIET_HOURS: ") as raised:
        create_app(replace(settings, quiet_hours=QuietHours.parse("07:00-23:00")), engine=engine)
    assert "step 'after_treatment': send window 08:00-22:00" in str(raised.value)
    assert "step 'no_wash_reminder': send window 09:00-20:00" in str(raised.value)


def run_preview(*extra: str, quiet: str | None = "21:00-08:00") -> Any:
    """`aftercare plan preview` of a treatment at 20:30 in Dubai, with QUIET_HOURS."""
    return aftercare(
        "plan",
        "preview",
        "--kind",
        "scalp_micropigmentation",
        "--performed-at",
        "2027-03-01T20:30:00+04:00",
        "--tz",
        "Asia/Dubai",
        *extra,
        env={"QUIET_HOURS": quiet} if quiet else {},
    )


def preview(*extra: str, quiet: str | None = "21:00-08:00") -> str:
    result = run_preview(*extra, quiet=quiet)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_plan_preview_says_quiet_hours_apply_and_shows_what_they_moved() -> None:
    shown = preview()
    assert "Quiet hours 21:00-08:00 (QUIET_HOURS) applied" in shown
    assert "day   1  Tue 2027-03-02 08:00 +04  after_treatment  [scheduled]" in shown
    assert "moved by quiet hours from Mon 2027-03-01 21:30 +04" in shown
    assert shown.count("moved by quiet hours") == 1  # every other step goes at 10:00
    assert "day   1  Tue 2027-03-02 10:00 +04  sunscreen #1  [scheduled]" in shown

    plain = preview(quiet=None)
    assert "day   0  Mon 2027-03-01 21:30 +04  after_treatment  [scheduled]" in plain
    assert "Quiet hours" not in plain and "moved" not in plain


def test_plan_preview_shows_a_step_the_quiet_hours_expire() -> None:
    shown = preview("--now", "2027-03-04T21:30:00+04:00")
    assert "after_treatment  [EXPIRED (quiet hours last past its expiry)]" in shown
    assert "no_wash_reminder  [EXPIRED (enrolled too late)]" in shown


def test_plan_preview_refuses_malformed_quiet_hours_naming_the_variable() -> None:
    result = run_preview(quiet="9pm-8am")
    assert result.returncode == 1
    assert "configuration error: QUIET_HOURS: '9pm-8am' is not HH:MM-HH:MM" in result.stderr
