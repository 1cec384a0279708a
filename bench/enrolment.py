"""Enrolment webhook under load: gunicorn, signed treatment.completed events, wrk.

The real server (gunicorn as the Procfile's `web` line runs it: the web app alone,
no dispatcher) on a fresh migrated database, loaded over loopback by wrk. Every
request is a distinct, correctly signed `treatment.completed` event for a new
patient and treatment, so every one is a real enrolment answering 201. wrk's Lua
has no HMAC, so the events are signed here beforehand, written to a data file in a
temporary directory, and each wrk thread sends its own share of them once: a
thread that runs out stops (the run then says so) rather than replaying an event,
which would be an idempotent replay (200), not an enrolment.

Reported per database: enrolments/s (201 answers only), p50/p99 latency, the
answers that were not 201, and whether the treatments stored match the 201s.
wrk is a closed loop: each connection waits for its answer before sending the
next request, so latency grows with --enrolment-connections.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from bench.support import Row, fresh_database, gunicorn
from notifier.signature import TOLERANCE_SECONDS, sign
from notifier.store.db import make_engine

PATH = "/webhooks/booking"
WRK_MISSING = (
    "enrolment suite: wrk is not installed; install it with `sudo apt-get install -y wrk` "
    "(Debian/Ubuntu) and run again"
)
# Margin kept between the signatures' timestamp and the server's 300 s tolerance.
SIGNATURE_MARGIN_SECONDS = 30


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--enrolment-seconds", type=int, default=20, help="seconds of load")
    group.add_argument(
        "--enrolment-connections",
        default="8",
        help="wrk connections (open HTTP connections); a comma-separated list runs each",
    )
    group.add_argument("--enrolment-threads", type=int, default=1, help="wrk threads")
    group.add_argument("--enrolment-workers", type=int, default=2, help="gunicorn workers")
    group.add_argument(
        "--enrolment-worker-class", default="gthread", help="gunicorn worker class (Procfile)"
    )
    group.add_argument(
        "--enrolment-worker-threads", type=int, default=4, help="threads per gunicorn worker"
    )
    group.add_argument(
        "--enrolment-gunicorn-options",
        default="",
        help="more gunicorn options, e.g. '--keep-alive 0' (quoted, as one argument)",
    )
    group.add_argument("--enrolment-databases", default="postgres,sqlite")
    group.add_argument(
        "--enrolment-warmup", type=int, default=3, help="seconds of unreported load first"
    )
    group.add_argument(
        "--enrolment-max-rate",
        type=int,
        default=3000,
        help="events signed per second of load (more than the server can take)",
    )


@dataclass(frozen=True)
class Load:
    """One wrk run's figures."""

    seconds: float
    connections: int
    threads: int
    statuses: dict[int, int]
    sent: int  # requests handed to wrk's connections
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    exhausted: bool  # a thread ran out of signed events and stopped early

    @property
    def enrolled(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.enrolled / self.seconds

    @property
    def not_enrolled(self) -> int:
        return self.answered - self.enrolled


def run(args: argparse.Namespace) -> list[Row]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(WRK_MISSING)
    limit = TOLERANCE_SECONDS - SIGNATURE_MARGIN_SECONDS - args.enrolment_warmup
    if not 1 <= args.enrolment_seconds <= limit:
        raise SystemExit(
            f"--enrolment-seconds must be 1..{limit}: events are signed beforehand and the "
            f"server accepts a signature for {TOLERANCE_SECONDS} s"
        )
    connections = [int(c) for c in str(args.enrolment_connections).split(",")]
    rows: list[Row] = []
    server = f"gunicorn {args.enrolment_workers} workers, {args.enrolment_worker_class}" + (
        f" x{args.enrolment_worker_threads}" if args.enrolment_worker_class == "gthread" else ""
    )
    print(f"server: {server}; load: wrk on loopback, {args.enrolment_threads} thread(s)")
    for database in args.enrolment_databases.split(","):
        with fresh_database(database) as url, tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            secret = secrets.token_hex(16)
            options = [
                "--workers",
                str(args.enrolment_workers),
                "--worker-class",
                args.enrolment_worker_class,
                "--threads",
                str(args.enrolment_worker_threads),
                *shlex.split(args.enrolment_gunicorn_options),
            ]
            env = {"DATABASE_URL": url, "BOOKING_WEBHOOK_SECRET": secret}
            with gunicorn(env, options, work / "gunicorn.log") as base_url:
                if args.enrolment_warmup > 0:
                    load(
                        wrk,
                        base_url,
                        secret,
                        work,
                        "w",
                        args.enrolment_warmup,
                        connections[0],
                        args,
                    )
                for count in connections:
                    prefix = f"c{count}"
                    result = load(
                        wrk, base_url, secret, work, prefix, args.enrolment_seconds, count, args
                    )
                    time.sleep(1)  # let the server finish what wrk abandoned at the end
                    stored = treatments(url, prefix)
                    rows += report(database, result, stored)
    return rows


def report(database: str, result: Load, stored: int) -> list[Row]:
    name = f"enrolment, {database}, wrk {result.connections} conn/{result.threads} thr"
    in_flight = result.sent - result.answered
    if result.enrolled <= stored <= result.enrolled + in_flight:
        check = "ok" if stored == result.enrolled else f"ok (+{stored - result.enrolled} late)"
    else:
        check = f"MISMATCH {stored}"
    others = ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items()) if s != 201)
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items()) if v)
    rows: list[Row] = [
        (f"{name}: enrolments/s", f"{result.rate:,.0f}/s"),
        (f"{name}: p50 latency", f"{result.p50_ms:,.1f} ms"),
        (f"{name}: p99 latency", f"{result.p99_ms:,.1f} ms"),
        (f"{name}: 201 answers in {result.seconds:.1f} s", f"{result.enrolled:,}"),
        (f"{name}: not 201 ({others or 'none'})", f"{result.not_enrolled:,}"),
        (f"{name}: treatments stored vs 201s", check),
    ]
    if errors:
        rows.append((f"{name}: socket errors ({errors})", "see wrk"))
    if result.exhausted:
        rows.append((f"{name}: RAN OUT of signed events; raise --enrolment-max-rate", "!"))
    return rows


