"""Which way a message goes, decided from the message, the patient and `now` alone:
SMS; WhatsApp free text inside the 24-hour window; an approved template outside it;
or, when WhatsApp cannot carry it, a reason to send it by SMS instead."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from notifier.delivery import whatsapp
from notifier.delivery.sender import Outgoing
from notifier.delivery.whatsapp import Templates
from notifier.planning.clinic import Clinic
from notifier.planning.outbox import placeholders
from notifier.planning.plan import Plan
from notifier.settings import TwilioSettings
from notifier.store.models import Channel, Message, Patient


@dataclass(frozen=True)
class Route:
    outgoing: Outgoing  # as it goes, or by SMS when `instead_of_whatsapp`
    content_sid: str | None = None  # the template used
    instead_of_whatsapp: str | None = None  # why WhatsApp cannot carry it


@dataclass(frozen=True)
class Router:
    """What routing needs to know of the deployment."""

    plans: dict[str, Plan]
    templates: Templates
    twilio: TwilioSettings | None
    clinic: Clinic
    status_callback: str | None

    def route(self, message: Message, patient: Patient, kind: str, now: datetime) -> Route:
        assert patient.phone is not None
        plain = Outgoing(
            to=message.recipient or patient.phone,  # an alert goes to its on-call number
            channel=Channel.SMS,
            body=message.body or "",
            status_callback=self.status_callback,
        )
        if message.channel != Channel.WHATSAPP:
            return Route(plain)
        if self.twilio is not None and self.twilio.whatsapp_from is None:
            return Route(
                plain, instead_of_whatsapp="no WhatsApp sender configured (TWILIO_WHATSAPP_FROM)"
            )
        if whatsapp.in_window(patient.whatsapp_inbound_at, now):
            return Route(replace(plain, channel=Channel.WHATSAPP))
        template = self.templates.find(kind, message.step, message.language)
        plan = self.plans.get(kind)
        if template is None or plan is None:
            return Route(
                plain,
                instead_of_whatsapp="no approved WhatsApp template for this "
                "step outside the 24-hour window",
            )
        values = plan.fill(message.language, placeholders(patient, self.clinic))
        return Route(
            replace(
                plain,
                channel=Channel.WHATSAPP,
                content_sid=template.content_sid,
                content_variables=template.content_variables(values),
            ),
            content_sid=template.content_sid,
        )
