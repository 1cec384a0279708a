"""A fake Twilio REST API on loopback that checks every request against Twilio's OpenAPI spec.

In-process (pytest):

    with FakeTwilio() as fake:
        settings = TwilioSettings(..., api_base_url=fake.base_url)
        ...
        assert fake.violations == []

As a separate process (benchmarks, fault tests with several workers):

    python -m tests.support.fake_twilio --port 8099 --latency 0.1 --fault-rate 0.05 --seed 7

prints `listening on http://127.0.0.1:8099` once ready, and serves, besides the
Twilio API, `GET /_fake/messages`, `GET /_fake/violations` (JSON lists) and
`POST /_fake/script` (JSON `{"method": "POST", "steps": ["429", ["error", 400, 21211]]}`).

It serves `POST` and `GET /2010-04-01/Accounts/{sid}/Messages.json`, and for one
message `POST .../Messages/{Sid}.json` (redacting its body), `GET
.../Messages/{Sid}/Media.json` and `DELETE .../Media/{Sid}.json`. A request the
spec does not allow (including parameters the spec does not name, which
openapi-core alone lets through) is answered 400 and recorded in `violations`, as
are Twilio's own rules the spec cannot say (a From or MessagingServiceSid, a Body,
From and To on one channel) and wrong credentials (401).

Fault steps, consumed one per request (POST unless scripted for GET):
  "429"           429, error 20429, nothing recorded
  "500"           500, nothing recorded
  "500_sent"      the message is recorded as accepted, then 500
  "timeout"       the message is recorded, the answer (201) comes after `timeout_delay`
  "timeout_lost"  nothing recorded, no answer for `timeout_delay`, then the connection closes
  "reset"         nothing recorded, the connection closes without an answer
  ("error", status, code)  a Twilio error answer, nothing recorded
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO_ROOT / ".." / "shared" / "twilio" / "twilio_api_v2010.json"
SPEC_HOST = "https://api.twilio.com"  # the spec's server; requests are checked as if sent there
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
# One message, and its photos: redacting an erased patient's messages.
_ONE = r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages/(?P<message>[^/.]+)"
MESSAGE_PATH = re.compile(_ONE + r"\.json$")
MEDIA_LIST_PATH = re.compile(_ONE + r"/Media\.json$")
MEDIA_PATH = re.compile(_ONE + r"/Media/(?P<media>[^/.]+)\.json$")
# A photo's file itself (what `MediaUrlN` of an inbound webhook points at), read with
# the account's credentials. Not in the JSON API's spec: Twilio serves the file there.
MEDIA_FILE_PATH = re.compile(_ONE + r"/Media/(?P<media>[^/.]+)$")
PHOTO = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(64)) + b"\xff\xd9"  # a JPEG's shape
SPEC_PATHS = [
    (MESSAGES_PATH, MESSAGES),
    (MESSAGE_PATH, "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"),
    (MEDIA_LIST_PATH, "/2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}/Media.json"),
    (MEDIA_PATH, "/2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}/Media/{Sid}.json"),
]

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token-0123456789"
DEFAULT_PAGE_SIZE = 50
RANDOM_FAULTS = ("429", "500", "500_sent", "timeout")
FAULT_KINDS = {"429", "500", "500_sent", "timeout", "timeout_lost", "reset", "error"}

ERROR_MESSAGES = {
    20001: "Invalid request: {detail}",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21910: "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same channel.",
}

_E164 = r"\+[1-9]\d{1,14}"
_PHONE_NUMBER = re.compile(
    rf"^(?:{_E164}|whatsapp:{_E164}|\d{{3,8}}|(?=.*[A-Za-z])[A-Za-z0-9 ]{{1,11}})$"
)


# --- the contract ------------------------------------------------------------


def spec_path() -> Path:
    """Where Twilio's spec is: $TWILIO_OPENAPI_SPEC, else `shared/` beside the repo."""
    return Path(os.environ.get("TWILIO_OPENAPI_SPEC") or DEFAULT_SPEC).resolve()


def is_phone_number(value: Any) -> bool:
    """Twilio's `phone-number` format: E.164, `whatsapp:`+E.164, a short code or a sender ID."""
    return isinstance(value, str) and bool(_PHONE_NUMBER.match(value))


