"""When each message of a plan goes out: a pure function of plan, treatment, zone and now.

Times are the patient's local time. Day N is the local calendar date of the
treatment plus N days; a send time is moved forward into the step's send
window; a message that cannot go out before its expiry is expired, never late.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from notifier.plan import Plan, Step, Window


@dataclass(frozen=True)
class Occurrence:
    """One planned send of a step, before window and late-enrolment adjustments."""

    step: Step
    number: int  # 0 for the first, 1 for the first repeat, ...
    planned_at: datetime  # UTC
    expires_at: datetime  # UTC


@dataclass(frozen=True)
class PlannedMessage:
    step: str
    occurrence: int
    send_at: datetime  # UTC, inside the step's window
    expires_at: datetime  # UTC
    expired: bool  # could not go out before expiry


def local_moment(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time; a time skipped by DST moves forward past the gap."""
    # fold=0 reads a skipped time with the pre-transition offset, which lands after the gap,
    # and reads a repeated time (clocks going back) as its first occurrence.
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def into_window(moment: datetime, window: Window, tz: ZoneInfo) -> datetime:
    """The first instant at or after `moment` inside the local send window (UTC)."""
    local_day = moment.astimezone(tz).date()
    start = local_moment(local_day, window.start, tz)
    if moment < start:
        return start
    if moment < local_moment(local_day, window.end, tz):
        return moment.astimezone(UTC)
    return local_moment(local_day + timedelta(days=1), window.start, tz)


def end_of_day(treatment_day: date, n: int, tz: ZoneInfo) -> datetime:
    """The instant local day N ends (midnight starting day N+1), in UTC."""
    return local_moment(treatment_day + timedelta(days=n + 1), time(0, 0), tz)


def occurrences(step: Step, performed_at: datetime, tz: ZoneInfo) -> Iterator[Occurrence]:
    """Every planned send of `step` in order; endless for yearly steps."""
    treatment_day = performed_at.astimezone(tz).date()
    planned = _planned_times(step, performed_at, treatment_day, tz)
    current = next(planned, None)
    for number in itertools.count():
        if current is None:
            return
        following = next(planned, None)
        expires = (
            end_of_day(treatment_day, step.valid_until_day, tz)
            if step.valid_until_day is not None
            else current + (step.valid_for or timedelta(0))
        )
        if following is not None:
            # A repeat replaces the one before it: never two of the same reminder at once.
            expires = min(expires, following)
        yield Occurrence(step, number, current, expires)
        current = following


def _planned_times(
    step: Step, performed_at: datetime, treatment_day: date, tz: ZoneInfo
) -> Iterator[datetime]:
    if step.after is not None:
        yield performed_at.astimezone(UTC) + step.after
    elif step.day is not None:
        last = step.until_day if step.until_day is not None else step.day
        for n in range(step.day, last + 1, step.every_days or 1):
            yield local_moment(treatment_day + timedelta(days=n), step.at, tz)
    else:
        for years in itertools.count(1):
            yield local_moment(anniversary(treatment_day, years), step.at, tz)


def anniversary(day: date, years: int) -> date:
    """The same date `years` later; Feb 29 falls on Feb 28 in common years."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def place(occurrence: Occurrence, tz: ZoneInfo, now: datetime) -> PlannedMessage:
    """Move an occurrence to its send time: not before now, inside its window."""
    earliest = max(occurrence.planned_at, now.astimezone(UTC))
    send_at = into_window(earliest, occurrence.step.window, tz)
    return PlannedMessage(
        step=occurrence.step.key,
        occurrence=occurrence.number,
        send_at=send_at,
        expires_at=occurrence.expires_at,
        expired=send_at >= occurrence.expires_at,
    )


def plan_messages(
    plan: Plan, performed_at: datetime, tz: ZoneInfo, now: datetime
) -> list[PlannedMessage]:
    """Every message of `plan` for a treatment, in send order.

    Endless (yearly) steps are materialised up to the first occurrence after
    `now`; the dispatcher adds the next one when that one is done.
    """
    messages: list[PlannedMessage] = []
    for step in plan.steps:
        for occurrence in occurrences(step, performed_at, tz):
            messages.append(place(occurrence, tz, now))
            if step.yearly and occurrence.planned_at > now:
                break
    return sorted(messages, key=lambda m: (m.send_at, m.step, m.occurrence))


def next_occurrence(
    step: Step, performed_at: datetime, tz: ZoneInfo, after: int, now: datetime
) -> PlannedMessage | None:
    """The occurrence following number `after` of a step, placed for `now`."""
    for occurrence in occurrences(step, performed_at, tz):
        if occurrence.number > after:
            return place(occurrence, tz, now)
    return None
