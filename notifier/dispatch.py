"""One dispatch pass: expire, recover, claim, re-check, send, record.

Database work happens in short transactions on the pass's own thread; only the
sender calls run in the pool, so a slow Twilio never holds a row lock or a
SQLite write lock. A claimed row carries a lease: if its worker dies, or Twilio's
answer was ambiguous, the row is reconciled against Twilio's message list once
the lease runs out, and re-sent only if Twilio has no such message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, bindparam
from sqlmodel import Session, col, func, select, update

from notifier import consent, delivery, whatsapp
from notifier.db import transaction
from notifier.models import Message, Patient, Status, Treatment, TreatmentStatus
from notifier.outbox import Clinic, schedule_next_yearly
from notifier.plan import Plan
from notifier.privacy import mask_phone
from notifier.routing import Router
from notifier.schedule import into_window
from notifier.sending import (
    Accepted,
    Ambiguous,
    Outgoing,
    PermanentFailure,
    RateLimited,
    RecipientOptedOut,
    RetryLater,
    Sender,
    SendError,
)
from notifier.settings import Settings
from notifier.whatsapp import Templates

log = logging.getLogger(__name__)

RETRY_CAP = timedelta(hours=1)
# A rate-limited worker halves its next claim and pauses 0.5-1 s, doubling while the
# 429s go on, at most THROTTLE_CAP; clean batches grow the claim back step by step.
THROTTLE_BASE = timedelta(seconds=1)
THROTTLE_CAP = timedelta(seconds=10)
# Twilio's clock and ours differ a little; look a bit before the claim when reconciling.
RECONCILE_SKEW = timedelta(minutes=2)


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
    throttled: bool = False  # no claims this pass: Twilio asked us to slow down
    more: bool = False  # the claim was full: more may be due already

    def summary(self) -> str:
        values = [(f.name, getattr(self, f.name)) for f in fields(self)]
        parts = [name if value is True else f"{name} {value}" for name, value in values if value]
        return ", ".join(parts) if parts else "nothing due"


def retry_delay(
    attempts: int,
    rng: random.Random,
    base: timedelta = timedelta(seconds=30),
    cap: timedelta = RETRY_CAP,
) -> timedelta:
    """Exponential backoff with equal jitter: 30 s, 1 min, 2 min, ... capped at 1 h."""
    delay: timedelta = min(cap, base * 2 ** max(attempts - 1, 0))
    half: timedelta = delay / 2
    return half + half * rng.random()


@dataclass(frozen=True)
class _Claimed:
    message: Message
    patient: Patient
    treatment: Treatment


class Dispatcher:
    """Sends due messages; `run_pass(now)` is one pass, safe to call repeatedly."""

    def __init__(
        self,
        engine: Engine,
        sender: Sender,
        plans: dict[str, Plan],
        settings: Settings,
        rng: random.Random | None = None,
        templates: Templates | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.plans = plans
        self.settings = settings
        self.clinic = Clinic(settings.clinic_name, settings.clinic_phone)
        callback = f"{settings.public_base_url}/webhooks/twilio/status"
        self.router = Router(
            plans,
            templates or Templates({}),
            settings.twilio,
            self.clinic,
            callback if settings.public_base_url else None,
        )
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.retry_base = timedelta(seconds=settings.retry_base_seconds)
        # After Twilio said "too many requests", no new claims until then.
        self.throttled_until: datetime | None = None
        self.throttle_streak = 0
        self.max_claim = settings.dispatch_batch_size
        if engine.dialect.name == "sqlite":
            # The send transaction holds SQLite's write lock: one round of parallel sends
            # per batch keeps it to about one Twilio timeout, well inside busy_timeout.
            self.max_claim = min(self.max_claim, settings.dispatch_concurrency)
        self.claim_limit = self.max_claim
        self.pool = ThreadPoolExecutor(settings.dispatch_concurrency, thread_name_prefix="send")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def run_pass(self, now: datetime) -> PassReport:
        report = PassReport()
        self._expire(now, report)
        self._recover(now, report)
        if self.throttled_until is not None and now < self.throttled_until:
            report.throttled = True
            return report
        ids = self._claim(now)
        report.claimed, report.more = len(ids), len(ids) >= self.claim_limit
        if ids:
            refused = self._send(ids, now, report)
            self._opt_out(refused, now)
            self._throttle(report, now)
            report.more = report.more and self.throttled_until is None
        with transaction(self.engine) as session:
            delivery.match_early_callbacks(
                session, now, sms_fallback=self.settings.whatsapp_sms_fallback
            )
        return report

    def next_pass_at(self) -> datetime | None:
        """When a pass next has something to do: the next message due, or the end of a
        rate-limit pause if that comes later; None if nothing is scheduled."""
        with transaction(self.engine) as session:
            due = session.exec(
                select(func.min(Message.send_at)).where(col(Message.status) == Status.SCHEDULED)
            ).one()
        if due is None or self.throttled_until is None:
            return due
        return max(due, self.throttled_until)

    # -- the steps of a pass -------------------------------------------------

    def _expire(self, now: datetime, report: PassReport) -> None:
        """Pending messages past their expiry are expired, never sent late.

        Ids first, oldest expiry first, a batch at a time (ix_message_pending_expiry).
        Joining whole rows at once let PostgreSQL, expecting thousands of expired
        pending rows when most of the table is history, hash-join every patient and
        treatment on every pass."""
        pending = [Status.SCHEDULED, Status.HELD]
        while True:
            with transaction(self.engine) as session:
                ids = session.exec(
                    select(Message.id)
                    .where(col(Message.status).in_(pending), col(Message.expires_at) <= now)
                    .order_by(col(Message.expires_at))
                    .limit(self.max_claim)
                ).all()
                if not ids:
                    return
                stale = self._load(
                    session, (col(Message.id).in_(ids), col(Message.status).in_(pending))
                )
                for item in stale:
                    self._finish(session, item, Status.EXPIRED, now)
                report.expired += len(stale)
            if len(ids) < self.max_claim:
                return

    def _recover(self, now: datetime, report: PassReport) -> None:
        """Rows whose lease ran out may or may not have been sent: ask Twilio first."""
        with transaction(self.engine) as session:
            stuck = self._load(
                session,
                (
                    col(Message.status) == Status.SENDING,
                    col(Message.lease_until) <= now,
                ),
                lock=True,
            )
            for item in stuck:  # take the row for ourselves before the slow look-up
                item.message.lease_until = now + self.lease
                session.add(item.message)
        for item in stuck:
            self._reconcile(item, now, report)

    def _reconcile(self, item: _Claimed, now: datetime, report: PassReport) -> None:
        message, patient = item.message, item.patient
        since = (message.claimed_at or message.created_at) - RECONCILE_SKEW
        try:
            sid = (
                self.sender.find_sent(
                    patient.phone,
                    message.channel,  # type: ignore[arg-type]
                    None if message.content_sid else message.body,
                    since,
                )
                if patient.phone
                else None
            )
        except SendError as error:
            log.warning("message %s: cannot reconcile yet (%s)", message.id, error)
            return
        with transaction(self.engine) as session:
            session.add(message)
            if sid is not None:
                message.sid = sid
                self._finish(session, item, Status.QUEUED, now)
                report.adopted += 1
            elif message.attempts >= self.settings.max_attempts:
                self._finish(session, item, Status.FAILED, now)
                report.failed += 1
            else:
                message.status, message.send_at, message.updated_at = Status.SCHEDULED, now, now
                report.retrying += 1

    def _claim(self, now: datetime) -> list[int]:
        """Take due rows under a lease: their ids, then one UPDATE of them all.

        On PostgreSQL the ids are read FOR UPDATE SKIP LOCKED, so workers never
        take the same row; the rows themselves are loaded when the batch is sent."""
        with transaction(self.engine) as session:
            ids = list(
                session.exec(
                    select(Message.id)
                    .where(
                        col(Message.status) == Status.SCHEDULED,
                        col(Message.send_at) <= now,
                    )
                    .order_by(col(Message.send_at))
                    .limit(self.claim_limit)
                    .with_for_update(skip_locked=True)
                ).all()
            )
            if ids:
                session.exec(
                    update(Message)
                    .where(col(Message.id).in_(ids))
                    .values(
                        status=Status.SENDING,
                        claimed_at=now,
                        lease_until=now + self.lease,
                        updated_at=now,
                        attempts=col(Message.attempts) + 1,
                    )
                )
        return [i for i in ids if i is not None]

    def _send(self, ids: Sequence[int], now: datetime, report: PassReport) -> list[_Claimed]:
        """Send a claimed batch; returns the messages Twilio refused as opted out (21610).

        The whole batch runs in one transaction that first locks out opt-outs: on
        SQLite its first statement takes the database's write lock, on PostgreSQL the
        patients are read FOR SHARE. A STOP therefore cannot commit while these sends
        are in flight, and consent is re-read after any STOP that committed before:
        no message is sent after an opt-out is committed.
        """
        refused: list[_Claimed] = []
        queued: list[dict[str, object]] = []  # the common outcome, written in one statement
        with transaction(self.engine) as session:
            batch = self._lock_out_opt_outs(session, ids, now)
            ready = self._recheck(session, batch, now, report)
            futures: dict[Future[Accepted], _Claimed] = {
                self.pool.submit(self.sender.send, outgoing): item for item, outgoing in ready
            }
            for future in as_completed(futures):
                item = futures[future]
                outcome = self._record(session, item, future, now, report)
                if isinstance(outcome, Accepted):
                    queued.append({"message_id": item.message.id, "message_sid": outcome.sid})
                elif outcome:
                    refused.append(item)
            if queued:
                session.connection().execute(
                    update(Message)
                    .where(col(Message.id) == bindparam("message_id"))
                    .values(
                        sid=bindparam("message_sid"),
                        status=Status.QUEUED,
                        updated_at=now,
                        lease_until=None,
                    ),
                    queued,
                )
        return refused

    def _lock_out_opt_outs(
        self, session: Session, ids: Sequence[int], now: datetime
    ) -> Sequence[_Claimed]:
        """Take the locks described in `_send`; the batch, read under them."""
        session.exec(update(Message).where(col(Message.id).in_(ids)).values(updated_at=now))
        return self._load(
            session,
            (col(Message.id).in_(ids), col(Message.status) == Status.SENDING),
            share_patients=True,
        )

    def _recheck(
        self, session: Session, batch: Sequence[_Claimed], now: datetime, report: PassReport
    ) -> list[tuple[_Claimed, Outgoing]]:
        """Consent, treatment and window are checked again after the claim."""
        ready: list[tuple[_Claimed, Outgoing]] = []
        for item in batch:
            message, patient = item.message, item.patient
            session.add(message)
            if item.treatment.status != TreatmentStatus.ACTIVE or patient.phone is None:
                self._finish(session, item, Status.CANCELLED, now)
                report.cancelled += 1
            elif not patient.reachable:
                self._finish(session, item, Status.HELD, now)
                report.held += 1
            elif not self._defer_to_window(session, item, now, report):
                outgoing = self._route(session, item, now, report)
                if outgoing is not None:
                    ready.append((item, outgoing))
        return ready

    def _route(
        self, session: Session, item: _Claimed, now: datetime, report: PassReport
    ) -> Outgoing | None:
        """The request for this message (see `notifier.routing`); None if it cannot go."""
        message = item.message
        route = self.router.route(message, item.patient, item.treatment.kind, now)
        if message.content_sid != route.content_sid:
            message.content_sid = route.content_sid
        if route.instead_of_whatsapp is None:
            return route.outgoing
        if not self.settings.whatsapp_sms_fallback:
            message.error_message = route.instead_of_whatsapp
            self._finish(session, item, Status.FAILED, now)
            report.failed += 1
            return None
        message.channel, message.fallback_reason = "sms", route.instead_of_whatsapp
        return route.outgoing

    def _defer_to_window(
        self, session: Session, item: _Claimed, now: datetime, report: PassReport
    ) -> bool:
        """A message picked up after its window closed waits for the next one (or expires)."""
        message = item.message
        tz = ZoneInfo(item.patient.timezone)
        send_at = into_window(now, consent.message_window(message), tz)
        if send_at == now and now < message.expires_at:
            return False
        if send_at >= message.expires_at:
            self._finish(session, item, Status.EXPIRED, now)
            report.expired += 1
        else:
            message.status, message.send_at, message.updated_at = Status.SCHEDULED, send_at, now
            message.attempts -= 1  # waiting for the window is not a failed attempt
            report.deferred += 1
        return True

    def _record(
        self,
        session: Session,
        item: _Claimed,
        future: Future[Accepted],
        now: datetime,
        report: PassReport,
    ) -> bool | Accepted:
        """Turn the sender's answer into the message's next status; True for 21610.

        An accepted message that needs nothing more is handed back, for the caller
        to store with the rest of the batch's."""
        message = item.message
        try:
            accepted = future.result()
        except RecipientOptedOut as error:
            self._fail(session, item, error, now, report)
            return True
        except PermanentFailure as error:
            if not self._fall_back(item, error, now, report):
                self._fail(session, item, error, now, report)
        except RetryLater as error:
            report.rate_limited += isinstance(error, RateLimited)
            self._retry(session, item, error, now, report)
        except Exception as error:  # Ambiguous, or a sender bug: it may have gone out
            level = logging.WARNING if isinstance(error, Ambiguous) else logging.ERROR
            log.log(
                level,
                "message %s to %s: outcome unknown (%s); will reconcile",
                message.id,
                mask_phone(item.patient.phone),
                error,
                exc_info=not isinstance(error, SendError),
            )
            message.error_message = str(error)[:255]
            message.lease_until = now + self._backoff(message.attempts)
            report.unresolved += 1
        else:
            report.sent += 1
            if not self._is_yearly(item):
                return accepted
            message.sid = accepted.sid
            self._finish(session, item, Status.QUEUED, now)
        return False

    def _fall_back(
        self, item: _Claimed, error: SendError, now: datetime, report: PassReport
    ) -> bool:
        """A WhatsApp failure that SMS can get around: reschedule the message as SMS."""
        message = item.message
        if (
            message.channel != "whatsapp"
            or error.code not in whatsapp.UNDELIVERABLE_ON_WHATSAPP
            or not self.settings.whatsapp_sms_fallback
        ):
            return False
        whatsapp.fall_back_to_sms(
            message, f"WhatsApp error {error.code}: {error}", ZoneInfo(item.patient.timezone), now
        )
        message.lease_until = None
        report.retrying += 1
        return True

    def _throttle(self, report: PassReport, now: datetime) -> None:
        """Slow down when Twilio rate-limits (additive increase, multiplicative decrease):
        a rate-limited batch halves the next claim and pauses briefly; a clean one lets
        the claim grow back towards DISPATCH_BATCH_SIZE."""
        full = self.max_claim
        if report.rate_limited:
            self.throttle_streak += 1
            self.claim_limit = max(1, self.claim_limit // 2)
            pause = retry_delay(self.throttle_streak, self.rng, THROTTLE_BASE, THROTTLE_CAP)
            self.throttled_until = now + pause
            log.warning(
                "Twilio is rate-limiting: next claim of %d after %.1fs",
                self.claim_limit,
                pause.total_seconds(),
            )
        else:
            self.throttle_streak, self.throttled_until = 0, None
            self.claim_limit = min(full, self.claim_limit + max(1, full // 10))

    def _backoff(self, attempts: int) -> timedelta:
        return retry_delay(attempts, self.rng, self.retry_base)

    def _opt_out(self, refused: list[_Claimed], now: datetime) -> None:
        """Twilio says these patients opted out (21610): hold the rest of their messages.

        Done after the batch commits: updating a patient row inside the batch could
        deadlock with another worker holding the same row FOR SHARE."""
        if not refused:
            return
        with transaction(self.engine) as session:
            for item in refused:
                patient = session.get(Patient, item.patient.id)
                if patient is not None:
                    consent.opt_out(session, patient, consent.Source.TWILIO_21610, now)

    # -- outcomes ------------------------------------------------------------

    def _fail(
        self, session: Session, item: _Claimed, error: SendError, now: datetime, report: PassReport
    ) -> None:
        item.message.error_code, item.message.error_message = error.code, str(error)[:255]
        log.info(
            "message %s to %s failed: %s", item.message.id, mask_phone(item.patient.phone), error
        )
        self._finish(session, item, Status.FAILED, now)
        report.failed += 1

    def _retry(
        self, session: Session, item: _Claimed, error: SendError, now: datetime, report: PassReport
    ) -> None:
        message = item.message
        if message.attempts >= self.settings.max_attempts:
            self._fail(session, item, error, now, report)
            return
        send_at = into_window(
            now + self._backoff(message.attempts),
            consent.message_window(message),
            ZoneInfo(item.patient.timezone),
        )
        if send_at >= message.expires_at:
            self._finish(session, item, Status.EXPIRED, now)
            report.expired += 1
            return
        message.status, message.send_at, message.updated_at = Status.SCHEDULED, send_at, now
        message.error_code, message.error_message = error.code, str(error)[:255]
        report.retrying += 1

    def _finish(self, session: Session, item: _Claimed, status: Status, now: datetime) -> None:
        """Set a final status; a yearly step then gets its next anniversary scheduled."""
        message = item.message
        message.status, message.updated_at, message.lease_until = status, now, None
        session.add(message)
        if status in (Status.QUEUED, Status.FAILED, Status.EXPIRED):
            self._schedule_following(session, item, now)

    def _is_yearly(self, item: _Claimed) -> bool:
        plan = self.plans.get(item.treatment.kind)
        step = plan.step(item.message.step) if plan else None
        return step is not None and step.yearly

    def _schedule_following(self, session: Session, item: _Claimed, now: datetime) -> None:
        plan = self.plans.get(item.treatment.kind)
        if plan is None or not self._is_yearly(item):
            return
        if item.treatment.status != TreatmentStatus.ACTIVE:
            return
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

    # -- helpers -------------------------------------------------------------

    def _load(
        self,
        session: Session,
        where: Iterable[object],
        *,
        lock: bool = False,
        share_patients: bool = False,
    ) -> Sequence[_Claimed]:
        query = (
            select(Message, Patient, Treatment)
            .join(Patient, col(Patient.id) == Message.patient_id)
            .join(Treatment, col(Treatment.id) == Message.treatment_id)
            .where(*where)  # type: ignore[arg-type]
            .order_by(col(Message.send_at))
        )
        if lock:
            query = query.with_for_update(of=Message, skip_locked=True)
        elif share_patients:
            query = query.with_for_update(of=Patient, read=True)
        return [_Claimed(m, p, t) for m, p, t in session.exec(query).all()]
