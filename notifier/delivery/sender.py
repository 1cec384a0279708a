"""The seam between the dispatcher and whatever carries a message to a phone.

The dispatcher only ever sees `Outgoing`, `Accepted` and the four error kinds
below; the Twilio module converts Twilio's own errors into these at its boundary,
so retry and opt-out decisions never look at raw Twilio codes.
"""

from __future__ import annotations

import secrets
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TextIO, TypeVar

from notifier.privacy import mask_phone
from notifier.store.models import Channel

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Outgoing:
    """One message ready to leave: the recipient in E.164, never prefixed."""

    to: str
    channel: Channel
    body: str
    status_callback: str | None = None
    # An approved WhatsApp template instead of the body (outside the 24-hour window).
    content_sid: str | None = None
    content_variables: str | None = None  # JSON, as Twilio's ContentVariables


@dataclass(frozen=True)
class Accepted:
    """The carrier took the message; `sid` identifies it in later callbacks."""

    sid: str
    status: str = "queued"


class SendError(Exception):
    """A message did not go out. `code` is the carrier's error code, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PermanentFailure(SendError):
    """Sending this message again will fail again (bad number, landline, ...)."""


class RecipientOptedOut(PermanentFailure):
    """The recipient has told the carrier to stop (Twilio 21610)."""


class RetryLater(SendError):
    """Nothing was sent; try again after a pause (rate limit, connection refused)."""


class RateLimited(RetryLater):
    """Too many requests (Twilio 429 / 20429): this one and the whole worker slow down."""


class Ambiguous(SendError):
    """The carrier may or may not have sent it (5xx, read timeout): reconcile first."""


@dataclass(frozen=True)
class Lookup:
    """What to look for in the carrier's log: messages to `to` on `channel` since `since`
    with this body (any body when None: a template's text is Twilio's, not ours)."""

    to: str
    channel: Channel
    body: str | None
    since: datetime


@dataclass(frozen=True)
class Redact:
    """A message whose text the carrier is to forget (an erased patient's), and for a
    reply the photos it carried."""

    sid: str
    inbound: bool = False


class Sender(Protocol):
    """Anything that can send a batch of messages and look up what it already sent."""

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Accepted | Exception]:
        """Send every message (concurrently, where the sender can) and return each one's
        outcome in order: `Accepted`, a `SendError` kind, or any other exception (a
        bug, treated as ambiguous). Never raises for one message's failure."""
        ...

    def find_batch(self, lookups: Sequence[Lookup]) -> list[list[str] | Exception]:
        """For each lookup (concurrently, where the sender can), the SIDs of the outbound
        messages that match it, newest first, or the `SendError` that stopped the look-up
        (which says nothing about whether anything was sent). Never raises for one."""
        ...

    def redact_batch(self, redactions: Sequence[Redact]) -> list[Exception | None]:
        """Have the carrier forget each message's body (and a reply's photos); None for
        each one done (or already gone), else the `SendError` to retry it after."""
        ...

    def close(self) -> None:
        """Release connections and threads; the sender is not used again."""
        ...


class OneByOne(ABC):
    """A sender that sends and looks up one message at a time; a batch goes in order."""

    @abstractmethod
    def send(self, message: Outgoing) -> Accepted: ...

    @abstractmethod
    def find_sent(self, lookup: Lookup) -> list[str]: ...

    @abstractmethod
    def redact(self, redaction: Redact) -> None: ...

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Accepted | Exception]:
        return _each(self.send, messages)

    def find_batch(self, lookups: Sequence[Lookup]) -> list[list[str] | Exception]:
        return _each(self.find_sent, lookups)

    def redact_batch(self, redactions: Sequence[Redact]) -> list[Exception | None]:
        return _each(self.redact, redactions)


def _each(call: Callable[[Item], Result], items: Sequence[Item]) -> list[Result | Exception]:
    """`call` on every item in turn; an item's exception is its outcome."""
    outcomes: list[Result | Exception] = []
    for item in items:
        try:
            outcomes.append(call(item))
        except Exception as error:
            outcomes.append(error)
    return outcomes


class ConsoleSender(OneByOne):
    """Prints each message instead of sending it: the default without Twilio credentials.

    The body is printed (showing it is the point), the phone number is masked.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out

    def send(self, message: Outgoing) -> Accepted:
        sid = "CONSOLE" + secrets.token_hex(13)
        out = self._out or sys.stdout
        text = message.body
        if message.content_sid:
            text = f"template {message.content_sid} {message.content_variables}"
        print(
            f"[console sender] {message.channel} to {mask_phone(message.to)} ({sid}):\n  {text}",
            file=out,
            flush=True,
        )
        return Accepted(sid=sid)

    def find_sent(self, lookup: Lookup) -> list[str]:
        # The console keeps no history, and anything printed was printed once.
        return []

    def redact(self, redaction: Redact) -> None:
        """Nothing to forget: the console keeps nothing (erasure skips its SIDs)."""

    def close(self) -> None:
        """Nothing to release: the console keeps no connections."""
