"""The inbox: replies needing attention, and marking one handled."""

from __future__ import annotations

import logging

from flask import abort, flash, g, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlmodel import select

from notifier.delivery.twilio_media import MediaUnavailable
from notifier.replies.inbox import mark_handled
from notifier.staff import inbox
from notifier.store.db import reading, transaction
from notifier.store.models import Reply, ReplyMedia
from webhooks.dashboard.auth import local_path
from webhooks.dashboard.blueprint import bp
from webhooks.photos import photo_response
from webhooks.services import services

log = logging.getLogger(__name__)
MAX_PAGE = 10_000


@bp.get("/")
def inbox_page() -> ResponseReturnValue:
    page = whole_number(request.args.get("page", "1"), "page", MAX_PAGE)
    with reading(services().engine) as db:
        items = inbox.unhandled(db, page)
        media = inbox.media_of(db, [item.reply for item in items])
    more = len(items) == inbox.PAGE_SIZE
    return render_template("dashboard/inbox.html", items=items, media=media, page=page, more=more)


@bp.get("/replies/<int:reply_id>/photos/<int:position>")
def reply_photo(reply_id: int, position: int) -> ResponseReturnValue:
    """A photo a patient sent, as the staff API serves it."""
    svc = services()
    with reading(svc.engine) as db:  # closed before Twilio is asked
        item = db.exec(
            select(ReplyMedia).where(
                ReplyMedia.reply_id == reply_id, ReplyMedia.position == position
            )
        ).first()
    if item is None:
        abort(404, f"Reply {reply_id} has no photo {position}.")
    try:
        return photo_response(svc.settings.twilio, item)
    except MediaUnavailable as error:
        abort(error.status, str(error))


@bp.post("/replies/<int:reply_id>/handled")
def handled(reply_id: int) -> ResponseReturnValue:
    svc = services()
    with transaction(svc.engine) as db:
        reply = db.get(Reply, reply_id)
        if reply is None:
            abort(404, f"There is no reply {reply_id}.")
        changed = mark_handled(db, reply, g.staff, svc.clock())
    log.info("reply %d marked handled by %s", reply_id, g.staff)
    flash("Marked handled." if changed else f"Already handled by {reply.handled_by}.")
    return redirect(local_path(request.form.get("next", "")))


def whole_number(value: str, name: str, highest: int) -> int:
    """A query-string number, or a 400 page naming it."""
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= highest:
        abort(400, f"{name} must be a whole number from 1 to {highest}.")
    return int(value)
