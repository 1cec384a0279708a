"""Dispatch throughput against a loopback fake Twilio, and the naive approach beside it."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from bench.support import Row, fake_twilio, fresh_database, settings_for, twilio_settings
from notifier.db import make_engine
from notifier.dispatch import Dispatcher
from notifier.plan import load_plans
from notifier.sending import Outgoing
from notifier.twilio_sender import TwilioSender
from tests.support.seed import seed_messages


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--messages", type=int, default=10_000, help="due messages to send")
    group.add_argument("--latency", type=float, default=0.1, help="fake Twilio's answer time (s)")
    group.add_argument("--concurrency", type=int, default=128, help="DISPATCH_CONCURRENCY")
    group.add_argument("--naive", type=int, default=30, help="messages sent the naive way")
    group.add_argument("--databases", default="sqlite,postgres")


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with fake_twilio(args.latency) as base_url:
        for database in args.databases.split(","):
            with fresh_database(database) as url:
                rate = throughput(url, base_url, args.messages, args.concurrency)
                rows.append((f"dispatch, 1 worker, {database}", f"{rate:,.0f} msg/s"))
        naive = naive_rate(base_url, args.naive)
    rows.append(
        (f"naive: one blocking call at a time ({args.naive} messages)", f"{naive:,.1f} msg/s")
    )
    ours = float(rows[0][1].split()[0].replace(",", ""))
    rows.append(("ours / naive (first database)", f"{ours / naive:,.1f}x"))
    return rows


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


def naive_rate(base_url: str, count: int) -> float:
    """One blocking call at a time, as Twilio's reminder samples do."""
    sender = TwilioSender(twilio_settings(base_url))
    started = time.perf_counter()
    for i in range(count):
        sender.send(Outgoing(to=f"+9715{i:08d}", channel="sms", body=f"Naive {i}"))
    elapsed = time.perf_counter() - started
    sender.close()
    return count / elapsed
