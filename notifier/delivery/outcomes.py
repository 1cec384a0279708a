"""What becomes of a claimed message, and the tally a dispatch pass keeps of it.

`Outcomes` sets a message's next status: sent, failed, retried later, moved to
the next send window, expired, or re-routed from WhatsApp to SMS. A final status
of a yearly step schedules the step's next anniversary.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from notifier.backoff import retry_delay
from notifier.delivery import whatsapp
from notifier.delivery.sender import SendError
from notifier.events import record
from notifier.planning.clinic import Clinic
from notifier.planning.outbox import rerender, schedule_next_yearly
from notifier.planning.plan import Plan
from notifier.planning.schedule import retime
from notifier.privacy import mask_phone
from notifier.settings import Settings
from notifier.store.models import (
    PENDING,
    WENT_OUT,
    Message,
    MessageKind,
    Patient,
    Reply,
    Status,
    Treatment,
    TreatmentStatus,
)

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did, message by message outcome."""

    expired: int = 0
    claimed: int = 0
    sent: int = 0
    adopted: int = 0  # an ambiguous send that Twilio turned out to have accepted
    failed: int = 0
    retrying: int = 0
    deferred: int = 0  # the send window had closed: moved to the next one
    held: int = 0
    cancelled: int = 0
    unresolved: int = 0  # ambiguous, to be reconciled when its lease runs out
    rate_limited: int = 0  # of the retries, those Twilio refused with 429 / 20429
    redacted: int = 0  # an erased patient's messages Twilio has now forgotten
    throttled: bool = False  # no claims this pass: Twilio asked us to slow down
    more: bool = False  # the claim was full: more may be due already

    def absorb(self, other: PassReport) -> None:
        """Add a later pass's counts to these; the flags become the later pass's, so a
        sum of passes says how the last one ended."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, theirs if isinstance(mine, bool) else mine + theirs)

    def summary(self) -> str:
        values = [(f.name, getattr(self, f.name)) for f in fields(self)]
        parts = [name if value is True else f"{name} {value}" for name, value in values if value]
        return ", ".join(parts) if parts else "nothing due"


@dataclass(frozen=True)
class Claimed:
    message: Message
    patient: Patient
    treatment: Treatment


class Outcomes:
    """Settles claimed messages; each method counts what it did in the pass's report."""

    def __init__(
        self, plans: dict[str, Plan], settings: Settings, clinic: Clinic, rng: random.Random
    ) -> None:
        self.plans = plans
        self.settings = settings
        self.clinic = clinic
        self.rng = rng
        self.retry_base = timedelta(seconds=settings.retry_base_seconds)

    def settle_unwanted(
        self, session: Session, item: Claimed, now: datetime, report: PassReport
    ) -> bool:
        """A message nobody may be sent any more: its treatment was cancelled or its
        patient erased (cancelled), or the patient opted out or withdrew consent (held).
        True if it was settled so. Read on the rows as they are now, this is also what
        keeps a send's outcome from reviving a message erased while it was in flight."""
        patient = item.patient
        if item.message.any_hour:
            return self._settle_unwanted_alarm(session, item, now, report)
        if item.treatment.status != TreatmentStatus.ACTIVE or patient.phone is None:
            self.finish(session, item, Status.CANCELLED, now)
            report.cancelled += 1
        elif not patient.reachable:
            self.finish(session, item, Status.HELD, now)
            report.held += 1
        else:
            return False
        return True

    def _settle_unwanted_alarm(
        self, session: Session, item: Claimed, now: datetime, report: PassReport
    ) -> bool:
        """An acknowledgement or alert about an urgent reply (`notifier.replies.urgent`):
        an alert is cancelled once the reply is handled; both once it is erased, and an
        acknowledgement once the patient opted out. The treatment does not matter."""
        message, patient = item.message, item.patient
        reply = session.get(Reply, message.reply_id) if message.reply_id is not None else None
        if reply is None or reply.body is None or patient.phone is None:
            wanted = False
        elif message.kind == MessageKind.ALERT:
            wanted = not reply.handled
        else:
            wanted = not patient.opted_out
        if wanted:
            return False
        self.finish(session, item, Status.CANCELLED, now)
        report.cancelled += 1
        return True

    def defer_to_window(
        self, session: Session, item: Claimed, now: datetime, report: PassReport
    ) -> bool:
        """A message picked up outside its window, or inside the quiet hours (stored before
        QUIET_HOURS was set, say), waits for the next moment it may go (or expires); so
        does a repeated alert whose previous round went out too recently."""
        message = item.message
        tz = ZoneInfo(item.patient.timezone)
        earliest = self._repeat_due(session, message, now) if message.any_hour else now
        when = retime(message, earliest, self.settings.quiet_hours, tz)
        if when.at == now and not when.expired:
            return False
        if when.expired:
            self.finish(session, item, Status.EXPIRED, now)
            report.expired += 1
        else:
            message.status, message.send_at, message.updated_at = Status.SCHEDULED, when.at, now
            message.attempts -= 1  # waiting for the window is not a failed attempt
            report.deferred += 1
        return True

    def _repeat_due(self, session: Session, message: Message, now: datetime) -> datetime:
        """A repeated alert goes ALERT_REPEAT_MINUTES after the previous round to the same
        number went out, not before: a worker back after an hour sends one alert, not all
        three rounds at once. A previous round that failed or never went does not wait."""
        if message.kind != MessageKind.ALERT or message.occurrence == 0:
            return now
        previous = session.exec(
            select(Message).where(
                Message.reply_id == message.reply_id,
                Message.recipient == message.recipient,
                Message.kind == MessageKind.ALERT,
                Message.occurrence == message.occurrence - 1,
            )
        ).first()
        spacing = timedelta(minutes=self.settings.alert_repeat_minutes)
        if previous is None:
            return now
        if previous.status in (*PENDING, Status.SENDING):
            return now + spacing
        if previous.status in WENT_OUT and previous.claimed_at is not None:
            return max(now, previous.claimed_at + spacing)
        return now

    def fall_back(
        self, session: Session, item: Claimed, error: SendError, now: datetime, report: PassReport
    ) -> bool:
        """A WhatsApp failure that SMS can get around: reschedule the message as SMS."""
        message = item.message
        if (
            message.channel != "whatsapp"
            or error.code not in whatsapp.UNDELIVERABLE_ON_WHATSAPP
            or not self.settings.whatsapp_sms_fallback
        ):
            return False
        if self.settle_unwanted(session, item, now, report):
            return True
        whatsapp.fall_back_to_sms(
            message,
            f"WhatsApp error {error.code}: {error}",
            ZoneInfo(item.patient.timezone),
            now,
            self.settings.quiet_hours,
        )
        message.lease_until = None
        report.retrying += 1
        return True

    def backoff(self, attempts: int) -> timedelta:
        return retry_delay(attempts, self.rng, self.retry_base)

    def fail(
        self, session: Session, item: Claimed, error: SendError, now: datetime, report: PassReport
    ) -> None:
        item.message.error_code, item.message.error_message = error.code, str(error)[:255]
        log.info(
            "message %s to %s failed: %s", item.message.id, mask_phone(item.patient.phone), error
        )
        self.finish(session, item, Status.FAILED, now)
        report.failed += 1

    def retry(
        self, session: Session, item: Claimed, error: SendError, now: datetime, report: PassReport
    ) -> None:
        message = item.message
        if message.attempts >= self.settings.max_attempts:
            self.fail(session, item, error, now, report)
            return
        if self.settle_unwanted(session, item, now, report):
            return
        self._follow_patient(item)
        when = retime(
            message,
            now + self.backoff(message.attempts),
            self.settings.quiet_hours,
            ZoneInfo(item.patient.timezone),
        )
        if when.expired:
            self.finish(session, item, Status.EXPIRED, now)
            report.expired += 1
            return
        message.status, message.send_at, message.updated_at = Status.SCHEDULED, when.at, now
        message.error_code, message.error_message = error.code, str(error)[:255]
        report.retrying += 1

    def finish(self, session: Session, item: Claimed, status: Status, now: datetime) -> None:
        """Set a final status; a yearly step then gets its next anniversary scheduled."""
        message = item.message
        message.status, message.updated_at, message.lease_until = status, now, None
        session.add(message)
        record.message_status_changed(session, message, item.patient, item.treatment, now)
        if status in (Status.QUEUED, Status.FAILED, Status.EXPIRED):
            self._schedule_following(session, item, now)

    def _follow_patient(self, item: Claimed) -> None:
        """A message going back to wait is rendered again if its patient changed (a
        `patient.updated` while its request was in flight): it must not go out later
        in the old language, name or channel. Otherwise its text stays frozen."""
        message, plan = item.message, self.plans.get(item.treatment.kind)
        changed = message.claimed_at is None or item.patient.updated_at >= message.claimed_at
        if plan is not None and changed and not message.any_hour:
            rerender(plan, message, item.patient, self.clinic)

    def is_yearly(self, item: Claimed) -> bool:
        if item.message.any_hour:
            return False
        plan = self.plans.get(item.treatment.kind)
        step = plan.step(item.message.step) if plan else None
        return step is not None and step.yearly

    def _schedule_following(self, session: Session, item: Claimed, now: datetime) -> None:
        plan = self.plans.get(item.treatment.kind)
        if plan is None or not self.is_yearly(item):
            return
        if item.treatment.status != TreatmentStatus.ACTIVE or item.patient.phone is None:
            return  # cancelled, or the patient was erased while the message was in flight
        exists = session.exec(
            select(Message.id).where(
                Message.treatment_id == item.treatment.id,
                Message.step == item.message.step,
                col(Message.occurrence) > item.message.occurrence,
            )
        ).first()
        if exists is None:
            schedule_next_yearly(
                session, plan, item.message, item.patient, item.treatment, self.clinic, now
            )
