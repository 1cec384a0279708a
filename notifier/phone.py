"""Phone numbers as the service stores them: E.164."""

from __future__ import annotations

import phonenumbers


def parse_phone(value: str, region: str) -> str:
    """E.164 from E.164 or a national number read in `region`; ValueError if not valid."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"is not a valid phone number (national numbers are read as {region})")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