def is_uri(value: Any) -> bool:
    """An absolute http(s) URL with a hostname without underscores, as Twilio requires."""
    if not isinstance(value, str) or any(ch.isspace() for ch in value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in parts.netloc


class Contract:
    """Twilio's OpenAPI spec, plus the checks openapi-core leaves out (unknown parameters)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        # The spec itself is Twilio's and trusted: skipping its self-check saves half a second.
        formats = {"phone-number": is_phone_number, "uri": is_uri}
        self._app = OpenAPI.from_dict(
            spec, config=Config(spec_validator_cls=None, extra_format_validators=formats)
        )
        # Twilio's answers put relative paths (next_page_uri, uri) in fields typed `uri`.
        relative = {
            "uri": lambda value: isinstance(value, str) and not any(c.isspace() for c in value)
        }
        self._answers = OpenAPI.from_dict(
            spec, config=Config(spec_validator_cls=None, extra_format_validators=relative)
        )
        self._spec = spec

    def check(self, method: str, path: str, query: list[tuple[str, str]], body: bytes, headers):
        """Every way this request breaks the spec, as readable lines (empty when it is valid)."""
        request = MockRequest(
            SPEC_HOST,
            method,
            path,
            args=query,
            headers=headers,
            data=body,
            content_type=headers.get("Content-Type", ""),
        )
        result = self._app.unmarshal_request(request)
        problems = [_describe(error) for error in result.errors]
        template = next((t for pattern, t in SPEC_PATHS if pattern.match(path)), None)
        if template is not None:
            problems += self._unknown(template, method, query, body, headers)
        return [f"{method} {path}: {problem}" for problem in problems]

    def check_response(self, method: str, path: str, status: int, payload: Any) -> list[str]:
        """Every way an answer to `method path` breaks the spec (to keep the fake honest)."""
        request = MockRequest(SPEC_HOST, method, path, content_type="")
        response = MockResponse(json.dumps(payload).encode(), status_code=status)
        result = self._answers.unmarshal_response(request, response)
        return [_describe(error) for error in result.errors]

    def _unknown(self, template: str, method: str, query, body: bytes, headers) -> list[str]:
        operation = self._spec["paths"][template].get(method.lower())
        if operation is None:
            return []
        problems = _unexpected(query, _query_names(operation), set(), "query parameter")
        if "form-urlencoded" in headers.get("Content-Type", "") and body:
            fields = parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
            names, arrays = _form_fields(operation)
            problems += _unexpected(fields, names, arrays, "form parameter")
        return problems


def _query_names(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}


def _form_fields(operation: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The form parameter names an operation declares, and which of them may repeat."""
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/x-www-form-urlencoded", {}).get("schema", {})
    properties = schema.get("properties", {})
    arrays = {name for name, prop in properties.items() if prop.get("type") == "array"}
    return set(properties), arrays


def _unexpected(pairs, allowed: set[str], repeatable: set[str], what: str) -> list[str]:
    names = [name for name, _ in pairs]
    problems = [f"unknown {what} {name!r}" for name in dict.fromkeys(names) if name not in allowed]
    repeated = {name for name in names if names.count(name) > 1 and name not in repeatable}
    return problems + [f"{what} {name!r} given more than once" for name in sorted(repeated)]


def _describe(error: Exception) -> str:
    """One line for an openapi-core error, with the schema's own complaint."""
    cause = error.__cause__
    details = [e.message for e in getattr(cause, "schema_errors", None) or ()]
    if not details and cause is not None:
        details = [f"{type(cause).__name__}: {cause}"]
    name = getattr(error, "name", None)
    where = f" {name!r}" if name else ""
    return f"{type(error).__name__}{where}: " + "; ".join(details or [str(error)])


_contract_lock = threading.Lock()


@cache
def _cached_contract(path: Path) -> Contract:
    return Contract(json.loads(path.read_text(encoding="utf-8")))


def load_contract(path: Path | None = None) -> Contract:
    """The spec, loaded once per process (it is 1.8 MB and takes about a second)."""
    with _contract_lock:
        return _cached_contract(path or spec_path())


# --- state -------------------------------------------------------------------


@dataclass(frozen=True)
class FakeMessage:
    """A message the fake accepted, with exactly the parameters it was given."""

    sid: str
    to: str
    from_: str | None
    body: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    date_created: datetime
    params: dict[str, str] = field(default_factory=dict)
    direction: str = "outbound-api"
    media: tuple[str, ...] = ()  # the SIDs of the photos it carries (MExxx)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["date_created"] = self.date_created.isoformat()
        return data


@dataclass(frozen=True)
class RecordedRequest:
    """A request that reached the fake's Twilio API (valid or not)."""

    method: str
    path: str
    query: dict[str, str]


@dataclass(frozen=True)
class Fault:
    """One scripted answer: see the module docstring for the kinds."""

    kind: str
    status: int = 0
    code: int = 0

    @classmethod
    def of(cls, step: str | Sequence[Any]) -> Fault:
        if isinstance(step, str):
            fault = cls(step)
        else:
            kind, status, code = step
            fault = cls(str(kind), int(status), int(code))
        if fault.kind not in FAULT_KINDS or (fault.kind == "error") != bool(fault.status):
            raise ValueError(f"unknown fault step {step!r}")
        return fault


@dataclass(frozen=True)
class Reply:
    """What the handler writes back; `status == 0` means close without answering."""

    status: int
    payload: Any = None
    content: bytes | None = None  # a file, sent as it is instead of `payload` as JSON
    content_type: str = "application/json; charset=utf-8"

    @classmethod
    def error(cls, status: int, code: int, **values: str) -> Reply:
        message = ERROR_MESSAGES.get(code, f"Error {code}")
        payload = {
            "code": code,
            "message": message.format_map(defaultdict(str, values)),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return cls(status, payload)


DROP = Reply(0)


# --- the fake ----------------------------------------------------------------


class FakeTwilio:
    """Twilio's Messages API on 127.0.0.1, recording messages and contract violations."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        port: int = 0,
        latency: float = 0.0,
        timeout_delay: float = 3.0,
        fault_rate: float = 0.0,
        faults: Iterable[str] = RANDOM_FAULTS,
        seed: int | None = None,
        validate: bool = True,
        spec: Path | None = None,
        clock: Callable[[], datetime] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))  # stamps date_created
        self.reuse_port = reuse_port  # several processes may serve one port (benchmarks)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.latency = latency
        self.timeout_delay = timeout_delay
        self.fault_rate = fault_rate
        self._random_faults = [Fault.of(kind) for kind in faults]
        self._random = random.Random(seed)
        self._contract = load_contract(spec) if validate else None
        self._lock = threading.Lock()
        self._messages: list[FakeMessage] = []
        self._files: dict[str, tuple[bytes, str]] = {}  # photo SID -> its bytes and type
        self._violations: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Fault]] = {"POST": deque(), "GET": deque()}
        self._in_flight = 0
        self.most_in_flight = 0  # the most requests waiting for an answer at once
        self._stopping = threading.Event()
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeTwilio:
        """Bind 127.0.0.1 (an ephemeral port unless one was given) and serve in a thread."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self, reuse_port=self.reuse_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and wait for every handler to finish."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.close_all()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeTwilio is not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # what tests look at

    @property
    def messages(self) -> list[FakeMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to the Twilio API, in order."""
        with self._lock:
            return list(self._requests)

    def script(self, steps: Iterable[str | Sequence[Any]], method: str = "POST") -> None:
        """Queue fault steps for the next requests of `method`; then back to normal."""
        faults = [Fault.of(step) for step in steps]
        with self._lock:
            self._scripts[method.upper()].extend(faults)

    def add_message(
        self, to: str, body: str, from_: str = "+15005550006", created: datetime | None = None
    ) -> FakeMessage:
        """Record a message as if sent earlier through the API (for lookups)."""
        return self._record({"To": to, "From": from_, "Body": body}, created)

    def add_inbound(
        self,
        from_: str,
        body: str,
        photos: int = 0,
        *,
        content: bytes = PHOTO,
        content_type: str = "image/jpeg",
    ) -> FakeMessage:
        """Record a message a patient sent the clinic, with `photos` files (each `content`)."""
        message = replace(
            self._record({"To": "+15005550006", "From": from_, "Body": body}),
            direction="inbound",
            media=tuple("ME" + secrets.token_hex(16) for _ in range(photos)),
        )
        self._replace(message)
        with self._lock:
            self._files.update(dict.fromkeys(message.media, (content, content_type)))
        return message

    def media_url(self, message: FakeMessage, n: int) -> str:
        """The address of the message's file `n`, as Twilio gives it in `MediaUrlN`."""
        base = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages"
        return f"{base}/{message.sid}/Media/{message.media[n]}"

    def message(self, sid: str) -> FakeMessage | None:
        with self._lock:
            return next((m for m in self._messages if m.sid == sid), None)

    def _replace(self, message: FakeMessage) -> None:
        with self._lock:
            self._messages = [message if m.sid == message.sid else m for m in self._messages]

    # handling

    def handle(self, method: str, path: str, query: list[tuple[str, str]], body: bytes, headers):
        """The reply to one request to the Twilio API."""
        with self._lock:
            self._requests.append(RecordedRequest(method, path, dict(query)))
        denied = self._authenticate(headers)
        if denied is not None:
            return denied
        file = MEDIA_FILE_PATH.match(path)
        if file is not None and method == "GET" and file["sid"] == self.account_sid:
            return self._file(file)
        if self._contract is not None:
            problems = self._contract.check(method, path, query, body, headers)
            if problems:
                self._violation(*problems)
                return Reply.error(400, 20001, detail="; ".join(problems))
        one = _match_one(path, self.account_sid)
        if one is not None:
            return self._one_message(method, one, body)
        match = MESSAGES_PATH.match(path)
        if match is None or match["sid"] != self.account_sid or method not in ("POST", "GET"):
            self._violation(f"{method} {path}: not served by the fake")
            return Reply.error(404, 20404)
        if method == "POST":
            params = dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
            return self._rejected(params) or self._create(params)
        return self._list(path, query)

    def _authenticate(self, headers) -> Reply | None:
        scheme, _, encoded = (headers.get("Authorization") or "").partition(" ")
        try:
            credentials = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            credentials = ""
        if scheme.lower() == "basic" and credentials == f"{self.account_sid}:{self.auth_token}":
            return None
        self._violation("authentication: not the account SID and auth token")
        return Reply.error(401, 20003)

    def _rejected(self, params: dict[str, str]) -> Reply | None:
        """Twilio's own rules beyond the spec: a sender, some content, one channel."""
        sender, to = params.get("From", ""), params.get("To", "")
        if not (sender or params.get("MessagingServiceSid")):
            problem, code = "a From or MessagingServiceSid is required", 21603
        elif not (params.get("Body") or params.get("ContentSid") or params.get("MediaUrl")):
            problem, code = "a Body, ContentSid or MediaUrl is required", 21602
        elif sender and sender.startswith("whatsapp:") != to.startswith("whatsapp:"):
            problem, code = "From and To are on different channels", 21910
        else:
            return None
        self._violation(f"POST Messages.json: {problem}")
        return Reply.error(400, code)

    def _create(self, params: dict[str, str]) -> Reply:
        fault = self._next_fault("POST")
        self._answer_late()
        kind = fault.kind if fault else ""
        if kind in ("429", "500", "error", "reset", "timeout_lost"):
            return self._failure(fault, params.get("To", ""))
        message = self._record(params)
        if kind == "500_sent":
            return Reply.error(500, 20500)
        if kind == "timeout":
            self._wait(self.timeout_delay)
        return Reply(201, self._resource(message))

    @property
    def in_flight(self) -> int:
        """The requests waiting for their answer right now."""
        with self._lock:
            return self._in_flight

    def _answer_late(self) -> None:
        """Wait `latency` before answering, counting the requests waiting at once."""
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            self._wait(self.latency)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _failure(self, fault: Fault, to: str) -> Reply:
        if fault.kind == "429":
            return Reply.error(429, 20429)
        if fault.kind == "500":
            return Reply.error(500, 20500)
        if fault.kind == "error":
            return Reply.error(fault.status, fault.code, to=to)
        if fault.kind == "timeout_lost":
            self._wait(self.timeout_delay)
        return DROP

    def _list(self, path: str, query: list[tuple[str, str]]) -> Reply:
        fault = self._next_fault("GET")
        self._answer_late()
        if fault is not None and fault.kind == "timeout":
            self._wait(self.timeout_delay)
        elif fault is not None:
            return self._failure(fault, "")
        filters = [(k, v) for k, v in query if k not in ("Page", "PageSize", "PageToken")]
        size = int(dict(query).get("PageSize", DEFAULT_PAGE_SIZE))
        number = int(dict(query).get("Page", 0))
        found = sorted(_matching(self.messages, dict(filters)), key=_newest_first)
        page = found[number * size : (number + 1) * size]
        more = len(found) > (number + 1) * size
        return Reply(200, self._page(path, filters, page, size, number, more))

    def _page(self, path, filters, page, size, number, more) -> dict[str, Any]:
        def uri(n: int) -> str:
            token = [("PageToken", f"PA{n}")] if n else []
            return f"{path}?{urlencode([*filters, ('PageSize', size), ('Page', n), *token])}"

        return {
            "messages": [self._resource(m) for m in page],
            "first_page_uri": uri(0),
            "next_page_uri": uri(number + 1) if more else None,
            "previous_page_uri": uri(number - 1) if number else None,
            "page": number,
            "page_size": size,
            "start": number * size,
            "end": number * size + max(len(page) - 1, 0),
            "uri": uri(number),
        }

    def _one_message(self, method: str, path: re.Match[str], body: bytes) -> Reply:
        """A message's own resource: redact its body (POST Body=""), list its photos, delete
        one. Twilio answers 404 (20404) for a message or photo it does not have."""
        fault = self._next_fault(method) if method in self._scripts else None
        if fault is not None:
            return self._failure(fault, "")
        message = self.message(path["message"])
        if message is None:
            return Reply.error(404, 20404)
        if path.re is MESSAGE_PATH and method == "POST":
            params = dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
            message = replace(message, body=params.get("Body", message.body))
            self._replace(message)
            return Reply(200, self._resource(message))
        if path.re is MEDIA_LIST_PATH and method == "GET":
            return Reply(200, self._media_page(message))
        if path.re is MEDIA_PATH and method == "DELETE" and path["media"] in message.media:
            self._replace(replace(message, media=tuple(set(message.media) - {path["media"]})))
            return Reply(204)
        if path.re is MEDIA_PATH and method == "DELETE":
            return Reply.error(404, 20404)
        self._violation(f"{method} {path.string}: not served by the fake")
        return Reply.error(405, 20001, detail="method not served")

    def _file(self, path: re.Match[str]) -> Reply:
        """A photo's bytes; 404 once deleted (a redaction deletes a reply's photos)."""
        message = self.message(path["message"])
        with self._lock:
            found = self._files.get(path["media"])
        if message is None or path["media"] not in message.media or found is None:
            return Reply.error(404, 20404)
        return Reply(200, content=found[0], content_type=found[1])

    def _media_page(self, message: FakeMessage) -> dict[str, Any]:
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message.sid}/Media"
        created = format_datetime(message.date_created)
        return {
            "media_list": [
                {
                    "account_sid": self.account_sid,
                    "content_type": "image/jpeg",
                    "date_created": created,
                    "date_updated": created,
                    "parent_sid": message.sid,
                    "sid": media,
                    "uri": f"{base}/{media}.json",
                }
                for media in message.media
            ],
            "end": max(len(message.media) - 1, 0),
            "first_page_uri": f"{base}.json?PageSize=50&Page=0",
            "next_page_uri": None,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": None,
            "start": 0,
            "uri": f"{base}.json?PageSize=50&Page=0",
        }

    def _resource(self, message: FakeMessage) -> dict[str, Any]:
        """The message as Twilio shows it (dates in RFC 2822, counts as strings)."""
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message.sid}"
        created = format_datetime(message.date_created)
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": message.body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": message.direction,
            "error_code": None,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "num_media": str(len(message.media)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": "queued",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": message.to,
            "uri": f"{base}.json",
        }

    def _record(self, params: dict[str, str], created: datetime | None = None) -> FakeMessage:
        message = FakeMessage(
            sid="SM" + secrets.token_hex(16),
            to=params["To"],
            from_=params.get("From"),
            body=params.get("Body"),
            messaging_service_sid=params.get("MessagingServiceSid"),
            status_callback=params.get("StatusCallback"),
            date_created=(created or self.clock()).replace(microsecond=0),
            params=dict(params),
        )
        with self._lock:
            self._messages.append(message)
        return message

    def _next_fault(self, method: str) -> Fault | None:
        with self._lock:
            if self._scripts[method]:
                return self._scripts[method].popleft()
            if method == "POST" and self._random.random() < self.fault_rate:
                return self._random.choice(self._random_faults)
        return None

    def _violation(self, *problems: str) -> None:
        with self._lock:
            self._violations.extend(problems)

    def _wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the fake stops."""
        if seconds > 0:
            self._stopping.wait(seconds)


def _match_one(path: str, account_sid: str) -> re.Match[str] | None:
    """`path` as one message's resource (or its photos') of this account, if it is one."""
    for pattern in (MESSAGE_PATH, MEDIA_LIST_PATH, MEDIA_PATH):
        found = pattern.match(path)
        if found is not None and found["sid"] == account_sid:
            return found
    return None


def _matching(messages: list[FakeMessage], filters: dict[str, str]) -> list[FakeMessage]:
    """Messages passing Twilio's list filters; the fake counts a message sent when created."""
    after = _parse_time(filters.get("DateSent>"))
    before = _parse_time(filters.get("DateSent<"))
    return [
        m
        for m in messages
        if filters.get("To", m.to) == m.to
        and filters.get("From", m.from_) == m.from_
        and (after is None or m.date_created >= after)
        and (before is None or m.date_created <= before)
    ]


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _newest_first(message: FakeMessage) -> tuple[float, str]:
    return (-message.date_created.timestamp(), message.sid)


