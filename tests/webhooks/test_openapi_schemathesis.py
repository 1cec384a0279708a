"""schemathesis against the app in-process (WSGI), from the app's own /api/openapi.json:
requests generated from the document, valid and invalid, signed as the booking system
signs them and carrying a staff token; no answer is a 5xx, and every answer (status,
content type, headers, body) matches the document.

schemathesis' pytest plugin (`@schema.parametrize()` on a fixture) does not run on
pytest 9, so each operation's strategy drives a Hypothesis test here instead: the same
generation and the same checks, with this project's fixtures (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NotSet

from notifier import create_app
from notifier.settings import Settings
from notifier.signature import sign
from tests.conftest import SECRET, STAFF, TwilioWebhooks, completed_event
from webhooks.openapi import document

EXAMPLES = 30  # per operation and kind of input: about a minute in all, both databases
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
KNOWN_IDS = "known ids"  # positive requests naming the records the fixture stores


def _runs() -> list[tuple[str, str, Any]]:
    """(method, path, kind of input) for every operation: valid and invalid requests, and
    valid ones naming stored records; only the kinds an operation has inputs for."""
    runs = []
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            runs.append((method.upper(), path, GenerationMode.POSITIVE))
            if "{" in path or operation.get("parameters") or operation.get("requestBody"):
                runs.append((method.upper(), path, GenerationMode.NEGATIVE))
            if "{" in path:
                runs.append((method.upper(), path, KNOWN_IDS))
    return runs


RUNS = _runs()
# What the fixture stores, so that generated requests also reach real records.
KNOWN = {"patient_id": "P-1001", "erasure_id": "erased-2", "sid": "SM" + "1" * 32, "n": 0}


@pytest.fixture
def api(settings: Settings, engine: Any) -> Any:
    """The document as schemathesis loads it from the app, the app on a fresh database
    holding a patient with messages and a reply, and an erasure, on the real clock."""
    app = create_app(settings, engine=engine)  # the real clock
    client = app.test_client()
    performed_at = datetime.now(UTC) - timedelta(days=40)
    for event in (
        completed_event(performed_at=performed_at),
        completed_event(
            "evt_2", patient={"id": "P-2"}, treatment={"id": "T-2"}, performed_at=performed_at
        ),
        {"id": "evt_erase", "type": "patient.erased", "patient": {"id": "P-2"}},
    ):
        body = json.dumps(event).encode()
        assert _signed(client, body).status_code in (200, 201), body
    assert TwilioWebhooks(client).inbound("it itches", sid=KNOWN["sid"]).status_code == 200
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


@pytest.mark.parametrize(
    ("method", "path", "mode"), RUNS, ids=[f"{m} {p} {mode}" for m, p, mode in RUNS]
)
def test_no_generated_request_gets_a_5xx_or_an_answer_outside_the_document(
    api: Any, method: str, path: str, mode: Any
) -> None:
    operation = api[path][method]
    if mode == KNOWN_IDS:
        known = {p.name: KNOWN[p.name] for p in operation.path_parameters}
        strategy = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known)
    else:
        strategy = operation.as_strategy(mode)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def generated(case: Any) -> None:
        if case.path == "/webhooks/booking":
            body = _wire(case.body)
            headers = {"X-Aftercare-Signature": sign(SECRET, body, int(time.time()))}
            answer = case.call_and_validate(headers=headers, data=body, checks=CHECKS)
        else:
            answer = case.call_and_validate(headers=dict(STAFF), checks=CHECKS)
        statuses.add(answer.status_code)

    statuses: set[int] = set()
    generated()
    assert statuses - {401}, "every request was refused: signing or the token is broken"


def _wire(body: Any) -> bytes:
    """The bytes a generated body is sent as (and signed over): JSON, or raw bytes as
    generated when the document's media type is violated on purpose."""
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


def _signed(client: Any, body: bytes) -> Any:
    return client.post(
        "/webhooks/booking",
        data=body,
        content_type="application/json",
        headers={"X-Aftercare-Signature": sign(SECRET, body, int(time.time()))},
    )
