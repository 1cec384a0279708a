"""Benchmarks, run on demand (never in CI): `python -m bench`.

Prints a table of
- dispatch throughput of one worker against a loopback fake Twilio that answers
  after `--latency` seconds (a separate process), on SQLite and PostgreSQL;
- the naive approach in the same run: one blocking Twilio call at a time;
- the cost of a dispatch pass when nothing is due, with `--future` rows stored.
Figures are reported, not asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from notifier import migrate
from notifier.db import make_engine
from notifier.dispatch import Dispatcher
from notifier.plan import load_plans
from notifier.sending import Outgoing
from notifier.settings import Settings, TwilioSettings
from notifier.twilio_sender import TwilioSender
from tests.support.seed import seed_messages

ROOT = Path(__file__).resolve().parent.parent
SID, TOKEN = "AC" + "0123456789abcdef" * 2, "fake-twilio-auth-token-0123456789"
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def main() -> None:
    args = _arguments().parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print(
        f"fake Twilio latency {args.latency * 1000:.0f} ms, {args.messages} messages, "
        f"concurrency {args.concurrency}\n"
    )
    rows: list[tuple[str, str]] = []
    with fake_twilio(args.latency) as base_url:
        for database in args.databases.split(","):
            with fresh_database(database) as url:
                rate = throughput(url, base_url, args.messages, args.concurrency)
                rows.append((f"dispatch, 1 worker, {database}", f"{rate:,.0f} msg/s"))
            with fresh_database(database) as url:
                cost = empty_pass_ms(url, base_url, args.future)
                rows.append(
                    (f"empty pass, {args.future:,} future rows, {database}", f"{cost:.1f} ms")
                )
        naive = naive_rate(base_url, args.naive)
        rows.append(
            (f"naive: one blocking call at a time ({args.naive} messages)", f"{naive:,.1f} msg/s")
        )
    first = next((r for r in rows if r[0].startswith("dispatch")), None)
    if first:
        ours = float(first[1].split()[0].replace(",", ""))
        rows.append(("ours / naive (first database)", f"{ours / naive:,.1f}x"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>14}")


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--future", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=30)
    parser.add_argument("--databases", default="sqlite,postgres")
    return parser


@contextmanager
def fake_twilio(latency: float) -> Iterator[str]:
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fake_twilio",
            "--port",
            "0",
            "--latency",
            str(latency),
            "--no-validate",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    try:
        yield fake.stdout.readline().split()[-1]
    finally:
        fake.terminate()
        fake.communicate(timeout=10)


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{directory}/bench.sqlite3"
            migrate.upgrade(url)
            yield url
        return
    name = f"aftercare_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(statement: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance database."""
    parts = make_url(POSTGRES)
    with psycopg.connect(
        host=parts.host,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=parts.database,
        autocommit=True,
    ) as admin:
        admin.execute(statement)


def settings_for(url: str, base_url: str, concurrency: int) -> Settings:
    twilio = TwilioSettings(
        account_sid=SID,
        auth_token=TOKEN,
        sms_from="+14155550100",
        messaging_service_sid=None,
        whatsapp_from=None,
        api_base_url=base_url,
        timeout_seconds=10,
    )
    return replace(
        Settings(database_url=url, twilio=twilio),
        dispatch_concurrency=concurrency,
        dispatch_batch_size=max(200, concurrency),
    )


def throughput(url: str, base_url: str, count: int, concurrency: int) -> float:
    """Messages per second for one dispatcher sending `count` due messages."""
    now = datetime.now(UTC).replace(hour=12)
    seed_messages(url, count, now - timedelta(minutes=1), now)
    settings = settings_for(url, base_url, concurrency)
    engine = make_engine(url)
    sender = TwilioSender(settings.twilio)
    dispatcher = Dispatcher(engine, sender, load_plans(settings.plans_dir), settings)
    sent, started = 0, time.perf_counter()
    try:
        while sent < count:
            report = dispatcher.run_pass(now)
            if report.claimed == 0:
                break
            sent += report.sent
    finally:
        elapsed = time.perf_counter() - started
        dispatcher.close()
        sender.close()
        engine.dispose()
    return sent / elapsed


def empty_pass_ms(url: str, base_url: str, future: int) -> float:
    """Median milliseconds of a pass with nothing due and `future` rows waiting."""
    now = datetime.now(UTC).replace(hour=12)
    seed_messages(url, future, now + timedelta(days=30), now)
    settings = settings_for(url, base_url, 8)
    engine = make_engine(url)
    dispatcher = Dispatcher(
        engine, TwilioSender(settings.twilio), load_plans(settings.plans_dir), settings
    )
    try:
        times = []
        for _ in range(30):
            started = time.perf_counter()
            dispatcher.run_pass(now)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        dispatcher.close()
        engine.dispose()
    return statistics.median(times)


def naive_rate(base_url: str, count: int) -> float:
    """One blocking call at a time, as Twilio's reminder samples do."""
    sender = TwilioSender(settings_for("sqlite://", base_url, 1).twilio)
    started = time.perf_counter()
    for i in range(count):
        sender.send(Outgoing(to=f"+9715{i:08d}", channel="sms", body=f"Naive {i}"))
    elapsed = time.perf_counter() - started
    sender.close()
    return count / elapsed


if __name__ == "__main__":
    main()
