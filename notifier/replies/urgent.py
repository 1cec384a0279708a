"""What an urgent reply sets off (SPEC §10): one acknowledgement for the patient, and
SMS alerts to every on-call number, repeated until someone marks the reply handled.

All of them are rows in the outbox, written in the transaction that stores the
reply, and sent by the dispatcher like any message: retried, never twice, visible
in the patient's timeline. They go at once, whatever the send windows and quiet
hours; the web process never calls Twilio itself.

One case per patient: while an urgent reply that raised alerts is not handled, the
patient's further urgent replies join its case (listed first for staff, no new
alerts). The patient is acknowledged at most once an hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select, update

from notifier.planning.clinic import Clinic
from notifier.planning.plan import (
    Plan,
    PlanError,
    languages_needed,
    parse_rules,
    read_rules,
    read_template,
)
from notifier.settings import Settings
from notifier.store.models import (
    PENDING,
    Channel,
    Message,
    MessageKind,
    Patient,
    Reply,
    Status,
    Treatment,
)

ALERT_ROUNDS = 3  # the first alert and at most two repeats (SPEC §10)
ACKNOWLEDGE_EVERY = timedelta(hours=1)
# Past these an acknowledgement ("a clinician will look at it shortly") or an alert
# would mislead: a worker down that long sends neither (staff still see the reply).
ACKNOWLEDGEMENT_EXPIRY = timedelta(hours=12)
ALERT_EXPIRY = timedelta(hours=24)
MAX_QUOTE = 300  # characters of the reply an alert quotes
ACKNOWLEDGEMENT_STEP = "urgent_acknowledgement"
ALERT_STEP = "oncall_alert"
# Midnight to midnight: these rows go at any hour (`Message.any_hour`), windows unread.
WHOLE_DAY = (0, 0)

ONCALL = "oncall"
_ACKNOWLEDGEMENT_FIELDS = frozenset(
    {"clinic_name", "clinic_phone", "emergency_number", "first_name"}
)
_ACKNOWLEDGEMENT_NEEDS = frozenset({"clinic_phone", "emergency_number"})
_ALERT_FIELDS = frozenset({"patient_id", "first_name", "reply", "signs", "link"})
_REPEAT_FIELDS = _ALERT_FIELDS | {"round", "rounds"}
_ALERT_NEEDS = frozenset({"patient_id", "reply"})


class AlertTextError(PlanError):
    """Problems in the alerts file, each naming the file."""


@dataclass(frozen=True)
class AlertTexts:
    """The validated alerts file: acknowledgements by language, the on-call texts."""

    acknowledgements: Mapping[str, str]
    alert: str
    repeat: str
    source: str


@dataclass(frozen=True)
class Alerting:
    """Who is alerted and what patients are told (ONCALL_PHONES and friends)."""

    oncall_phones: tuple[str, ...]
    repeat_every: timedelta
    emergency_number: str
    public_base_url: str | None
    texts: AlertTexts

    @classmethod
    def from_settings(cls, settings: Settings, texts: AlertTexts) -> Alerting:
        return cls(
            oncall_phones=settings.oncall_phones,
            repeat_every=timedelta(minutes=settings.alert_repeat_minutes),
            emergency_number=settings.emergency_number,
            public_base_url=settings.public_base_url,
            texts=texts,
        )


@dataclass(frozen=True)
class Alarm:
    """What one urgent reply set off."""

    acknowledged: bool  # an acknowledgement was queued for the patient
    alerts: int  # alert rows queued (every round for every on-call number)
    joined_case: bool  # an earlier urgent reply's case was still open: no new alerts


def raise_alarm(
    session: Session,
    reply: Reply,
    patient: Patient,
    now: datetime,
    alerting: Alerting,
    clinic: Clinic,
    plans: Mapping[str, Plan],
) -> Alarm:
    """Queue the acknowledgement and the alerts an urgent `reply` calls for."""
    treatment = _latest_treatment(session, patient)
    if treatment is None or patient.phone is None:
        return Alarm(acknowledged=False, alerts=0, joined_case=False)
    acknowledged = _acknowledge(session, reply, patient, treatment, now, alerting, clinic, plans)
    if _open_case(session, patient, reply):
        return Alarm(acknowledged, alerts=0, joined_case=True)
    alerts = 0
    for round_ in range(1, ALERT_ROUNDS + 1):
        send_at = now + alerting.repeat_every * (round_ - 1)
        body = _alert_text(reply, patient, round_, alerting)
        for phone in alerting.oncall_phones:
            session.add(
                _row(
                    reply,
                    patient,
                    treatment,
                    MessageKind.ALERT,
                    ALERT_STEP,
                    round_ - 1,
                    Channel.SMS,
                    "en",
                    body,
                    send_at,
                    send_at + ALERT_EXPIRY,
                    now,
                    recipient=phone,
                )
            )
            alerts += 1
    return Alarm(acknowledged, alerts, joined_case=False)


def close_case(session: Session, reply: Reply, now: datetime) -> int:
    """The reply was handled: its alerts still waiting are cancelled. Returns how many."""
    result = session.exec(
        update(Message)
        .where(
            col(Message.reply_id) == reply.id,
            col(Message.kind) == MessageKind.ALERT,
            col(Message.status).in_(PENDING),
        )
        .values(status=Status.CANCELLED, updated_at=now)
    )
    return int(result.rowcount)


def _acknowledge(
    session: Session,
    reply: Reply,
    patient: Patient,
    treatment: Treatment,
    now: datetime,
    alerting: Alerting,
    clinic: Clinic,
    plans: Mapping[str, Plan],
) -> bool:
    if patient.opted_out:
        return False  # they said STOP: Twilio would refuse it (21610), and so do we
    recent = session.exec(
        select(Message.id).where(
            Message.patient_id == patient.id,
            Message.kind == MessageKind.ACKNOWLEDGEMENT,
            col(Message.created_at) > now - ACKNOWLEDGE_EVERY,
        )
    ).first()
    if recent is not None:
        return False
    texts = alerting.texts.acknowledgements
    plan = plans.get(treatment.kind)
    language = patient.language
    if language not in texts:
        language = plan.language_for(language) if plan else next(iter(texts))
    fields = {
        "clinic_name": clinic.name,
        "clinic_phone": clinic.phone,
        "emergency_number": alerting.emergency_number,
        "first_name": patient.first_name or "",
    }
    if plan is not None:
        fields = plan.fill(language, fields)
    body = texts[language].format_map(fields)
    # On the channel the patient wrote on: on WhatsApp, their message opened the 24-hour
    # window for free text (past it, the dispatcher falls back to SMS).
    session.add(
        _row(
            reply,
            patient,
            treatment,
            MessageKind.ACKNOWLEDGEMENT,
            ACKNOWLEDGEMENT_STEP,
            0,
            Channel(reply.channel),
            language,
            body,
            now,
            now + ACKNOWLEDGEMENT_EXPIRY,
            now,
            recipient=None,
        )
    )
    return True


def _open_case(session: Session, patient: Patient, reply: Reply) -> bool:
    """An earlier urgent reply of the patient raised alerts and is not handled yet."""
    found = session.exec(
        select(Message.id)
        .join(Reply, col(Reply.id) == Message.reply_id)
        .where(
            Message.patient_id == patient.id,
            Message.kind == MessageKind.ALERT,
            col(Reply.handled).is_(False),
            Reply.id != reply.id,
        )
    ).first()
    return found is not None


def _latest_treatment(session: Session, patient: Patient) -> Treatment | None:
    return session.exec(
        select(Treatment)
        .where(Treatment.patient_id == patient.id)
        .order_by(col(Treatment.performed_at).desc(), col(Treatment.id).desc())
    ).first()


def _alert_text(reply: Reply, patient: Patient, round_: int, alerting: Alerting) -> str:
    quote = " ".join((reply.body or "").split())
    if len(quote) > MAX_QUOTE:
        quote = quote[: MAX_QUOTE - 1] + "…"
    base = alerting.public_base_url
    fields = {
        "patient_id": patient.external_id,
        "first_name": patient.first_name or "-",
        "reply": quote,
        "signs": (reply.signs or "unclear").replace(",", ", "),
        "link": f" {base}/staff/patients/{patient.external_id}" if base else "",
        "round": str(round_),
        "rounds": str(ALERT_ROUNDS),
    }
    template = alerting.texts.alert if round_ == 1 else alerting.texts.repeat
    return template.format_map(fields)


def _row(
    reply: Reply,
    patient: Patient,
    treatment: Treatment,
    kind: MessageKind,
    step: str,
    occurrence: int,
    channel: Channel,
    language: str,
    body: str,
    send_at: datetime,
    expires_at: datetime,
    now: datetime,
    *,
    recipient: str | None,
) -> Message:
    assert patient.id is not None
    assert treatment.id is not None
    return Message(
        patient_id=patient.id,
        treatment_id=treatment.id,
        kind=kind,
        reply_id=reply.id,
        recipient=recipient,
        step=step,
        occurrence=occurrence,
        channel=channel,
        language=language,
        body=body,
        send_at=send_at,
        expires_at=expires_at,
        window_start=WHOLE_DAY[0],
        window_end=WHOLE_DAY[1],
        created_at=now,
        updated_at=now,
    )


# -- loading ------------------------------------------------------------------------------


def load_alert_texts(plans: Mapping[str, Plan], path: Path) -> AlertTexts:
    """The alerts file, checked against the plans' languages; `AlertTextError` lists
    every problem, each naming the file."""
    text = read_rules(path, "alerts", AlertTextError)
    return parse_alert_texts(text, str(path), languages_needed(plans))


def parse_alert_texts(text: str, source: str, needed: Mapping[str, str]) -> AlertTexts:
    data, problems = parse_rules(text, source, needed, AlertTextError)
    problems = [f"{source}: {p}" for p in problems]

    def read(where: str, raw: object, allowed: frozenset[str], needs: frozenset[str]) -> str:
        found: list[str] = []
        text, used = read_template(where, raw, allowed, found)
        if text:
            found += [f"{where} must give {{{absent}}}" for absent in sorted(needs - used)]
        problems.extend(f"{source}: {problem}" for problem in found)
        return text

    oncall: Any = data.get(ONCALL)
    if not isinstance(oncall, dict):
        problems.append(f"{source}: no [{ONCALL}] table with the on-call alert texts")
        oncall = {}
    for key in sorted(set(oncall) - {"alert", "repeat"}):
        problems.append(f"{source}: [{ONCALL}] unknown field {key!r}")
    alert = read(f"[{ONCALL}] alert", oncall.get("alert"), _ALERT_FIELDS, _ALERT_NEEDS)
    repeat = read(
        f"[{ONCALL}] repeat", oncall.get("repeat"), _REPEAT_FIELDS, _ALERT_NEEDS | {"round"}
    )
    acknowledgements: dict[str, str] = {}
    for lang, table in data.items():
        if lang == ONCALL:
            continue
        if not isinstance(table, dict):
            problems.append(f"{source}: [{lang}] must be a table")
            continue
        for key in sorted(set(table) - {"acknowledgement"}):
            problems.append(f"{source}: [{lang}] unknown field {key!r}")
        acknowledgements[lang] = read(
            f"[{lang}] acknowledgement",
            table.get("acknowledgement"),
            _ACKNOWLEDGEMENT_FIELDS,
            _ACKNOWLEDGEMENT_NEEDS,
        )
    if not acknowledgements and not problems:
        problems.append(f"{source}: no language table with an acknowledgement")
    if problems:
        raise AlertTextError(problems)
    return AlertTexts(acknowledgements, alert, repeat, source)