# --- HTTP plumbing -----------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Keeps track of open connections so `stop` can close them and wait for their threads."""

    daemon_threads = True
    request_queue_size = 512  # many workers connect at once; the default 5 drops their SYNs

    def __init__(
        self, address: tuple[str, int], fake: FakeTwilio, *, reuse_port: bool = False
    ) -> None:
        self.fake = fake
        self.allow_reuse_port = reuse_port
        self._open: set[socket.socket] = set()
        self._changed = threading.Condition()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._changed:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._changed:
            self._open.discard(request)
            self._changed.notify_all()

    def close_all(self) -> None:
        """Cut every open connection, wait until their handlers are done, close the socket."""
        with self._changed:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with self._changed:
            self._changed.wait_for(lambda: not self._open, timeout=5)
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (it timed out) is expected; anything else is reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the twilio client's pool expects
    # Headers and body go out in two writes: with Nagle on, the body waits for the
    # client's delayed ACK of the headers, adding about 40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output should not fill with access logs."""

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path.startswith("/_fake/"):
            reply = _control(self.server.fake, method, url.path, body)
        else:
            query = parse_qsl(url.query, keep_blank_values=True)
            headers = dict(self.headers.items())
            reply = self.server.fake.handle(method, url.path, query, body, headers)
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        if reply.status == 0:
            self.close_connection = True
            return
        data = b"" if reply.status == 204 else json.dumps(reply.payload).encode()
        if reply.content is not None:
            data = reply.content
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _control(fake: FakeTwilio, method: str, path: str, body: bytes) -> Reply:
    """The fake's own endpoints, for a test driving it from another process."""
    if (method, path) == ("GET", "/_fake/messages"):
        return Reply(200, [m.to_json() for m in fake.messages])
    if (method, path) == ("GET", "/_fake/violations"):
        return Reply(200, fake.violations)
    if (method, path) == ("POST", "/_fake/script"):
        order = json.loads(body or b"{}")
        fake.script(order.get("steps", []), order.get("method", "POST"))
        return Reply(200, {"scripted": len(order.get("steps", []))})
    return Reply(404, {"message": f"no fake endpoint {method} {path}"})


# --- process mode --------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    args = _arguments().parse_args(argv)
    fake = FakeTwilio(
        args.account_sid,
        args.auth_token,
        port=args.port,
        latency=args.latency,
        timeout_delay=args.timeout_delay,
        fault_rate=args.fault_rate,
        faults=args.faults.split(","),
        seed=args.seed,
        validate=not args.no_validate,
        reuse_port=args.reuse_port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with fake:
        print(f"listening on {fake.base_url}", flush=True)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    print(f"stopped: {len(fake.messages)} messages, {len(fake.violations)} violations", flush=True)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="A fake Twilio Messages API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument("--timeout-delay", type=float, default=3.0, help="how long a timeout hangs")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of POSTs that fail")
    parser.add_argument("--faults", default=",".join(RANDOM_FAULTS), help="kinds to draw from")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-validate", action="store_true", help="skip the spec check (about 5 ms CPU a request)"
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="let other fakes serve the same --port (each keeps its own messages)",
    )
    return parser


if __name__ == "__main__":
    main()
