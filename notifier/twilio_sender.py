"""Sending through Twilio's REST API: the one module that knows Twilio's errors.

One `twilio.rest.Client` per sender, pointed at `TWILIO_API_BASE_URL`, with no
retries of its own. Every Twilio answer and transport failure is converted here
into the four kinds of `notifier.sending`, so the dispatcher decides on kinds,
never on raw Twilio codes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from notifier.privacy import mask_phone, scrub
from notifier.sending import (
    Accepted,
    Ambiguous,
    Channel,
    Outgoing,
    PermanentFailure,
    RateLimited,
    RecipientOptedOut,
    RetryLater,
    SendError,
)
from notifier.settings import TwilioSettings

log = logging.getLogger(__name__)

OPTED_OUT = 21610  # Twilio: "Attempt to send to unsubscribed recipient"
TOO_MANY_REQUESTS = 20429
LIST_PAGE_SIZE = 50
POOL_SIZE = 512  # connections kept per host: up to DISPATCH_CONCURRENCY sends at once

T = TypeVar("T")


class _OnlyWarnings(logging.Filter):
    """Drops the SDK's INFO request logs, which carry phone numbers and bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


# The level alone could be lowered again by logging config; the filter cannot.
_sdk_log = logging.getLogger("twilio.http_client")
_sdk_log.setLevel(logging.WARNING)
_sdk_log.addFilter(_OnlyWarnings())


class TwilioSender:
    """Sends one message per call through Twilio and looks up what Twilio already has."""

    def __init__(self, settings: TwilioSettings) -> None:
        self._settings = settings
        self._http = _http_client(settings.timeout_seconds, settings.api_base_url)
        self._client = _client(settings, self._http)
        self._messages: Any = self._client.api.account.messages

    def send(self, message: Outgoing) -> Accepted:
        """Ask Twilio to send `message`; raise a `SendError` kind if it did not take it."""
        params = {"to": _address(message.to, message.channel), **self._sender(message.channel)}
        if message.content_sid is not None:
            params["content_sid"] = message.content_sid
            params["content_variables"] = message.content_variables or "{}"
        else:
            params["body"] = message.body
        if message.status_callback is not None:
            params["status_callback"] = message.status_callback
        created = _converted(lambda: self._messages.create(**params))
        # DEBUG: at a thousand messages a second a line each is noise (and CPU); the
        # pass logs its summary, and the row keeps the SID.
        log.debug(
            "Twilio accepted %s (%s to %s)", created.sid, message.channel, mask_phone(message.to)
        )
        return Accepted(sid=str(created.sid), status=_status(created.status))

    def find_sent(self, to: str, channel: Channel, body: str | None, since: datetime) -> str | None:
        """Return the SID of an outbound message with this body Twilio has for `to` since `since`.

        Used before re-sending after an ambiguous failure, so a message Twilio did
        take is adopted instead of sent twice. A `SendError` here means the lookup
        failed, not that nothing was sent.
        """
        address = _address(to, channel)
        return _converted(lambda: self._first_match(address, body, _utc(since)))

    def close(self) -> None:
        """Close pooled connections to Twilio."""
        if self._http.session is not None:
            self._http.session.close()

    def _first_match(self, address: str, body: str | None, since: datetime) -> str | None:
        # Not filtered by DateSent: Twilio leaves date_sent empty while a message is
        # still queued, which is exactly the message an ambiguous send may have left.
        # Twilio lists newest first, so the walk stops at the first one created before
        # `since`.
        for record in self._messages.stream(to=address, page_size=LIST_PAGE_SIZE):
            created = record.date_created
            if isinstance(created, datetime) and _utc(created) < since:
                return None
            same_body = body is None or record.body == body
            if same_body and str(record.direction or "").startswith("outbound"):
                return str(record.sid)
        return None

    def _sender(self, channel: Channel) -> dict[str, str]:
        """`from_` or `messaging_service_sid` for `channel`, as configured."""
        settings = self._settings
        if channel == "whatsapp":
            if not settings.whatsapp_from:
                raise PermanentFailure("WhatsApp sender not configured (TWILIO_WHATSAPP_FROM)")
            return {"from_": _address(settings.whatsapp_from.removeprefix("whatsapp:"), channel)}
        if settings.messaging_service_sid:
            return {"messaging_service_sid": settings.messaging_service_sid}
        if settings.sms_from:
            return {"from_": settings.sms_from}
        raise PermanentFailure(
            "SMS sender not configured (TWILIO_SMS_FROM or TWILIO_MESSAGING_SERVICE_SID)"
        )


