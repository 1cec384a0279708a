"""Configuration from the environment: SPEC defaults, and errors that name the variable."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlmodel import Session, func, select

from notifier import create_app
from notifier.settings import DEFAULT_TWILIO_API_BASE_URL, ConfigError, Settings, StaffToken
from notifier.store.db import make_engine
from notifier.store.models import StatusCallback
from tests.conftest import TWILIO_SID, TwilioWebhooks, make_settings
from tests.support.twilio_webhooks import STATUS

SID = "AC" + "a" * 32
TWILIO = {
    "TWILIO_ACCOUNT_SID": SID,
    "TWILIO_AUTH_TOKEN": "secret",
    "TWILIO_SMS_FROM": "+14155550100",
    "PUBLIC_BASE_URL": "https://care.example.org",
}


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
            "PUBLIC_BASE_URL": "https://care.example.org",
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
            "PUBLIC_BASE_URL": "https://care.example.org",
            "BOOKING_WEBHOOK_SECRET": "booking-secret-0123456789",
            "STAFF_API_TOKENS": "a-very-long-staff-token",
        }
    )
    text = repr(settings)
    assert "hunter2-token" not in text
    assert "booking-secret-0123456789" not in text
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
        ({"BOOKING_WEBHOOK_SECRET": "dev-secret"}, "BOOKING_WEBHOOK_SECRET"),
        ({"BOOKING_WEBHOOK_SECRET": "x" * 15}, "BOOKING_WEBHOOK_SECRET"),
        ({"TRUST_FORWARDED_HEADERS": "maybe"}, "TRUST_FORWARDED_HEADERS"),
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


def test_a_booking_secret_of_16_characters_is_accepted() -> None:
    secret = "dev-secret-01234"
    assert Settings.from_env({"BOOKING_WEBHOOK_SECRET": secret}).booking_webhook_secret == secret


@pytest.mark.parametrize(
    ("lease", "timeout"),
    [("29", "15"), ("5", "3"), ("59", "30")],
)
def test_a_lease_shorter_than_two_twilio_timeouts_is_refused_naming_both(
    lease: str, timeout: str
) -> None:
    environ = {**TWILIO, "DISPATCH_LEASE_SECONDS": lease, "TWILIO_TIMEOUT_SECONDS": timeout}
    with pytest.raises(ConfigError, match=r"^DISPATCH_LEASE_SECONDS: ") as raised:
        Settings.from_env(environ)
    assert "TWILIO_TIMEOUT_SECONDS" in str(raised.value)


@pytest.mark.parametrize(("lease", "timeout"), [("30", "15"), ("60", "30"), ("300", "30")])
def test_a_lease_of_two_twilio_timeouts_or_more_is_accepted(lease: str, timeout: str) -> None:
    environ = {**TWILIO, "DISPATCH_LEASE_SECONDS": lease, "TWILIO_TIMEOUT_SECONDS": timeout}
    assert Settings.from_env(environ).lease_seconds == int(lease)


def test_a_short_lease_is_fine_without_twilio() -> None:
    assert Settings.from_env({"DISPATCH_LEASE_SECONDS": "5"}).lease_seconds == 5


def test_twilio_without_a_public_base_url_is_refused() -> None:
    environ = {k: v for k, v in TWILIO.items() if k != "PUBLIC_BASE_URL"}
    with pytest.raises(ConfigError, match=r"^PUBLIC_BASE_URL: ") as raised:
        Settings.from_env(environ)
    assert "TRUST_FORWARDED_HEADERS" in str(raised.value)


def test_twilio_without_a_public_base_url_runs_when_forwarded_headers_are_trusted() -> None:
    environ = {k: v for k, v in TWILIO.items() if k != "PUBLIC_BASE_URL"}
    settings = Settings.from_env({**environ, "TRUST_FORWARDED_HEADERS": "true"})
    assert settings.trust_forwarded_headers is True
    assert settings.public_base_url is None


def test_forwarded_headers_are_not_trusted_by_default() -> None:
    assert Settings.from_env({}).trust_forwarded_headers is False
    assert Settings.from_env(TWILIO).trust_forwarded_headers is False


# -- TRUST_FORWARDED_HEADERS: Twilio's signature checked against the URL it called --------

CALLBACK = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered", "AccountSid": TWILIO_SID}
# What a TLS-terminating proxy in front of http://localhost adds for https://clinic.example.
THROUGH_PROXY = {
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "clinic.example",
}


def _callbacks_kept(url: str) -> int:
    engine = make_engine(url)
    with Session(engine) as session:
        count = session.exec(select(func.count()).select_from(StatusCallback)).one()
    engine.dispose()
    return count


@pytest.mark.parametrize(("trusted", "answer", "kept"), [(True, 204, 1), (False, 403, 0)])
def test_a_webhook_through_a_tls_proxy_is_accepted_only_when_forwarded_headers_are_trusted(
    sqlite_url: str, trusted: bool, answer: int, kept: int
) -> None:
    settings = replace(make_settings(sqlite_url), trust_forwarded_headers=trusted)
    twilio = TwilioWebhooks(create_app(settings).test_client())
    response = twilio.post(
        STATUS,
        CALLBACK,
        signed_url="https://clinic.example" + STATUS,
        environ_overrides=THROUGH_PROXY,
    )
    assert response.status_code == answer
    assert _callbacks_kept(sqlite_url) == kept


def test_trusted_forwarded_headers_do_not_accept_a_signature_for_another_url(
    sqlite_url: str,
) -> None:
    settings = replace(make_settings(sqlite_url), trust_forwarded_headers=True)
    twilio = TwilioWebhooks(create_app(settings).test_client())
    # Signed for the public URL, but no proxy said that is where it came in.
    direct = twilio.post(STATUS, CALLBACK, signed_url="https://clinic.example" + STATUS)
    assert direct.status_code == 403
    # Through the proxy, a signature for the internal URL no longer matches.
    internal = twilio.post(STATUS, CALLBACK, environ_overrides=THROUGH_PROXY)
    assert internal.status_code == 403
    assert _callbacks_kept(sqlite_url) == 0


# -- named staff tokens ---------------------------------------------------------------------


def test_staff_tokens_may_be_named_and_bare_ones_are_named_after_their_position() -> None:
    settings = Settings.from_env(
        {"STAFF_API_TOKENS": "amira:amira-token-0123456789, plain-token-0123456789"}
    )
    assert settings.staff_api_tokens == (
        StaffToken("amira", "amira-token-0123456789"),
        StaffToken("token-2", "plain-token-0123456789"),
    )
    assert "amira-token" not in repr(settings.staff_api_tokens)  # tokens stay out of reprs


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("amira:short", "at least 16 characters"),
        ("am ira:amira-token-0123456789", "a name is letters"),
        (":amira-token-0123456789", "a name is letters"),
        ("a:amira-token-0123456789,a:other-token-0123456789", "each name may be given once"),
    ],
)
def test_bad_staff_token_entries_are_refused(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"^STAFF_API_TOKENS: ") as raised:
        Settings.from_env({"STAFF_API_TOKENS": value})
    assert says in str(raised.value)
