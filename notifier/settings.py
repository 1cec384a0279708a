"""Configuration from the environment, validated once at start-up.

Every problem is reported as a `ConfigError` naming the variable, so a bad
deploy stops with one clear line instead of failing on the first request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import phonenumbers

from notifier.phone import parse_phone
from notifier.planning.clinic import Clinic
from notifier.planning.schedule import QuietHours

DEFAULT_DATABASE_URL = "sqlite:///aftercare.sqlite3"
DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
PLANS_DIR = Path(__file__).resolve().parent.parent / "config" / "plans"
TEMPLATES_FILE = PLANS_DIR.parent / "whatsapp_templates.toml"
KEYWORDS_FILE = PLANS_DIR.parent / "keywords.toml"
TRIAGE_FILE = PLANS_DIR.parent / "triage.toml"
ALERTS_FILE = PLANS_DIR.parent / "alerts.toml"
DEFAULT_EMERGENCY_NUMBER = "998"  # the UAE's ambulance
_DIALABLE = re.compile(r"^\+?\d{2,15}$")

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_STAFF_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MIN_SECRET_LENGTH = 16  # staff tokens and the booking secret: guessing must be hopeless
MIN_SECRET_KEY_LENGTH = 32  # SECRET_KEY signs dashboard sessions: a forged one is a login
# RETENTION_DAYS: a typo ("3" for 30, "36" for 365) must not erase current aftercare.
MIN_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 36_525  # 100 years


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_timezone(name: str) -> bool:
    """An IANA zone name (not a folder of the database, not 'localtime')."""
    return name in _timezones()


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class StaffToken:
    """A bearer token of the staff API and the name every change made with it records."""

    name: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = field(repr=False)
    sms_from: str | None
    messaging_service_sid: str | None
    whatsapp_from: str | None
    api_base_url: str
    timeout_seconds: float


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    twilio: TwilioSettings | None = None
    public_base_url: str | None = None
    trust_forwarded_headers: bool = False  # one proxy's X-Forwarded-For/-Proto/-Host/-Port
    booking_webhook_secret: str | None = field(default=None, repr=False)
    staff_api_tokens: tuple[StaffToken, ...] = field(default=(), repr=False)
    clinic_timezone: str = "Asia/Dubai"
    default_phone_region: str = "AE"
    clinic_name: str = "Your clinic"
    clinic_phone: str = "+971 4 000 0000"
    dispatch_interval_seconds: float = 10.0
    dispatch_batch_size: int = 200
    dispatch_concurrency: int = 32
    lease_seconds: int = 300
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retention_days: int | None = None  # erase texts of treatments past this; None: keep
    plans_dir: Path = PLANS_DIR
    whatsapp_templates_file: Path = TEMPLATES_FILE
    whatsapp_templates_required: bool = False  # named explicitly: it must exist
    whatsapp_sms_fallback: bool = True
    keywords_file: Path = KEYWORDS_FILE  # STOP/START/HELP words per language
    quiet_hours: QuietHours | None = None  # QUIET_HOURS: patient-local, no plan overrides
    secret_key: str | None = field(default=None, repr=False)  # signs dashboard sessions
    triage_file: Path = TRIAGE_FILE  # urgent/question/thanks rules per language
    alerts_file: Path = ALERTS_FILE  # what urgent replies send, to the patient and on-call
    oncall_phones: tuple[str, ...] = ()  # ONCALL_PHONES, E.164: who hears of urgent replies
    emergency_number: str = DEFAULT_EMERGENCY_NUMBER  # told to a patient with an urgent reply
    alert_repeat_minutes: int = 15  # an unhandled urgent reply alerts again after this
    metrics_token: str | None = field(default=None, repr=False)  # METRICS_TOKEN: /metrics
    events_webhook_url: str | None = None  # EVENTS_WEBHOOK_URL: where events are posted
    events_webhook_secret: str | None = field(default=None, repr=False)  # and signed with

    @property
    def clinic(self) -> Clinic:
        """The clinic as its messages speak of it."""
        return Clinic(self.clinic_name, self.clinic_phone, self.quiet_hours)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable, then how they combine; raise `ConfigError`
        on the first bad one."""
        env = _Env(os.environ if environ is None else environ)
        settings = cls(
            database_url=_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            twilio=_twilio(env),
            public_base_url=env.url("PUBLIC_BASE_URL"),
            trust_forwarded_headers=env.flag("TRUST_FORWARDED_HEADERS", default=False),
            booking_webhook_secret=env.secret("BOOKING_WEBHOOK_SECRET"),
            staff_api_tokens=env.tokens("STAFF_API_TOKENS"),
            clinic_timezone=env.timezone("CLINIC_TIMEZONE", "Asia/Dubai"),
            default_phone_region=env.region("DEFAULT_PHONE_REGION", "AE"),
            clinic_name=env.get("CLINIC_NAME") or "Your clinic",
            clinic_phone=env.get("CLINIC_PHONE") or "+971 4 000 0000",
            dispatch_interval_seconds=env.number("DISPATCH_INTERVAL_SECONDS", 10.0, 0.1, 3600),
            dispatch_batch_size=int(env.number("DISPATCH_BATCH_SIZE", 200, 1, 10_000)),
            dispatch_concurrency=int(env.number("DISPATCH_CONCURRENCY", 32, 1, 512)),
            lease_seconds=int(env.number("DISPATCH_LEASE_SECONDS", 300, 5, 300)),
            retry_base_seconds=env.number("DISPATCH_RETRY_BASE_SECONDS", 30.0, 1, 600),
            max_attempts=int(env.number("DISPATCH_MAX_ATTEMPTS", 8, 1, 50)),
            retention_days=_retention_days(env.get("RETENTION_DAYS")),
            plans_dir=Path(env.get("AFTERCARE_PLANS_DIR") or PLANS_DIR),
            whatsapp_templates_file=Path(env.get("WHATSAPP_TEMPLATES_FILE") or TEMPLATES_FILE),
            whatsapp_templates_required=env.get("WHATSAPP_TEMPLATES_FILE") is not None,
            whatsapp_sms_fallback=env.flag("WHATSAPP_SMS_FALLBACK", default=True),
            keywords_file=Path(env.get("KEYWORDS_FILE") or KEYWORDS_FILE),
            quiet_hours=_quiet_hours(env.get("QUIET_HOURS")),
            secret_key=_secret_key(env.get("SECRET_KEY")),
            triage_file=Path(env.get("TRIAGE_FILE") or TRIAGE_FILE),
            alerts_file=Path(env.get("ALERTS_FILE") or ALERTS_FILE),
            oncall_phones=env.phones("ONCALL_PHONES"),
            emergency_number=env.dialable("EMERGENCY_NUMBER", DEFAULT_EMERGENCY_NUMBER),
            alert_repeat_minutes=int(env.number("ALERT_REPEAT_MINUTES", 15, 1, 24 * 60)),
            metrics_token=env.secret("METRICS_TOKEN"),
            events_webhook_url=env.url("EVENTS_WEBHOOK_URL"),
            events_webhook_secret=env.secret("EVENTS_WEBHOOK_SECRET"),
        )
        _check_combination(settings)
        return settings


