"""What an inbound text means: opt-out, opt-in, help, or a reply for staff (SPEC §7).

Twilio's `OptOutType` wins when present (Twilio already acted on it); otherwise
the whole body, trimmed and in any case, must be exactly one keyword: "stop
please" is a reply, not an opt-out.
"""

from __future__ import annotations

from enum import StrEnum


class Intent(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    REPLY = "reply"


STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

_OPT_OUT_TYPES = {"STOP": Intent.STOP, "START": Intent.START, "HELP": Intent.HELP}


def intent(body: str, opt_out_type: str | None) -> Intent:
    """Classify one inbound message."""
    if opt_out_type and opt_out_type.strip().upper() in _OPT_OUT_TYPES:
        return _OPT_OUT_TYPES[opt_out_type.strip().upper()]
    word = body.strip().upper()
    if word in STOP_WORDS:
        return Intent.STOP
    if word in START_WORDS:
        return Intent.START
    if word in HELP_WORDS:
        return Intent.HELP
    return Intent.REPLY
