"""The service's Prometheus metrics (SPEC §12): what each process counts as it works.

Counters and histograms live in the process that observes them (the web app times
requests, the worker counts sends and times Twilio). With several processes,
gunicorn workers and `aftercare worker` alike, set `PROMETHEUS_MULTIPROC_DIR` to one
empty directory they all share before they start: each then writes its figures there
and `GET /metrics` adds them up (prometheus-client's multiprocess mode). The state of
the outbox is read from the database at each scrape, so it is the same whichever
process answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

SENDS = Counter(
    "aftercare_sends",
    "Requests to send a message, by what became of them and channel.",
    ["outcome", "channel"],
)
TWILIO_SECONDS = Histogram(
    "aftercare_twilio_request_seconds",
    "Time one request to Twilio's API took, by operation.",
    ["operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30),
)
WEBHOOK_SECONDS = Histogram(
    "aftercare_http_request_seconds",
    "Time the web app took to answer, by endpoint (Flask's name for the route).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class Gauges(Collector):
    """Figures read fresh at every scrape: `read(now)` gives (name, help, labels, value)."""

    def __init__(
        self,
        read: Callable[[datetime], list[tuple[str, str, dict[str, str], float]]],
        clock: Callable[[], datetime],
    ) -> None:
        self._read = read
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, text, labels, value in self._read(self._clock()):
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        yield from families.values()


def exposition(gauges: Collector) -> bytes:
    """Every metric in Prometheus' text format: this process's (or, in multiprocess
    mode, every process's) counters and histograms, and `gauges` read now."""
    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get(MULTIPROCESS_DIR):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(gauges)
        return generate_latest(registry)
    registry.register(gauges)
    return generate_latest(registry) + generate_latest(REGISTRY)
