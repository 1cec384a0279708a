"""Sending through Twilio's REST API: the one module that knows Twilio's errors.

The twilio library's own async client (`AsyncTwilioHttpClient`, aiohttp) runs on
an event loop of the sender's own, in one thread: a batch of a few hundred
requests is in flight at once without a thread each, at about a third of the CPU
per message of threads and blocking calls. Every call goes to
`TWILIO_API_BASE_URL`, with no retries of its own. Every Twilio answer and
transport failure is converted here into the four kinds of `notifier.delivery.sender`,
so the dispatcher decides on kinds, never on raw Twilio codes.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import requests
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from notifier.delivery.sender import (
    Accepted,
    Ambiguous,
    Lookup,
    Outgoing,
    PermanentFailure,
    RateLimited,
    RecipientOptedOut,
    Redact,
    RetryLater,
    SendError,
)
from notifier.metrics import TWILIO_SECONDS
from notifier.privacy import mask_phone, scrub
from notifier.settings import TwilioSettings
from notifier.store.models import Channel

log = logging.getLogger(__name__)

OPTED_OUT = 21610  # Twilio: "Attempt to send to unsubscribed recipient"
TOO_MANY_REQUESTS = 20429
NOT_FOUND = 20404  # Twilio no longer has the resource (nothing left to redact)
LIST_PAGE_SIZE = 50

T = TypeVar("T")


class _OnlyWarnings(logging.Filter):
    """Drops the SDK's INFO request logs, which carry phone numbers and bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


# The level alone could be lowered again by logging config; the filter cannot.
for _name in ("twilio.http_client", "twilio.async_http_client"):
    _sdk_log = logging.getLogger(_name)
    _sdk_log.setLevel(logging.WARNING)
    _sdk_log.addFilter(_OnlyWarnings())


class _Connection:
    """Whether the request under way got a connection: before that nothing was sent."""

    made = False


_CONNECTION: contextvars.ContextVar[_Connection] = contextvars.ContextVar("twilio_connection")


