"""Twilio's webhooks (SPEC §7): inbound messages and delivery status callbacks.

Both are validated with the `twilio` package's RequestValidator against the URL
Twilio used: PUBLIC_BASE_URL + path + query when set (behind a TLS-terminating
proxy the request URL is not what Twilio signed), else the request URL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from notifier.delivery.status_callbacks import record_callback
from notifier.phone import parse_phone
from notifier.privacy import mask_phone
from notifier.replies.inbox import Inbound, Media, receive
from notifier.store.db import retrying, transaction
from webhooks.services import services

bp = Blueprint("twilio", __name__, url_prefix="/webhooks/twilio")
log = logging.getLogger(__name__)

View = Callable[..., ResponseReturnValue]
MAX_MEDIA = 10  # Twilio's most files on one message
MAX_MEDIA_URL = 1024  # as stored


def signed_by_twilio(view: View) -> View:
    """403, with nothing stored, unless X-Twilio-Signature matches the request."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        settings = services().settings
        if settings.twilio is None:
            return _twiml_error(503, "Twilio is not configured (TWILIO_AUTH_TOKEN is unset)")
        validator = RequestValidator(settings.twilio.auth_token)
        signature = request.headers.get("X-Twilio-Signature", "")
        params = request.form.to_dict(flat=True)
        if not signature or not validator.validate(_signed_url(), params, signature):
            log.warning("Twilio webhook %s: bad or missing signature", request.path)
            return _twiml_error(403, "invalid X-Twilio-Signature")
        return view(*args, **kwargs)

    return guarded


def _field(name: str) -> str:
    """A form value without NUL characters, which no database stores as text."""
    return request.form.get(name, "").replace("\x00", "")


@bp.post("/inbound")
@signed_by_twilio
def inbound() -> ResponseReturnValue:
    sid, sender = _field("MessageSid").strip(), _field("From").strip()
    channel = "whatsapp" if sender.lower().startswith("whatsapp:") else "sms"
    phone = _e164(sender.split(":", 1)[1] if channel == "whatsapp" else sender)
    if not sid or phone is None:
        # Twilio always sends both; anything else is not a message we can act on.
        return _twiml_error(400, "MessageSid and a phone number in From are required")
    message = Inbound(
        sid=sid[:64],
        phone=phone,
        channel=channel,
        body=_field("Body"),
        opt_out_type=_field("OptOutType") or None,
        media=_media(),
    )
    svc = services()
    now = svc.clock()
    # Twilio may deliver the same MessageSid twice at once: the second try sees the first.
    received = retrying(svc.engine, lambda session: receive(session, message, now, svc.listening))
    reply = MessagingResponse()
    if received.answer:
        reply.message(received.answer)
    return _twiml(reply)


@bp.post("/status")
@signed_by_twilio
def status() -> ResponseReturnValue:
    sid, reported = _field("MessageSid").strip(), _field("MessageStatus").strip()
    if not sid or not reported:
        return _twiml_error(400, "MessageSid and MessageStatus are required")
    code_text = _field("ErrorCode").strip()
    digits = code_text.isascii() and code_text.isdigit() and len(code_text) <= 9
    error_code = int(code_text) if digits else None
    svc = services()
    with transaction(svc.engine) as session:
        message = record_callback(
            session,
            sid[:64],
            reported,
            error_code,
            svc.clock(),
            sms_fallback=svc.settings.whatsapp_sms_fallback,
            quiet=svc.settings.quiet_hours,
        )
    if message is None:
        log.info("status %s for unknown message %s (kept for when it is known)", reported, sid)
    elif error_code:
        log.info(
            "message %s to patient %s: %s (error %s)",
            message.id,
            message.patient_id,
            reported,
            error_code,
        )
    return Response(status=204)


def _media() -> tuple[Media, ...]:
    """The files a message carried: `NumMedia` of them (Twilio sends at most 10), each
    `MediaUrlN` with its `MediaContentTypeN`; an entry without an http(s) URL is left out."""
    count = _field("NumMedia").strip()
    if not count.isascii() or not count.isdigit():
        return ()
    found: list[Media] = []
    for n in range(min(int(count), MAX_MEDIA)):
        url = _field(f"MediaUrl{n}").strip()
        kind = _field(f"MediaContentType{n}").strip().lower() or "application/octet-stream"
        if url.startswith(("https://", "http://")) and len(url) <= MAX_MEDIA_URL:
            found.append(Media(url, kind[:128]))
    return tuple(found)


def _signed_url() -> str:
    """The URL Twilio signed: the public base URL + path + query, else the request URL."""
    base = services().settings.public_base_url or request.root_url.rstrip("/")
    # The raw query: Flask's request.url decodes %-escapes Twilio signed as sent.
    query = request.query_string.decode("latin-1")
    return base + request.path + (f"?{query}" if query else "")


def _e164(raw: str) -> str | None:
    """E.164 when the number reads as one; otherwise the sender as given (a short code,
    a number range phonenumbers does not know yet), so the reply is still kept."""
    try:
        return parse_phone(raw, services().settings.default_phone_region)
    except ValueError:
        log.info("inbound from a number not read as E.164: %s", mask_phone(raw))
        kept = raw.strip()[:20]
        return kept or None


def _twiml(reply: MessagingResponse, status: int = 200) -> Response:
    return Response(str(reply), status=status, mimetype="text/xml")


def _twiml_error(status: int, reason: str) -> Response:
    """An error answer Twilio's debugger can show: empty TwiML with the reason in a header."""
    response = _twiml(MessagingResponse(), status)
    response.headers["X-Aftercare-Error"] = reason
    return response
