"""Serving a photo a patient sent, for both doorways staff use: the staff API (a
bearer token) and the dashboard (a signed-in session)."""

from __future__ import annotations

from flask import Response

from notifier.delivery.twilio_media import MediaUnavailable, fetch_photo, is_image
from notifier.settings import TwilioSettings
from notifier.store.models import ReplyMedia

# The browser shows the file and nothing else: no script, no other resource.
HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def photo_response(twilio: TwilioSettings | None, item: ReplyMedia) -> Response:
    """The file, fetched from Twilio with the account's credentials (never shown to
    the browser); MediaUnavailable, with the status to answer, if it cannot be."""
    if not is_image(item.content_type):
        raise MediaUnavailable(f"not an image ({item.content_type}): not served", 415)
    photo = fetch_photo(twilio, item.url)
    return Response(photo.content, mimetype=photo.content_type, headers=HEADERS)