class TwilioSender:
    """Sends messages through Twilio, a batch at a time, and looks up what Twilio has.

    At most `concurrency` requests are in flight; each has `timeout_seconds` from the
    moment it starts. `close()` ends the event loop's thread.
    """

    def __init__(self, settings: TwilioSettings, concurrency: int = 32) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._io = threading.Thread(target=self._loop.run_forever, name="twilio-io", daemon=True)
        self._io.start()
        self._http = AsyncTwilioHttpClient(pool_connections=False)
        self._http.session = self._run(_session(settings.api_base_url, concurrency))
        self._client = _client(settings, self._http)
        self._messages: Any = self._client.api.account.messages
        self._slots = asyncio.Semaphore(concurrency)

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Accepted | Exception]:
        """Send every message concurrently; each one's `Accepted` or `SendError`, in order."""
        return self._run(self._send_all(messages))

    def send(self, message: Outgoing) -> Accepted:
        """Ask Twilio to send `message`; raise a `SendError` kind if it did not take it."""
        [outcome] = self.send_batch([message])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def find_batch(self, lookups: Sequence[Lookup]) -> list[list[str] | Exception]:
        """Look up every message concurrently (within the same concurrency as sends)."""
        return self._run(self._find_all(lookups))

    def find_sent(self, lookup: Lookup) -> list[str]:
        """The SIDs of the outbound messages Twilio has that match `lookup`, newest first.

        Used before re-sending after an ambiguous failure, so a message Twilio did
        take is adopted instead of sent twice. A `SendError` here means the lookup
        failed, not that nothing was sent.
        """
        [outcome] = self.find_batch([lookup])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def redact_batch(self, redactions: Sequence[Redact]) -> list[Exception | None]:
        """Redact every message's body at Twilio (`Body=""`) and delete a reply's photos,
        concurrently; a message Twilio no longer has counts as done."""
        return self._run(self._redact_all(redactions))

    def close(self) -> None:
        """Close pooled connections to Twilio and stop the event loop."""
        if self._loop.is_closed():
            return
        self._run(self._http.session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._io.join()
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _send_all(self, messages: Sequence[Outgoing]) -> list[Accepted | Exception]:
        outcomes = await asyncio.gather(*(self._send_one(m) for m in messages))
        return list(outcomes)

    async def _find_all(self, lookups: Sequence[Lookup]) -> list[list[str] | Exception]:
        outcomes = await asyncio.gather(*(self._find_one(lookup) for lookup in lookups))
        return list(outcomes)

    async def _find_one(self, lookup: Lookup) -> list[str] | Exception:
        address = _address(lookup.to, lookup.channel)
        try:
            async with self._slots:
                return await self._converted(
                    "lookup", lambda: self._matches(address, lookup.body, _utc(lookup.since))
                )
        except SendError as error:
            return error

    async def _redact_all(self, redactions: Sequence[Redact]) -> list[Exception | None]:
        outcomes = await asyncio.gather(*(self._redact_one(item) for item in redactions))
        return list(outcomes)

    async def _redact_one(self, item: Redact) -> Exception | None:
        message: Any = self._messages(item.sid)
        try:
            async with self._slots:
                if item.inbound:
                    photos = await self._converted("redact", lambda: message.media.list_async())
                    for photo in photos:
                        media: Any = message.media(photo.sid)
                        await self._converted("redact", media.delete_async)
                await self._converted("redact", lambda: message.update_async(body=""))
        except SendError as error:
            return None if error.code == NOT_FOUND else error
        return None

    async def _send_one(self, message: Outgoing) -> Accepted | Exception:
        try:
            params = self._params(message)
            async with self._slots:  # waiting for a slot is not part of the timeout
                created = await self._converted(
                    "send", lambda: self._messages.create_async(**params)
                )
        except SendError as error:
            return error
        log.debug(  # at a thousand a second a line each is noise: the row keeps the SID
            "Twilio accepted %s (%s to %s)", created.sid, message.channel, mask_phone(message.to)
        )
        return Accepted(sid=str(created.sid), status=_status(created.status))

    def _params(self, message: Outgoing) -> dict[str, str]:
        params = {"to": _address(message.to, message.channel), **self._sender(message.channel)}
        if message.content_sid is not None:
            params["content_sid"] = message.content_sid
            params["content_variables"] = message.content_variables or "{}"
        else:
            params["body"] = message.body
        if message.status_callback is not None:
            params["status_callback"] = message.status_callback
        return params

    async def _converted(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Twilio call within the timeout, turning its failures into the
        `SendError` kinds; its time goes to `aftercare_twilio_request_seconds`.

        The originals are not chained (`from None`): their text carries phone
        numbers and request URLs, and tracebacks are logged unmasked.
        """
        connection = _Connection()
        token = _CONNECTION.set(connection)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.timeout_seconds):
                return await call()
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _http_error(exc.status, exc.code, _detail(exc)) from None
        except TwilioException as exc:
            raise _page_error(exc) from None
        except json.JSONDecodeError:
            raise Ambiguous("Twilio answered with something that is not JSON") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _transport_error(exc, connected=connection.made) from None
        finally:
            _CONNECTION.reset(token)
            TWILIO_SECONDS.labels(operation=operation).observe(time.perf_counter() - started)

    async def _matches(self, address: str, body: str | None, since: datetime) -> list[str]:
        # Not filtered by DateSent: Twilio leaves date_sent empty while a message is
        # still queued, which is exactly the message an ambiguous send may have left.
        # Twilio lists newest first, so the walk stops at the first one created before
        # `since`.
        found: list[str] = []
        records = await self._messages.stream_async(to=address, page_size=LIST_PAGE_SIZE)
        async for record in records:
            created = record.date_created
            if isinstance(created, datetime) and _utc(created) < since:
                break
            same_body = body is None or record.body == body
            if same_body and str(record.direction or "").startswith("outbound"):
                found.append(str(record.sid))
        return found

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


async def _session(base_url: str, concurrency: int) -> aiohttp.ClientSession:
    """The aiohttp session the SDK's async client uses: `concurrency` connections, a
    mark on each request once it has a connection, and the proxy (HTTPS_PROXY,
    NO_PROXY...) and CA bundle (REQUESTS_CA_BUNDLE) of the environment, read once."""
    proxy = requests.utils.get_environ_proxies(base_url).get(base_url.split(":", 1)[0])
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_create_end.append(_connected)
    tracing.on_connection_reuseconn.append(_connected)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=concurrency, ssl=ssl.create_default_context(cafile=bundle)
        ),
        proxy=proxy,
        trace_configs=[tracing],
    )


async def _connected(
    _session: aiohttp.ClientSession, _context: SimpleNamespace, _params: object
) -> None:
    connection = _CONNECTION.get(None)
    if connection is not None:
        connection.made = True


def _client(settings: TwilioSettings, http: Any) -> Any:
    """A Twilio client whose every call goes to `settings.api_base_url`."""
    client = Client(settings.account_sid, settings.auth_token, http_client=http)
    # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host.
    client.edge = client.region = None
    client.api.base_url = settings.api_base_url.rstrip("/")
    return client


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


def _transport_error(exc: BaseException, *, connected: bool) -> SendError:
    """RetryLater when no connection was made (nothing sent), else Ambiguous."""
    # The exception's own words, masked: aiohttp's text can repeat the URL and its query.
    what = scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
    if not connected:
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
