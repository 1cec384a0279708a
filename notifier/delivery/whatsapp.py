"""WhatsApp's rules: the 24-hour window, approved templates outside it, SMS fallback.

Inside 24 hours of the patient's last inbound WhatsApp message, free text may be
sent. Outside it only a template the clinic's WhatsApp sender has approved may go
out: Twilio's Content API, `ContentSid` (HX...) plus `ContentVariables`. A clinic
maps its templates to plan steps in a deploy file (`config/whatsapp_templates.toml`
or WHATSAPP_TEMPLATES_FILE):

    [scalp_micropigmentation.after_treatment.en]
    content_sid = "HX0123456789abcdef0123456789abcdef"
    variables = { "1" = "first_name", "2" = "clinic_name" }

Each variable is filled from a plan placeholder (first_name, clinic_name,
clinic_phone) when the message goes out.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from notifier.planning.plan import PLACEHOLDERS, Plan, PlanError
from notifier.planning.schedule import QuietHours, retime
from notifier.settings import Settings
from notifier.store.models import Channel, Message, Status

WINDOW = timedelta(hours=24)
# WhatsApp cannot deliver this message to this person; SMS may still reach them.
# 63016: outside the 24-hour window without a template; 63003: channel could not find
# the destination; 63024: invalid message recipient; 63014: the user blocked the
# business on WhatsApp.
UNDELIVERABLE_ON_WHATSAPP = frozenset({63003, 63014, 63016, 63024})

_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class Template:
    content_sid: str
    variables: dict[str, str]  # Twilio variable name -> plan placeholder

    def content_variables(self, values: dict[str, str]) -> str:
        """The JSON string Twilio's ContentVariables wants."""
        return json.dumps(
            {name: values.get(field, "") for name, field in self.variables.items()},
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class Templates:
    """Approved templates by (kind, step, language)."""

    by_step: dict[tuple[str, str, str], Template]

    def find(self, kind: str, step: str, language: str) -> Template | None:
        return self.by_step.get((kind, step, language))


def in_window(last_inbound: datetime | None, now: datetime) -> bool:
    """Whether free text may be sent: the patient wrote on WhatsApp in the last 24 h."""
    return last_inbound is not None and now - last_inbound < WINDOW


def load_templates(path: Path, plans: dict[str, Plan], *, required: bool = False) -> Templates:
    """The template mapping in `path` checked against the plans; an absent file is an
    empty mapping unless `required` (the file was named explicitly)."""
    if not path.exists():
        if required:
            raise PlanError([f"{path}: WhatsApp template file not found"])
        return Templates({})
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PlanError([f"{path}: not valid TOML: {error}"]) from None
    problems: list[str] = []
    found: dict[tuple[str, str, str], Template] = {}
    for kind, steps in data.items():
        plan = plans.get(kind)
        if plan is None or not isinstance(steps, dict):
            problems.append(f"{path}: [{kind}]: no plan of that kind")
            continue
        for step, languages in steps.items():
            if plan.step(step) is None or not isinstance(languages, dict):
                problems.append(f"{path}: [{kind}.{step}]: the plan has no step {step!r}")
                continue
            for language, entry in languages.items():
                where = f"{path}: [{kind}.{step}.{language}]: "
                template = _template(entry, where, plan, language, problems)
                if template is not None:
                    found[(kind, step, language)] = template
    if problems:
        raise PlanError(problems)
    return Templates(found)


def load_whatsapp_templates(settings: Settings, plans: dict[str, Plan]) -> Templates:
    """The deployment's template mapping (WHATSAPP_TEMPLATES_FILE, must then exist)."""
    return load_templates(
        settings.whatsapp_templates_file, plans, required=settings.whatsapp_templates_required
    )


def _template(
    entry: Any, where: str, plan: Plan, language: str, problems: list[str]
) -> Template | None:
    before = len(problems)
    if language not in plan.languages:
        problems.append(where + f"language {language!r} is not one of the plan's")
    if not isinstance(entry, dict):
        problems.append(where + "must be a table with content_sid and variables")
        return None
    sid, variables = entry.get("content_sid"), entry.get("variables", {})
    if not isinstance(sid, str) or not _CONTENT_SID.match(sid):
        problems.append(where + "content_sid must be HX followed by 32 hex digits")
    if not isinstance(variables, dict):
        problems.append(where + "variables must be a table of name = placeholder")
        variables = {}
    for name, field in variables.items():
        if field not in PLACEHOLDERS:
            known = ", ".join(sorted(PLACEHOLDERS))
            problems.append(
                where + f"variables.{name}: unknown placeholder {field!r} (known: {known})"
            )
    for name in set(entry) - {"content_sid", "variables"}:
        problems.append(where + f"unknown field {name!r}")
    if len(problems) > before:
        return None
    return Template(content_sid=str(sid), variables={str(k): str(v) for k, v in variables.items()})


def fall_back_to_sms(
    message: Message, reason: str, tz: ZoneInfo, now: datetime, quiet: QuietHours | None
) -> None:
    """Send the same message by SMS instead, at the next moment of its send window
    outside the quiet hours (or expire it); the reason is recorded on the message."""
    message.channel, message.fallback_reason = Channel.SMS, reason[:255]
    message.sid = message.content_sid = None
    message.updated_at = now
    when = retime(message, now, quiet, tz)
    if when.expired:
        message.status = Status.EXPIRED
    else:
        message.status, message.send_at = Status.SCHEDULED, when.at