class _Env:
    """Typed reads of environment variables, each error naming its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def url(self, name: str) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name}: expected an http(s) URL such as https://example.org")
        return value.rstrip("/")

    def tokens(self, name: str) -> tuple[StaffToken, ...]:
        """Comma-separated `name:token` entries; a bare token is named `token-N` after
        its position (1, 2, ...). A token holds no comma; a name no colon."""
        value = self.get(name)
        if value is None:
            return ()
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        tokens: list[StaffToken] = []
        for position, entry in enumerate(entries, start=1):
            who, colon, token = entry.partition(":")
            if not colon:
                who, token = f"token-{position}", entry
            who, token = who.strip(), token.strip()
            if not _STAFF_NAME.match(who):
                raise ConfigError(
                    f"{name}: entry {position}: a name is letters, digits, '.', '_' or '-' "
                    "(up to 64), as in name:token"
                )
            if len(token) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"{name}: every token must be at least {MIN_SECRET_LENGTH} characters long"
                )
            tokens.append(StaffToken(who, token))
        names = [token.name for token in tokens]
        if len(set(names)) != len(names):
            raise ConfigError(f"{name}: each name may be given once")
        return tuple(tokens)

    def secret(self, name: str) -> str | None:
        value = self.get(name)
        if value is not None and len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(f"{name}: must be at least {MIN_SECRET_LENGTH} characters long")
        return value

    def timezone(self, name: str, default: str) -> str:
        value = self.get(name) or default
        if not is_timezone(value):
            raise ConfigError(f"{name}: {value!r} is not an IANA timezone name")
        return value

    def region(self, name: str, default: str) -> str:
        value = (self.get(name) or default).upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"{name}: {value!r} is not a two-letter phone region such as AE")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.get(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not a number") from None
        if not low <= number <= high:
            raise ConfigError(f"{name}: {value} is outside {low:g}..{high:g}")
        return number

    def flag(self, name: str, *, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: {value!r} is not true or false")

    def phones(self, name: str) -> tuple[str, ...]:
        """Comma-separated E.164 numbers, each given once."""
        value = self.get(name)
        if value is None:
            return ()
        numbers: list[str] = []
        for position, entry in enumerate(value.split(","), start=1):
            try:
                number = parse_phone(entry.strip(), "ZZ")  # no region: E.164 only
            except ValueError:
                raise ConfigError(
                    f"{name}: entry {position} is not an E.164 number such as +971501234567"
                ) from None
            if number in numbers:
                raise ConfigError(f"{name}: entry {position} repeats a number")
            numbers.append(number)
        return tuple(numbers)

    def dialable(self, name: str, default: str) -> str:
        """A number a patient can dial: digits, an optional leading +, 2 to 16 characters."""
        value = (self.get(name) or default).replace(" ", "")
        if not _DIALABLE.match(value):
            raise ConfigError(f"{name}: {value!r} is not a phone number to call, such as 998")
        return value

    def e164(self, name: str, *, allow_whatsapp: bool = False) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        number = value.removeprefix("whatsapp:") if allow_whatsapp else value
        if not _E164.match(number):
            raise ConfigError(f"{name}: {value!r} is not an E.164 number such as +14155550100")
        return number


def _database_url(url: str) -> str:
    if url.startswith("postgres://") or url.startswith("postgresql://"):
        raise ConfigError(
            "DATABASE_URL: use the psycopg 3 driver, e.g. postgresql+psycopg://user@host/db"
        )
    if not (url.startswith("sqlite:///") or url.startswith("postgresql+psycopg://")):
        raise ConfigError("DATABASE_URL: expected sqlite:///path or postgresql+psycopg://...")
    return url


def _retention_days(value: str | None) -> int | None:
    """Whole days, MIN_RETENTION_DAYS or more; unset keeps everything."""
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]+", value):
        raise ConfigError(
            f"RETENTION_DAYS: {value!r} is not a whole number of days (unset it to keep all)"
        )
    days = int(value)
    if not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:
        raise ConfigError(
            f"RETENTION_DAYS: {days} is outside {MIN_RETENTION_DAYS}..{MAX_RETENTION_DAYS} "
            "(days; a shorter period is more likely a typo than a policy)"
        )
    return days


def _secret_key(value: str | None) -> str | None:
    """The staff dashboard's session key; unset, the dashboard answers 503."""
    if value is not None and len(value) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"SECRET_KEY: must be at least {MIN_SECRET_KEY_LENGTH} characters long (it signs "
            "staff sessions); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def _twilio(env: _Env) -> TwilioSettings | None:
    sid, token = env.get("TWILIO_ACCOUNT_SID"), env.get("TWILIO_AUTH_TOKEN")
    if sid is None and token is None:
        return None
    if sid is None or token is None:
        missing = "TWILIO_ACCOUNT_SID" if sid is None else "TWILIO_AUTH_TOKEN"
        raise ConfigError(f"{missing}: set both Twilio credentials, or neither for the console")
    if not re.fullmatch(r"AC[0-9a-fA-F]{32}", sid):
        raise ConfigError("TWILIO_ACCOUNT_SID: expected AC followed by 32 hex digits")
    service = env.get("TWILIO_MESSAGING_SERVICE_SID")
    if service is not None and not re.fullmatch(r"MG[0-9a-fA-F]{32}", service):
        raise ConfigError("TWILIO_MESSAGING_SERVICE_SID: expected MG followed by 32 hex digits")
    sms_from = env.e164("TWILIO_SMS_FROM")
    whatsapp_from = env.e164("TWILIO_WHATSAPP_FROM", allow_whatsapp=True)
    if service is None and sms_from is None and whatsapp_from is None:
        raise ConfigError(
            "TWILIO_SMS_FROM: with Twilio credentials, set a sender "
            "(or TWILIO_MESSAGING_SERVICE_SID)"
        )
    return TwilioSettings(
        account_sid=sid,
        auth_token=token,
        sms_from=sms_from,
        messaging_service_sid=service,
        whatsapp_from=whatsapp_from,
        api_base_url=(env.url("TWILIO_API_BASE_URL") or DEFAULT_TWILIO_API_BASE_URL),
        timeout_seconds=env.number("TWILIO_TIMEOUT_SECONDS", 15.0, 1, 30),
    )


