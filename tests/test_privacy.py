"""Phone numbers never reach a log line unmasked."""

from __future__ import annotations

import logging

import pytest

from notifier.privacy import PhoneMaskingFilter, mask_phone, scrub


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
