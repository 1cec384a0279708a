"""Redactions at Twilio: an erased patient's messages are forgotten there too.

Twilio keeps the body and numbers of every message an account sent or received.
Erasing a patient (`notifier.consent.erasure`) leaves a pending `Redaction` for each of
theirs, and retention (`notifier.consent.retention`) one for each text it erases; the worker
asks Twilio to redact the body (`Body=""` on the Message) and to delete a reply's
photos, a batch per pass, outside any transaction like a send. A
redaction is repeatable, so a row is reserved for a lease rather than claimed: a
worker that dies mid-request leaves it to be asked again. Twilio refuses to redact a
message that is not final yet, so refusals are retried with backoff, for up to
REDACTION_GIVE_UP; after that the row is `failed` and shows in the staff API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from notifier.delivery.sender import Redact, Sender
from notifier.store.db import transaction
from notifier.store.models import Redaction, RedactionStatus

log = logging.getLogger(__name__)

REDACTION_GIVE_UP = timedelta(days=7)


class Redactor:
    """Asks Twilio to redact what is due; `run(now, sender)` is one batch."""

    def __init__(
        self, engine: Engine, batch: int, lease: timedelta, backoff: Callable[[int], timedelta]
    ) -> None:
        self.engine = engine
        self.batch = batch
        self.lease = lease
        self.backoff = backoff

    def run(self, now: datetime, sender: Sender) -> int:
        """Redact one batch of what is due through `sender`; returns how many are done."""
        with transaction(self.engine) as session:
            # An erasure's go first, so a patient's erasure never waits behind a backlog
            # of messages past retention.
            due = self._due(session, now, erasure=True, limit=self.batch)
            due += self._due(session, now, erasure=False, limit=self.batch - len(due))
            if not due:
                return 0
            session.exec(
                update(Redaction)
                .where(col(Redaction.id).in_([r.id for r in due]))
                .values(next_at=now + self.lease, attempts=col(Redaction.attempts) + 1)
            )
        answers = sender.redact_batch([Redact(r.sid, r.inbound) for r in due])
        with transaction(self.engine) as session:
            for redaction, answer in zip(due, answers, strict=True):
                session.add(redaction)
                redaction.attempts += 1
                self._settle(redaction, answer, now)
        return sum(answer is None for answer in answers)

    def _due(
        self, session: Session, now: datetime, *, erasure: bool, limit: int
    ) -> list[Redaction]:
        """Up to `limit` due redactions of an erasure (or of retention), oldest first."""
        if limit <= 0:
            return []
        return list(
            session.exec(
                select(Redaction)
                .where(
                    col(Redaction.status) == RedactionStatus.PENDING,
                    col(Redaction.next_at) <= now,
                    col(Redaction.erasure).is_(erasure),
                )
                .order_by(col(Redaction.next_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
        )

    def _settle(self, redaction: Redaction, answer: Exception | None, now: datetime) -> None:
        if answer is None:
            redaction.status, redaction.done_at, redaction.error = RedactionStatus.DONE, now, None
            return
        redaction.error = str(answer)[:255]
        if now - redaction.created_at >= REDACTION_GIVE_UP:
            redaction.status = RedactionStatus.FAILED
            log.error("redaction %s at Twilio given up: %s", redaction.id, redaction.error)
        else:
            redaction.next_at = now + self.backoff(redaction.attempts)
            log.warning("redaction %s at Twilio: will retry (%s)", redaction.id, redaction.error)
