"""One dispatch pass: expire, recover, claim, re-check, send, record.

No transaction is open while a request to Twilio is in flight: a pass claims due
rows in one short transaction, re-reads consent, treatment and window for them in
another, sends them outside any (concurrently, see `notifier.delivery.twilio_sender`), and
records what became of each in a third (`notifier.delivery.outcomes`). A claimed row carries
a lease: if its worker dies, or Twilio's answer was ambiguous, the row is
reconciled against Twilio's message list once the lease runs out, and re-sent
only if Twilio has no such message that another row has not already adopted.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, func, select, update

from notifier.backoff import retry_delay
from notifier.consent import opt_out
from notifier.delivery import status_callbacks
from notifier.delivery.outcomes import Claimed, Outcomes, PassReport
from notifier.delivery.redaction import Redactor
from notifier.delivery.routing import Router
from notifier.delivery.sender import (
    Accepted,
    Ambiguous,
    Lookup,
    Outgoing,
    PermanentFailure,
    RateLimited,
    RecipientOptedOut,
    RetryLater,
    Sender,
    SendError,
)
from notifier.delivery.whatsapp import Templates
from notifier.events import record
from notifier.metrics import SENDS
from notifier.planning.plan import Plan
from notifier.privacy import mask_phone
from notifier.settings import Settings
from notifier.store.db import reading, transaction
from notifier.store.models import Channel, Message, Patient, Status, Treatment

log = logging.getLogger(__name__)

# A rate-limited worker halves its next claim and pauses 0.5-1 s, doubling while the
# 429s go on, at most THROTTLE_CAP; clean batches grow the claim back step by step.
THROTTLE_BASE = timedelta(seconds=1)
THROTTLE_CAP = timedelta(seconds=10)
# Twilio's clock and ours differ a little; look a bit before the claim when reconciling.
RECONCILE_SKEW = timedelta(minutes=2)


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
        self.clinic = settings.clinic
        callback = f"{settings.public_base_url}/webhooks/twilio/status"
        self.router = Router(
            plans,
            templates or Templates({}),
            settings.twilio,
            self.clinic,
            callback if settings.public_base_url else None,
        )
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.outcomes = Outcomes(plans, settings, self.clinic, self.rng)
        self.lease = timedelta(seconds=settings.lease_seconds)
        # After Twilio said "too many requests", no new claims until then.
        self.throttled_until: datetime | None = None
        self.throttle_streak = 0
        # Every request of a pass starts at once, right after consent was re-read: a
        # claim never holds more than the sender has slots for. A backlog is drained
        # pass after pass (the worker and `aftercare dispatch` loop while claims are full).
        self.max_claim = min(settings.dispatch_batch_size, settings.dispatch_concurrency)
        self.claim_limit = self.max_claim
        self.redactor = Redactor(engine, self.max_claim, self.lease, self.outcomes.backoff)

    def close(self) -> None:
        """Close the sender: the dispatcher is not used again."""
        self.sender.close()

    def run_pass(self, now: datetime) -> PassReport:
        report = PassReport()
        self._expire(now, report)
        self._recover(now, report)
        if self.throttled_until is not None and now < self.throttled_until:
            report.throttled = True
            return report
        report.redacted = self.redactor.run(now, self.sender)
        ids = self._claim(now)
        report.claimed, report.more = len(ids), len(ids) >= self.claim_limit
        if ids:
            opted_out = self._send(ids, now, report)
            self._opt_out(opted_out, now)
            self._throttle(report, now)
            report.more = report.more and self.throttled_until is None
        with transaction(self.engine) as session:
            status_callbacks.match_early_callbacks(
                session,
                now,
                sms_fallback=self.settings.whatsapp_sms_fallback,
                quiet=self.settings.quiet_hours,
            )
        return report

    def next_pass_at(self) -> datetime | None:
        """When a pass next has something to do: the next message due, or the end of a
        rate-limit pause if that comes later; None if nothing is scheduled."""
        with reading(self.engine) as session:
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
                    self.outcomes.finish(session, item, Status.EXPIRED, now)
                report.expired += len(stale)
            if len(ids) < self.max_claim:
                return

    def _recover(self, now: datetime, report: PassReport) -> None:
        """Rows whose lease ran out may or may not have been sent: ask Twilio first.

        The rows are taken under a new lease (each recovery counts as an attempt, so
        a row that can never be settled still ends `failed`), Twilio is asked about
        all of them at once outside any transaction, and each is settled on its own:
        one that cannot be stays for a later pass without stopping the others."""
        lease = now + self.lease
        with transaction(self.engine) as session:
            stuck = self._load(
                session,
                (col(Message.status) == Status.SENDING, col(Message.lease_until) <= now),
                lock=True,
                limit=self.max_claim,
            )
            ids = [item.message.id for item in stuck]
            if ids:
                session.exec(
                    update(Message)
                    .where(col(Message.id).in_(ids))
                    .values(lease_until=lease, updated_at=now, attempts=col(Message.attempts) + 1)
                )
        if not stuck:
            return
        answers = self._look_up(stuck)
        with transaction(self.engine) as session:
            fresh = {item.message.id: item for item in self._owned(session, ids, lease)}
            adopted: set[str] = set()
            for item, answer in zip(stuck, answers, strict=True):
                current = fresh.get(item.message.id)
                if current is None:
                    continue
                try:
                    with session.begin_nested():
                        self._reconcile(session, current, answer, adopted, now, report)
                except SQLAlchemyError as error:
                    log.warning(
                        "message %s: cannot settle its recovery yet (%s)",
                        item.message.id,
                        type(error).__name__,
                    )

    def _look_up(self, stuck: Sequence[Claimed]) -> list[list[str] | Exception]:
        """Twilio's outbound messages matching each stuck row since its claim (none for
        a patient without a number any more), all asked at once."""
        lookups: dict[int, Lookup] = {}
        for index, item in enumerate(stuck):
            message, phone = item.message, item.patient.phone
            if phone is not None:
                phone = message.recipient or phone  # an alert went to on-call
                since = (message.claimed_at or message.created_at) - RECONCILE_SKEW
                body = None if message.content_sid else message.body
                lookups[index] = Lookup(phone, message.channel, body, since)
        found = dict(zip(lookups, self.sender.find_batch(list(lookups.values())), strict=True))
        return [found.get(index, []) for index in range(len(stuck))]

    def _reconcile(
        self,
        session: Session,
        item: Claimed,
        answer: list[str] | Exception,
        adopted: set[str],
        now: datetime,
        report: PassReport,
    ) -> None:
        """Adopt the newest matching message no other row holds; else send again (or
        give up after DISPATCH_MAX_ATTEMPTS). Two patients sharing a number can be
        sent the same text at the same moment: each row adopts a message of its own."""
        message = item.message
        session.add(message)
        exhausted = message.attempts >= self.settings.max_attempts
        if isinstance(answer, Exception):
            log.warning("message %s: cannot reconcile yet (%s)", message.id, answer)
            if not exhausted:
                message.lease_until = now + self.outcomes.backoff(message.attempts)
                report.unresolved += 1
                return
            message.error_message = f"not known whether Twilio sent it: {answer}"[:255]
            self.outcomes.finish(session, item, Status.FAILED, now)
            report.failed += 1
            return
        held = set(session.exec(select(Message.sid).where(col(Message.sid).in_(answer))).all())
        sid = next((s for s in answer if s not in held and s not in adopted), None)
        if sid is not None:
            message.sid = sid
            adopted.add(sid)
            self.outcomes.finish(session, item, Status.QUEUED, now)
            report.adopted += 1
        elif exhausted:
            self.outcomes.finish(session, item, Status.FAILED, now)
            report.failed += 1
        else:
            message.status, message.send_at, message.updated_at = Status.SCHEDULED, now, now
            message.lease_until = None
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

    def _send(self, ids: Sequence[int], now: datetime, report: PassReport) -> list[int]:
        """Send a claimed batch; returns the patients Twilio says opted out (21610).

        Consent, treatment and window are re-read in a short transaction that commits
        just before the requests start; none is open while they are in flight, so
        webhooks never wait on Twilio. A STOP that commits after that re-read cannot
        stop a request that is already starting: a message goes out after a STOP only
        if its request had started when the STOP committed (one Twilio round trip at
        most). Everything after it is held."""
        lease = now + self.lease
        with transaction(self.engine) as session:
            ready = self._recheck(session, self._owned(session, ids, lease), now, report)
        answers = self.sender.send_batch([outgoing for _, outgoing in ready])
        return self._record([item for item, _ in ready], answers, lease, now, report)

    def _recheck(
        self, session: Session, batch: Sequence[Claimed], now: datetime, report: PassReport
    ) -> list[tuple[Claimed, Outgoing]]:
        """Consent, treatment and window are checked again after the claim."""
        ready: list[tuple[Claimed, Outgoing]] = []
        for item in batch:
            session.add(item.message)
            if self.outcomes.settle_unwanted(session, item, now, report):
                continue
            if not self.outcomes.defer_to_window(session, item, now, report):
                outgoing = self._route(session, item, now, report)
                if outgoing is not None:
                    ready.append((item, outgoing))
        return ready

    def _record(
        self,
        sent: Sequence[Claimed],
        answers: Sequence[Accepted | Exception],
        lease: datetime,
        now: datetime,
        report: PassReport,
    ) -> list[int]:
        """Store what became of each request, on the rows as they are now: a patient
        erased or updated while the request was in flight is never written back.

        Accepted messages (the common outcome) are stored in one statement; the rest
        are settled one by one on freshly read rows. Returns the patients (ids) Twilio
        says opted out."""
        queued: list[dict[str, object]] = []
        others: dict[int | None, Accepted | Exception] = {}
        for item, answer in zip(sent, answers, strict=True):
            SENDS.labels(outcome=_outcome(answer), channel=item.message.channel).inc()
            if isinstance(answer, Accepted):
                report.sent += 1
                if not self.outcomes.is_yearly(item):
                    queued.append({"message_id": item.message.id, "message_sid": answer.sid})
                    continue
            others[item.message.id] = answer
        opted_out: list[int] = []
        with transaction(self.engine) as session:
            if queued:
                session.connection().execute(
                    update(Message)
                    .where(
                        col(Message.id) == bindparam("message_id"),
                        col(Message.status) == Status.SENDING,
                        col(Message.lease_until) == lease,
                    )
                    .values(
                        sid=bindparam("message_sid"),
                        status=Status.QUEUED,
                        updated_at=now,
                        lease_until=None,
                    ),
                    queued,
                )
                self._report_queued(session, sent, queued, now)
            for item in self._owned(session, others, lease):
                if patient_id := self._settle(session, item, others[item.message.id], now, report):
                    opted_out.append(patient_id)
        return opted_out

    def _report_queued(
        self,
        session: Session,
        sent: Sequence[Claimed],
        queued: Sequence[dict[str, object]],
        now: datetime,
    ) -> None:
        """Events for the booking system: the rows the fast path did store as queued
        (not one erased or reclaimed while its request was in flight)."""
        sids = {q["message_id"]: q["message_sid"] for q in queued}
        stored = set(
            session.exec(
                select(Message.id).where(
                    col(Message.id).in_(list(sids)),
                    col(Message.status) == Status.QUEUED,
                    col(Message.sid).in_(list(sids.values())),
                )
            ).all()
        )
        for item in sent:
            if item.message.id in stored:
                item.message.status, item.message.sid = Status.QUEUED, str(sids[item.message.id])
                record.message_status_changed(
                    session, item.message, item.patient, item.treatment, now
                )

    def _route(
        self, session: Session, item: Claimed, now: datetime, report: PassReport
    ) -> Outgoing | None:
        """The request for this message (see `notifier.delivery.routing`); None if it cannot go."""
        message = item.message
        route = self.router.route(message, item.patient, item.treatment.kind, now)
        if message.content_sid != route.content_sid:
            message.content_sid = route.content_sid
        if route.instead_of_whatsapp is None:
            return route.outgoing
        if not self.settings.whatsapp_sms_fallback:
            message.error_message = route.instead_of_whatsapp
            self.outcomes.finish(session, item, Status.FAILED, now)
            report.failed += 1
            return None
        message.channel, message.fallback_reason = Channel.SMS, route.instead_of_whatsapp
        return route.outgoing

    def _settle(
        self,
        session: Session,
        item: Claimed,
        answer: Accepted | Exception,
        now: datetime,
        report: PassReport,
    ) -> int | None:
        """Turn the sender's answer into the message's next status. Returns the patient
        (id) to hold the rest of the messages of when Twilio says they opted out (21610);
        an on-call number that opted out fails the alert, and holds nobody."""
        message = item.message
        session.add(message)
        if isinstance(answer, Accepted):
            message.sid = answer.sid
            self.outcomes.finish(session, item, Status.QUEUED, now)
        elif isinstance(answer, RecipientOptedOut):
            self.outcomes.fail(session, item, answer, now, report)
            return None if message.recipient else message.patient_id
        elif isinstance(answer, PermanentFailure):
            if not self.outcomes.fall_back(session, item, answer, now, report):
                self.outcomes.fail(session, item, answer, now, report)
        elif isinstance(answer, RetryLater):
            report.rate_limited += isinstance(answer, RateLimited)
            self.outcomes.retry(session, item, answer, now, report)
        else:  # Ambiguous, or a sender bug: it may have gone out
            level = logging.WARNING if isinstance(answer, Ambiguous) else logging.ERROR
            log.log(
                level,
                "message %s to %s: outcome unknown (%s); will reconcile",
                message.id,
                mask_phone(item.patient.phone),
                answer,
                exc_info=None if isinstance(answer, SendError) else answer,
            )
            message.error_message = str(answer)[:255]
            message.lease_until = now + self.outcomes.backoff(message.attempts)
            report.unresolved += 1
        return None

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

    def _opt_out(self, patients: list[int], now: datetime) -> None:
        """Twilio says these patients opted out (21610): hold the rest of their messages.

        Done after the batch commits: updating a patient row inside the batch could
        deadlock with another worker holding the same row FOR SHARE."""
        if not patients:
            return
        with transaction(self.engine) as session:
            for patient_id in dict.fromkeys(patients):  # once each, in order
                patient = session.get(Patient, patient_id)
                if patient is not None:
                    opt_out.opt_out(session, patient, opt_out.Source.TWILIO_21610, now)

    # -- reading the rows ----------------------------------------------------

    def _owned(
        self, session: Session, ids: Iterable[int | None], lease: datetime
    ) -> Sequence[Claimed]:
        """The rows still claimed under `lease`, as they are now."""
        return self._load(
            session,
            (
                col(Message.id).in_(list(ids)),
                col(Message.status) == Status.SENDING,
                col(Message.lease_until) == lease,
            ),
        )

    def _load(
        self,
        session: Session,
        where: Iterable[object],
        *,
        lock: bool = False,
        limit: int | None = None,
    ) -> Sequence[Claimed]:
        query = (
            select(Message, Patient, Treatment)
            .join(Patient, col(Patient.id) == Message.patient_id)
            .join(Treatment, col(Treatment.id) == Message.treatment_id)
            .where(*where)  # type: ignore[arg-type]
            .order_by(col(Message.send_at))
            .limit(limit)
        )
        if lock:
            query = query.with_for_update(of=Message, skip_locked=True)
        return [Claimed(m, p, t) for m, p, t in session.exec(query).all()]


def _outcome(answer: Accepted | Exception) -> str:
    """A send's outcome as `aftercare_sends` labels it."""
    if isinstance(answer, Accepted):
        return "accepted"
    if isinstance(answer, RecipientOptedOut):
        return "opted_out"
    if isinstance(answer, PermanentFailure):
        return "failed"
    if isinstance(answer, RateLimited):
        return "rate_limited"
    if isinstance(answer, RetryLater):
        return "retry"
    return "unknown"  # ambiguous: reconciled once its lease runs out
