"""`aftercare plan preview`: a plan's timeline in the patient's local time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from notifier.plan import Plan
from notifier.schedule import plan_messages
from notifier.settings import Settings
from notifier.sms_encoding import encoding

_FORMAT = "%a %Y-%m-%d %H:%M %Z"
MAX_SEGMENTS = 3  # beyond this a text is costly and reads badly on a phone


def render_preview(
    plan: Plan,
    performed_at: datetime,
    tz: ZoneInfo,
    now: datetime,
    language: str,
    first_name: str,
    settings: Settings,
) -> str:
    """Every message of the plan for one treatment, as a person would read it."""
    lang = plan.language_for(language)
    treatment_day = performed_at.astimezone(tz).date()
    lines = [
        f"{plan.name} ({plan.kind}), treatment {performed_at.astimezone(tz):{_FORMAT}}, "
        f"language {lang}" + ("" if lang == language else f" (no {language!r} text)"),
        "",
    ]
    values = {
        "first_name": first_name,
        "clinic_name": settings.clinic_name,
        "clinic_phone": settings.clinic_phone,
    }
    for item in plan_messages(plan, performed_at, tz, now):
        step = plan.step(item.step)
        assert step is not None
        local = item.send_at.astimezone(tz)
        day = (local.date() - treatment_day).days
        state = "EXPIRED (enrolled too late)" if item.expired else "scheduled"
        text = plan.render(step, lang, values)
        repeat = f" #{item.occurrence + 1}" if item.occurrence or step.every_days else ""
        lines.append(f"day {day:>3}  {local:{_FORMAT}}  {item.step}{repeat}  [{state}]")
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
