"""`GET /metrics` (SPEC §12): Prometheus' text format, behind METRICS_TOKEN when set."""

from __future__ import annotations

import hmac
from datetime import datetime

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func
from sqlmodel import col, select

from notifier.delivery.queue_health import queue_state
from notifier.metrics import Gauges, exposition
from notifier.store.db import reading
from notifier.store.models import Event, EventStatus, Reply, Status
from webhooks.services import services

bp = Blueprint("metrics", __name__)

Reading = tuple[str, str, dict[str, str], float]


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    token = services().settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            answer = jsonify({"error": "a valid bearer token is required (METRICS_TOKEN)"})
            return answer, 401, {"WWW-Authenticate": "Bearer"}
    svc = services()
    return Response(exposition(Gauges(_outbox, svc.clock)), content_type=CONTENT_TYPE_LATEST)


def _outbox(now: datetime) -> list[Reading]:
    """The outbox and the inbox as they are now, read from the database."""
    engine = services().engine
    state = queue_state(engine, now)
    readings: list[Reading] = [
        (
            "aftercare_outbox_messages",
            "Messages in the outbox, by status.",
            {"status": str(status)},
            float(state.by_status.get(status, 0)),
        )
        for status in Status
    ]
    readings += [
        (
            "aftercare_outbox_overdue",
            "Messages due for over a minute and not yet claimed by a worker.",
            {},
            float(state.overdue),
        ),
        (
            "aftercare_outbox_stuck",
            "Messages claimed whose lease ran out (a worker died, or Twilio was unclear).",
            {},
            float(state.stuck),
        ),
    ]
    with reading(engine) as session:
        events = dict(
            session.exec(select(Event.status, func.count()).group_by(col(Event.status))).all()
        )
        waiting = dict(
            session.exec(
                select(Reply.urgent, func.count())
                .where(col(Reply.handled).is_(False))
                .group_by(col(Reply.urgent))
            ).all()
        )
    readings += [
        (
            "aftercare_replies_unhandled",
            "Replies no member of staff has marked handled yet.",
            {"urgent": "true" if urgent else "false"},
            float(waiting.get(urgent, 0)),
        )
        for urgent in (True, False)
    ]
    readings += [
        (
            "aftercare_events_waiting",
            "Events for the booking system not delivered yet.",
            {},
            float(events.get(EventStatus.PENDING, 0) + events.get(EventStatus.SENDING, 0)),
        ),
        (
            "aftercare_events_dropped",
            "Events dropped undelivered past their maximum age (kept a week).",
            {},
            float(events.get(EventStatus.DROPPED, 0)),
        ),
    ]
    return readings
