"""One patient as staff read them: messages and replies in the order they happened,
how each message's status got where it is, and the consent log; and finding a
patient by booking id or the last digits of their phone."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from notifier.store.models import ConsentChange, Message, Patient, Reply, StatusCallback

MIN_DIGITS = 4  # fewer matches too many numbers to be a search
MAX_RESULTS = 50
_SEPARATORS = re.compile(r"[\s+().-]")


class SearchError(ValueError):
    """A search that cannot find anyone as given: the message says what to type."""


@dataclass(frozen=True)
class Sent:
    """A message with the statuses Twilio reported for it, in the order they came."""

    message: Message
    history: list[str]

    @property
    def at(self) -> datetime:
        return self.message.send_at


@dataclass(frozen=True)
class Received:
    reply: Reply

    @property
    def at(self) -> datetime:
        return self.reply.received_at


@dataclass(frozen=True)
class Timeline:
    patient: Patient
    events: list[Sent | Received]  # oldest first
    consent: list[ConsentChange]


def find(session: Session, external_id: str) -> Patient | None:
    return session.exec(select(Patient).where(Patient.external_id == external_id)).first()


def search(session: Session, query: str) -> list[Patient]:
    """A booking id (exactly), else the last digits of a phone number (at least four)."""
    query = query.strip()
    if not query:
        return []
    if len(query) <= 128 and (patient := find(session, query)) is not None:
        return [patient]
    digits = _SEPARATORS.sub("", query)
    if not digits.isascii() or not digits.isdigit():
        raise SearchError(
            f"no patient has the booking id {query[:40]!r}; to search by phone, give only digits"
        )
    if len(digits) < MIN_DIGITS:
        raise SearchError(f"give at least {MIN_DIGITS} digits of the phone number")
    return list(
        session.exec(
            select(Patient)
            .where(col(Patient.phone).endswith(digits[-15:], autoescape=True))
            .order_by(col(Patient.external_id))
            .limit(MAX_RESULTS)
        ).all()
    )


def timeline(session: Session, patient: Patient) -> Timeline:
    messages = session.exec(
        select(Message)
        .where(Message.patient_id == patient.id)
        .order_by(col(Message.send_at), col(Message.id))
    ).all()
    history = _histories(session, [m.id for m in messages if m.id is not None])
    replies = session.exec(
        select(Reply).where(Reply.patient_id == patient.id).order_by(col(Reply.received_at))
    ).all()
    events: list[Sent | Received] = [Sent(m, history.get(m.id or 0, [])) for m in messages]
    events += [Received(r) for r in replies]
    events.sort(key=lambda event: event.at)
    consent = session.exec(
        select(ConsentChange)
        .where(ConsentChange.patient_id == patient.id)
        .order_by(col(ConsentChange.at), col(ConsentChange.id))
    ).all()
    return Timeline(patient, events, list(consent))


def _histories(session: Session, message_ids: list[int]) -> dict[int, list[str]]:
    """Each message's reported statuses, oldest first, repeats left out."""
    if not message_ids:
        return {}
    rows = session.exec(
        select(StatusCallback.message_id, StatusCallback.status)
        .where(col(StatusCallback.message_id).in_(message_ids))
        .order_by(col(StatusCallback.received_at), col(StatusCallback.id))
    ).all()
    found: defaultdict[int, list[str]] = defaultdict(list)
    for message_id, status in rows:
        if message_id is not None and status not in found[message_id][-1:]:
            found[message_id].append(status)
    return dict(found)
