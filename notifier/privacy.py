"""Keeping personal data out of logs: masked phone numbers and a log filter."""

from __future__ import annotations

import logging
import re

# Numbers here are E.164 (also %-encoded in URLs); a leading + keeps dates and times
# in log lines from looking like phone numbers.
_PHONE_LIKE = re.compile(r"(?:whatsapp:)?(?:\+|%2B)\d[\d\s\-()]{6,}\d", re.IGNORECASE)


def mask_phone(phone: str | None) -> str:
    """Show only the last four digits: '+971501234567' -> '***4567'."""
    if not phone:
        return "<none>"
    digits = "".join(ch for ch in phone if ch.isdigit())
    return "***" + digits[-4:]


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number inside free text."""
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)


class PhoneMaskingFilter(logging.Filter):
    """Safety net on every handler: a phone number that slips into a log line is masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = scrub(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
