"""The clinic as its messages speak of it."""

from __future__ import annotations

from dataclasses import dataclass

from notifier.planning.schedule import QuietHours


@dataclass(frozen=True)
class Clinic:
    """What a message may say about the clinic, and the hours none may go out in."""

    name: str
    phone: str
    quiet_hours: QuietHours | None  # QUIET_HOURS: no plan window overrides them
