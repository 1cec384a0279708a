"""Cost at scale: a dispatch pass with nothing due, and worker memory, over many stored rows.

Each size gets a fresh database (`bench.support.fresh_database`) seeded with
`tests.support.seed.seed_messages`: one patient, treatment and scheduled SMS per
row, due 30 days from now, so a pass finds nothing to expire, recover, claim or
match. After seeding the planner statistics are brought up to date, as a
production database's would be: `VACUUM (ANALYZE)` on PostgreSQL (what
autovacuum does to a table after a bulk insert), `ANALYZE` on SQLite (which has
no autovacuum; run it, or `PRAGMA optimize`, after a bulk import). Then a few
warm-up passes, and the median and 95th percentile of `--passes` timed
`Dispatcher.run_pass(now)` calls, in this process, with the console sender.

The history case (`--history N`, 0 skips it) is what a database looks like after
months of use: of N messages 90 % are past history spread over 30 days (mostly
delivered with a SID and two status callbacks each, some failed, expired or
cancelled), 10 % are future (scheduled, a few held), and 0.5 % of N status
callbacks never matched a message (another sender on the same Twilio account),
spread over the same 30 days.

Worker memory is the peak RSS (VmHWM) of a real `aftercare worker` process with
`DISPATCH_INTERVAL_SECONDS=0.2` after `--worker-seconds` of passes over the same
database, read from /proc before it is stopped with SIGTERM (Linux only). It is
configured for Twilio as in production (its async client, `DISPATCH_CONCURRENCY`
512), pointed at a closed local port: nothing is due, so nothing is sent.

`--explain` prints the plan of every query of an empty pass at each database's
largest size: EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on
SQLite. The statements are captured from a real pass, so they are exactly what
the dispatcher sends.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, String, case, cast, create_engine, event, insert, literal, null
from sqlalchemy import select as core_select
from sqlalchemy import update as core_update
from sqlmodel import col

from bench.support import ROOT, Row, fresh_database, peak_rss_mb, worker_env
from notifier.delivery.dispatcher import Dispatcher
from notifier.delivery.sender import ConsoleSender
from notifier.planning.plan import load_plans
from notifier.settings import Settings
from notifier.store.db import make_engine
from notifier.store.models import Message, Status, StatusCallback
from tests.support.seed import seed_messages

AFTERCARE = str(Path(sys.executable).with_name("aftercare"))
WARM_UP = 5
HISTORY_DAYS = 30


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--future", default="10000,100000,1000000", help="future rows stored")
    group.add_argument(
        "--history", type=int, default=1_000_000, help="rows of the history mix (0: skip)"
    )
    group.add_argument("--scale-databases", default="sqlite,postgres")
    group.add_argument("--passes", type=int, default=50, help="timed empty passes per size")
    group.add_argument(
        "--worker-future", default="10000,1000000", help="future row counts to measure RSS at"
    )
    group.add_argument("--worker-seconds", type=float, default=5.0, help="worker run time (s)")
    group.add_argument("--explain", action="store_true", help="print each empty-pass query's plan")


def run(args: argparse.Namespace) -> list[Row]:
    sizes = [int(n) for n in args.future.split(",") if n]
    worker_sizes = {int(n) for n in args.worker_future.split(",") if n}
    rows: list[Row] = []
    for database in args.scale_databases.split(","):
        for size in sizes:
            with fresh_database(database) as url:
                _timed(f"seed {size:,} future rows ({database})", seed_future, url, size)
                _timed("analyze", analyze, url)
                median, p95 = pass_cost(
                    url, args.passes, explain=args.explain and size == max(sizes)
                )
                rows.append(
                    (
                        f"empty pass (median / p95), {size:,} future rows, {database}",
                        _ms(median, p95),
                    )
                )
                if size in worker_sizes:
                    rss = worker_peak_rss(url, args.worker_seconds)
                    rows.append((f"worker peak RSS, {size:,} pending, {database}", f"{rss:.0f} MB"))
        if args.history:
            with fresh_database(database) as url:
                size = args.history
                _timed(f"seed history mix of {size:,} rows ({database})", seed_history, url, size)
                _timed("analyze", analyze, url)
                median, p95 = pass_cost(url, args.passes, explain=args.explain)
                rows.append(
                    (
                        f"empty pass (median / p95), history mix of {size:,}, {database}",
                        _ms(median, p95),
                    )
                )
    return rows


def _ms(median: float, p95: float) -> str:
    return f"{median:.2f} / {p95:.2f} ms"


def _timed(what: str, step: Any, *args: Any) -> None:
    started = time.perf_counter()
    step(*args)
    print(f"  {what}: {time.perf_counter() - started:.1f}s", flush=True)


# -- the databases -------------------------------------------------------------


def seed_future(url: str, count: int) -> None:
    now = datetime.now(UTC)
    seed_messages(url, count, now + timedelta(days=30), now)


def seed_history(url: str, count: int, now: datetime | None = None) -> None:
    """The history mix described in the module's docstring."""
    now = now or datetime.now(UTC)
    seed_messages(url, count, now + timedelta(days=30), now)
    engine = create_engine(url)
    past = count * 9 // 10
    step = max(1, past // HISTORY_DAYS)
    bucket = col(Message.id) % 100
    went_out = bucket < 94
    with engine.begin() as connection:
        for day in range(HISTORY_DAYS):
            first, last = day * step + 1, past if day == HISTORY_DAYS - 1 else (day + 1) * step
            # The newest day's messages went out an hour ago: their callbacks are recent.
            send_at = now - timedelta(days=HISTORY_DAYS - 1 - day, hours=1)
            connection.execute(
                core_update(Message)
                .where(col(Message.id).between(first, last))
                .values(
                    send_at=send_at,
                    expires_at=send_at + timedelta(days=2),
                    updated_at=send_at,
                    attempts=case((bucket < 97, 1), else_=0),
                    status=case(
                        (went_out, Status.DELIVERED.value),
                        (bucket < 97, Status.FAILED.value),
                        (bucket < 99, Status.EXPIRED.value),
                        else_=Status.CANCELLED.value,
                    ),
                    sid=case(
                        (bucket < 97, literal("SM") + cast(col(Message.id), String)), else_=null()
                    ),
                )
            )
        connection.execute(
            core_update(Message)
            .where(col(Message.id) > past, bucket == 0)
            .values(status=Status.HELD.value)
        )
        for status in ("sent", "delivered"):
            connection.execute(
                insert(StatusCallback).from_select(
                    ["sid", "message_id", "status", "received_at"],
                    core_select(Message.sid, Message.id, literal(status), Message.send_at).where(
                        Message.status == Status.DELIVERED.value
                    ),
                )
            )
        unmatched = count // 200
        connection.execute(
            insert(StatusCallback),
            [
                {
                    "sid": f"SMother{i:026d}",
                    "message_id": None,
                    "status": "delivered",
                    "received_at": now - timedelta(days=HISTORY_DAYS) * (i / unmatched),
                }
                for i in range(unmatched)
            ],
        )
    engine.dispose()


def analyze(url: str) -> None:
    """Fresh planner statistics, as autovacuum (PostgreSQL) or an operator (SQLite) keeps."""
    engine = create_engine(url)
    statement = "ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM (ANALYZE)"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(statement)
    engine.dispose()


# -- an empty pass -------------------------------------------------------------


def pass_cost(url: str, passes: int, *, explain: bool = False) -> tuple[float, float]:
    """Median and 95th percentile (ms) of `passes` dispatch passes that find nothing due."""
    settings = Settings(database_url=url)
    engine = make_engine(url)
    dispatcher = Dispatcher(engine, ConsoleSender(), load_plans(settings.plans_dir), settings)
    try:
        for _ in range(WARM_UP):
            dispatcher.run_pass(datetime.now(UTC))
        times = []
        for _ in range(passes):
            now = datetime.now(UTC)
            started = time.perf_counter()
            report = dispatcher.run_pass(now)
            times.append((time.perf_counter() - started) * 1000)
            if report.summary() != "nothing due":
                raise SystemExit(f"scale suite: a pass was not empty: {report.summary()}")
        if explain:
            print_plans(engine, dispatcher)
    finally:
        dispatcher.close()
        engine.dispose()
    times.sort()
    return statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)]


