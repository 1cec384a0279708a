"""What every request handler shares: settings, the engine, plans, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import Engine

from notifier.consent.keywords import Keywords
from notifier.delivery.whatsapp import Templates
from notifier.planning.clinic import Clinic
from notifier.planning.plan import Plan
from notifier.settings import Settings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    plans: dict[str, Plan]
    templates: Templates
    keywords: Keywords
    clock: Clock

    @property
    def clinic(self) -> Clinic:
        return self.settings.clinic


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions["aftercare"]
    return found
