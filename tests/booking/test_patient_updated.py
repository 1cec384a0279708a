"""`patient.updated` (SPEC §5): a new phone, channel, language, name or timezone applies
to every pending message (re-timed and re-rendered), never to what already went out."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, func, select

from notifier.store.models import BookingEvent, Message, Patient, Status
from tests.conftest import DAY_1, DUE, PHONE, START, BookingSystem, completed_event
from tests.support.booking import enrol, update_event
from tests.support.rows import row, rows, run_pass
from tests.support.shipped import rendered
from tests.support.times import DUBAI

LONDON = ZoneInfo("Europe/London")
NEW_PHONE = "+971509999999"
DAY_2_EARLY = datetime(2027, 3, 3, 8, 0, tzinfo=DUBAI)  # day 2 before no_wash_reminder
TREATMENT_DAY = date(2027, 3, 1)  # day 0, in Dubai and in London alike
# Plan day and local expiry day ("valid until the end of day N") of each pending message.
PLAN_DAYS = {
    ("no_wash_reminder", 0): (2, 3),
    ("water_rinse", 0): (4, 5),
    ("moisturise", 0): (5, 10),
    ("sunscreen", 1): (8, None),  # a repeat expires when the next one is due
    ("sunscreen", 2): (15, None),
    ("sunscreen", 3): (22, None),
    ("sunscreen", 4): (29, 29),  # 2027-03-30, after the switch to BST on 2027-03-28
    ("long_term_care", 0): (30, 60),
    ("yearly_checkup", 0): (366, None),  # 2028-03-01 (2028 is a leap year)
}


# -- helpers -------------------------------------------------------------------------------


def update(booking: BookingSystem, event_id: str, **fields: Any) -> dict[str, Any]:
    answer = booking.post(update_event(event_id, **fields))
    assert answer.status_code == 200, answer.get_json()
    body: dict[str, Any] = answer.get_json()
    return body


def pending(engine: Any) -> list[Message]:
    return [m for m in rows(engine) if m.status in (Status.SCHEDULED, Status.HELD)]


def went_out(engine: Any) -> list[Message]:
    return [m for m in rows(engine) if m.status == Status.QUEUED]


def snapshot(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def the_patient(engine: Any) -> Patient:
    with Session(engine) as session:
        return session.exec(select(Patient)).one()


def local(moment: datetime, tz: ZoneInfo) -> tuple[date, time]:
    at = moment.astimezone(tz)
    return at.date(), at.time()


def day(n: int) -> date:
    return TREATMENT_DAY + timedelta(days=n)


@pytest.fixture
def after_two_sends(booking, clock, dispatcher, sender, engine) -> list[Message]:
    """Enrolled on SMS in Dubai; after_treatment and sunscreen #0 already went out;
    the clock is on the morning of day 2. The messages that went out."""
    enrol(booking)
    run_pass(dispatcher, clock, DUE)
    run_pass(dispatcher, clock, DAY_1)
    assert [m.step for m in went_out(engine)] == ["after_treatment", "sunscreen"]
    assert len(sender.sent) == 2
    clock.now = DAY_2_EARLY
    return went_out(engine)


# -- timezone --------------------------------------------------------------------------------


def test_moving_to_london_on_day_2_retimes_every_pending_message_to_10_london_on_its_plan_day(
    booking, engine, after_two_sends
) -> None:
    count = len(pending(engine))
    assert count == len(PLAN_DAYS)
    answer = update(booking, "evt_tz", timezone="Europe/London")
    assert answer == {"patient_id": "P-1001", "updated": True, "messages_updated": count}
    retimed = {(m.step, m.occurrence): m for m in pending(engine)}
    assert set(retimed) == set(PLAN_DAYS)
    for key, (plan_day, valid_until_day) in PLAN_DAYS.items():
        message = retimed[key]
        assert message.status == Status.SCHEDULED
        assert local(message.send_at, LONDON) == (day(plan_day), time(10, 0)), key
        if valid_until_day is not None:  # through the end of local day N, in London
            assert local(message.expires_at, LONDON) == (day(valid_until_day + 1), time(0)), key
    # Spot checks in UTC: London is UTC+0 until 2027-03-28, UTC+1 after.
    assert row(engine, "no_wash_reminder").send_at == datetime(2027, 3, 3, 10, 0, tzinfo=UTC)
    assert row(engine, "water_rinse").send_at == datetime(2027, 3, 5, 10, 0, tzinfo=UTC)
    assert row(engine, "moisturise").send_at == datetime(2027, 3, 6, 10, 0, tzinfo=UTC)
    assert row(engine, "no_wash_reminder").expires_at == datetime(2027, 3, 5, 0, 0, tzinfo=UTC)
    assert row(engine, "sunscreen", 4).send_at == datetime(2027, 3, 30, 9, 0, tzinfo=UTC)
    assert row(engine, "sunscreen", 1).expires_at == row(engine, "sunscreen", 2).send_at
    yearly = row(engine, "yearly_checkup")
    assert yearly.expires_at - yearly.send_at == timedelta(days=30)
    # The texts did not change (same language, same name).
    assert all(m.body == rendered(m.step, "en") for m in pending(engine))


def test_messages_that_went_out_are_untouched_by_an_update(
    booking, engine, after_two_sends
) -> None:
    update(booking, "evt_all", timezone="Europe/London", language="ar", first_name="Layla")
    assert snapshot(went_out(engine)) == snapshot(after_two_sends)


def test_after_moving_to_london_the_reminder_goes_at_10_london_not_10_dubai(
    booking, clock, engine, dispatcher, sender, after_two_sends
) -> None:
    update(booking, "evt_tz", timezone="Europe/London")
    ten_in_dubai = datetime(2027, 3, 3, 10, 0, tzinfo=DUBAI)
    assert run_pass(dispatcher, clock, ten_in_dubai).sent == 0
    assert row(engine, "no_wash_reminder").status == Status.SCHEDULED
    assert run_pass(dispatcher, clock, datetime(2027, 3, 3, 10, 0, tzinfo=LONDON)).sent == 1
    assert row(engine, "no_wash_reminder").status == Status.QUEUED
    assert len(sender.sent) == 3


# -- channel ---------------------------------------------------------------------------------


def test_moving_from_sms_to_whatsapp_switches_pending_messages_and_follows_whatsapps_rules(
    booking, clock, engine, dispatcher, sender, after_two_sends
) -> None:
    answer = update(booking, "evt_wa", channel="whatsapp")
    assert answer["messages_updated"] == len(PLAN_DAYS)
    assert {m.channel for m in pending(engine)} == {"whatsapp"}
    assert {m.channel for m in went_out(engine)} == {"sms"}
    # Outside the 24-hour window, no template mapped: the reminder goes by SMS, recorded.
    run_pass(dispatcher, clock, row(engine, "no_wash_reminder").send_at)
    out = sender.sent[-1]
    assert (out.channel, out.body) == ("sms", rendered("no_wash_reminder", "en"))
    reminder = row(engine, "no_wash_reminder")
    assert (reminder.status, reminder.channel) == (Status.QUEUED, "sms")
    assert reminder.fallback_reason is not None
    assert "template" in reminder.fallback_reason


def test_after_moving_to_whatsapp_a_message_inside_the_window_is_free_text_on_whatsapp(
    booking, twilio, clock, engine, dispatcher, sender, after_two_sends
) -> None:
    update(booking, "evt_wa", channel="whatsapp")
    assert twilio.inbound("thanks", sender=f"whatsapp:{PHONE}").status_code == 200
    run_pass(dispatcher, clock, row(engine, "no_wash_reminder").send_at)
    out = sender.sent[-1]
    assert (out.channel, out.to, out.content_sid) == ("whatsapp", PHONE, None)
    assert row(engine, "no_wash_reminder").fallback_reason is None


def test_moving_from_whatsapp_to_sms_sends_pending_messages_by_sms(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="whatsapp")
    assert twilio.inbound("hi", sender=f"whatsapp:{PHONE}").status_code == 200
    update(booking, "evt_sms", channel="sms")
    assert {m.channel for m in pending(engine)} == {"sms"}
    run_pass(dispatcher, clock, DUE)
    (out,) = sender.sent
    assert out.channel == "sms"
    assert row(engine, "after_treatment").fallback_reason is None


# -- language and name -------------------------------------------------------------------------


@pytest.mark.parametrize(("language", "word"), [("ar", "مرحباً"), ("ru", "осталось немного")])
def test_a_new_language_re_renders_every_pending_body_in_it(
    booking, clock, engine, dispatcher, sender, after_two_sends, language, word
) -> None:
    answer = update(booking, "evt_lang", language=language)
    assert answer["messages_updated"] == len(PLAN_DAYS)
    for message in pending(engine):
        assert message.language == language
        assert message.body == rendered(message.step, language)
    assert word in row(engine, "no_wash_reminder").body
    assert all(m.language == "en" for m in went_out(engine))
    run_pass(dispatcher, clock, row(engine, "no_wash_reminder").send_at)
    assert sender.sent[-1].body == rendered("no_wash_reminder", language)


def test_a_language_the_plan_lacks_re_renders_in_english(booking, engine, after_two_sends) -> None:
    update(booking, "evt_ar", language="ar")
    update(booking, "evt_fr", language="fr")
    for message in pending(engine):
        assert (message.language, message.body) == ("en", rendered(message.step, "en"))


def test_a_new_first_name_is_re_rendered_into_pending_messages(
    booking, engine, after_two_sends
) -> None:
    update(booking, "evt_name", first_name="Layla")
    for message in pending(engine):
        assert message.body == rendered(message.step, "en", first_name="Layla")
        assert "Layla" in message.body and "Omar" not in message.body
    assert all("Omar" in m.body for m in went_out(engine))


# -- phone -----------------------------------------------------------------------------------------


def test_a_new_phone_number_receives_the_pending_messages(
    booking, clock, engine, dispatcher, sender, after_two_sends
) -> None:
    update(booking, "evt_phone", phone=NEW_PHONE)
    assert the_patient(engine).phone == NEW_PHONE
    run_pass(dispatcher, clock, row(engine, "no_wash_reminder").send_at)
    assert [m.to for m in sender.sent] == [PHONE, PHONE, NEW_PHONE]


def test_a_national_format_phone_number_is_stored_as_e164(booking, engine) -> None:
    enrol(booking)
    update(booking, "evt_phone", phone="050 999 9999")
    assert the_patient(engine).phone == NEW_PHONE


def test_the_whatsapp_window_of_the_old_number_does_not_carry_over_to_the_new_one(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="whatsapp")
    assert twilio.inbound("hi", sender=f"whatsapp:{PHONE}").status_code == 200
    assert the_patient(engine).whatsapp_inbound_at == START
    clock.now = START + timedelta(minutes=10)
    update(booking, "evt_phone", phone=NEW_PHONE)
    assert the_patient(engine).whatsapp_inbound_at is None
    run_pass(dispatcher, clock, DUE)
    (out,) = sender.sent
    assert (out.to, out.channel) == (NEW_PHONE, "sms")  # no window: SMS, no template
    assert row(engine, "after_treatment").fallback_reason is not None


def test_the_same_phone_number_again_keeps_the_whatsapp_window(
    booking, twilio, clock, engine, dispatcher, sender
) -> None:
    enrol(booking, channel="whatsapp")
    assert twilio.inbound("hi", sender=f"whatsapp:{PHONE}").status_code == 200
    update(booking, "evt_phone", phone=PHONE, first_name="Layla")
    run_pass(dispatcher, clock, DUE)
    (out,) = sender.sent
    assert (out.to, out.channel) == (PHONE, "whatsapp")


# -- consent and opt-out ---------------------------------------------------------------------------


def test_held_messages_of_an_opted_out_patient_stay_held_but_are_retimed(
    booking, twilio, clock, engine, dispatcher, sender, after_two_sends
) -> None:
    assert twilio.inbound("STOP").status_code == 200
    assert {m.status for m in pending(engine)} == {Status.HELD}
    answer = update(booking, "evt_tz", timezone="Europe/London", consent=True)
    assert answer["messages_updated"] == len(PLAN_DAYS)
    assert {m.status for m in pending(engine)} == {Status.HELD}  # a booking cannot lift STOP
    reminder = row(engine, "no_wash_reminder")
    assert local(reminder.send_at, LONDON) == (day(2), time(10, 0))
    run_pass(dispatcher, clock, datetime(2027, 3, 3, 10, 0, tzinfo=LONDON))
    assert len(sender.sent) == 2
    # START resumes them at the London times.
    clock.now = datetime(2027, 3, 3, 9, 0, tzinfo=LONDON)
    assert twilio.inbound("START").status_code == 200
    reminder = row(engine, "no_wash_reminder")
    assert reminder.status == Status.SCHEDULED
    assert local(reminder.send_at, LONDON) == (day(2), time(10, 0))


def test_consent_false_holds_pending_messages_and_consent_true_resumes_them(
    booking, clock, engine, dispatcher, sender, after_two_sends
) -> None:
    update(booking, "evt_off", consent=False)
    assert {m.status for m in pending(engine)} == {Status.HELD}
    run_pass(dispatcher, clock, datetime(2027, 3, 3, 10, 0, tzinfo=DUBAI))
    assert len(sender.sent) == 2
    clock.now = datetime(2027, 3, 3, 11, 0, tzinfo=DUBAI)
    update(booking, "evt_on", consent=True)
    assert {m.status for m in pending(engine)} == {Status.SCHEDULED}
    reminder = row(engine, "no_wash_reminder")  # its time passed while held: now, in window
    assert reminder.send_at == clock.now
    run_pass(dispatcher, clock, clock.now)
    assert [m.body for m in sender.sent][-1] == rendered("no_wash_reminder", "en")


def test_consent_false_with_a_new_timezone_holds_and_retimes(
    booking, engine, after_two_sends
) -> None:
    update(booking, "evt_off", consent=False, timezone="Europe/London")
    reminder = row(engine, "no_wash_reminder")
    assert reminder.status == Status.HELD
    assert local(reminder.send_at, LONDON) == (day(2), time(10, 0))
    assert {m.status for m in pending(engine)} == {Status.HELD}


def test_consent_given_later_by_patient_updated_schedules_the_active_treatment(
    booking, clock, engine, dispatcher, sender
) -> None:
    # Enrolled without consent, nothing was scheduled (so nothing is held to resume):
    # consent given later must start the active treatment's plan, as a re-sent
    # treatment.completed does.
    enrolled = booking.post(completed_event(patient={"consent": False}))
    assert (enrolled.status_code, enrolled.get_json()["scheduled"]) == (200, [])
    clock.now = START + timedelta(minutes=10)
    update(booking, "evt_consent", consent=True)
    assert {"after_treatment", "no_wash_reminder"} <= {m.step for m in pending(engine)}
    run_pass(dispatcher, clock, DUE)
    assert [m.body for m in sender.sent] == [rendered("after_treatment", "en")]


# -- idempotency and bad input ---------------------------------------------------------------


def test_the_same_event_twice_answers_the_same_and_redoes_nothing(
    booking, clock, engine, after_two_sends
) -> None:
    event = update_event("evt_once", timezone="Europe/London", language="ar")
    first = booking.post(event)
    assert first.status_code == 200
    before = snapshot(rows(engine))
    patient_before = the_patient(engine).model_dump()
    clock.advance(hours=1)
    again = booking.post(event)
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    assert snapshot(rows(engine)) == before
    assert the_patient(engine).model_dump() == patient_before
    with Session(engine) as session:
        stored = session.exec(
            select(func.count()).select_from(BookingEvent).where(BookingEvent.id == "evt_once")
        ).one()
    assert stored == 1


def test_a_new_event_repeating_the_current_details_changes_no_message(
    booking, clock, engine, after_two_sends
) -> None:
    update(booking, "evt_1", timezone="Europe/London", language="ar")
    before = snapshot(rows(engine))
    clock.advance(minutes=30)
    answer = update(booking, "evt_2", timezone="Europe/London", language="ar", phone=PHONE)
    assert answer == {"patient_id": "P-1001", "updated": True, "messages_updated": 0}
    assert snapshot(rows(engine)) == before


def test_the_same_event_id_with_another_body_is_409_and_changes_nothing(
    booking, engine, after_two_sends
) -> None:
    update(booking, "evt_x", language="ar")
    before = snapshot(rows(engine))
    answer = booking.post(update_event("evt_x", language="ru"))
    assert answer.status_code == 409
    assert snapshot(rows(engine)) == before


def test_an_unknown_patient_is_200_with_updated_false(booking, engine) -> None:
    enrol(booking)
    before = snapshot(rows(engine))
    answer = booking.post(
        {"id": "evt_u", "type": "patient.updated", "patient": {"id": "P-404", "language": "ar"}}
    )
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["patient_id"], body["updated"]) == ("P-404", False)
    assert snapshot(rows(engine)) == before
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Patient)).one() == 1


def test_every_invalid_field_is_422_naming_it_and_nothing_changes(
    booking, engine, after_two_sends
) -> None:
    before = snapshot(rows(engine))
    answer = booking.post(
        update_event(
            "evt_bad",
            phone="12345",
            timezone="Mars/Base",
            channel="fax",
            language="english!",
            consent="yes",
            first_name="Layla",
        )
    )
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]
    assert {e["field"] for e in errors} == {
        "patient.phone",
        "patient.timezone",
        "patient.channel",
        "patient.language",
        "patient.consent",
    }
    assert all(e["message"] for e in errors)
    assert snapshot(rows(engine)) == before
    assert the_patient(engine).first_name == "Omar"
    with Session(engine) as session:
        assert session.get(BookingEvent, "evt_bad") is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone": "+97150"}, "patient.phone"),
        ({"timezone": "Mars/Base"}, "patient.timezone"),
        ({"channel": "fax"}, "patient.channel"),
    ],
)
def test_a_single_invalid_field_is_422_naming_it(booking, fields, field) -> None:
    enrol(booking)
    answer = booking.post(update_event("evt_bad", **fields))
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == [field]


@pytest.mark.parametrize(
    "patient", [{"language": "ar"}, {"id": "", "language": "ar"}, {"id": 1001}], ids=str
)
def test_a_missing_or_bad_patient_id_is_422(booking, engine, patient) -> None:
    enrol(booking)
    before = snapshot(rows(engine))
    answer = booking.post({"id": "evt_noid", "type": "patient.updated", "patient": patient})
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == ["patient.id"]
    assert snapshot(rows(engine)) == before
