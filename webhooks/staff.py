"""The staff API (SPEC §9): read a patient's messages and consent history.

Bearer tokens from STAFF_API_TOKENS; without any configured the API answers 503
rather than being open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlmodel import Session, col, select

from notifier.app import services
from notifier.models import ConsentChange, Message, Patient
from webhooks.encoding import iso_utc

bp = Blueprint("staff", __name__, url_prefix="/api")

View = Callable[..., ResponseReturnValue]


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
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(given.strip().encode(), t.encode()) for t in tokens
        ):
            return (
                jsonify({"error": "a valid bearer token is required"}),
                401,
                {"WWW-Authenticate": "Bearer"},
            )
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
        "consent_log": [
            {"at": iso_utc(c.at), "consented": c.consented, "source": c.source} for c in changes
        ],
    }