def print_plans(engine: Engine, dispatcher: Dispatcher) -> None:
    """The plan of every SELECT an empty pass sends, captured from a real pass."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        dispatcher.run_pass(datetime.now(UTC))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    postgres = engine.dialect.name == "postgresql"
    explain = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            words = " ".join(statement.split())
            print(f"\n  {words[:60]} ... {words[words.find(' FROM ') :][:240]}")
            cursor.execute(explain + statement, parameters)
            for row in cursor.fetchall():
                print(f"    {row[0] if postgres else row[-1]}")
    finally:
        connection.rollback()  # EXPLAIN ANALYZE of FOR UPDATE took row locks: none kept
        connection.close()


# -- worker memory -------------------------------------------------------------


def worker_peak_rss(url: str, seconds: float) -> float:
    """Peak RSS (MB) of an `aftercare worker` after `seconds` of passes every 0.2 s."""
    # Configured for Twilio as in production, pointed at a port that discards: nothing is due.
    env = worker_env(url, "http://127.0.0.1:9", interval_seconds="0.2", concurrency="512")
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(
            [AFTERCARE, "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            time.sleep(seconds)
            if worker.poll() is not None:
                log.seek(0)
                raise SystemExit(f"scale suite: the worker exited:\n{log.read().decode()}")
            peak = peak_rss_mb(worker.pid)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return peak
