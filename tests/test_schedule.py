"""The schedule is a pure function of plan, treatment time, timezone and now."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.plan import Plan, Window, load_plans
from notifier.schedule import anniversary, into_window, local_moment, plan_messages

PLANS = Path(__file__).resolve().parent.parent / "config" / "plans"
SMP: Plan = load_plans(PLANS)["scalp_micropigmentation"]
DUBAI = ZoneInfo("Asia/Dubai")


def timeline(performed_at: datetime, tz: ZoneInfo, now: datetime | None = None) -> dict:
    messages = plan_messages(SMP, performed_at, tz, now or performed_at)
    return {(m.step, m.occurrence): m for m in messages}


def local(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def test_smp_timeline_for_the_spec_example() -> None:
    performed = datetime.fromisoformat("2027-03-01T10:00:00+04:00")
    plan = timeline(performed, DUBAI)
    expected = {
        ("after_treatment", 0): "2027-03-01 11:00",
        ("sunscreen", 0): "2027-03-02 10:00",
        ("no_wash_reminder", 0): "2027-03-03 10:00",
        ("water_rinse", 0): "2027-03-05 10:00",
        ("moisturise", 0): "2027-03-06 10:00",
        ("sunscreen", 1): "2027-03-09 10:00",
        ("sunscreen", 2): "2027-03-16 10:00",
        ("sunscreen", 3): "2027-03-23 10:00",
        ("sunscreen", 4): "2027-03-30 10:00",
        ("long_term_care", 0): "2027-03-31 10:00",
        ("yearly_checkup", 0): "2028-03-01 10:00",
    }
    assert {k: local(m.send_at, DUBAI) for k, m in plan.items()} == expected
    assert not any(m.expired for m in plan.values())


def test_expiries_follow_the_spec_table() -> None:
    performed = datetime.fromisoformat("2027-03-01T10:00:00+04:00")
    plan = timeline(performed, DUBAI)
    assert local(plan["after_treatment", 0].expires_at, DUBAI) == "2027-03-05 00:00"  # end of day 3
    assert local(plan["no_wash_reminder", 0].expires_at, DUBAI) == "2027-03-05 00:00"
    assert local(plan["water_rinse", 0].expires_at, DUBAI) == "2027-03-07 00:00"  # end of day 5
    assert local(plan["moisturise", 0].expires_at, DUBAI) == "2027-03-12 00:00"  # end of day 10
    assert local(plan["long_term_care", 0].expires_at, DUBAI) == "2027-05-01 00:00"  # end of day 60
    assert plan["yearly_checkup", 0].expires_at - plan["yearly_checkup", 0].send_at == timedelta(
        days=30
    )
    # A repeat replaces the one before it; the last runs to the end of day 29.
    assert plan["sunscreen", 0].expires_at == plan["sunscreen", 1].send_at
    assert local(plan["sunscreen", 4].expires_at, DUBAI) == "2027-03-31 00:00"


def test_after_treatment_late_in_the_evening_waits_for_the_morning() -> None:
    performed = datetime(2027, 3, 1, 21, 30, tzinfo=DUBAI)  # +1 h = 22:30, past 22:00
    assert local(timeline(performed, DUBAI)["after_treatment", 0].send_at, DUBAI) == (
        "2027-03-02 08:00"
    )


def test_after_treatment_early_in_the_morning_waits_for_the_window() -> None:
    performed = datetime(2027, 3, 1, 6, 0, tzinfo=DUBAI)  # +1 h = 07:00, before 08:00
    assert local(timeline(performed, DUBAI)["after_treatment", 0].send_at, DUBAI) == (
        "2027-03-01 08:00"
    )


def test_day_n_is_the_local_calendar_date_not_24_hour_blocks() -> None:
    # 23:30 local on Mar 1 is already Mar 1 19:30 UTC; day 2 is Mar 3 local.
    performed = datetime(2027, 3, 1, 23, 30, tzinfo=DUBAI)
    assert local(timeline(performed, DUBAI)["no_wash_reminder", 0].send_at, DUBAI) == (
        "2027-03-03 10:00"
    )


@pytest.mark.parametrize(
    ("zone", "performed_local", "checks"),
    [
        # Clocks go forward on 2027-03-28 in London: day-N messages stay at 10:00 local.
        (
            "Europe/London",
            "2027-03-26 15:00",
            {("no_wash_reminder", 0): "2027-03-28 10:00", ("water_rinse", 0): "2027-03-30 10:00"},
        ),
        # Clocks go back on 2027-11-07 in New York.
        (
            "America/New_York",
            "2027-11-05 12:00",
            {("no_wash_reminder", 0): "2027-11-07 10:00", ("moisturise", 0): "2027-11-10 10:00"},
        ),
        # Lord Howe shifts by 30 minutes (2027-04-04 and 2027-10-03).
        (
            "Australia/Lord_Howe",
            "2027-04-02 09:00",
            {("no_wash_reminder", 0): "2027-04-04 10:00", ("water_rinse", 0): "2027-04-06 10:00"},
        ),
        ("Australia/Lord_Howe", "2027-10-01 09:00", {("no_wash_reminder", 0): "2027-10-03 10:00"}),
        ("Asia/Dubai", "2027-03-01 10:00", {("moisturise", 0): "2027-03-06 10:00"}),
    ],
)
def test_local_times_hold_across_dst_changes(zone: str, performed_local: str, checks: dict) -> None:
    tz = ZoneInfo(zone)
    performed = datetime.fromisoformat(performed_local).replace(tzinfo=tz)
    plan = timeline(performed, tz)
    assert {k: local(plan[k].send_at, tz) for k in checks} == checks


def test_relative_step_counts_real_hours_across_a_dst_change() -> None:
    tz = ZoneInfo("Europe/London")
    performed = datetime(2027, 3, 28, 0, 30, tzinfo=tz)  # 00:30 GMT; clocks jump at 01:00
    after = timeline(performed, tz)["after_treatment", 0].send_at
    # 01:30 GMT is before the 08:00 window; 08:00 BST is 07:00 UTC: 6.5 real hours later.
    assert after - performed == timedelta(hours=6, minutes=30)
    assert local(after, tz) == "2027-03-28 08:00"


def test_window_start_inside_a_dst_gap_moves_past_the_gap() -> None:
    tz = ZoneInfo("Europe/London")
    window = Window(time(1, 30), time(5, 0))  # 01:30 does not exist on 2027-03-28
    moment = datetime(2027, 3, 28, 0, 15, tzinfo=UTC)  # 00:15 GMT
    assert local(into_window(moment, window, tz), tz) == "2027-03-28 02:30"


def test_into_window_keeps_a_moment_already_inside_and_moves_a_late_one_to_tomorrow() -> None:
    window = Window(time(9), time(20))
    inside = datetime(2027, 3, 1, 14, 0, tzinfo=DUBAI)
    assert into_window(inside, window, DUBAI) == inside
    at_end = datetime(2027, 3, 1, 20, 0, tzinfo=DUBAI)  # the end is exclusive
    assert local(into_window(at_end, window, DUBAI), DUBAI) == "2027-03-02 09:00"


@pytest.mark.parametrize(
    ("treatment_day", "years", "expected"),
    [
        (date(2028, 2, 29), 1, date(2029, 2, 28)),
        (date(2028, 2, 29), 4, date(2032, 2, 29)),
        (date(2027, 3, 1), 1, date(2028, 3, 1)),
        (date(2027, 12, 31), 2, date(2029, 12, 31)),
    ],
)
def test_anniversaries_put_feb_29_on_feb_28(
    treatment_day: date, years: int, expected: date
) -> None:
    assert anniversary(treatment_day, years) == expected


def test_yearly_checkup_for_a_leap_day_treatment() -> None:
    performed = datetime(2028, 2, 29, 12, 0, tzinfo=DUBAI)
    assert local(timeline(performed, DUBAI)["yearly_checkup", 0].send_at, DUBAI) == (
        "2029-02-28 10:00"
    )


def test_late_enrolment_expires_what_is_past_and_sends_the_rest_at_the_next_moment() -> None:
    performed = datetime(2027, 3, 1, 10, 0, tzinfo=DUBAI)
    now = datetime(2027, 3, 6, 21, 0, tzinfo=DUBAI)  # day 5, 21:00: after the window
    plan = timeline(performed, DUBAI, now)
    for key in ["after_treatment", "no_wash_reminder", "water_rinse"]:
        assert plan[key, 0].expired, key
    # Sunscreen #1 (day 1) stays valid until #2 replaces it on day 8: it goes out tomorrow.
    assert not plan["sunscreen", 0].expired
    assert local(plan["sunscreen", 0].send_at, DUBAI) == "2027-03-07 09:00"
    moisturise = plan["moisturise", 0]  # planned day 5 10:00, valid through day 10
    assert not moisturise.expired
    assert local(moisturise.send_at, DUBAI) == "2027-03-07 09:00"


def test_late_enrolment_years_later_stores_past_anniversaries_as_expired() -> None:
    performed = datetime(2027, 3, 1, 10, 0, tzinfo=DUBAI)
    now = datetime(2029, 6, 1, 12, 0, tzinfo=DUBAI)
    yearly = sorted(
        (o, m) for (s, o), m in timeline(performed, DUBAI, now).items() if s == "yearly_checkup"
    )
    assert [(o, m.expired) for o, m in yearly] == [(0, True), (1, True), (2, False)]
    assert local(yearly[-1][1].send_at, DUBAI) == "2030-03-01 10:00"


ZONES = sorted(
    z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))
)


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    performed=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
    late=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
)
def test_every_send_time_is_inside_its_window_on_or_after_its_day(
    zone: str, performed: datetime, late: timedelta
) -> None:
    tz = ZoneInfo(zone)
    now = performed + late
    treatment_day = performed.astimezone(tz).date()
    for message in plan_messages(SMP, performed, tz, now):
        step = SMP.step(message.step)
        assert step is not None
        send_local = message.send_at.astimezone(tz)
        if message.expired:
            assert message.send_at >= message.expires_at
            continue
        assert message.send_at >= now
        assert message.send_at < message.expires_at
        start = local_moment(send_local.date(), step.window.start, tz)
        end = local_moment(send_local.date(), step.window.end, tz)
        assert start <= message.send_at < end, (message, send_local)
        if step.day is not None:
            planned_day = treatment_day + timedelta(
                days=step.day + message.occurrence * (step.every_days or 0)
            )
            assert send_local.date() >= planned_day
            if now <= local_moment(planned_day, time(0), tz):
                # Not late: it goes out on its own local day, at 10:00.
                assert send_local.date() == planned_day
                assert send_local.time() == time(10, 0) or _in_gap(planned_day, tz)


def _in_gap(day: date, tz: ZoneInfo) -> bool:
    naive = datetime.combine(day, time(10, 0))
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive
