"""The schedule is a pure function of plan, treatment time, timezone and now."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.planning.plan import Window
from notifier.planning.schedule import (
    LOOK_AHEAD,
    QuietHours,
    SendTime,
    anniversary,
    into_window,
    local_moment,
    next_send_time,
    plan_messages,
    send_time,
)
from tests.support.shipped import SMP
from tests.support.times import DUBAI


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


# -- quiet hours: the one rescheduling rule ------------------------------------------------

ALL_ZONES = sorted(available_timezones())
# Zones whose clocks did odd things since 1995, drawn as often as all others together:
# skipped a whole day crossing the date line (Apia, Fakaofo), went back 3 hours across
# midnight (Casey), changed at midnight (Sao Paulo, Santiago), by 30 minutes (Lord Howe).
ODD_ZONES = [
    "Pacific/Apia",
    "Pacific/Fakaofo",
    "Antarctica/Casey",
    "America/Sao_Paulo",
    "America/Santiago",
    "Australia/Lord_Howe",
]
TRANSITIONS_FROM, TRANSITIONS_TO = (
    datetime(1995, 1, 1, tzinfo=UTC),
    datetime(2040, 1, 1, tzinfo=UTC),
)
HORIZON = timedelta(days=3)  # the brute-force search looks this far ahead, minute by minute


@functools.cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The instants `zone` changed its UTC offset, 1995-2039 (a weekly scan, then bisection)."""
    tz = ZoneInfo(zone)
    found: list[datetime] = []
    moment = TRANSITIONS_FROM
    while moment < TRANSITIONS_TO:
        following = moment + timedelta(days=7)
        if moment.astimezone(tz).utcoffset() != following.astimezone(tz).utcoffset():
            low, high = moment, following
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            found.append(high.replace(microsecond=0))
        moment = following
    return tuple(found)


@st.composite
def moments_in(draw: st.DrawFn, zone: str) -> datetime:
    """Any moment from 1995 to 2039, or one within a day or two of a DST change."""
    changes = transitions(zone)
    if changes and draw(st.booleans()):
        change = draw(st.sampled_from(changes))
        return change + draw(st.timedeltas(timedelta(days=-2), timedelta(days=1)))
    return draw(st.datetimes(datetime(1995, 1, 1), datetime(2039, 12, 1), timezones=st.just(UTC)))


wall_times = st.builds(time, st.integers(0, 23), st.integers(0, 59))


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start, end = sorted(draw(st.lists(wall_times, min_size=2, max_size=2, unique=True)))
    return Window(start, end)


@st.composite
def quiet_hours(draw: st.DrawFn) -> QuietHours:
    """Any quiet period; about half of them wrap midnight."""
    start, end = draw(st.lists(wall_times, min_size=2, max_size=2, unique=True))
    return QuietHours(start, end)


def spans(start: time, end: time, first: date, days: int, tz: ZoneInfo) -> list[tuple]:
    """Each local day's span [start, end) as UTC instants (wrapping midnight if end <= start),
    each wall time read as `datetime.combine` reads it: fold 0."""
    wraps = timedelta(days=1) if end <= start else timedelta(0)
    return [
        (
            datetime.combine(day, start, tzinfo=tz).astimezone(UTC),
            datetime.combine(day + wraps, end, tzinfo=tz).astimezone(UTC),
        )
        for day in (first + timedelta(days=n) for n in range(days))
    ]


def _wall(moment: datetime, tz: ZoneInfo) -> time:
    return moment.astimezone(tz).time().replace(second=0, microsecond=0)


def _steady(moment: datetime, tz: ZoneInfo) -> bool:
    """No change of UTC offset within a day and a bit either side of `moment`."""
    offsets = {(moment + timedelta(hours=h)).astimezone(tz).utcoffset() for h in range(-27, 28)}
    return len(offsets) == 1


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    zone=st.one_of(st.sampled_from(ALL_ZONES), st.sampled_from(ODD_ZONES)),
    window=windows(),
    quiet=quiet_hours(),
)
def test_the_next_send_time_is_the_first_minute_in_the_window_and_outside_quiet_hours(
    data: st.DataObject, zone: str, window: Window, quiet: QuietHours
) -> None:
    assert_first_allowed(zone, data.draw(moments_in(zone), label="earliest"), window, quiet)


@pytest.mark.parametrize(
    ("earliest", "window", "quiet"),
    [
        ("2011-12-31T01:04:00+00:00", ("10:59", "23:58"), "16:56-16:10"),
        ("2011-12-28T14:43:00+00:00", ("00:21", "10:05"), "20:21-10:55"),
        ("2011-12-30T18:34:00+00:00", ("05:19", "21:28"), "21:37-13:33"),
    ],
)
def test_the_rule_holds_where_a_zone_skipped_a_day_crossing_the_date_line(
    earliest: str, window: tuple[str, str], quiet: str
) -> None:
    """Fakaofo went from 2011-12-29 to 2011-12-31: spans move to another local date."""
    start, end = (time.fromisoformat(t) for t in window)
    assert_first_allowed(
        "Pacific/Fakaofo",
        datetime.fromisoformat(earliest),
        Window(start, end),
        QuietHours.parse(quiet),
    )


def assert_first_allowed(zone: str, earliest: datetime, window: Window, quiet: QuietHours) -> None:
    """`next_send_time` is the first minute at or after `earliest` inside a window span
    and outside every quiet span, found by brute force over HORIZON."""
    tz = ZoneInfo(zone)
    found = next_send_time(earliest, window, quiet, tz)

    first_day = earliest.astimezone(tz).date() - timedelta(days=3)
    days = (HORIZON + LOOK_AHEAD).days + 6
    open_spans = spans(window.start, window.end, first_day, days, tz)
    quiet_spans = spans(quiet.start, quiet.end, first_day, days, tz)

    def allowed(moment: datetime) -> bool:
        return any(s <= moment < e for s, e in open_spans) and not any(
            s <= moment < e for s, e in quiet_spans
        )

    # Every boundary falls on a whole UTC minute (offsets are whole minutes since 1995), so
    # `earliest` itself and each whole minute after it are all the candidates there are.
    first_minute = earliest.replace(second=0, microsecond=0)
    if first_minute < earliest:
        first_minute += timedelta(minutes=1)
    minutes = int(HORIZON / timedelta(minutes=1))
    candidates = [earliest] + [first_minute + timedelta(minutes=n) for n in range(minutes)]
    expected = next((moment for moment in candidates if allowed(moment)), None)

    if expected is None:  # nothing within the horizon: the window lies inside quiet hours
        assert found is None or found > earliest + HORIZON
    else:
        assert found == expected
    if found is not None:
        assert found >= earliest
        assert allowed(found)  # inside the window, outside quiet hours
        assert found.utcoffset() == timedelta(0)
        if _steady(found, tz):  # away from DST changes: read off the patient's clock
            wall = _wall(found, tz)
            assert window.start <= wall < window.end
            if quiet.start < quiet.end:
                assert not quiet.start <= wall < quiet.end, (wall, quiet)
            else:
                assert quiet.end <= wall < quiet.start, (wall, quiet)


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ALL_ZONES),
    window=windows(),
    earliest=st.datetimes(datetime(1995, 1, 1), datetime(2039, 12, 1), timezones=st.just(UTC)),
)
def test_without_quiet_hours_the_rule_is_the_send_window_alone(
    zone: str, window: Window, earliest: datetime
) -> None:
    tz = ZoneInfo(zone)
    assert next_send_time(earliest, window, None, tz) == into_window(earliest, window, tz)


NEW_YORK = ZoneInfo("America/New_York")
TCPA = QuietHours(time(21), time(8))


