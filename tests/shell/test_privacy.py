"""Phone numbers never reach a log line unmasked."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from notifier.privacy import (
    PhoneMaskingFilter,
    install_log_masking,
    mask_handlers,
    mask_phone,
    scrub,
)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [("+971501234567", "***4567"), ("whatsapp:+971501234567", "***4567"), (None, "<none>")],
)
def test_mask_phone_keeps_the_last_four_digits(raw: str | None, masked: str) -> None:
    assert mask_phone(raw) == masked


def test_scrub_masks_numbers_inside_text() -> None:
    assert scrub("sent to +971 50 123 4567 at 10:00") == "sent to ***4567 at 10:00"


def test_the_log_filter_masks_a_number_that_slipped_into_a_message(caplog) -> None:
    logger = logging.getLogger("tests.privacy")
    handler_filter = PhoneMaskingFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="tests.privacy"):
            logger.info("reply from %s: %s", "+971501234567", "thanks")
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert "+971501234567" not in caplog.text
    assert "reply from ***4567: thanks" in caplog.text


def test_scrub_leaves_dates_times_and_counts_alone() -> None:
    text = "next run at 2026-11-25 07:47:57 UTC, 1234567 rows, id 20261125"
    assert scrub(text) == text


def test_scrub_masks_a_percent_encoded_number_in_a_url() -> None:
    assert scrub("GET /Messages.json?To=%2B971501234567") == "GET /Messages.json?To=***4567"


# -- tracebacks and database errors ------------------------------------------------------

UNIQUE_VIOLATION = (
    'duplicate key value violates unique constraint "one_per_phone"\n'
    "DETAIL:  Key (phone, first_name)=(+971501234567, Zebulon (Zeb)) already exists."
)


def _database_error() -> IntegrityError:
    """What SQLAlchemy raises for psycopg's unique violation, parameters shown."""
    try:
        raise IntegrityError(
            "INSERT INTO patient (first_name, phone) VALUES (%(first_name)s, %(phone)s)",
            {"first_name": "Zebulon", "phone": "+971501234567"},
            Exception(UNIQUE_VIOLATION),
        )
    except IntegrityError as error:
        return error


def _written(record: logging.LogRecord, handlers: int = 1) -> list[str]:
    """What each of `handlers` masked handlers writes for `record`, in turn."""
    lines = []
    for _ in range(handlers):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        mask_handlers([handler])
        handler.handle(record)
        lines.append(stream.getvalue())
    return lines


def _record(exc_info=None, sinfo=None) -> logging.LogRecord:
    return logging.LogRecord(
        "tests.privacy", logging.ERROR, __file__, 1, "request failed", None, exc_info, sinfo=sinfo
    )


def test_a_traceback_is_written_with_the_database_values_masked() -> None:
    error = _database_error()
    (written,) = _written(_record(exc_info=(type(error), error, error.__traceback__)))
    assert "Traceback (most recent call last)" in written
    assert "sqlalchemy.exc.IntegrityError" in written
    assert "Key (phone, first_name)=(***) already exists." in written
    assert "[parameters: ***]" in written
    assert "+971501234567" not in written
    assert "501234567" not in written
    assert "Zebulon" not in written


def test_every_handler_writes_the_masked_traceback() -> None:
    error = _database_error()
    record = _record(exc_info=(type(error), error, error.__traceback__))
    first, second = _written(record, handlers=2)
    assert first == second
    assert "Zebulon" not in first + second


def test_a_traceback_formatted_before_the_filter_is_masked_too() -> None:
    error = _database_error()
    record = _record(exc_info=(type(error), error, error.__traceback__))
    record.exc_text = logging.Formatter().formatException(record.exc_info)
    (written,) = _written(record)
    assert "Zebulon" not in written
    assert "Key (phone, first_name)=(***)" in written


def test_a_stack_is_written_with_phone_numbers_masked() -> None:
    stack = 'Stack (most recent call last):\n  File "x.py", line 3\n    send("+971501234567")'
    (written,) = _written(_record(sinfo=stack))
    assert 'send("***4567")' in written


@pytest.mark.parametrize(
    ("error", "masked"),
    [
        (
            'new row for relation "patient" violates check constraint "short_names"\n'
            "DETAIL:  Failing row contains (3, P-3, Bartholomew, +971501234567, sms).",
            "DETAIL:  Failing row contains (***).",
        ),
        (
            'new row for relation "reply" violates check constraint "short"\n'
            "DETAIL:  Failing row contains (1, SM1, my scalp\n\nitches (a lot), sms).\n"
            "[SQL: INSERT INTO reply ...]",
            "DETAIL:  Failing row contains (***).\n[SQL: INSERT INTO reply ...]",
        ),
        (
            'insert or update on table "message" violates foreign key constraint "fk"\n'
            'DETAIL:  Key (patient_id)=(42) is not present in table "patient".',
            'DETAIL:  Key (patient_id)=(***) is not present in table "patient".',
        ),
        (
            'invalid input syntax for type integer: "Zebulon"\n'
            "CONTEXT:  unnamed portal parameter $1 = 'Zebulon'",
            'invalid input syntax for type integer: "***"\n'
            "CONTEXT:  unnamed portal parameter $1 = '***'",
        ),
    ],
)
def test_scrub_masks_the_values_postgresql_quotes_in_an_error(error: str, masked: str) -> None:
    assert scrub(error).endswith(masked)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_masking_is_on_the_root_flask_and_gunicorn_handlers(app: Any) -> None:
    from flask.logging import default_handler

    gunicorn_handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("gunicorn.error")
    logger.addHandler(gunicorn_handler)
    try:
        install_log_masking()  # the app (built by the fixture) masked Flask's handler
        for handler in [*logging.getLogger().handlers, default_handler, gunicorn_handler]:
            assert sum(isinstance(f, PhoneMaskingFilter) for f in handler.filters) == 1
        install_log_masking()  # again: still one filter each
        assert sum(isinstance(f, PhoneMaskingFilter) for f in gunicorn_handler.filters) == 1
    finally:
        logger.removeHandler(gunicorn_handler)


def test_the_embedded_servers_gunicorn_logger_masks_its_handlers() -> None:
    from gunicorn.config import Config

    from notifier.server import MaskingLogger

    config = Config()
    config.set("accesslog", "-")
    gunicorn_log = MaskingLogger(config)
    handlers = [*gunicorn_log.error_log.handlers, *gunicorn_log.access_log.handlers]
    try:
        assert len(handlers) >= 2
        for handler in handlers:
            assert any(isinstance(f, PhoneMaskingFilter) for f in handler.filters)
    finally:
        for log in (gunicorn_log.error_log, gunicorn_log.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