def treatments(url: str, prefix: str) -> int:
    """How many treatments of the run named `prefix` were stored."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT count(*) FROM treatment WHERE external_id LIKE :pattern"),
                {"pattern": f"T-{prefix}-%"},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(found)


# -- the load -------------------------------------------------------------------


def load(
    wrk: str,
    base_url: str,
    secret: str,
    work: Path,
    prefix: str,
    seconds: int,
    connections: int,
    args: argparse.Namespace,
) -> Load:
    """Sign enough distinct events for `seconds` of load, and let wrk send them."""
    threads = min(args.enrolment_threads, connections)
    data = work / f"events-{prefix}.tsv"
    write_events(data, secret, prefix, (seconds + 2) * args.enrolment_max_rate)
    script = work / f"enrol-{prefix}.lua"
    lua = LUA.replace("@DATA@", json.dumps(str(data))).replace("@PATH@", PATH)
    script.write_text(lua.replace("@THREADS@", str(threads)))
    command = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        "--latency",
        f"--script={script}",
        base_url,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"enrolment suite: wrk failed:\n{finished.stdout}{finished.stderr}")
    data.unlink()
    return _parse(finished.stdout, connections, threads)


def write_events(path: Path, secret: str, prefix: str, count: int) -> None:
    """`count` signed treatment.completed events, one `signature<TAB>body` per line."""
    now = datetime.now(UTC)
    timestamp = int(now.timestamp())
    performed_at = (now - timedelta(minutes=5)).replace(microsecond=0).isoformat()
    with path.open("w") as out:
        for i in range(count):
            event = {
                "id": f"evt-{prefix}-{i}",
                "type": "treatment.completed",
                "patient": {
                    "id": f"P-{prefix}-{i}",
                    "first_name": "Bench",
                    "phone": f"+97150{i % 10_000_000:07d}",
                    "channel": "sms",
                    "language": "en",
                    "timezone": "Asia/Dubai",
                    "consent": True,
                },
                "treatment": {
                    "id": f"T-{prefix}-{i}",
                    "kind": "scalp_micropigmentation",
                    "performed_at": performed_at,
                },
            }
            body = json.dumps(event, separators=(",", ":"))
            out.write(f"{sign(secret, body.encode(), timestamp)}\t{body}\n")


def _parse(output: str, connections: int, threads: int) -> Load:
    values: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("enrolment."):
            key, _, value = line.removeprefix("enrolment.").partition("=")
            values[key] = value
    if "duration_us" not in values:
        raise SystemExit(f"enrolment suite: no figures from wrk:\n{output}")
    statuses = {
        int(status): int(count)
        for status, _, count in (
            item.partition(":") for item in values.get("statuses", "").split(",") if item
        )
    }
    return Load(
        seconds=int(values["duration_us"]) / 1e6,
        connections=connections,
        threads=threads,
        statuses=statuses,
        sent=int(values["sent"]),
        p50_ms=float(values["p50_us"]) / 1000,
        p99_ms=float(values["p99_us"]) / 1000,
        errors={
            name: int(values[f"errors_{name}"]) for name in ("connect", "read", "write", "timeout")
        },
        exhausted=values.get("exhausted") == "true",
    )


# Each wrk thread reads its share of the signed events (every threads-th line) and
# sends each exactly once; the setup/done environment collects the counts.
LUA = r"""
local data, path, thread_count = @DATA@, "@PATH@", @THREADS@

-- setup and done (wrk's main environment)
local threads = {}
function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local sent, exhausted, statuses = 0, false, {}
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("sent")
    exhausted = exhausted or thread:get("exhausted")
    for status, count in pairs(thread:get("statuses")) do
      statuses[status] = (statuses[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(statuses) do
    table.insert(parts, status .. ":" .. count)
  end
  io.write("enrolment.duration_us=", summary.duration, "\n")
  io.write("enrolment.sent=", sent, "\n")
  io.write("enrolment.statuses=", table.concat(parts, ","), "\n")
  io.write("enrolment.p50_us=", latency:percentile(50), "\n")
  io.write("enrolment.p99_us=", latency:percentile(99), "\n")
  for _, name in ipairs({"connect", "read", "write", "timeout"}) do
    io.write("enrolment.errors_", name, "=", summary.errors[name], "\n")
  end
  io.write("enrolment.exhausted=", tostring(exhausted), "\n")
end

-- each thread
index, sent, exhausted, statuses = 0, 0, false, {}
local prepared, count, next_one = {}, 0, 1

function init(args)
  local line_number = 0
  for line in io.lines(data) do
    if line_number % thread_count == index then
      local signature, body = line:match("^([^\t]*)\t(.*)$")
      count = count + 1
      prepared[count] = wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["X-Aftercare-Signature"] = signature,
      }, body)
    end
    line_number = line_number + 1
  end
end

function request()
  if next_one > count then
    exhausted = true  -- never send an event twice: stop this thread instead
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  local prepared_request = prepared[next_one]
  prepared[next_one] = nil
  next_one = next_one + 1
  sent = sent + 1
  return prepared_request
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end
"""
