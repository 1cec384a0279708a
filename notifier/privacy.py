"""Keeping personal data out of logs: masked phone numbers, masked database values in
error texts and tracebacks, and the log filter that applies both to every handler."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# Numbers here are E.164 (also %-encoded in URLs); a leading + keeps dates and times
# in log lines from looking like phone numbers.
_PHONE_LIKE = re.compile(r"(?:whatsapp:)?(?:\+|%2B)\d[\d\s\-()]{6,}\d", re.IGNORECASE)
# PostgreSQL's details quote the stored values of a key ("Key (phone)=(+971...)
# already exists.") or of a whole refused row ("Failing row contains (...)"). A value
# may hold ")" and line breaks, so the values run up to the detail's last ")" before
# the next part of an error text (SQLAlchemy's [SQL: ...], a traceback's next section).
_DB_DETAIL = re.compile(
    r"(?P<head>Key \([^\n]*?\)=\(|Failing row contains \()(?P<values>.*?)(?P<tail>\)[^)\n]*)?"
    r"(?=\n+(?:\[SQL: |\[parameters: |[A-Z]+:  |\(Background on this error"
    r"|The above exception|During handling of the above exception|Traceback |  File )|\s*\Z)",
    re.DOTALL,
)
# Values quoted on one line: bad input, a statement's parameters as PostgreSQL's
# CONTEXT shows them, and SQLAlchemy's bound parameters when they are not hidden.
_DB_VALUES = [
    (re.compile(r'(invalid input (?:syntax|value) for [^:\n]*: )".*'), r'\1"***"'),
    (re.compile(r"(parameter \$\d+ = ).*"), r"\1'***'"),
    (re.compile(r"(\[parameters: ).*"), r"\1***]"),
]
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")  # they do not propagate to the root
_TRACEBACKS = logging.Formatter()  # formats a record's exception as any handler would


def mask_phone(phone: str | None) -> str:
    """Show only the last four digits: '+971501234567' -> '***4567'."""
    if not phone:
        return "<none>"
    digits = "".join(ch for ch in phone if ch.isdigit())
    return "***" + digits[-4:]


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number, and the stored values a database
    error quotes, inside free text."""
    text = _DB_DETAIL.sub(lambda m: m["head"] + "***" + (m["tail"] or ")"), text)
    for pattern, replacement in _DB_VALUES:
        text = pattern.sub(replacement, text)
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)


class PhoneMaskingFilter(logging.Filter):
    """Safety net on every handler: a phone number or a value quoted by a database error
    that slips into a log line, its traceback or its stack is masked.

    The traceback is formatted here and kept, masked, as `exc_text`, which formatters
    print instead of formatting the exception again."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = scrub(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def mask_handlers(handlers: Iterable[logging.Handler]) -> None:
    """Put the masking filter on each handler that does not have it yet."""
    for handler in handlers:
        if not any(isinstance(f, PhoneMaskingFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskingFilter())


def install_log_masking() -> None:
    """Mask phone numbers and database values, tracebacks included, on every handler that
    writes logs (a safety net under explicit masking): the root's (APScheduler's job
    errors and the app's own) and gunicorn's error and access logs, which
    gunicorn has set up before it loads the app in a worker."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    mask_handlers(root.handlers)
    for name in GUNICORN_LOGGERS:
        mask_handlers(logging.getLogger(name).handlers)
