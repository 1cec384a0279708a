"""The staff API (SPEC §9): read a patient's messages and consent history.

Bearer tokens from STAFF_API_TOKENS; without any configured the API answers 503
rather than being open.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import quote

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlmodel import Session, col, select

from notifier.consent import opt_out
from notifier.delivery.twilio_media import MediaUnavailable
from notifier.replies import inbox
from notifier.staff.inbox import media_of
from notifier.store.db import reading, transaction
from notifier.store.models import (
    ConsentChange,
    Message,
    Patient,
    Redaction,
    RedactionStatus,
    Reply,
    ReplyMedia,
)
from webhooks.encoding import iso_utc
from webhooks.photos import photo_response
from webhooks.services import services

bp = Blueprint("staff", __name__, url_prefix="/api")

View = Callable[..., ResponseReturnValue]
MAX_LIMIT = 500


def staff_only(view: View) -> View:
    """Refuse the request unless it carries one of the configured bearer tokens."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        tokens = services().settings.staff_api_tokens
        if not tokens:
            return jsonify(
                {"error": "the staff API is not configured (STAFF_API_TOKENS is unset)"}
            ), 503
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        matching = [
            t for t in tokens if hmac.compare_digest(given.strip().encode(), t.token.encode())
        ]
        if scheme.lower() != "bearer" or not matching:
            return (
                jsonify({"error": "a valid bearer token is required"}),
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        g.staff = matching[0].name  # recorded with every change this request makes
        return view(*args, **kwargs)

    return guarded


@bp.get("/patients/<patient_id>")
@staff_only
def patient_detail(patient_id: str) -> ResponseReturnValue:
    with Session(services().engine) as session:
        patient = session.exec(select(Patient).where(Patient.external_id == patient_id)).first()
        if patient is None:
            return jsonify({"error": f"no patient {patient_id!r}"}), 404
        return jsonify(_patient_json(session, patient))


def _patient_json(session: Session, patient: Patient) -> dict[str, Any]:
    messages = session.exec(
        select(Message)
        .where(Message.patient_id == patient.id)
        .order_by(col(Message.send_at), col(Message.id))
    ).all()
    replies = session.exec(
        select(Reply)
        .where(Reply.patient_id == patient.id)
        .order_by(col(Reply.received_at).desc(), col(Reply.id).desc())
    ).all()
    media = media_of(session, replies)
    changes = session.exec(
        select(ConsentChange)
        .where(ConsentChange.patient_id == patient.id)
        .order_by(col(ConsentChange.at), col(ConsentChange.id))
    ).all()
    return {
        "id": patient.external_id,
        "phone": patient.phone,
        "channel": patient.channel,
        "language": patient.language,
        "timezone": patient.timezone,
        "opted_out": patient.opted_out,
        "consented": patient.consented,
        "messages": [
            {
                "kind": m.kind,
                "step": m.step,
                "send_at": iso_utc(m.send_at),
                "status": m.status,
                "channel": m.channel,
                "sid": m.sid,
                "error_code": m.error_code,
                "body": m.body,
                "expires_at": iso_utc(m.expires_at),
            }
            for m in messages
        ],
        "replies": [
            {
                "received_at": iso_utc(r.received_at),
                "body": r.body,
                "sid": r.sid,
                "handled": r.handled,
                "handled_by": r.handled_by,
                "handled_at": iso_utc(r.handled_at),
                **_triage_json(r, media),
            }
            for r in replies
        ],
        "consent_log": [
            {"at": iso_utc(c.at), "consented": c.consented, "source": c.source, "by": c.by}
            for c in changes
        ],
    }


@bp.get("/replies")
@staff_only
def replies() -> ResponseReturnValue:
    """Replies, urgent first, then newest first; `?handled=false` for those still needing
    attention, `?urgent=true` for the urgent ones."""
    wanted = request.args.get("handled")
    if wanted not in (None, "true", "false"):
        return jsonify({"error": "handled must be true or false"}), 400
    urgent = request.args.get("urgent")
    if urgent not in (None, "true", "false"):
        return jsonify({"error": "urgent must be true or false"}), 400
    limit = request.args.get("limit", "100")
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        return jsonify({"error": f"limit must be a whole number from 1 to {MAX_LIMIT}"}), 400
    query = (
        select(Reply, Patient.external_id)
        .join(Patient, col(Patient.id) == Reply.patient_id, isouter=True)
        .order_by(col(Reply.urgent).desc(), col(Reply.received_at).desc(), col(Reply.id).desc())
        .limit(int(limit))
    )
    if wanted is not None:
        query = query.where(Reply.handled == (wanted == "true"))
    if urgent is not None:
        query = query.where(Reply.urgent == (urgent == "true"))
    with Session(services().engine) as session:
        rows = session.exec(query).all()
        media = media_of(session, [r for r, _ in rows])
    return jsonify(
        {
            "replies": [
                {
                    "sid": r.sid,
                    "patient_id": external_id,
                    "from": r.from_phone,
                    "received_at": iso_utc(r.received_at),
                    "body": r.body,
                    "handled": r.handled,
                    **_triage_json(r, media),
                }
                for r, external_id in rows
            ]
        }
    )


def _triage_json(reply: Reply, media: dict[int, list[ReplyMedia]]) -> dict[str, Any]:
    """A reply's triage, and its photos at the service's own addresses (SPEC §9, §10)."""
    base = services().settings.public_base_url or request.host_url.rstrip("/")
    found = media.get(reply.id or 0, [])
    return {
        "urgent": reply.urgent,
        "category": reply.category,
        "signs": reply.signs.split(",") if reply.signs else [],
        **(
            {
                "media": [
                    {
                        "url": f"{base}/api/replies/{quote(reply.sid)}/media/{m.position}",
                        "content_type": m.content_type,
                    }
                    for m in found
                ]
            }
            if found
            else {}
        ),
    }


@bp.get("/replies/<sid>/media/<int:position>")
@staff_only
def reply_media(sid: str, position: int) -> ResponseReturnValue:
    """A photo a patient sent, fetched from Twilio: images only, size-capped; Twilio's
    address and the account's credentials never reach the browser."""
    svc = services()
    with reading(svc.engine) as session:  # closed before Twilio is asked
        item = session.exec(
            select(ReplyMedia)
            .join(Reply, col(Reply.id) == ReplyMedia.reply_id)
            .where(Reply.sid == sid, ReplyMedia.position == position)
        ).first()
    if item is None:
        return jsonify({"error": f"reply {sid!r} has no file {position}"}), 404
    try:
        return photo_response(svc.settings.twilio, item)
    except MediaUnavailable as error:
        return jsonify({"error": str(error)}), error.status


@bp.post("/replies/<sid>/handled")
@staff_only
def mark_handled(sid: str) -> ResponseReturnValue:
    svc = services()
    with transaction(svc.engine) as session:
        reply = session.exec(select(Reply).where(Reply.sid == sid)).first()
        if reply is None:
            return jsonify({"error": f"no reply {sid!r}"}), 404
        inbox.mark_handled(session, reply, g.staff, svc.clock())
        return jsonify(
            {
                "sid": sid,
                "handled": True,
                "handled_by": reply.handled_by,
                "handled_at": iso_utc(reply.handled_at),
            }
        )


@bp.post("/patients/<patient_id>/consent")
@staff_only
def staff_consent(patient_id: str) -> ResponseReturnValue:
    """Staff record a patient's wish told to the clinic: `{"opted_out": true|false}`."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("opted_out"), bool):
        return jsonify(
            {"errors": [{"field": "opted_out", "message": "must be true or false"}]}
        ), 422
    svc = services()
    with transaction(svc.engine) as session:
        patient = session.exec(select(Patient).where(Patient.external_id == patient_id)).first()
        if patient is None:
            return jsonify({"error": f"no patient {patient_id!r}"}), 404
        now, quiet = svc.clock(), svc.settings.quiet_hours
        try:
            if data["opted_out"]:
                opt_out.opt_out(session, patient, opt_out.Source.STAFF, now, by=g.staff)
            else:
                opt_out.resume_for_staff(session, patient, now, g.staff, quiet=quiet)
        except opt_out.PatientsOwnStop:
            return jsonify(
                {
                    "error": "the patient opted out themselves (STOP); only the patient can "
                    "resume, by texting START to the clinic's number"
                }
            ), 409
        return jsonify({"id": patient_id, "opted_out": patient.opted_out})


@bp.get("/erasures/<erasure_id>")
@staff_only
def erasure_state(erasure_id: str) -> ResponseReturnValue:
    """How an erasure stands at Twilio: `erasure_id` is the one the booking webhook's
    `patient.erased` answer gave (`erased-N`)."""
    with reading(services().engine) as session:
        patient = session.exec(
            select(Patient).where(
                Patient.external_id == erasure_id, col(Patient.external_id).startswith("erased-")
            )
        ).first()
        if patient is None:
            return jsonify({"error": f"no erasure {erasure_id!r}"}), 404
        redactions = session.exec(
            select(Redaction).where(Redaction.patient_id == patient.id).order_by(col(Redaction.id))
        ).all()
    counts = Counter(r.status for r in redactions)
    return jsonify(
        {
            "id": erasure_id,
            "erased_at": iso_utc(patient.updated_at),
            "twilio_redactions": {status: counts[status] for status in RedactionStatus},
            "complete": counts[RedactionStatus.PENDING] + counts[RedactionStatus.FAILED] == 0,
            "failed": [
                {"sid": r.sid, "attempts": r.attempts, "error": r.error}
                for r in redactions
                if r.status == RedactionStatus.FAILED
            ],
        }
    )
