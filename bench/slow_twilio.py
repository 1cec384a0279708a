"""Webhooks while Twilio is slow: each doorway's latency while a worker's sends wait.

A real `aftercare worker` sends a backlog to a fake Twilio that takes
--slow-latency seconds per request (a slow afternoon at Twilio, inside
TWILIO_TIMEOUT_SECONDS), so requests to Twilio are in flight the whole time. Meanwhile
the web app (gunicorn, as the Procfile's `web` line) is sent, one after another,
--slow-requests of each: a STOP and a reply from patients whose messages are on the
wire, a delivery status callback, an enrolment, a `patient.erased` of a patient
whose message is on the wire, and a staff read. Each is signed as Twilio or the
booking system signs it. Reported per database and doorway: p50 and p99 latency,
and the answers that were not a success.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select
from twilio.request_validator import RequestValidator

from bench.support import (
    SID,
    TOKEN,
    Row,
    fake_twilio,
    free_port,
    fresh_database,
    gunicorn,
    worker_env,
)
from notifier.signature import sign
from notifier.store.models import Message, Status
from tests.support.seed import seed_messages

AFTERCARE = str(Path(sys.executable).with_name("aftercare"))
STAFF_TOKEN = "bench-staff-token-0123456789"  # noqa: S105 - a loopback benchmark's

Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--slow-latency", type=float, default=8.0, help="seconds Twilio takes per request"
    )
    group.add_argument(
        "--slow-requests", type=int, default=20, help="requests of each kind, one at a time"
    )
    group.add_argument(
        "--slow-messages",
        type=int,
        default=600,
        help="due messages the worker is sending meanwhile (enough to stay busy)",
    )
    group.add_argument("--slow-databases", default="postgres,sqlite")
    group.add_argument(
        "--slow-web",
        default="--workers 2 --threads 4 --worker-class gthread",
        help="gunicorn options of the web app",
    )


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    print(
        f"Twilio answers in {args.slow_latency:g} s; {args.slow_requests} requests of each "
        f"kind; web: gunicorn {args.slow_web}; worker: DISPATCH_CONCURRENCY 32"
    )
    for database in args.slow_databases.split(","):
        with (
            fresh_database(database) as url,
            tempfile.TemporaryDirectory() as scratch,
            fake_twilio(args.slow_latency) as fake,
        ):
            now = datetime.now(UTC)
            seed_messages(url, args.slow_messages, now - timedelta(minutes=1), now)
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            secret = secrets.token_hex(16)
            env = {
                "DATABASE_URL": url,
                "BOOKING_WEBHOOK_SECRET": secret,
                "STAFF_API_TOKENS": STAFF_TOKEN,
                "TWILIO_ACCOUNT_SID": SID,
                "TWILIO_AUTH_TOKEN": TOKEN,
                "TWILIO_SMS_FROM": "+14155550100",
                "PUBLIC_BASE_URL": base_url,
            }
            log = Path(scratch) / "web.log"
            with gunicorn(env, args.slow_web.split(), log, port), worker(url, fake.base_url):
                wait_until_sending(url)
                doorways = requests(base_url, secret, args.slow_requests)
                for name, make in doorways.items():
                    answers = [timed(base_url, make(n)) for n in range(args.slow_requests)]
                    failed = [status for _, status in answers if status >= 300]
                    figure = _ms([took for took, _ in answers])
                    if failed:
                        figure += f" ({len(failed)} answered {sorted(set(failed))})"
                    rows.append((f"{database} {name} p50 / p99", figure))
                still = sending(url)
            rows.append((f"{database} rows still on the wire at the end", str(still)))
    return rows


@contextmanager
def worker(url: str, base_url: str) -> Iterator[None]:
    env = worker_env(url, base_url, concurrency="32", lease_seconds="120")
    process = subprocess.Popen([AFTERCARE, "worker"], env=env, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.kill()  # a graceful stop would wait for the pass under way
        process.wait(timeout=30)


def sending(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).where(Message.status == Status.SENDING)
                ).scalar_one()
            )
    finally:
        engine.dispose()


def wait_until_sending(url: str) -> None:
    deadline = time.monotonic() + 60
    while sending(url) == 0:
        if time.monotonic() > deadline:
            raise SystemExit("slow-twilio suite: the worker never started sending")
        time.sleep(0.1)
    time.sleep(0.5)  # the claim has committed; the requests are on the wire


def requests(base_url: str, secret: str, count: int) -> dict[str, Callable[[int], Request]]:
    """How to build the n-th request of each kind."""
    validator = RequestValidator(TOKEN)

    def twilio(path: str, params: dict[str, str]) -> Request:
        body = urllib.parse.urlencode(params).encode()
        signature = validator.compute_signature(base_url + path, params)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        }
        return "POST", path, body, headers

    def booking(event: dict[str, object]) -> Request:
        body = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Aftercare-Signature": sign(secret, body, int(time.time())),
        }
        return "POST", "/webhooks/booking", body, headers

    def inbound(n: int, text: str, tag: str) -> Request:
        params = {
            "MessageSid": f"SM{tag}{n:030d}",
            "AccountSid": SID,
            "From": f"+9715{n + 1:08d}",  # a seeded patient, whose message is on the wire
            "To": "+14155550100",
            "Body": text,
        }
        return twilio("/webhooks/twilio/inbound", params)

    def enrolment(n: int) -> Request:
        performed = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
        patient = {
            "id": f"NEW-{n}",
            "first_name": "Omar",
            "phone": f"+97150{1000000 + n}",
            "consent": True,
        }
        treatment = {"id": f"TNEW-{n}", "kind": "scalp_micropigmentation"}
        return booking(
            {
                "id": f"evt_new_{n}",
                "type": "treatment.completed",
                "patient": patient,
                "treatment": {**treatment, "performed_at": performed},
            }
        )

    return {
        "STOP": lambda n: inbound(n, "STOP", "aa"),
        "reply": lambda n: inbound(count + n, "Is a little redness normal?", "bb"),
        "status callback": lambda n: twilio(
            "/webhooks/twilio/status",
            {"MessageSid": f"SM{n:032d}", "MessageStatus": "delivered", "AccountSid": SID},
        ),
        "enrolment": enrolment,
        "patient.erased": lambda n: booking(
            {"id": f"evt_erase_{n}", "type": "patient.erased", "patient": {"id": f"P{n + 1}"}}
        ),
        "staff read": lambda n: (
            "GET",
            f"/api/patients/P{2 * count + n + 1}",
            b"",
            {"Authorization": f"Bearer {STAFF_TOKEN}"},
        ),
    }


def timed(base_url: str, request: Request) -> tuple[float, int]:
    """How long the request took to be answered, and its status."""
    method, path, body, headers = request
    call = urllib.request.Request(  # noqa: S310 - loopback
        base_url + path, data=body or None, method=method, headers=headers
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(call, timeout=120) as answer:  # noqa: S310 - loopback
            answer.read()
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        status = error.code
    return time.perf_counter() - started, status


def _ms(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:.1f} / {p99 * 1000:.1f} ms"
