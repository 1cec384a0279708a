"""Posting recorded events to the booking system (EVENTS_WEBHOOK_URL), from the worker.

At least once, in order per patient: a patient's next event is posted only once the
one before it was delivered (or dropped), and a post whose answer never came is
posted again; receivers de-duplicate by the event's `id`. A failure (no 2xx, a
timeout, a refused connection) waits as a failed send does (`notifier.backoff`: 30 s
doubling, with jitter, up to an hour). An event not delivered within MAX_AGE is
dropped and counted, as is everything recorded while no URL is set. Like the
dispatcher, it claims under a lease in one short transaction, posts outside any, and
records in another.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from sqlalchemy import Engine, func
from sqlmodel import col, delete, select, update

from notifier.backoff import retry_delay
from notifier.settings import Settings
from notifier.signature import sign
from notifier.store.db import transaction
from notifier.store.models import Event, EventStatus

log = logging.getLogger(__name__)

MAX_AGE = timedelta(days=3)  # past this an undelivered event is dropped, never posted
KEEP_DELIVERED = timedelta(days=7)  # delivered and dropped events are then deleted
TIMEOUT_SECONDS = 10.0
BATCH = 50  # events posted per pass, at most one per patient
CONCURRENCY = 8
LEASE = timedelta(seconds=TIMEOUT_SECONDS * 3)
HEADER = "X-Aftercare-Signature"

Post = Callable[[str, bytes, dict[str, str]], int]  # url, body, headers -> HTTP status


@dataclass
class Published:
    """What one pass did."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    deleted: int = 0

    def absorb(self, other: Published) -> None:
        self.delivered += other.delivered
        self.failed += other.failed
        self.dropped += other.dropped
        self.deleted += other.deleted


class Publisher:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        post: Post | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.url = settings.events_webhook_url
        self.secret = settings.events_webhook_secret or ""
        self.post = post or _post
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    def run(self, now: datetime) -> Published:
        """One pass: recover lost claims, drop and delete old events, post the next ones."""
        done = Published()
        with transaction(self.engine) as session:
            session.exec(
                update(Event)
                .where(col(Event.status) == EventStatus.SENDING, col(Event.lease_until) <= now)
                .values(status=EventStatus.PENDING, lease_until=None)
            )
            done.dropped = session.exec(
                update(Event)
                .where(
                    col(Event.status) == EventStatus.PENDING, col(Event.created_at) < now - MAX_AGE
                )
                .values(status=EventStatus.DROPPED, error="older than the maximum age")
            ).rowcount
            done.deleted = session.exec(
                delete(Event).where(
                    col(Event.status).in_([EventStatus.DELIVERED, EventStatus.DROPPED]),
                    col(Event.created_at) < now - KEEP_DELIVERED,
                )
            ).rowcount
        if done.dropped:
            log.warning("events: %d dropped, undelivered for %s", done.dropped, MAX_AGE)
        if self.url is None:
            return done
        claimed = self._claim(now)
        if not claimed:
            return done
        with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(claimed))) as pool:
            answers = list(pool.map(lambda event: self._deliver(event, now), claimed))
        self._record(claimed, answers, now, done)
        return done

    def _claim(self, now: datetime) -> list[Event]:
        """The oldest open event of each patient, when it is due and nobody posts it."""
        with transaction(self.engine) as session:
            heads = (
                select(func.min(Event.id))
                .where(col(Event.status).in_([EventStatus.PENDING, EventStatus.SENDING]))
                .group_by(col(Event.patient_id))
            )
            events = list(
                session.exec(
                    select(Event)
                    .where(
                        col(Event.id).in_(heads),
                        col(Event.status) == EventStatus.PENDING,
                        col(Event.next_at) <= now,
                    )
                    .order_by(col(Event.id))
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                ).all()
            )
            for event in events:
                event.status, event.lease_until = EventStatus.SENDING, now + LEASE
                event.attempts += 1
                session.add(event)
        return events

    def _deliver(self, event: Event, now: datetime) -> str | None:
        """Post one event; None when the receiver took it, else why not."""
        assert self.url is not None
        body = event.payload.encode()
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(self.secret, body, int(now.timestamp())),
            "User-Agent": "aftercare-notifier",
        }
        try:
            status = self.post(self.url, body, headers)
        except requests.RequestException as error:
            return type(error).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _record(
        self,
        claimed: Sequence[Event],
        answers: Sequence[str | None],
        now: datetime,
        done: Published,
    ) -> None:
        with transaction(self.engine) as session:
            for event, problem in zip(claimed, answers, strict=True):
                mine = (
                    col(Event.id) == event.id,
                    col(Event.status) == EventStatus.SENDING,
                    col(Event.lease_until) == event.lease_until,
                )
                if problem is None:
                    values: dict[str, object] = {
                        "status": EventStatus.DELIVERED,
                        "delivered_at": now,
                        "lease_until": None,
                        "error": None,
                    }
                    done.delivered += 1
                else:
                    values = {
                        "status": EventStatus.PENDING,
                        "next_at": now + retry_delay(event.attempts, self.rng),
                        "lease_until": None,
                        "error": problem[:255],
                    }
                    done.failed += 1
                session.exec(update(Event).where(*mine).values(**values))
        if done.failed:
            log.warning("events: %d posts failed; retrying with backoff", done.failed)


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    answer = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
    answer.close()
    return answer.status_code
