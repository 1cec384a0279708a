"""Configuration from the environment: SPEC defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from notifier.settings import DEFAULT_TWILIO_API_BASE_URL, ConfigError, Settings

SID = "AC" + "a" * 32


def test_defaults_follow_the_spec() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.twilio is None  # no credentials: the console sender
    assert (settings.clinic_timezone, settings.default_phone_region) == ("Asia/Dubai", "AE")
    assert settings.dispatch_interval_seconds == 10
    assert settings.lease_seconds <= 300
    assert settings.booking_webhook_secret is None
    assert settings.staff_api_tokens == ()


def test_twilio_settings_accept_a_whatsapp_prefixed_sender_and_default_the_base_url() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": "secret",
            "TWILIO_WHATSAPP_FROM": "whatsapp:+14155550111",
        }
    )
    assert settings.twilio is not None
    assert settings.twilio.whatsapp_from == "+14155550111"
    assert settings.twilio.api_base_url == DEFAULT_TWILIO_API_BASE_URL


def test_secrets_stay_out_of_reprs() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": "hunter2-token",
            "TWILIO_SMS_FROM": "+14155550100",
            "BOOKING_WEBHOOK_SECRET": "booking-secret",
            "STAFF_API_TOKENS": "a-very-long-staff-token",
        }
    )
    text = repr(settings)
    assert "hunter2-token" not in text
    assert "booking-secret" not in text
    assert "a-very-long-staff-token" not in text


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"DATABASE_URL": "postgres://u@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"CLINIC_TIMEZONE": "Dubai"}, "CLINIC_TIMEZONE"),
        ({"DEFAULT_PHONE_REGION": "XX"}, "DEFAULT_PHONE_REGION"),
        ({"DISPATCH_INTERVAL_SECONDS": "0"}, "DISPATCH_INTERVAL_SECONDS"),
        ({"DISPATCH_LEASE_SECONDS": "600"}, "DISPATCH_LEASE_SECONDS"),
        ({"STAFF_API_TOKENS": "short"}, "STAFF_API_TOKENS"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"TWILIO_ACCOUNT_SID": SID}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_SMS_FROM"),
        (
            {
                "TWILIO_ACCOUNT_SID": SID,
                "TWILIO_AUTH_TOKEN": "t",
                "TWILIO_MESSAGING_SERVICE_SID": "MG1",
            },
            "TWILIO_MESSAGING_SERVICE_SID",
        ),
        (
            {
                "TWILIO_ACCOUNT_SID": SID,
                "TWILIO_AUTH_TOKEN": "t",
                "TWILIO_SMS_FROM": "+1",
            },
            "TWILIO_SMS_FROM",
        ),
        (
            {
                "TWILIO_ACCOUNT_SID": SID,
                "TWILIO_AUTH_TOKEN": "t",
                "TWILIO_SMS_FROM": "+14155550100",
                "TWILIO_API_BASE_URL": "localhost:4010",
            },
            "TWILIO_API_BASE_URL",
        ),
    ],
)
def test_an_invalid_value_is_reported_by_its_variable_name(environ: dict, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        Settings.from_env(environ)