def _address(number: str, channel: Channel) -> str:
    """An E.164 number as Twilio addresses it on `channel`: `whatsapp:+E164` or `+E164`."""
    return f"whatsapp:{number}" if channel == "whatsapp" else number


def _http_client(timeout_seconds: float, base_url: str) -> Any:
    """The SDK's HTTP client with one timeout and no retries on either scheme.

    The proxy (HTTPS_PROXY, NO_PROXY...) and CA bundle (REQUESTS_CA_BUNDLE) that
    requests would read from the environment on every call are read once, here:
    the per-call reading was a quarter of the CPU a send costs."""
    http = TwilioHttpClient(timeout=timeout_seconds)
    session = http.session
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(max_retries=0, pool_maxsize=POOL_SIZE))
    http.proxy = requests.utils.get_environ_proxies(base_url)
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    session.trust_env = False
    return http


def _client(settings: TwilioSettings, http: Any) -> Any:
    """A Twilio client whose every call goes to `settings.api_base_url`."""
    client = Client(settings.account_sid, settings.auth_token, http_client=http)
    # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host.
    client.edge = client.region = None
    client.api.base_url = settings.api_base_url.rstrip("/")
    return client


def _converted(call: Callable[[], T]) -> T:
    """Run a Twilio call, turning its failures into the `SendError` kinds.

    The originals are not chained (`from None`): their text carries phone
    numbers and request URLs, and tracebacks are logged unmasked.
    """
    try:
        return call()
    except (TwilioRestException, TwilioServiceException) as exc:
        raise _http_error(exc.status, exc.code, _detail(exc)) from None
    except TwilioException as exc:
        raise _page_error(exc) from None
    except requests.RequestException as exc:
        raise _transport_error(exc) from None
    except json.JSONDecodeError:
        raise Ambiguous("Twilio answered with something that is not JSON") from None


def _http_error(status: int, code: int | None, detail: str) -> SendError:
    """The kind for an HTTP error answer from Twilio."""
    code = code if code != status else None  # the SDK fills in the status when Twilio gave no code
    message = f"Twilio answered {status}" + (f" (error {code})" if code else "")
    message += f": {scrub(detail)}"
    if code == OPTED_OUT:
        return RecipientOptedOut(message, code=code)
    if status == 429 or code == TOO_MANY_REQUESTS:
        return RateLimited(message, code=code)
    if status >= 500:
        return Ambiguous(message, code=code)
    if status == 401:
        # Wrong or rotated credentials: the messages are fine, the deploy is not.
        log.error("Twilio refused our credentials (TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)")
        return RetryLater(message, code=code)
    return PermanentFailure(message, code=code)


def _detail(exc: Any) -> str:
    """Twilio's own words about an error, from either of the SDK's exception types."""
    if isinstance(exc, TwilioServiceException):
        return str(exc.detail or exc.title)
    return str(exc.msg)


def _page_error(exc: TwilioException) -> SendError:
    """The kind for a failed list page: the SDK raises a bare TwilioException with the response."""
    response: Any = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return Ambiguous(f"Twilio client error: {scrub(str(exc.args[0]) if exc.args else '')}")
    payload = _json_object(str(response.text))
    code = payload.get("code")
    return _http_error(
        status, code if isinstance(code, int) else None, str(payload.get("message", ""))
    )


def _json_object(text: str) -> dict[str, Any]:
    """`text` parsed as a JSON object, or empty if it is not one."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _transport_error(exc: requests.RequestException) -> SendError:
    """RetryLater when no connection was made (nothing sent), else Ambiguous."""
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", None)  # urllib3's MaxRetryError says why it gave up
    # The reason, not the whole exception: urllib3's text repeats the URL and its query.
    what = scrub(f"{type(exc).__name__}: {reason or cause}")
    if isinstance(exc, requests.ConnectTimeout) or isinstance(
        reason, (NewConnectionError, ConnectTimeoutError)
    ):
        return RetryLater(f"Could not connect to Twilio, nothing sent ({what})")
    return Ambiguous(f"No complete answer from Twilio, it may have sent ({what})")


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC: the SDK formats DateSent filters without converting time zones."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _status(value: object) -> str:
    """Twilio's status word, `queued` if it gave none."""
    return str(getattr(value, "value", value) or "queued")