def _quiet_hours(value: str | None) -> QuietHours | None:
    """`HH:MM-HH:MM` in the patient's local time, wrapping midnight if need be; unset: none."""
    if value is None:
        return None
    try:
        return QuietHours.parse(value)
    except ValueError as error:
        raise ConfigError(f"QUIET_HOURS: {error}") from None


def _check_combination(settings: Settings) -> None:
    """Values that are each valid but cannot work together."""
    if settings.events_webhook_url is not None and settings.events_webhook_secret is None:
        raise ConfigError(
            "EVENTS_WEBHOOK_SECRET: required with EVENTS_WEBHOOK_URL (every event is "
            "signed with it, as the booking system signs its webhook)"
        )
    twilio = settings.twilio
    if twilio is None:
        return
    if settings.lease_seconds < 2 * twilio.timeout_seconds:
        # A lease that can run out while its send is still in flight lets another
        # pass recover the row and reconcile (or send) before the first send is recorded.
        raise ConfigError(
            f"DISPATCH_LEASE_SECONDS: {settings.lease_seconds} is shorter than twice "
            f"TWILIO_TIMEOUT_SECONDS ({twilio.timeout_seconds:g}); set it to at least "
            f"{2 * twilio.timeout_seconds:g} or lower TWILIO_TIMEOUT_SECONDS"
        )
    if settings.public_base_url is None and not settings.trust_forwarded_headers:
        # Twilio signs each webhook with the URL it called; behind a TLS proxy the
        # request URL differs, and every webhook would be refused with 403.
        raise ConfigError(
            "PUBLIC_BASE_URL: required with Twilio credentials (the URL Twilio reaches "
            "this service at, for webhook signatures and StatusCallback), unless "
            "TRUST_FORWARDED_HEADERS=true and the proxy sets X-Forwarded-Proto and -Host"
        )
