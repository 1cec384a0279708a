"""`GET /metrics`: Prometheus' text format after real traffic, parsed by
prometheus-client's own parser; behind METRICS_TOKEN; added up across processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier.delivery.dispatcher import Dispatcher
from notifier.metrics import MULTIPROCESS_DIR
from notifier.settings import Settings
from tests.conftest import DUE, STAFF, BookingSystem, Clock, TwilioWebhooks, completed_event
from tests.support.command import aftercare

TOKEN = "metrics-token-0123456789"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    answer = client.get("/metrics", headers=headers or {})
    assert answer.status_code == 200, answer.data
    assert answer.content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_real_traffic(
    enrolled: BookingSystem, twilio: TwilioWebhooks, dispatcher: Dispatcher, clock: Clock
) -> None:
    client = enrolled.client
    before = scrape(client)
    assert value(before, "aftercare_outbox_messages", status="scheduled") == 11

    twilio.inbound("my scalp is bleeding", sid="SM" + "1" * 32)  # urgent: acknowledged
    twilio.inbound("thanks!", sid="SM" + "2" * 32)
    clock.now = DUE
    report = dispatcher.run_pass(DUE)
    after = scrape(client)

    assert report.sent == 2  # the plan's first message and the acknowledgement
    assert value(after, "aftercare_outbox_messages", status="queued") == 2
    assert value(after, "aftercare_outbox_messages", status="scheduled") == 10
    assert value(after, "aftercare_replies_unhandled", urgent="true") == 1
    assert value(after, "aftercare_replies_unhandled", urgent="false") == 1
    assert value(after, "aftercare_outbox_overdue") == 0
    assert value(after, "aftercare_outbox_stuck") == 0
    assert value(after, "aftercare_events_waiting") == 4  # 1 queued, 2 replies, 1 urgent
    sends = ("aftercare_sends_total", {"outcome": "accepted", "channel": "sms"})
    assert value(after, sends[0], **sends[1]) - value(before, sends[0], **sends[1]) == 2
    inbound = {"endpoint": "twilio.inbound"}
    assert (
        value(after, "aftercare_http_request_seconds_count", **inbound)
        - value(before, "aftercare_http_request_seconds_count", **inbound)
        == 2
    )


def test_an_overdue_queue_shows(enrolled: BookingSystem, clock: Clock) -> None:
    clock.now = DUE.replace(hour=12)  # every message due today is late, no worker ran
    assert value(scrape(enrolled.client), "aftercare_outbox_overdue") == 1


def test_metrics_token_guards_the_endpoint_when_set(
    settings: Settings, engine: Any, build_app: Callable[..., Any]
) -> None:
    client = build_app(replace(settings, metrics_token=TOKEN), engine)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers=STAFF).status_code == 401  # not a staff token
    scrape(client, {"Authorization": f"Bearer {TOKEN}"})


def test_counts_from_other_processes_are_added_up_in_multiprocess_mode(
    sqlite_url: str,
    settings: Settings,
    build_app: Callable[..., Any],
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`aftercare dispatch` in its own process sends; the web app's scrape sees it."""
    now = clock.now = datetime.now(UTC)  # the other process's clock is the real one
    client = build_app(replace(settings, database_url=sqlite_url))
    booking = BookingSystem(client, clock)
    assert booking.post(completed_event(performed_at=now)).status_code == 201
    twilio = TwilioWebhooks(client)
    twilio.inbound("it really hurts", sid="SM" + "3" * 32)  # an acknowledgement, due at once
    shared = tmp_path / "prometheus"
    shared.mkdir()

    result = aftercare(
        "dispatch",
        "--console",
        env={"DATABASE_URL": sqlite_url, MULTIPROCESS_DIR: str(shared)},
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv(MULTIPROCESS_DIR, str(shared))
    samples = scrape(client)
    # Exactly what that process sent (the acknowledgement): not this process's own counts.
    assert value(samples, "aftercare_sends_total", outcome="accepted", channel="sms") == 1
    assert value(samples, "aftercare_outbox_messages", status="queued") >= 1
