"""Bulk outbox rows for load tests and benchmarks: one patient, treatment and message
per number, written with set-based inserts (10,000 rows a statement)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import create_engine, insert, text

from notifier.store.models import Message, Patient, Status, Treatment

CHUNK = 10_000


def seed_messages(
    url: str, count: int, send_at: datetime, now: datetime, zone: str = "UTC"
) -> None:
    """`count` patients in `zone`, each with one SMS due at `send_at`, window open all day."""
    engine = create_engine(url)
    stamps = {"created_at": now, "updated_at": now}
    with engine.begin() as connection:
        for start in range(1, count + 1, CHUNK):
            ids = range(start, min(start + CHUNK, count + 1))
            connection.execute(
                insert(Patient),
                [
                    {
                        "id": i,
                        "external_id": f"P{i}",
                        "phone": f"+9715{i:08d}",
                        "channel": "sms",
                        "language": "en",
                        "timezone": zone,
                        "consented": True,
                        "opted_out": False,
                        **stamps,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Treatment),
                [
                    {
                        "id": i,
                        "external_id": f"T{i}",
                        "patient_id": i,
                        "kind": "scalp_micropigmentation",
                        "performed_at": now - timedelta(hours=1),
                        "status": "active",
                        **stamps,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Message),
                [
                    {
                        "patient_id": i,
                        "treatment_id": i,
                        "step": "after_treatment",
                        "occurrence": 0,
                        "channel": "sms",
                        "language": "en",
                        "body": f"Aftercare message number {i}",
                        "send_at": send_at,
                        "expires_at": send_at + timedelta(days=2),
                        "window_start": 0,
                        "window_end": 23 * 60 + 59,
                        "status": Status.SCHEDULED,
                        "attempts": 0,
                        **stamps,
                    }
                    for i in ids
                ],
            )
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table in ("patient", "treatment"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :last)"),
                    {"last": count},
                )
    engine.dispose()