@pytest.mark.parametrize(
    ("zone", "earliest", "window", "quiet", "expected"),
    [
        # Due at 21:30 with QUIET_HOURS=21:00-08:00: 08:00 the next morning.
        ("Asia/Dubai", "2027-03-01 21:30", (8, 22), TCPA, "2027-03-02 08:00"),
        # ... or the window's own later start.
        ("Asia/Dubai", "2027-03-01 21:30", (9, 20), TCPA, "2027-03-02 09:00"),
        ("Asia/Dubai", "2027-03-01 07:59", (6, 22), TCPA, "2027-03-01 08:00"),
        ("Asia/Dubai", "2027-03-01 08:00", (6, 22), TCPA, "2027-03-01 08:00"),  # end exclusive
        ("Asia/Dubai", "2027-03-01 20:59", (6, 22), TCPA, "2027-03-01 20:59"),
        ("Asia/Dubai", "2027-03-01 21:00", (6, 22), TCPA, "2027-03-02 08:00"),  # start inclusive
        # Quiet hours that do not wrap midnight.
        (
            "Asia/Dubai",
            "2027-03-01 12:30",
            (9, 20),
            QuietHours(time(12), time(14)),
            "2027-03-01 14:00",
        ),
        # The night clocks go forward, and the night they go back: 08:00 local all the same.
        ("America/New_York", "2027-03-13 21:30", (8, 22), TCPA, "2027-03-14 08:00"),
        ("America/New_York", "2027-11-06 21:30", (8, 22), TCPA, "2027-11-07 08:00"),
        # A quiet end the DST gap skips (01:30 on 2027-03-28 in London) moves past the gap.
        (
            "Europe/London",
            "2027-03-28 00:15",
            (0, 23),
            QuietHours(time(22), time(1, 30)),
            "2027-03-28 02:30",
        ),
    ],
)
def test_quiet_hours_move_a_send_time_to_the_first_moment_after_them(
    zone: str, earliest: str, window: tuple[int, int], quiet: QuietHours, expected: str
) -> None:
    tz = ZoneInfo(zone)
    moment = datetime.fromisoformat(earliest).replace(tzinfo=tz)
    found = next_send_time(moment, Window(time(window[0]), time(window[1])), quiet, tz)
    assert found is not None
    assert local(found, tz) == expected


def test_a_message_that_cannot_leave_quiet_hours_before_its_expiry_expires() -> None:
    earliest = datetime(2027, 3, 3, 21, 30, tzinfo=DUBAI)
    midnight = datetime(2027, 3, 4, 0, 0, tzinfo=DUBAI)
    window = Window(time(8), time(22))
    assert send_time(earliest, window, None, DUBAI, midnight) == SendTime(
        earliest.astimezone(UTC), False
    )
    late = send_time(earliest, window, TCPA, DUBAI, midnight)
    assert late.expired
    assert late.at >= midnight


def test_a_window_inside_the_quiet_hours_never_sends() -> None:
    window = Window(time(22), time(23))
    earliest = datetime(2027, 3, 1, 12, tzinfo=DUBAI)
    assert next_send_time(earliest, window, TCPA, DUBAI) is None
    expires = earliest + timedelta(days=30)
    assert send_time(earliest, window, TCPA, DUBAI, expires) == SendTime(expires, True)
    assert TCPA.covers(window)
    assert not TCPA.covers(Window(time(20), time(22)))


def test_planning_with_quiet_hours_moves_only_what_falls_inside_them() -> None:
    performed = datetime(2027, 3, 1, 20, 30, tzinfo=DUBAI)  # after_treatment due 21:30
    quiet = timeline_with(performed, TCPA)
    plain = timeline(performed, DUBAI)
    assert local(plain["after_treatment", 0].send_at, DUBAI) == "2027-03-01 21:30"
    assert local(quiet["after_treatment", 0].send_at, DUBAI) == "2027-03-02 08:00"
    assert {k: m for k, m in quiet.items() if k != ("after_treatment", 0)} == {
        k: m for k, m in plain.items() if k != ("after_treatment", 0)
    }
    # Enrolled on day 3 at 21:30: without quiet hours it would go now; with them the
    # night outlasts its expiry (end of day 3), so it is expired, never sent late.
    late_now = datetime(2027, 3, 4, 21, 30, tzinfo=DUBAI)
    assert not timeline(performed, DUBAI, late_now)["after_treatment", 0].expired
    assert timeline_with(performed, TCPA, late_now)["after_treatment", 0].expired


def timeline_with(performed_at: datetime, quiet: QuietHours, now: datetime | None = None) -> dict:
    messages = plan_messages(SMP, performed_at, DUBAI, now or performed_at, quiet=quiet)
    return {(m.step, m.occurrence): m for m in messages}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("21-08", "is not HH:MM-HH:MM"),
        ("9:00-08:00", "is not HH:MM-HH:MM"),
        ("24:00-08:00", "is not HH:MM-HH:MM"),
        ("21:00-08:60", "is not HH:MM-HH:MM"),
        ("21:00 to 08:00", "is not HH:MM-HH:MM"),
        ("21:00-21:00", "starts and ends at the same time"),
    ],
)
def test_quiet_hours_are_hh_mm_hh_mm_with_different_ends(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        QuietHours.parse(text)


def test_quiet_hours_parse_and_print_as_written() -> None:
    assert QuietHours.parse(" 21:00-08:00 ") == QuietHours(time(21), time(8))
    assert str(QuietHours.parse("12:30-14:00")) == "12:30-14:00"
