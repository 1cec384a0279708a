"""What every request handler shares: settings, the engine, plans, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import Engine

from notifier.consent.keywords import load_keywords
from notifier.delivery.whatsapp import Templates
from notifier.planning.clinic import Clinic
from notifier.planning.plan import Plan
from notifier.replies.inbox import Listening
from notifier.replies.triage import load_triage
from notifier.replies.urgent import Alerting, load_alert_texts
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
    listening: Listening  # what the inbox needs: keywords, triage, alerting
    clock: Clock

    @property
    def clinic(self) -> Clinic:
        return self.settings.clinic


def listening(settings: Settings, plans: dict[str, Plan]) -> Listening:
    """The inbox's rules, each file checked against the plans (`PlanError` if not)."""
    texts = load_alert_texts(plans, settings.alerts_file)
    return Listening(
        keywords=load_keywords(settings.keywords_file, plans),
        triage=load_triage(plans, settings.triage_file),
        clinic=settings.clinic,
        alerting=Alerting.from_settings(settings, texts),
        plans=plans,
    )


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions["aftercare"]
    return found
