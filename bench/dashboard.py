"""Dashboard pages: server time of each page over a clinic group's history.

A fresh PostgreSQL database (`bench.support.fresh_database`) is seeded in SQL
(`generate_series`) with `--dashboard-patients` patients (default 100,000), ten plan
messages each (1M: sent over the last 90 days, mostly delivered, some failed,
undelivered or expired with Twilio codes, the rest scheduled) and ten replies each
(1M, all handled but one in 500; one in 20 urgent); the tally changes the database's
triggers wrote for them are folded, as the worker does, then `VACUUM (ANALYZE)`. Each
page is requested `--page-requests` times through the Flask test client, signed in,
after two warm-up requests: the median and 95th percentile are the app's own time
(routing, queries, templates), without a network. The staff API's reply lists are
timed too, since this revision's `ix_reply_newest` serves their order. Last, the
overview once more with a day's status changes left unfolded (a stopped worker).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, text

from bench.scale import analyze
from bench.support import Row, fresh_database
from notifier import create_app
from notifier.settings import Settings, StaffToken
from notifier.staff import accounts
from notifier.store.db import make_engine, transaction
from notifier.worker import fold_tallies

NAME, PASSWORD = "bench", "bench password 123"
TOKEN = "bench-staff-token-0123456789"  # noqa: S105 - a throwaway database's
PAGES = (
    "/staff/",
    "/staff/patients/P{middle}",
    "/staff/patients?q=4567",
    "/staff/problems",
    "/staff/overview",
    "/staff/plans",
)
API = ("/api/replies?handled=false", "/api/replies", "/api/replies?handled=true")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--dashboard-patients", type=int, default=100_000)
    group.add_argument("--page-requests", type=int, default=20, help="timed requests per page")


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with fresh_database("postgres") as url:
        started = time.perf_counter()
        seed(url, args.dashboard_patients, datetime.now(UTC))
        engine = make_engine(url)
        folded = time.perf_counter()
        fold_tallies(engine)  # as the worker does every minute
        print(f"  fold the seed's tally changes: {time.perf_counter() - folded:.1f}s", flush=True)
        analyze(url)
        print(f"  seed, fold and analyze: {time.perf_counter() - started:.1f}s", flush=True)
        with transaction(engine) as session:
            accounts.create(session, NAME, PASSWORD, datetime.now(UTC))
        settings = Settings(
            database_url=url,
            secret_key="bench-secret-key-" + "x" * 32,
            staff_api_tokens=(StaffToken("bench", TOKEN),),
        )
        app = create_app(dataclasses.replace(settings), engine=engine)
        client = app.test_client()
        _sign_in(client)
        size = f"{args.dashboard_patients:,} patients, postgres"
        for page in PAGES:
            path = page.format(middle=args.dashboard_patients // 2)
            rows.append((f"GET {path} ({size})", _timed(client, path, args.page_requests)))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for path in API:
            rows.append((f"GET {path} ({size})", _timed(client, path, args.page_requests, headers)))
        # A worker that has not folded for a day: a day's status changes, not yet folded.
        with engine.begin() as connection:
            changed = connection.execute(text(BACKLOG)).rowcount
        label = f"GET /staff/overview, {2 * changed:,} tally changes not folded ({size})"
        rows.append((label, _timed(client, "/staff/overview", args.page_requests)))
        engine.dispose()
    return rows


def _sign_in(client: Any) -> None:
    page = client.get("/staff/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {"username": NAME, "password": PASSWORD, "csrf_token": token}
    assert client.post("/staff/login", data=form).status_code == 302


def _timed(client: Any, path: str, requests: int, headers: dict[str, str] | None = None) -> str:
    times = []
    for n in range(requests + 2):
        started = time.perf_counter()
        response = client.get(path, headers=headers or {})
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code in (200, 302), (path, response.status_code)
        if n >= 2:
            times.append(elapsed)
    p95 = statistics.quantiles(times, n=20)[18] if len(times) >= 2 else times[0]
    return f"{statistics.median(times):.1f} / {p95:.1f} ms"


# About a day of this clinic group's messages (1M over 90 days) read by their patients.
BACKLOG = "UPDATE message SET status = 'read' WHERE status = 'delivered' AND id % 90 = 0"

SEED = [
    """INSERT INTO patient (id, external_id, first_name, phone, channel, language, timezone,
           consented, opted_out, created_at, updated_at)
       SELECT i, 'P' || i, 'Name' || i, '+9715' || lpad(i::text, 8, '0'), 'sms',
           (ARRAY['en', 'ar', 'ru'])[1 + i % 3], 'Asia/Dubai', true, i % 50 = 0, :now, :now
       FROM generate_series(1, :n) i""",
    """INSERT INTO treatment (id, external_id, patient_id, kind, performed_at, status,
           created_at, updated_at)
       SELECT i, 'T' || i, i, 'scalp_micropigmentation', :now - (i % 90) * interval '1 day',
           'active', :now, :now
       FROM generate_series(1, :n) i""",
    """INSERT INTO message (patient_id, treatment_id, kind, step, occurrence, channel, language,
           body, send_at, expires_at, window_start, window_end, status, sid, error_code,
           attempts, created_at, updated_at)
       SELECT p, p, 'plan', 'day_' || (s * 3), 0,
           CASE WHEN p % 4 = 0 THEN 'whatsapp' ELSE 'sms' END, 'en', 'Aftercare text ' || s,
           ts, ts + interval '1 day', 0, 1439,
           CASE WHEN ts > :now THEN 'scheduled' WHEN (p + s) % 50 = 0 THEN 'failed'
                WHEN (p + s) % 37 = 0 THEN 'undelivered' WHEN (p + s) % 91 = 0 THEN 'expired'
                ELSE 'delivered' END,
           CASE WHEN ts > :now THEN NULL ELSE 'SM' || md5(p || '-' || s) END,
           CASE WHEN ts > :now THEN NULL WHEN (p + s) % 50 = 0 THEN 30005
                WHEN (p + s) % 37 = 0 THEN 30003 END,
           1, ts - interval '1 day', ts
       FROM generate_series(1, :n) p, generate_series(0, 9) s,
           LATERAL (SELECT :now - (p % 90) * interval '1 day' + s * interval '3 days'
                    - interval '1 hour' AS ts) t""",
    """INSERT INTO reply (sid, patient_id, from_phone, channel, body, received_at, handled,
           handled_by, handled_at, urgent, category, signs, after_step)
       SELECT 'SMr' || md5(p || 'r' || r), p, '+9715' || lpad(p::text, 8, '0'), 'sms',
           'Reply ' || r, ts, NOT (p % 500 = 0 AND r = 9),
           CASE WHEN p % 500 = 0 AND r = 9 THEN NULL ELSE 'bench' END,
           CASE WHEN p % 500 = 0 AND r = 9 THEN NULL ELSE ts END,
           (p + r) % 20 = 0, CASE WHEN (p + r) % 20 = 0 THEN 'urgent' ELSE 'question' END,
           CASE WHEN (p + r) % 20 = 0 THEN 'pain' END,
           -- the step sent last before it: day_0 at -1 h, day_3 three days later
           'day_' || (((r * 8 + 1) / 72) * 3)
       FROM generate_series(1, :n) p, generate_series(0, 9) r,
           LATERAL (SELECT :now - (p % 90) * interval '1 day' + r * interval '8 hours'
                    AS ts) t""",
    """INSERT INTO consentchange (patient_id, at, consented, source, after_step)
       SELECT id, :now - (id % 90) * interval '1 day' + interval '2 days', false, 'keyword',
           'day_0'
       FROM patient WHERE opted_out""",
    "SELECT setval('patient_id_seq', :n)",
    "SELECT setval('treatment_id_seq', :n)",
]


def seed(url: str, patients: int, now: datetime) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in SEED:
            connection.execute(text(statement), {"n": patients, "now": now})
    engine.dispose()
