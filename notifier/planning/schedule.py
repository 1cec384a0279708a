"""When each message of a plan goes out: a pure function of plan, treatment, zone and now.

Times are the patient's local time. Day N is the local calendar date of the
treatment plus N days; a send time is moved forward into the step's send
window and out of the deployment's quiet hours (`next_send_time`, the one rule for
every message planned or re-timed); a message that cannot go out before its expiry
is expired, never late.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from notifier.planning.plan import Plan, Step, Window

# With quiet hours, a send time is looked for this far ahead: a window with any moment
# outside them has one within three days, whatever DST does; none in a week means the
# window lies inside the quiet hours, and the message expires.
LOOK_AHEAD = timedelta(days=7)
_QUIET = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class QuietHours:
    """Local hours no planned message goes out in, whatever its window (QUIET_HOURS):
    start inclusive, end exclusive, wrapping midnight when end is before start."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """`HH:MM-HH:MM`, e.g. `21:00-08:00`; ValueError says what is wrong."""
        malformed = ValueError(f"{text!r} is not HH:MM-HH:MM in local time, e.g. 21:00-08:00")
        match = _QUIET.match(text.strip())
        if match is None:
            raise malformed
        start_hour, start_minute, end_hour, end_minute = (int(g) for g in match.groups())
        if max(start_hour, end_hour) > 23 or max(start_minute, end_minute) > 59:
            raise malformed
        start, end = time(start_hour, start_minute), time(end_hour, end_minute)
        if start == end:
            raise ValueError(f"{text!r} starts and ends at the same time")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def covers(self, window: Window) -> bool:
        """Whether every minute of the window is quiet (read on a day without DST change)."""
        first = window.start.hour * 60 + window.start.minute
        last = window.end.hour * 60 + window.end.minute
        return all(self._quiet_minute(minute) for minute in range(first, last))

    def _quiet_minute(self, minute: int) -> bool:
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        return start <= minute < end if start < end else minute >= start or minute < end


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


def next_send_time(
    earliest: datetime, window: Window, quiet: QuietHours | None, tz: ZoneInfo
) -> datetime | None:
    """The first instant at or after `earliest` inside the send window and outside the
    quiet hours (UTC); None if there is none within LOOK_AHEAD (the window lies inside
    the quiet hours). The one rule every (re)scheduled message follows.

    Window and quiet hours are spans of local wall time, each boundary read as every
    wall time is (`local_moment`): one a DST gap skips moves forward past the gap, a
    repeated one is its first occurrence. Without quiet hours this is `into_window`."""
    if quiet is None:
        return into_window(earliest, window, tz)
    moment = earliest.astimezone(UTC)
    while moment < earliest + LOOK_AHEAD:
        later = _not_before(moment, window, quiet, tz)
        if later is None:
            return moment
        moment = later
    return None


def _not_before(
    moment: datetime, window: Window, quiet: QuietHours, tz: ZoneInfo
) -> datetime | None:
    """None if a message may go out at `moment`; else a later instant no allowed one precedes:
    the end of the quiet period it is in, or the next window opening."""
    quiet_ends = [
        end for start, end in _spans(quiet.start, quiet.end, moment, tz) if start <= moment < end
    ]
    if quiet_ends:
        return max(quiet_ends)
    windows = _spans(window.start, window.end, moment, tz)
    if any(start <= moment < end for start, end in windows):
        return None
    # A DST change can empty a day's window; the next day then has its opening.
    return min((s for s, e in windows if moment < s < e), default=moment + timedelta(days=1))


def _spans(
    start: time, end: time, around: datetime, tz: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """The local spans [start, end) that begin on the days around `around`, in UTC; a span
    whose end is not after its start wraps midnight. The days before and after count too:
    a DST change can move a span's boundary to another local date (by a whole day where a
    zone crossed the date line)."""
    today = around.astimezone(tz).date()
    wraps = timedelta(days=1) if end <= start else timedelta(0)
    return [
        (local_moment(day, start, tz), local_moment(day + wraps, end, tz))
        for day in (today + timedelta(days=n) for n in range(-2, 3))
    ]


@dataclass(frozen=True)
class SendTime:
    """When a message goes out; `expired` if that is not before its expiry (it is then
    expired, never sent late), `at` being its expiry if no moment at all was found."""

    at: datetime  # UTC
    expired: bool


def send_time(
    earliest: datetime,
    window: Window,
    quiet: QuietHours | None,
    tz: ZoneInfo,
    expires_at: datetime,
) -> SendTime:
    """`next_send_time`, and whether the message expires before it."""
    at = next_send_time(earliest, window, quiet, tz)
    if at is None:
        return SendTime(expires_at, True)
    return SendTime(at, at >= expires_at)


class Waiting(Protocol):
    """A stored message as its timing is frozen on it: window in minutes after local
    midnight, and expiry."""

    @property
    def window_start(self) -> int: ...
    @property
    def window_end(self) -> int: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def any_hour(self) -> bool: ...


def message_window(message: Waiting) -> Window:
    """The send window frozen on a message when it was scheduled."""
    return Window(time(*divmod(message.window_start, 60)), time(*divmod(message.window_end, 60)))


def retime(
    message: Waiting, earliest: datetime, quiet: QuietHours | None, tz: ZoneInfo
) -> SendTime:
    """When a stored message goes out next, not before `earliest`, by its frozen window;
    one that may go at any hour (an acknowledgement, an alert) at `earliest` itself."""
    if message.any_hour:
        return SendTime(earliest, earliest >= message.expires_at)
    return send_time(earliest, message_window(message), quiet, tz, message.expires_at)


def quiet_conflicts(plans: Iterable[Plan], quiet: QuietHours | None) -> list[str]:
    """Plan steps whose send window lies wholly inside the quiet hours: none of their
    messages could ever go out, so start-up refuses them."""
    if quiet is None:
        return []
    return [
        f"{plan.source}: step {step.key!r}: send window {step.window.start:%H:%M}-"
        f"{step.window.end:%H:%M} lies wholly inside QUIET_HOURS {quiet}"
        for plan in plans
        for step in plan.steps
        if quiet.covers(step.window)
    ]


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


def place(
    occurrence: Occurrence, tz: ZoneInfo, now: datetime, quiet: QuietHours | None = None
) -> PlannedMessage:
    """Move an occurrence to its send time: not before now, inside its window, outside
    the quiet hours."""
    earliest = max(occurrence.planned_at, now.astimezone(UTC))
    when = send_time(earliest, occurrence.step.window, quiet, tz, occurrence.expires_at)
    return PlannedMessage(
        step=occurrence.step.key,
        occurrence=occurrence.number,
        send_at=when.at,
        expires_at=occurrence.expires_at,
        expired=when.expired,
    )


def plan_messages(
    plan: Plan,
    performed_at: datetime,
    tz: ZoneInfo,
    now: datetime,
    *,
    quiet: QuietHours | None = None,
) -> list[PlannedMessage]:
    """Every message of `plan` for a treatment, in send order.

    Endless (yearly) steps are materialised up to the first occurrence after
    `now`; the dispatcher adds the next one when that one is done.
    """
    messages: list[PlannedMessage] = []
    for step in plan.steps:
        for occurrence in occurrences(step, performed_at, tz):
            messages.append(place(occurrence, tz, now, quiet))
            if step.yearly and occurrence.planned_at > now:
                break
    return sorted(messages, key=lambda m: (m.send_at, m.step, m.occurrence))


def next_occurrence(
    step: Step,
    performed_at: datetime,
    tz: ZoneInfo,
    after: int,
    now: datetime,
    *,
    quiet: QuietHours | None = None,
) -> PlannedMessage | None:
    """The occurrence following number `after` of a step, placed for `now`."""
    for occurrence in occurrences(step, performed_at, tz):
        if occurrence.number > after:
            return place(occurrence, tz, now, quiet)
    return None
