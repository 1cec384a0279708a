"""Each plan's timeline in each of its languages, with SMS encoding and segment count,
as `aftercare plan preview` prints it: for a treatment done now, in the clinic's zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import render_template
from flask.typing import ResponseReturnValue

from notifier.planning.plan import Plan
from notifier.planning.preview import MAX_SEGMENTS
from notifier.planning.schedule import plan_messages
from notifier.planning.sms_encoding import Encoding, encoding
from webhooks.dashboard.blueprint import bp
from webhooks.services import services


@dataclass(frozen=True)
class Line:
    step: str
    day: int
    send_at: datetime
    text: str
    sms: Encoding
    expired: bool


@bp.get("/plans")
def plans_page() -> ResponseReturnValue:
    svc = services()
    now, zone = svc.clock(), ZoneInfo(svc.settings.clinic_timezone)
    shown = {
        plan.kind: {lang: _timeline(plan, lang, now, zone) for lang in plan.languages}
        for plan in sorted(svc.plans.values(), key=lambda p: p.name)
    }
    return render_template(
        "dashboard/plans.html",
        plans=svc.plans,
        shown=shown,
        zone=zone.key,
        now=now,
        max_segments=MAX_SEGMENTS,
    )


def _timeline(plan: Plan, language: str, now: datetime, zone: ZoneInfo) -> list[Line]:
    clinic = services().clinic
    values = {"first_name": "", "clinic_name": clinic.name, "clinic_phone": clinic.phone}
    day0 = now.astimezone(zone).date()
    lines = []
    for item in plan_messages(plan, now, zone, now, quiet=clinic.quiet_hours):
        step = plan.step(item.step)
        assert step is not None
        text = plan.render(step, language, values)
        day = (item.send_at.astimezone(zone).date() - day0).days
        lines.append(Line(item.step, day, item.send_at, text, encoding(text), item.expired))
    return lines
