"""Crash-safe delivery on PostgreSQL: several `aftercare worker` processes, a Twilio
that fails in every ambiguous way, and workers SIGKILLed at random moments. Every
due message must end up accepted by Twilio exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from notifier.store.models import Status
from tests.support.command import AFTERCARE
from tests.support.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from tests.support.rows import status_counts
from tests.support.seed import seed_messages
from tests.support.shipped import ROOT

pytestmark = pytest.mark.postgres

MESSAGES = 2000
WORKERS = 3
CHAOS_SECONDS = 12
SETTLE_DEADLINE = 180


def daytime_zone(now: datetime) -> str:
    """A fixed-offset zone where it is now around noon, so every window is open."""
    offset = 12 - now.hour
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"


def start_fake() -> tuple[subprocess.Popen[str], str]:
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fake_twilio",
            "--port",
            "0",
            "--fault-rate",
            "0.15",
            "--faults",
            "429,500,500_sent,timeout",
            "--seed",
            "7",
            "--timeout-delay",
            "2",
            "--latency",
            "0.005",
            "--no-validate",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    line = fake.stdout.readline()
    assert line.startswith("listening on "), line
    return fake, line.split()[-1]


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [AFTERCARE, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_every_due_message_is_accepted_exactly_once_despite_faults_and_kills(
    postgres_url: str,
) -> None:
    now = datetime.now(UTC)
    seed_messages(postgres_url, MESSAGES, now - timedelta(minutes=1), now, daytime_zone(now))
    fake, fake_url = start_fake()
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "TWILIO_SMS_FROM": "+14155550100",
        "TWILIO_API_BASE_URL": fake_url,
        "PUBLIC_BASE_URL": "https://aftercare.example.org",
        "TWILIO_TIMEOUT_SECONDS": "1",
        "DISPATCH_INTERVAL_SECONDS": "0.2",
        "DISPATCH_LEASE_SECONDS": "5",
        "DISPATCH_RETRY_BASE_SECONDS": "1",
        "DISPATCH_BATCH_SIZE": "50",
        "DISPATCH_CONCURRENCY": "16",
        "DISPATCH_MAX_ATTEMPTS": "50",
    }
    rng = random.Random(11)
    workers = [start_worker(env) for _ in range(WORKERS)]
    kills = 0
    try:
        chaos_ends = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < chaos_ends:
            time.sleep(rng.uniform(0.5, 2.0))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            kills += 1
            workers.append(start_worker(env))
        deadline = time.monotonic() + SETTLE_DEADLINE
        while status_counts(postgres_url)[Status.QUEUED] < MESSAGES and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    try:
        with urllib.request.urlopen(f"{fake_url}/_fake/messages", timeout=10) as answer:  # noqa: S310
            accepted = json.loads(answer.read())
    finally:
        fake.terminate()
        fake.communicate(timeout=10)  # also closes its stdout pipe

    assert kills >= 5
    assert status_counts(postgres_url) == Counter({Status.QUEUED: MESSAGES})
    copies = Counter((m["to"], m["body"]) for m in accepted)
    assert len(copies) == MESSAGES  # every message reached Twilio ...
    assert set(copies.values()) == {1}  # ... exactly once
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        sids = {row[0] for row in connection.execute(text("SELECT sid FROM message"))}
    engine.dispose()
    assert sids == {m["sid"] for m in accepted}  # and each row holds the SID Twilio gave
