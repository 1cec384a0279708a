"""How the pages show times, languages and rates: template filters."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask

from notifier.delivery.twilio_media import is_image
from notifier.settings import is_timezone

LANGUAGES = {
    "en": "English",
    "ar": "Arabic (العربية)",
    "ru": "Russian (Русский)",
    "fr": "French (Français)",
    "de": "German (Deutsch)",
    "es": "Spanish (Español)",
    "hi": "Hindi (हिन्दी)",
    "ur": "Urdu (اردو)",
    "fa": "Persian (فارسی)",
    "tr": "Turkish (Türkçe)",
    "zh": "Chinese (中文)",
}
RIGHT_TO_LEFT = frozenset({"ar", "fa", "he", "ur"})


def local_time(when: datetime | None, zone: str) -> str:
    """'Mon 1 Mar 2027, 10:00 +04 (Asia/Dubai)': the zone always named."""
    if when is None:
        return "-"
    tz = ZoneInfo(zone if is_timezone(zone) else "UTC")
    local = when.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} {local:%Z} ({tz.key})"


def language_name(code: str) -> str:
    base = code.split("-")[0].lower()
    return LANGUAGES.get(base, code)


def percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def install_filters(app: Flask) -> None:
    app.add_template_filter(local_time, "local_time")
    app.add_template_filter(language_name, "language_name")
    app.add_template_filter(percent, "percent")
    app.add_template_test(is_image, "image")
    app.jinja_env.globals["right_to_left"] = RIGHT_TO_LEFT
