"""Dispatch: 10,000 messages due at once, sent by real `aftercare worker` processes.

The messages are seeded due a few seconds ahead; the workers start, find nothing
due, and wake when the messages fall due (see `notifier.worker.DispatchJob`). The
run ends when every message is `queued` (Twilio accepted it, the outcome stored):
throughput is messages / (last acceptance - due time), and that span is also the
lateness of the last message. CPU is read from /proc for the workers, the fake
Twilio and the whole machine, which is what explains the scaling on a small box.
The naive approach (one blocking Twilio call at a time, as in Twilio's reminder
samples) runs against the same fake in the same run.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select

from bench.support import (
    Fake,
    Row,
    cpu_seconds,
    fake_twilio,
    fresh_database,
    machine_busy_seconds,
    peak_rss_mb,
    twilio_settings,
    worker_env,
)
from notifier.delivery.sender import Outgoing
from notifier.delivery.twilio_sender import TwilioSender
from notifier.store.models import Message, Status
from tests.support.seed import seed_messages

AFTERCARE = str(Path(sys.executable).with_name("aftercare"))
LEAD = timedelta(seconds=8)  # seeding and worker start-up happen before the messages fall due


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--messages", type=int, default=10_000, help="messages due at once")
    group.add_argument("--latency", type=float, default=0.1, help="fake Twilio's answer time (s)")
    group.add_argument("--concurrency", type=int, default=512, help="DISPATCH_CONCURRENCY")
    group.add_argument("--batch", type=int, default=512, help="DISPATCH_BATCH_SIZE")
    group.add_argument("--workers", default="1,2", help="worker processes (PostgreSQL only >1)")
    group.add_argument("--naive", type=int, default=30, help="messages sent the naive way")
    group.add_argument("--fakes", type=int, default=2, help="fake Twilio processes on one port")
    group.add_argument("--databases", default="sqlite,postgres")


@dataclass(frozen=True)
class Outcome:
    sent: int
    seconds: float  # from the due time to the last message queued
    worker_cpu: float  # CPU seconds, all workers together
    fake_cpu: float
    machine_busy: float  # share of all cores busy during the run
    peak_rss_mb: float  # the largest worker's

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    rates: dict[tuple[str, int], float] = {}
    with fake_twilio(args.latency, args.fakes) as fake:
        for database in args.databases.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                if database == "sqlite" and workers > 1:
                    continue  # one worker per SQLite database, by design
                with fresh_database(database) as url:
                    outcome = dispatch(url, fake, args, workers)
                rates[database, workers] = outcome.rate
                rows += describe(outcome, database, workers, args.messages)
        naive = naive_rate(fake.base_url, args.naive)
    rows.append((f"naive: one blocking call at a time ({args.naive} msgs)", f"{naive:,.1f} msg/s"))
    for (database, workers), rate in rates.items():
        if workers == 1:
            rows.append((f"ours / naive, 1 worker, {database}", f"{rate / naive:,.0f}x"))
        elif (database, 1) in rates:
            ratio = rate / rates[database, 1]
            rows.append((f"{workers} workers / 1 worker, {database}", f"{ratio:.2f}x"))
    return rows


def describe(outcome: Outcome, database: str, workers: int, count: int) -> list[Row]:
    what = f"{workers} worker{'s' if workers > 1 else ''}, {database}"
    return [
        (f"dispatch {count:,} due at once, {what}", f"{outcome.rate:,.0f} msg/s"),
        (f"  lateness of the last message, {what}", f"{outcome.seconds:.1f} s"),
        (f"  worker CPU per message, {what}", f"{outcome.worker_cpu / count * 1000:.2f} ms"),
        (f"  fake Twilio CPU per message, {what}", f"{outcome.fake_cpu / count * 1000:.2f} ms"),
        (f"  machine busy (all cores), {what}", f"{outcome.machine_busy:.0%}"),
        (f"  worker peak RSS, {what}", f"{outcome.peak_rss_mb:.0f} MB"),
    ]


def dispatch(url: str, fake: Fake, args: argparse.Namespace, workers: int) -> Outcome:
    due = datetime.now(UTC) + LEAD
    seed_messages(url, args.messages, due, due - timedelta(hours=1))
    processes = [start_worker(url, fake.base_url, args) for _ in range(workers)]
    engine = create_engine(url)
    try:
        if datetime.now(UTC) >= due:
            raise SystemExit("seeding and start-up took longer than the lead: raise LEAD")
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        worker_cpu = _cpu(p.pid for p in processes)
        fake_cpu, (busy, total) = _cpu(fake.pids), machine_busy_seconds()
        queued = 0
        while queued < args.messages:
            time.sleep(0.05)
            if any(p.poll() is not None for p in processes):
                raise SystemExit("a worker exited during the run; see its log above")
            with engine.connect() as connection:
                queued = connection.execute(
                    select(func.count()).where(Message.status == Status.QUEUED)
                ).scalar_one()
        seconds = (datetime.now(UTC) - due).total_seconds()
        worker_cpu = _cpu(p.pid for p in processes) - worker_cpu
        fake_cpu = _cpu(fake.pids) - fake_cpu
        busy_now, total_now = machine_busy_seconds()
        machine = (busy_now - busy) / (total_now - total)
        peak = max(peak_rss_mb(p.pid) for p in processes)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        engine.dispose()
    return Outcome(args.messages, seconds, worker_cpu, fake_cpu, machine, peak)


def _cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def start_worker(url: str, base_url: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = worker_env(url, base_url, concurrency=str(args.concurrency), batch_size=str(args.batch))
    return subprocess.Popen([AFTERCARE, "worker"], env=env, stdout=subprocess.DEVNULL)


def naive_rate(base_url: str, count: int) -> float:
    """One blocking call at a time, as Twilio's reminder samples do."""
    sender = TwilioSender(twilio_settings(base_url))
    started = time.perf_counter()
    for i in range(count):
        sender.send(Outgoing(to=f"+9715{i:08d}", channel="sms", body=f"Naive {i}"))
    elapsed = time.perf_counter() - started
    sender.close()
    return count / elapsed
