"""Photos patients sent, fetched from Twilio for staff to see (SPEC §10).

Twilio keeps an inbound message's media at a URL under the account
(`…/Accounts/AC…/Messages/MM…/Media/ME…`), readable with the account's credentials
(and, by default, redirecting to a short-lived CDN address). Staff never see that URL
or the credentials: the service fetches the file and passes it on. Only images are
served, at most MAX_MEDIA_BYTES, and only from this account's own media URLs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from notifier.settings import TwilioSettings

log = logging.getLogger(__name__)

MAX_MEDIA_BYTES = 5 * 1024 * 1024  # Twilio's own limit for an MMS
CONNECT_TIMEOUT = 5.0
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Photo:
    content: bytes
    content_type: str


class MediaUnavailable(Exception):
    """The file cannot be shown; `status` is the HTTP status to answer staff with."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


def is_image(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower().startswith("image/")


def fetch_photo(twilio: TwilioSettings | None, url: str) -> Photo:
    """The image at `url`, one of this account's media URLs; `MediaUnavailable` if it
    is not one, is not an image, is too big, or Twilio does not have it (any more)."""
    if twilio is None:
        raise MediaUnavailable("Twilio is not configured: photos cannot be fetched", 503)
    account = f"{twilio.api_base_url.rstrip('/')}/2010-04-01/Accounts/{twilio.account_sid}/"
    if not url.startswith(account):
        raise MediaUnavailable("not a media address of this Twilio account", 404)
    try:
        with requests.get(
            url,
            auth=(twilio.account_sid, twilio.auth_token),  # dropped if redirected elsewhere
            timeout=(CONNECT_TIMEOUT, twilio.timeout_seconds),
            stream=True,
        ) as answer:
            if answer.status_code == 404:
                raise MediaUnavailable("Twilio no longer has this file", 404)
            if answer.status_code != 200:
                raise MediaUnavailable(f"Twilio answered {answer.status_code}", 502)
            content_type = answer.headers.get("Content-Type", "")
            if not is_image(content_type):
                raise MediaUnavailable("not an image", 415)
            content = _read_capped(answer)
    except requests.RequestException as error:
        log.warning("fetching a photo from Twilio failed: %s", type(error).__name__)
        raise MediaUnavailable("Twilio could not be reached", 502) from None
    return Photo(content, content_type.split(";", 1)[0].strip().lower())


def _read_capped(answer: requests.Response) -> bytes:
    declared = answer.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_MEDIA_BYTES:
        raise MediaUnavailable(f"larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB", 413)
    content = bytearray()
    for chunk in answer.iter_content(_CHUNK):
        content += chunk
        if len(content) > MAX_MEDIA_BYTES:
            raise MediaUnavailable(f"larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB", 413)
    return bytes(content)
