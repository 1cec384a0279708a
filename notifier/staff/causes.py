"""Why a message did not reach a patient, in words, with what staff can do about it.

Twilio's error codes (https://www.twilio.com/docs/api/errors) as a receptionist
would need them; a code not listed here is shown with Twilio's own message.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECK_NUMBER = "Check the phone number in the booking system with the patient."
ASK_START = "Ask the patient to text START to the clinic's number; only they can resume."
SWITCH_TO_SMS = "Switch the patient's channel to SMS in the booking system."
TELL_ADMIN = "Tell whoever looks after the clinic's Twilio account; patients cannot fix this."
WAIT = "Nothing yet: it usually passes. If it repeats, call the patient."


@dataclass(frozen=True)
class Cause:
    title: str  # what happened, in a few words
    action: str  # what staff can do


CODES: dict[int, Cause] = {
    21211: Cause("Not a valid phone number", CHECK_NUMBER),
    21408: Cause("Texts to this country are not enabled in the Twilio account", TELL_ADMIN),
    21610: Cause("The patient replied STOP to the clinic's number", ASK_START),
    21612: Cause("The clinic's number cannot text this number", TELL_ADMIN),
    21614: Cause("Not a mobile number: it cannot receive texts", CHECK_NUMBER),
    30003: Cause("Unreachable handset: switched off or out of coverage", WAIT),
    30004: Cause("Blocked by the patient or their carrier", CHECK_NUMBER),
    30005: Cause("Unknown number: it does not exist or is no longer in use", CHECK_NUMBER),
    30006: Cause("A landline, or a carrier that cannot receive texts", CHECK_NUMBER),
    30007: Cause("Filtered by the carrier as possible spam", TELL_ADMIN),
    30008: Cause("The carrier gave no reason", WAIT),
    30034: Cause("The sending number is not registered for US texts", TELL_ADMIN),
    63003: Cause("The number is not on WhatsApp", SWITCH_TO_SMS),
    63016: Cause(
        "Outside WhatsApp's 24-hour window, and no approved template",
        SWITCH_TO_SMS + " Or ask the patient to send the clinic a WhatsApp message.",
    ),
    63018: Cause("WhatsApp's rate limit for the clinic's number was reached", WAIT),
    63024: Cause("This recipient cannot receive WhatsApp messages", SWITCH_TO_SMS),
}

EXPIRED = Cause(
    "Not sent in time: its send window passed",
    "Look at queue health on the overview; if the queue was stuck, tell the administrator.",
)
NO_CODE = Cause("Not delivered, and no reason was given", WAIT)


def explain(error_code: int | None, status: str, error_message: str | None = None) -> Cause:
    """What a failed, undelivered or expired message's code means to staff."""
    if error_code is not None:
        known = CODES.get(error_code)
        if known is not None:
            return known
        detail = f": {error_message}" if error_message else ""
        return Cause(f"Twilio error {error_code}{detail}", TELL_ADMIN)
    if status == "expired":
        return EXPIRED
    return NO_CODE
