"""`aftercare plan preview`: a plan's timeline in the patient's local time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from notifier.planning.clinic import Clinic
from notifier.planning.plan import Plan
from notifier.planning.schedule import plan_messages
from notifier.planning.sms_encoding import encoding

_FORMAT = "%a %Y-%m-%d %H:%M %Z"
MAX_SEGMENTS = 3  # beyond this a text is costly and reads badly on a phone


def render_preview(
    plan: Plan,
    performed_at: datetime,
    tz: ZoneInfo,
    now: datetime,
    language: str,
    first_name: str,
    clinic: Clinic,
) -> str:
    """Every message of the plan for one treatment, as a person would read it; with
    QUIET_HOURS, each time they moved says where from."""
    lang = plan.language_for(language)
    treatment_day = performed_at.astimezone(tz).date()
    quiet = clinic.quiet_hours
    lines = [
        f"{plan.name} ({plan.kind}), treatment {performed_at.astimezone(tz):{_FORMAT}}, "
        f"language {lang}" + ("" if lang == language else f" (no {language!r} text)"),
    ]
    if quiet is not None:
        lines.append(
            f"Quiet hours {quiet} (QUIET_HOURS) applied: nothing goes out inside them, "
            "whatever the step's send window."
        )
    lines.append("")
    # Where each message would go without quiet hours, to show what they moved.
    unquiet = {(m.step, m.occurrence): m for m in plan_messages(plan, performed_at, tz, now)}
    values = {
        "first_name": first_name,
        "clinic_name": clinic.name,
        "clinic_phone": clinic.phone,
    }
    for item in plan_messages(plan, performed_at, tz, now, quiet=quiet):
        step = plan.step(item.step)
        assert step is not None
        local = item.send_at.astimezone(tz)
        day = (local.date() - treatment_day).days
        before = unquiet[item.step, item.occurrence]
        moved = not before.expired and before.send_at != item.send_at
        state = "scheduled"
        if item.expired:
            state = (
                "EXPIRED (quiet hours last past its expiry)"
                if moved
                else "EXPIRED (enrolled too late)"
            )
        text = plan.render(step, lang, values)
        repeat = f" #{item.occurrence + 1}" if item.occurrence or step.every_days else ""
        lines.append(f"day {day:>3}  {local:{_FORMAT}}  {item.step}{repeat}  [{state}]")
        if moved:
            lines.append(
                f"          moved by quiet hours from {before.send_at.astimezone(tz):{_FORMAT}}"
            )
        sms = encoding(text)
        warning = "  WARNING: over 3 segments" if sms.segments > MAX_SEGMENTS else ""
        lines.append(
            f"          valid until {item.expires_at.astimezone(tz):{_FORMAT}}; "
            f"{len(text)} characters, {sms}{warning}"
        )
        lines.append(f"          {text}")
        lines.append("")
    lines.append("Yearly steps continue every year; the next one is scheduled when one is done.")
    return "\n".join(lines)
