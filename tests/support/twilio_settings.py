"""The real TwilioSender's settings, pointed at a fake Twilio (or any other base URL)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from notifier.settings import TwilioSettings
from tests.support.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

SMS_FROM = "+15005550006"
WHATSAPP_FROM = "+14155238886"


def settings_for(base_url: str, **overrides: Any) -> TwilioSettings:
    """The fake's account and token, numbers of its own, a short timeout; `overrides`
    replace any of them."""
    settings = TwilioSettings(
        account_sid=DEFAULT_ACCOUNT_SID,
        auth_token=DEFAULT_AUTH_TOKEN,
        sms_from=SMS_FROM,
        messaging_service_sid=None,
        whatsapp_from=WHATSAPP_FROM,
        api_base_url=base_url,
        timeout_seconds=0.5,
    )
    return replace(settings, **overrides)
